"""Does tuning the LM itself (LoRA on the estimator's loss) carry urgency to unseen templates better than a head
over the frozen LM?

Every template of the phrase bank is rendered `--per_template` times into task prompts (and each phrasing of
`WRITTEN_APART` `--per_apart` times), as in `urgency_heads.py`. The LM (a local HF directory, in the preset's
chat format) reads each prompt once up to hidden state `--lora_from`; those states are kept. Then, per phrase
seed (the bank's split by template):
1. the stage's head (`train-urgency --pooling mean --loss ce`: the means of `--layers` standardised, a linear
   classifier over the 7 levels, the urgency its expected level) is fitted on the training templates' prompts
   with the LM frozen ("step 0");
2. LoRA adapters (rank `--rank`, every linear layer of the blocks from `--lora_from` up to the highest layer
   read) and the head then train together on the same prompts' cross-entropy, `--steps` AdamW steps of
   `--batch_size`; the blocks above `--lora_from` run again on the kept states at every step, so the cost is
   theirs alone.
Figures: Spearman(level, estimate) and mean absolute error against level / 6 on the validation templates, the
test templates and the written-apart phrasings (never trained on), at step 0 and every `--steps / 3` steps.

Prompts are right-padded with positions 0..n-1, so a causal mask alone keeps pads out of every real token's
states (the states of pads are never read: the means are masked).

    python benchmarks/urgency_lora.py --model /tmp/smol/hf --phrase_seeds 0 1 2

Ends with `urgency_lora: test_spearman_frozen=X test_spearman_lora=Y test_mae_frozen=X test_mae_lora=Y`
(means over seeds; "lora" at the last step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from urgency_heads import figures, prompts, split_rows  # benchmarks/ is the script's directory
from urgency_probe import open_reader, reader_parser

SOURCES = ("validation", "test", "apart")


def parse_args(argv=None):
    p = reader_parser(__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, nargs="+", default=[8, 12, 16, 20], help="hidden states the head reads")
    p.add_argument("--lora_from", type=int, default=12, help="LoRA on the blocks that make states above this one")
    p.add_argument("--phrase_seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per_template", type=int, default=20)
    p.add_argument("--per_apart", type=int, default=10)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--learning_rate", type=float, default=3e-4, help="LoRA's AdamW rate (the head's: 1e-3)")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", default="benchmarks/results/urgency_lora.json")
    args = p.parse_args(argv)
    if not 0 < args.lora_from < max(args.layers):
        raise SystemExit(f"urgency_lora: --lora_from must be above 0 and below the highest of --layers "
                         f"({max(args.layers)}), got {args.lora_from}")
    for name, least in (("steps", 3), ("rank", 1), ("batch_size", 1)):
        if getattr(args, name) < least:
            raise SystemExit(f"urgency_lora: --{name} must be >= {least}, got {getattr(args, name)}")
    return args


class Reader:
    """The LM's blocks as plain calls: states from token ids (frozen, once) and from kept states upwards."""

    def __init__(self, lm):
        self.base = lm.get_base_model().model if hasattr(lm, "get_base_model") else lm.model

    def run(self, h, lo: int, hi: int, keep: set[int]) -> dict[int, torch.Tensor]:
        """Blocks lo..hi-1 on states `h` (hidden state index lo), right-padded; {index: states} for `keep`."""
        positions = torch.arange(h.shape[1])[None].expand(h.shape[0], -1)
        rotary = self.base.rotary_emb(h, positions)
        out = {lo: h} if lo in keep else {}
        for index in range(lo, hi):
            h = self.base.layers[index](h, attention_mask=None, position_ids=positions, position_embeddings=rotary)
            if index + 1 in keep:
                out[index + 1] = h
        return out


