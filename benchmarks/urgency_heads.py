"""Which estimator head reads urgency from a frozen pretrained LM best, over several splits of the phrase bank.

Every template of the phrase bank is rendered `--per_template` times into task prompts (and each phrasing of
`WRITTEN_APART`, written apart from the bank, `--per_apart` times); the frozen LM (a local HF directory, its
prompt format as the preset's) reads each prompt once, keeping the masked mean of the listed layers' states.
Then, per phrase seed (the bank's split by template: train / validation / test templates), two heads learn from
the training templates' prompts alone:
- `ridge`: a ridge regression onto level / 6 (standardised features, strength chosen on validation);
- `classifier`: `UrgencyEstimator(pooling="mean", classes=7)`, the head `train-urgency --pooling mean --loss
  ce` trains (its `standardize`, then AdamW on cross-entropy, full batch; weight decay chosen on validation),
  whose urgency is the expected level.
Figures: Spearman(level, estimate) and the mean absolute error against level / 6, per prompt, on validation
templates, test templates and the written-apart phrasings; mean and spread (population sd) over the seeds.
Reading the LM once for all seeds is what makes several splits affordable on a CPU.

    python benchmarks/urgency_heads.py --model /tmp/smol/hf --layers 8 12 16 20 --phrase_seeds 0 1 2

Ends with `urgency_heads: head=classifier test_spearman=M test_mae=M apart_spearman=M apart_mae=M` (the
classifier's means over seeds).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
from pathlib import Path

import torch
from urgency_probe import (  # benchmarks/ is the script's directory
    open_reader,
    reader_parser,
    readings,
    ridge_probe,
)

RIDGE = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
DECAY = (0.1, 1.0, 10.0)
SOURCES = ("validation", "test", "apart")


def parse_args(argv=None):
    p = reader_parser(__doc__.splitlines()[0])
    p.add_argument("--model_name", default=None)
    p.add_argument("--layers", type=int, nargs="+", default=[8, 12, 16, 20])
    p.add_argument("--phrase_seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per_template", type=int, default=20)
    p.add_argument("--per_apart", type=int, default=10)
    p.add_argument("--steps", type=int, default=300, help="classifier: full-batch AdamW steps")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", default="benchmarks/results/urgency_heads.json")
    return p.parse_args(argv)


def prompts(task, per_template: int, per_apart: int):
    """(texts, levels, template index; -1 - i for WRITTEN_APART[i]), rendered as the bank renders."""
    from adaptive_pause.tasks.urgency_phrases import (
        TEMPLATES,
        WRITTEN_APART,
        Phrasing,
        UrgencyPhraseBank,
    )

    bank = UrgencyPhraseBank(0)
    rng = random.Random("urgency-heads")
    texts, levels, index = [], [], []
    for t, (level, kind, template) in enumerate(TEMPLATES):
        bank.splits = {"train": [Phrasing(level, kind, template)]}  # sample() draws from this one template
        for _ in range(per_template):
            texts.append(bank.sample(rng, "train", task.sample(rng), level).prompt)
            levels.append(level)
            index.append(t)
    for i, (level, phrase) in enumerate(WRITTEN_APART):
        for _ in range(per_apart):
            prompt = task.sample(rng).prompt
            texts.append(f"{phrase} {prompt}" if rng.random() < 0.5 else f"{prompt} {phrase}")
            levels.append(level)
            index.append(-1 - i)
    return texts, torch.tensor(levels), torch.tensor(index)


def split_rows(index: torch.Tensor, phrase_seed: int) -> dict[str, torch.Tensor]:
    """{train, validation, test, apart: boolean row mask} for prompts with template `index` (as `prompts`
    returns it) under the bank's split with `phrase_seed`."""
    from adaptive_pause.tasks.urgency_phrases import TEMPLATES, UrgencyPhraseBank

    position = {template: t for t, (_, _, template) in enumerate(TEMPLATES)}
    bank = UrgencyPhraseBank(phrase_seed)
    rows = {s: torch.isin(index, torch.tensor([position[p.template] for p in bank.phrasings(s)]))
            for s in ("train", "validation", "test")}
    rows["apart"] = index < 0
    return rows


