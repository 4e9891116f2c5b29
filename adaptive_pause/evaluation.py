"""`eval-pauses`: exact-match accuracy with a fixed number k of pauses before the answer.

Owns: held-out evaluation of a pretrain or finetune run at k in {0,1,2,4,8,16}
(by default), per task and per difficulty bucket, a printed table and JSON,
optionally beside a no-pause control run evaluated at k = 0.

How it measures: for each held-out example, one teacher-forced forward pass
over prompt + k pauses + reference answer + EOS, with the run's own position
numbering. The example counts as correct when, at every answer position
(EOS included), the argmax over the vocabulary with `<pause>` masked out is
the reference token. That is exactly "greedy decoding after k pauses
reproduces the answer and stops": greedy decoding emits token t+1 from the
prefix it produced, and as long as all earlier argmaxes were right that prefix
is the reference prefix. One batched pass per k instead of a token-by-token
loop; tests check it against the decode loop.

Must not: train, or decode free-running text (that is `decoding.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import yaml

from .checkpoint import write_json_atomic
from .collators import IGNORE_INDEX, FinetuneCollator
from .config import EvalPausesConfig, parse_cli
from .modeling import AdaptivePauseModel, PauseSettings
from .tables import markdown_table
from .tasks import Example, get_task


@dataclass
class LoadedRun:
    model: torch.nn.Module
    tokenizer: object
    settings: PauseSettings
    config: dict
    pauses_before_each_answer_token: bool


def load_run(run_dir: str | Path) -> LoadedRun:
    """The LM of a run directory: model/ plus adapter/ when present (a finetune run)."""
    run_dir = Path(run_dir)
    if not (run_dir / "model").is_dir():
        raise ValueError(f"{run_dir} is not a run directory: it has no model/ (run pretrain or finetune first)")
    loaded = AdaptivePauseModel.from_pretrained(run_dir)  # model/ (+ adapter/), parts checked to agree
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    return LoadedRun(loaded.lm, loaded.tokenizer, loaded.settings, config or {},
                     bool((config or {}).get("pauses_before_each_answer_token")))


@torch.no_grad()
def greedy_correct(run: LoadedRun, examples: Sequence[Example], k: int, batch_size: int) -> torch.Tensor:
    """(n,) bool: does greedy decoding after k pauses reproduce each example's answer exactly?"""
    s = run.settings
    if s.numbering == "slotted" and k > s.pause_slots:
        raise ValueError(f"k={k} pauses exceed the model's pause_slots={s.pause_slots} (slotted numbering)")
    collate = FinetuneCollator(run.tokenizer, s.pause_id, s.numbering, max(s.pause_slots, k), max_pauses=k,
                               pauses_before_each_answer_token=run.pauses_before_each_answer_token)
    device = next(run.model.parameters()).device
    correct = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], generator=None, k=k).to(device)
        logits = run.model(**batch.model_inputs()).logits[:, :-1].float()  # (batch, seq-1, vocab)
        logits[..., s.pause_id] = float("-inf")  # a pause is never an answer
        targets = batch.labels[:, 1:]
        scored = targets != IGNORE_INDEX
        right = (logits.argmax(-1) == targets) | ~scored
        correct.append(right.all(-1))
    return torch.cat(correct)


def evaluate_run(run: LoadedRun, tasks: Sequence[str], ks: Sequence[int], num_examples: int, seed: int,
                 batch_size: int) -> dict:
    """{task: {"n": n, "by_k": {k: {"all": acc, "by_difficulty": {d: acc}}}}}"""
    results = {}
    for spec in tasks:
        task = get_task(spec)
        examples = task.examples(num_examples, seed)
        difficulty = torch.tensor([e.difficulty for e in examples])
        by_k = {}
        for k in ks:
            correct = greedy_correct(run, examples, k, batch_size).float()
            by_k[k] = {
                "all": correct.mean().item(),
                "by_difficulty": {int(d): correct[difficulty == d].mean().item() for d in difficulty.unique()},
            }
        counts = {int(d): int((difficulty == d).sum()) for d in difficulty.unique()}
        results[spec] = {"n": len(examples), "n_by_difficulty": counts, "by_k": by_k}
    return results


def format_table(results: dict, control: dict | None = None) -> str:
    """Rows: task x (all, each difficulty); columns: k (and the control at k = 0)."""
    any_task = next(iter(results.values()))
    ks = list(any_task["by_k"])
    head = ["task", "difficulty", "n"] + [f"k={k}" for k in ks] + (["control k=0"] if control else [])
    rows = []
    for spec, res in results.items():
        buckets = ["all"] + sorted(res["n_by_difficulty"])
        for bucket in buckets:
            n = res["n"] if bucket == "all" else res["n_by_difficulty"][bucket]
            cells = []
            for k in ks:
                entry = res["by_k"][k]
                cells.append(entry["all"] if bucket == "all" else entry["by_difficulty"][bucket])
            row = [spec, str(bucket), str(n)] + [f"{c:.3f}" for c in cells]
            if control:
                centry = control[spec]["by_k"][0]
                row.append(f"{(centry['all'] if bucket == 'all' else centry['by_difficulty'][bucket]):.3f}")
            rows.append(row)
    return markdown_table(head, rows)


def run_eval_pauses(config: EvalPausesConfig) -> dict:
    run = load_run(config.run_dir)
    tasks = config.tasks or run.config.get("tasks")
    if not tasks:
        raise ValueError(f"{config.run_dir}: no tasks given and none recorded in config.yaml; pass --tasks")
    results = evaluate_run(run, tasks, config.ks, config.num_examples, config.seed, config.batch_size)
    control = None
    if config.control_dir:
        control_run = load_run(config.control_dir)
        control = evaluate_run(control_run, tasks, [0], config.num_examples, config.seed, config.batch_size)
    print(format_table(results, control))
    payload = {"run_dir": str(config.run_dir), "seed": config.seed, "results": results}
    if control is not None:
        payload["control_dir"] = str(config.control_dir)
        payload["control"] = control
    output = Path(config.output) if config.output else Path(config.run_dir) / "eval_pauses.json"
    write_json_atomic(json.loads(json.dumps(payload)), output)
    print(f"eval-pauses: wrote {output}")
    return payload


def main(argv: list[str] | None = None) -> int:
    run_eval_pauses(parse_cli(EvalPausesConfig, argv, positional=("run_dir",)))
    return 0
