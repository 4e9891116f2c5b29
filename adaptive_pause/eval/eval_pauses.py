"""`eval-pauses`: accuracy with a fixed number k of pauses before the answer, under each task's scorer.

Owns: held-out evaluation of a pretrain or finetune run at k in {0,1,2,4,8,16} (by default), per task and
per difficulty bucket (and per interruption variant for the interruption task), a printed table and JSON (each task's scorer named), optionally beside a no-pause
control run at k = 0. For the exact scorer one teacher-forced pass per k (`greedy_correct`, checked against
the decode loop by tests); for any other scorer (numeric, partial) the decode loop's greedy answers, scored.

Must not: train, or decode free-running text (that is `decoding/`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import yaml

from ..checkpoint import write_json_atomic
from ..config import check, help_field, parse_cli
from ..decoding.trace import mask_pause
from policies import FixedPauses

from ..modeling import AdaptivePauseModel, PauseSettings
from ..tasks import Example, check_split, get_task, task_label
from ..training.collators import IGNORE_INDEX, FinetuneCollator
from .tables import markdown_table


@dataclass
class EvalPausesConfig:
    """Exact-match accuracy at fixed numbers of pauses before the answer."""

    run_dir: str = help_field("a finetune (or pretrain) run directory")
    tasks: Optional[list[str]] = help_field("task specs to evaluate; empty = the run's own tasks", default=None)
    ks: list[int] = help_field("numbers of pauses to evaluate", default_factory=lambda: [0, 1, 2, 4, 8, 16])
    num_examples: int = help_field("held-out examples per task", default=1000)
    batch_size: int = help_field("examples per forward pass", default=256)
    seed: int = help_field("seed of the held-out examples (training streams use other seeds)", default=1_000_003)
    output: Optional[str] = help_field("JSON output path; empty = RUN_DIR/eval_pauses.json", default=None)
    control_dir: Optional[str] = help_field("a no-pause control run to evaluate at k=0 beside this run", default=None)
    split: str = help_field("the tasks' split to evaluate on: test (held out, the default), dev, or train (reported "
                            "as training data, never as held-out)", default="test")

    def __post_init__(self):
        check_split(self.split)
        check(len(self.ks) > 0 and all(k >= 0 for k in self.ks), "ks", f"must be non-empty and >= 0, got {self.ks}")
        check(self.num_examples >= 1, "num_examples", f"must be >= 1, got {self.num_examples}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class LoadedRun:
    model: torch.nn.Module
    tokenizer: object
    settings: PauseSettings
    config: dict
    pauses_before_each_answer_token: bool
    loaded: AdaptivePauseModel


def load_run(run_dir: str | Path) -> LoadedRun:
    """The LM of a run directory: model/ plus adapter/ when present (a finetune run)."""
    run_dir = Path(run_dir)
    if not (run_dir / "model").is_dir():
        raise ValueError(f"{run_dir} is not a run directory: it has no model/ (run pretrain or finetune first)")
    loaded = AdaptivePauseModel.from_pretrained(run_dir)  # model/ (+ adapter/), parts checked to agree
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    return LoadedRun(loaded.lm, loaded.tokenizer, loaded.settings, config or {},
                     bool((config or {}).get("pauses_before_each_answer_token")), loaded)


@torch.no_grad()
def greedy_correct(run: LoadedRun, examples: Sequence[Example], k: int, batch_size: int) -> torch.Tensor:
    """(n,) bool: does greedy decoding after k pauses reproduce each example's answer exactly?

    One teacher-forced pass over prompt + k pauses + reference answer + EOS, with the run's numbering: correct
    when, at every answer position (EOS included), the argmax with `<pause>` masked is the reference token.
    That is exactly greedy decoding: it emits token t+1 from the prefix it produced, and while all earlier
    argmaxes were right that prefix is the reference prefix.
    """
    s = run.settings
    if s.numbering == "slotted" and k > s.pause_slots:
        raise ValueError(f"k={k} pauses exceed the model's pause_slots={s.pause_slots} (slotted numbering)")
    collate = FinetuneCollator(run.tokenizer, s.pause_id, s.numbering, max(s.pause_slots, k), max_pauses=k,
                               pauses_before_each_answer_token=run.pauses_before_each_answer_token)
    device = next(run.model.parameters()).device
    correct = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], generator=None, k=k).to(device)
        logits = mask_pause(run.model(**batch.model_inputs(run.model)).logits[:, :-1].float(), s.pause_id)  # (batch, seq-1, vocab)
        targets = batch.labels[:, 1:]
        scored = targets != IGNORE_INDEX
        right = (logits.argmax(-1) == targets) | ~scored
        correct.append(right.all(-1))
    return torch.cat(correct)


@torch.no_grad()
def decoded_scores(run: LoadedRun, task, examples: Sequence[Example], k: int, batch_size: int) -> torch.Tensor:
    """(n,) float: the task's scorer on the greedy answer after k pauses (the decode loop, as `generate`)."""
    every = run.pauses_before_each_answer_token
    max_new = max(len(run.tokenizer(e.answer, add_special_tokens=False)["input_ids"]) for e in examples) + 1
    scores = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        out = run.loaded.generate([e.prompt for e in chunk], urgency=0.0, policy=FixedPauses(k, every_token=every),
                                  max_new_tokens=max_new, max_pauses=k, first_token_pauses_only=not every)
        scores += [task.score(text, e.answer) for text, e in zip(out.texts, chunk)]
    return torch.tensor(scores, dtype=torch.float)


