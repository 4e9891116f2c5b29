"""Heads over a frozen LM's per-token states, not their mean: does attention pooling read held-out urgency wording?

Issue 14's remaining errors are composed wording ("no rush" read through "rush"): a head over the mean of the
states weighs every token alike. Here every prompt of the phrase bank (rendered as in `urgency_heads.py`) goes
once through the frozen LM, and the listed layers' states are kept per token (float16). Per phrase seed, two
heads of the same shape train on the training templates' prompts alone (cross-entropy over the 7 levels; the
urgency is the expected level):
- `tokenmean`: tokens standardised per feature (training statistics), tanh(linear) to `--width`, dropout,
  their masked mean, a linear classifier: the control;
- `attention`: the same, with a learned score per token and a softmax over the prompt's tokens in place of the
  mean.
Each trains `--epochs` epochs of minibatch AdamW; the epoch kept is the best on validation Spearman. Figures:
Spearman(level, estimate) and MAE against level / 6 on validation templates, test templates and the phrasings
written apart from the bank; mean and population sd over the phrase seeds.

    python benchmarks/urgency_token_heads.py --model /tmp/smol/hf --threads 2

Ends with `urgency_token_heads: test_spearman_attention=M test_mae_attention=M test_spearman_tokenmean=M ...`.
"""

from __future__ import annotations

import sys

import torch
from urgency_heads import SOURCES, figures, prompts, report, split_rows  # benchmarks/: the script's directory
from urgency_probe import left_padded, open_reader, reader_parser

HEADS = ("tokenmean", "attention")


def parse_args(argv=None):
    p = reader_parser(__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, nargs="+", default=[12, 16, 20])
    p.add_argument("--phrase_seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per_template", type=int, default=20)
    p.add_argument("--per_apart", type=int, default=10)
    p.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--batch_size", type=int, default=32, help="prompts per LM pass")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", default="benchmarks/results/urgency_token_heads.json")
    return p.parse_args(argv)


@torch.no_grad()
def token_states(lm, sequences: list[list[int]], layers: list[int], batch_size: int):
    """(states (n, width, hidden x layers) float16, mask (n, width) bool), rows left-padded to one width."""
    width = max(map(len, sequences))
    states, mask = None, torch.zeros(len(sequences), width, dtype=torch.bool)
    for start in range(0, len(sequences), batch_size):
        ids, m, positions = left_padded(sequences[start:start + batch_size])
        out = lm(input_ids=ids, attention_mask=m, position_ids=positions, output_hidden_states=True, logits_to_keep=1)
        w = m.shape[1]
        h = torch.cat([out.hidden_states[layer] for layer in layers], -1)
        if states is None:
            states = torch.zeros(len(sequences), width, h.shape[-1], dtype=torch.float16)
        states[start:start + len(m), width - w:] = h.half()
        mask[start:start + len(m), width - w:] = m.bool()
    return states, mask


class TokenHead(torch.nn.Module):
    def __init__(self, kind: str, center, scale, width: int, classes: int = 7):
        super().__init__()
        self.kind = kind
        self.register_buffer("center", center)
        self.register_buffer("scale", scale)
        self.proj = torch.nn.Linear(len(center), width)
        self.score = torch.nn.Linear(width, 1) if kind == "attention" else None
        self.drop = torch.nn.Dropout(0.1)
        self.out = torch.nn.Linear(width, classes)

    def forward(self, states, mask):  # -> (batch, classes) logits
        z = self.drop(torch.tanh(self.proj((states.float() - self.center) / self.scale)))
        if self.score is None:
            weights = mask.float() / mask.sum(1, keepdim=True)
        else:
            weights = self.score(z).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(-1)
        return self.out((weights[..., None] * z).sum(1))


def expected_urgency(logits):
    return (logits.softmax(-1) * torch.linspace(0, 1, logits.shape[-1])).sum(-1)


def train_head(kind, states, mask, levels, rows, args) -> dict:
    torch.manual_seed(0)
    train = rows["train"].nonzero().flatten()
    tokens = states[train][mask[train]].float()
    head = TokenHead(kind, tokens.mean(0), tokens.std(0) + 1e-3, args.width)
    del tokens
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=args.weight_decay)
    best = None
    for epoch in range(args.epochs):
        head.train()
        order = train[torch.randperm(len(train))]
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            loss = torch.nn.functional.cross_entropy(head(states[batch], mask[batch]), levels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            result = {s: figures(expected_urgency(head(states[rows[s]], mask[rows[s]])), levels[rows[s]])
                      for s in SOURCES}
        if best is None or result["validation"]["spearman"] > best["validation"]["spearman"]:
            best = {**result, "epoch": epoch}
    return best


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from adaptive_pause.tasks import get_task
    from adaptive_pause.tokens import encode_prompts

    tokenizer, lm, _ = open_reader("urgency_token_heads", args)
    texts, levels, index = prompts(get_task(args.task), args.per_template, args.per_apart)
    states, mask = token_states(lm, encode_prompts(tokenizer, texts), args.layers, args.batch_size)
    print(f"read {len(texts)} prompts, token states {tuple(states.shape)}", file=sys.stderr, flush=True)
    runs = {kind: [] for kind in args.heads}
    for seed in args.phrase_seeds:
        rows = split_rows(index, seed)
        for kind in args.heads:
            runs[kind].append({"phrase_seed": seed, **train_head(kind, states, mask, levels, rows, args)})
            r = runs[kind][-1]
            print(f"{kind} seed {seed} epoch {r['epoch']}: " + ", ".join(
                f"{s} {r[s]['spearman']:.3f} / {r[s]['mae']:.3f}" for s in SOURCES), file=sys.stderr, flush=True)
    summary = report(runs, args, f"urgency token heads: {args.model}, token states of layers {args.layers}, "
                              f"{len(texts)} prompts, phrase seeds {args.phrase_seeds} (mean +- sd)")
    print("urgency_token_heads: " + " ".join(f"test_spearman_{k}={s['test']['spearman'][0]:.3f} "
                                              f"test_mae_{k}={s['test']['mae'][0]:.3f}" for k, s in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