def figures(estimate: torch.Tensor, levels: torch.Tensor) -> dict:
    from scipy.stats import spearmanr

    estimate = estimate.double().clamp(0, 1)
    return {"spearman": float(spearmanr(levels.numpy(), estimate.numpy()).statistic),
            "mae": float((estimate - levels.double() / 6).abs().mean())}


def ridge(x, levels, data) -> dict:
    best = ridge_probe(x, levels.float() / 6, data, RIDGE)  # the probe's regression, strength chosen on validation
    best["strength"] = best.pop("ridge")
    return best


def classifier(x, levels, data, steps: int) -> dict:
    from adaptive_pause.tasks.urgency_phrases import LEVELS
    from policies import UrgencyEstimator

    best = None
    for decay in DECAY:
        torch.manual_seed(0)
        head = UrgencyEstimator(x.shape[1], pooling="mean", classes=LEVELS, dropout=0.0)
        head.standardize(x)
        optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=decay)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(head.logits_from_features(x), levels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            result = {s: figures(head.urgency_from_logits(head.logits_from_features(f)), lv)
                      for s, (f, lv) in data.items()}
        if best is None or result["validation"]["spearman"] > best["validation"]["spearman"]:
            best = {**result, "weight_decay": decay}
    return best


def report(runs: dict, args, title: str) -> dict:
    """Mean and sd over seeds per head and source: printed as a table under `title`, written with `runs` and the
    arguments to `args.output`; returned."""
    summary = {head: {s: {k: (statistics.mean(r[s][k] for r in rs), statistics.pstdev(r[s][k] for r in rs))
                          for k in ("spearman", "mae")} for s in SOURCES} for head, rs in runs.items()}
    print(title)
    header = f"{'head':>10} | " + " | ".join(f"{s + ' Spearman':>22} | {s + ' MAE':>17}" for s in SOURCES)
    print(header)
    print("-" * len(header))
    for head, s in summary.items():
        print(f"{head:>10} | " + " | ".join(f"{s[src]['spearman'][0]:>13.3f} +- {s[src]['spearman'][1]:.3f} | "
                                            f"{s[src]['mae'][0]:>8.3f} +- {s[src]['mae'][1]:.3f}" for src in SOURCES))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"config": vars(args), "runs": runs, "summary": summary}, indent=1) + "\n")
    print(f"wrote {output}")
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from adaptive_pause.tasks import get_task
    from adaptive_pause.tasks.urgency_phrases import TEMPLATES
    from adaptive_pause.tokens import encode_prompts

    tokenizer, lm, _ = open_reader("urgency_heads", args)
    texts, levels, index = prompts(get_task(args.task), args.per_template, args.per_apart)
    means = readings(lm, encode_prompts(tokenizer, texts), args.layers, None, args.batch_size)
    features = torch.cat([means[f"mean{layer}"] for layer in args.layers], 1)
    runs = {"ridge": [], "classifier": []}
    for seed in args.phrase_seeds:
        rows = split_rows(index, seed)
        data = {s: (features[rows[s]], levels[rows[s]]) for s in SOURCES}
        x, lv = features[rows["train"]], levels[rows["train"]]
        runs["ridge"].append({"phrase_seed": seed, **ridge(x, lv, data)})
        runs["classifier"].append({"phrase_seed": seed, **classifier(x, lv, data, args.steps)})
    summary = report(runs, args, f"urgency heads: {args.model}, means of layers {args.layers}, {len(TEMPLATES)} "
                     f"templates x {args.per_template} prompts, phrase seeds {args.phrase_seeds} (mean +- sd)")
    c = summary["classifier"]
    print(f"urgency_heads: head=classifier test_spearman={c['test']['spearman'][0]:.3f} "
          f"test_mae={c['test']['mae'][0]:.3f} apart_spearman={c['apart']['spearman'][0]:.3f} "
          f"apart_mae={c['apart']['mae'][0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