def evaluate_run(run: LoadedRun, tasks: Sequence[str], ks: Sequence[int], num_examples: int, seed: int,
                 batch_size: int, split: str = "test") -> dict:
    """{task label: {"n": n, "scorer": name, "by_k": {k: {"all": acc, "by_difficulty": {d: acc}}}}} on `split`."""
    results = {}
    for spec in tasks:
        task = get_task(spec)
        examples = task.examples(num_examples, seed, split)
        difficulty = torch.tensor([e.difficulty for e in examples])
        variants = [getattr(e, "variant", None) for e in examples]  # interruption variants (None: not interrupted)
        kinds = sorted({v for v in variants if v is not None})
        by_k = {}
        for k in ks:
            if task.scorer == "exact":  # teacher-forced: the same verdict as greedy decoding, in one pass
                correct = greedy_correct(run, examples, k, batch_size).float()
            else:
                correct = decoded_scores(run, task, examples, k, batch_size)
            by_k[k] = {
                "all": correct.mean().item(),
                "by_difficulty": {int(d): correct[difficulty == d].mean().item() for d in difficulty.unique()},
            }
            if kinds:
                by_k[k]["by_kind"] = {v: correct[[x == v for x in variants]].mean().item() for v in kinds}
        counts = {int(d): int((difficulty == d).sum()) for d in difficulty.unique()}
        results[task_label(spec, task)] = {"n": len(examples), "scorer": task.scorer, "n_by_difficulty": counts,
                                           "by_k": by_k}
        if kinds:
            results[task_label(spec, task)]["n_by_kind"] = {v: variants.count(v) for v in kinds}
    return results


def format_table(results: dict, control: dict | None = None) -> str:
    """Rows: task x (all, each difficulty, each interruption variant); columns: k (and the control at k = 0)."""
    any_task = next(iter(results.values()))
    ks = list(any_task["by_k"])
    head = ["task", "scorer", "difficulty", "n"] + [f"k={k}" for k in ks] + (["control k=0"] if control else [])
    rows = []
    for spec, res in results.items():
        buckets = [("all", None)] + [(d, "by_difficulty") for d in sorted(res["n_by_difficulty"])] + \
            [(v, "by_kind") for v in sorted(res.get("n_by_kind", {}))]
        for bucket, group in buckets:
            n = res["n"] if group is None else res["n_" + group][bucket]
            cells = [res["by_k"][k]["all"] if group is None else res["by_k"][k][group][bucket] for k in ks]
            label = f"kind={bucket}" if group == "by_kind" else str(bucket)
            row = [spec, res.get("scorer", "exact"), label, str(n)] + [f"{c:.3f}" for c in cells]
            if control:
                centry = control[spec]["by_k"][0]
                row.append(f"{(centry['all'] if group is None else centry[group][bucket]):.3f}")
            rows.append(row)
    return markdown_table(head, rows)


def split_note(split: str) -> str:
    """How a report names the split it read: training examples are never passed off as held-out."""
    if split == "train":
        return "split=train: TRAINING examples, not held out (these figures overstate held-out accuracy)"
    return f"split={split} (held out from training)"


def run_eval_pauses(config: EvalPausesConfig) -> dict:
    run = load_run(config.run_dir)
    tasks = config.tasks or run.config.get("tasks")
    if not tasks:
        raise ValueError(f"{config.run_dir}: no tasks given and none recorded in config.yaml; pass --tasks")
    results = evaluate_run(run, tasks, config.ks, config.num_examples, config.seed, config.batch_size, config.split)
    control = None
    if config.control_dir:
        control_run = load_run(config.control_dir)
        control = evaluate_run(control_run, tasks, [0], config.num_examples, config.seed, config.batch_size,
                               config.split)
    print(f"eval-pauses: {split_note(config.split)}")
    print(format_table(results, control))
    payload = {"run_dir": str(config.run_dir), "seed": config.seed, "split": config.split,
               "held_out": config.split != "train", "results": results}
    if control is not None:
        payload["control_dir"] = str(config.control_dir)
        payload["control"] = control
    output = Path(config.output) if config.output else Path(config.run_dir) / "eval_pauses.json"
    write_json_atomic(json.loads(json.dumps(payload)), output)
    print(f"eval-pauses: wrote {output}")
    return payload


def main(argv: list[str] | None = None) -> int:
    run_eval_pauses(parse_cli(EvalPausesConfig, argv, positional=("run_dir",), prog="adaptive-pause eval-pauses"))
    return 0