def masked_mean(states, mask):
    return (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from peft import LoraConfig, get_peft_model

    from adaptive_pause.tasks import get_task
    from adaptive_pause.tasks.urgency_phrases import LEVELS
    from adaptive_pause.tokens import encode_prompts

    top = max(args.layers)
    lower = [layer for layer in args.layers if layer <= args.lora_from]
    upper = [layer for layer in args.layers if layer > args.lora_from]
    tokenizer, lm, _ = open_reader("urgency_lora", argparse.Namespace(**{**vars(args), "layers": [top]}))
    texts, levels, index = prompts(get_task(args.task), args.per_template, args.per_apart)
    sequences = encode_prompts(tokenizer, texts)
    n, width = len(sequences), max(map(len, sequences))
    ids = torch.zeros(n, width, dtype=torch.long)
    mask = torch.zeros(n, width)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq)
        mask[row, :len(seq)] = 1
    reader = Reader(lm)
    kept = torch.zeros(n, width, lm.config.hidden_size, dtype=torch.bfloat16)
    fixed = torch.zeros(n, len(lower) * lm.config.hidden_size)
    order = mask.sum(1).argsort()  # batches of similar lengths, each cut to its longest prompt
    start = time.time()
    with torch.no_grad():  # the frozen lower blocks, once
        for b in range(0, n, 64):
            rows = order[b:b + 64]
            w = int(mask[rows].sum(1).max())
            states = reader.run(reader.base.embed_tokens(ids[rows, :w]), 0, args.lora_from,
                                set(lower) | {args.lora_from})
            kept[rows, :w] = states[args.lora_from].to(torch.bfloat16)
            fixed[rows] = torch.cat([masked_mean(states[layer], mask[rows, :w]) for layer in lower], 1)
    print(f"read {n} prompts up to state {args.lora_from} in {time.time() - start:.0f}s", flush=True)

    def upper_means(rows):
        w = int(mask[rows].sum(1).max())
        states = reader.run(kept[rows, :w].float(), args.lora_from, top, set(upper))
        return torch.cat([masked_mean(states[layer], mask[rows, :w]) for layer in upper], 1)

    def features(rows):
        return torch.cat([fixed[rows], upper_means(rows)], 1)

    def features_in_batches(rows):
        return torch.cat([features(rows[b:b + 64]) for b in range(0, len(rows), 64)])

    levels_grid = torch.arange(LEVELS, dtype=torch.float) / (LEVELS - 1)
    runs = []
    for seed in args.phrase_seeds:
        torch.manual_seed(seed)
        model = get_peft_model(lm, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05,
                                              layers_to_transform=list(range(args.lora_from, top)),
                                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                              "up_proj", "down_proj"]))
        reader = Reader(model)
        split = {source: rows.nonzero()[:, 0] for source, rows in split_rows(index, seed).items()}
        train = split["train"]
        model.eval()
        with torch.no_grad():
            x0 = features_in_batches(train)
        centre, scale = x0.mean(0), x0.std(0) + 1e-6
        head = torch.nn.Linear(x0.shape[1], LEVELS)
        optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1.0)
        for _ in range(300):  # the stage's head on the frozen LM, full batch
            loss = F.cross_entropy(head((x0 - centre) / scale), levels[train])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        def evaluate(step):
            model.eval()
            row = {"phrase_seed": seed, "step": step}
            with torch.no_grad():
                for source in SOURCES:
                    rows = split[source]
                    x = features_in_batches(rows)
                    estimate = torch.softmax(head((x - centre) / scale), 1) @ levels_grid
                    row[source] = figures(estimate, levels[rows])
            model.train()
            print(f"seed {seed} step {step:>4}: " + "  ".join(
                f"{s} {row[s]['spearman']:.3f}/{row[s]['mae']:.3f}" for s in SOURCES), flush=True)
            return row

        history = [evaluate(0)]
        lora = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW([{"params": lora, "lr": args.learning_rate, "weight_decay": 0.0},
                                       {"params": head.parameters(), "lr": 1e-3, "weight_decay": 1.0}])
        generator = torch.Generator().manual_seed(seed)
        model.train()
        for step in range(1, args.steps + 1):
            batch = train[torch.randint(len(train), (args.batch_size,), generator=generator)]
            loss = F.cross_entropy(head((features(batch) - centre) / scale), levels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % (args.steps // 3) == 0 or step == args.steps:
                history.append(evaluate(step) | {"train_loss": loss.item()})
        runs.append(history)
        lm = model.unload()  # the base model as loaded: LoRA never writes to the base weights

    def mean_of(which, source, key):
        values = [h[which][source][key] for h in runs]
        return statistics.mean(values), statistics.pstdev(values)

    print(f"\nurgency LoRA: {args.model}, head over means of {args.layers}, LoRA r={args.rank} on blocks "
          f"{args.lora_from}..{top - 1}, {args.steps} steps of {args.batch_size}, phrase seeds {args.phrase_seeds}")
    header = f"{'LM':>8} | " + " | ".join(f"{s + ' Spearman':>22} | {s + ' MAE':>17}" for s in SOURCES)
    print(header)
    print("-" * len(header))
    summary = {}
    for name, which in (("frozen", 0), ("LoRA", -1)):
        summary[name] = {s: {k: mean_of(which, s, k) for k in ("spearman", "mae")} for s in SOURCES}
        print(f"{name:>8} | " + " | ".join(
            f"{summary[name][s]['spearman'][0]:>13.3f} +- {summary[name][s]['spearman'][1]:.3f} | "
            f"{summary[name][s]['mae'][0]:>8.3f} +- {summary[name][s]['mae'][1]:.3f}" for s in SOURCES))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"config": vars(args), "runs": runs, "summary": summary}, indent=1) + "\n")
    print(f"wrote {output}")
    f, lo = summary["frozen"]["test"], summary["LoRA"]["test"]
    print(f"urgency_lora: test_spearman_frozen={f['spearman'][0]:.3f} test_spearman_lora={lo['spearman'][0]:.3f} "
          f"test_mae_frozen={f['mae'][0]:.3f} test_mae_lora={lo['mae'][0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
