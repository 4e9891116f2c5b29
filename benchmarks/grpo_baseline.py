"""What a user would pick instead: TRL GRPO with pause-as-token, beside our controller PPO (issue 18).

Both start from the same pause-finetuned model (`--model_run_dir`, or the demo's pretrain + finetune
stages run here), get the same wall-clock budget and threads, and are scored on the same held-out
examples at the same urgencies. Ours: the shipped demo controller recipe (frozen LM, head-only PPO),
its iterations capped to fit the budget (timed on a probe run), evaluated by `sweep.run_sweep`. GRPO:
TRL's `GRPOTrainer` with a fresh LoRA over the merged finetuned LM, which emits `<pause>` itself; the
urgency is a prompt prefix (`u0.25 `) and a dataset column for `rewards.MetaReward`; it trains for the
budget (at least as long as ours took) and is evaluated by greedy `generate`.
Prints a table, writes OUT/grpo_baseline.{json,png}, ends with `grpo_baseline: ours_episodes_per_s=A
grpo_episodes_per_s=B speed_ratio=A/B ours_mean_meta_reward=C grpo_mean_meta_reward=D`.
Must not: re-implement GRPO, the reward or our recipe: it configures TRL and calls our stages.

Usage: python benchmarks/grpo_baseline.py [--model_run_dir RUN] [--budget_s 540] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
URGENCIES = [0.0, 0.25, 0.5, 0.75, 1.0]
PROBE_ITERATIONS = 8  # PPO iterations timed to fit the recipe into the budget
CAPPED_PAUSE_LOGIT = -1e4  # finite, so that TRL's entropy (p * log p) stays 0 rather than NaN


def urgency_prompt(prompt: str, urgency: float) -> str:
    """The prompt with its urgency as a prefix the LM can learn to read (fixed width: `u0.25 `)."""
    if not (isinstance(urgency, (int, float)) and math.isfinite(urgency) and 0 <= urgency <= 1):
        raise ValueError(f"urgency: must be a number in [0, 1], got {urgency!r}")
    return f"u{urgency:.2f} {prompt}"


# ---------------------------------------------------------------------------
# The LM's own pause rules, for a trainer that calls a plain HF forward
# ---------------------------------------------------------------------------


class PauseRules:
    """Makes a plain `forward` / `generate` honour the model's pause settings, as TRL calls them.

    A pre-hook on the decoder fills `position_ids` from the model's numbering (`positions.position_ids`,
    the collators' rule: a slotted model would otherwise see contiguous positions it was never trained
    on), and a hook on the output layer makes `<pause>` unavailable once a row holds `max_pauses_total`
    pauses (the pause budget: at the cap the step is an emit). TRL 1.16 scores log-probs with a fused head
    that reads the output weights directly, so there the cap holds in sampling, not in the scored log-probs.
    Positions need whole sequences, so generation must run with `use_cache=False` (a cached step is refused).
    """

    def __init__(self, lm, pause_id: int, numbering: str, pause_slots: int, max_pauses_total: int):
        if max_pauses_total < 1:
            raise ValueError(f"max_pauses_total: must be >= 1, got {max_pauses_total}")
        self.pause_id, self.numbering, self.pause_slots = pause_id, numbering, pause_slots
        self.max_pauses_total = max_pauses_total
        self._pauses_so_far: torch.Tensor | None = None  # (batch, seq), set by the decoder hook
        self.handles = [
            lm.get_decoder().register_forward_pre_hook(self._number, with_kwargs=True),
            lm.get_output_embeddings().register_forward_hook(self._cap),
        ]

    def _number(self, module, args, kwargs):
        from adaptive_pause.positions import position_ids

        input_ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if input_ids is None:
            raise ValueError("PauseRules: the decoder was called without input_ids; positions need the tokens")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers 5 names it `cache`
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError("PauseRules: a cached step sees only the new tokens; generate with use_cache=False")
        if mask is None:  # generate drops an all-ones mask
            mask = torch.ones_like(input_ids)
        if mask.shape != input_ids.shape:
            raise ValueError(f"PauseRules: needs the 2-D attention mask of the tokens, got {tuple(mask.shape)}")
        kwargs["position_ids"] = position_ids(input_ids, mask, self.pause_id, self.numbering, self.pause_slots)
        self._pauses_so_far = ((input_ids == self.pause_id) & mask.bool()).long().cumsum(-1)
        return args, kwargs

    def _cap(self, module, inputs, logits):  # logits: (batch, kept, vocab), the last `kept` positions
        at_cap = self._pauses_so_far[:, -logits.shape[1]:] >= self.max_pauses_total  # (batch, kept)
        column = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        column[self.pause_id] = True
        return logits.masked_fill(at_cap[..., None] & column, CAPPED_PAUSE_LOGIT)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


# ---------------------------------------------------------------------------
# GRPO: data, reward, trainer
# ---------------------------------------------------------------------------


def grpo_dataset(task_specs: list[str], n: int, seed: int):
    """`n` training prompts with u ~ uniform[0, 1] (rounded as shown), as ours draws them: columns
    prompt (with the urgency prefix), urgency, answer, task."""
    from datasets import Dataset

    from adaptive_pause.tasks import get_task

    tasks = [get_task(spec) for spec in task_specs]
    rng = random.Random(f"grpo_baseline:train:{seed}")
    rows = []
    for _ in range(n):
        index = rng.randrange(len(tasks))
        example = tasks[index].sample(rng)
        urgency = round(rng.random(), 2)  # the reward sees the urgency the LM reads
        rows.append({"prompt": urgency_prompt(example.prompt, urgency), "urgency": urgency,
                     "answer": example.answer, "task": task_specs[index]})
    return Dataset.from_list(rows)


class MetaRewardFunction:
    """TRL reward function: `rewards.MetaReward` of each completion; counts the episodes it scores.

    The score comes from the task's scorer on the completion's text (TRL decodes without special tokens,
    so `<pause>` and EOS are gone); the pauses are counted in `completion_ids`.
    """

    __name__ = "meta_reward"  # TRL logs rewards/<name>

    def __init__(self, task_specs: list[str], pause_id: int, max_pauses_total: int):
        from rewards import MetaReward

        from adaptive_pause.tasks import get_task

        self.tasks = {spec: get_task(spec) for spec in task_specs}
        self.pause_id = pause_id
        self.reward = MetaReward(max_pauses_total)
        self.episodes = 0

    def __call__(self, completions, completion_ids, urgency, answer, task, **kwargs) -> list[float]:
        score = torch.tensor([self.tasks[spec].score(text, target)
                              for text, target, spec in zip(completions, answer, task)], dtype=torch.float)
        pauses = torch.tensor([list(ids).count(self.pause_id) for ids in completion_ids])
        self.episodes += len(completions)
        return self.reward.reward(score, pauses, torch.tensor(urgency, dtype=torch.float)).tolist()


def build_grpo_trainer(lm, tokenizer, lora, dataset, reward_function, output_dir: str, budget_s: float,
                       max_completion_length: int, **grpo_args):
    """TRL's GRPOTrainer over `lm` + a fresh LoRA (`lora`: a peft LoraConfig), stopped after `budget_s` seconds
    of training. `grpo_args` are GRPOConfig fields. Returns (trainer, pause rules)."""
    from peft import get_peft_model
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from adaptive_pause.modeling import pause_settings

    if not (math.isfinite(budget_s) and budget_s > 0):
        raise ValueError(f"budget_s: must be a positive number of seconds, got {budget_s}")
    settings = pause_settings(lm, tokenizer)
    model = get_peft_model(lm, lora)
    rules = PauseRules(model, settings.pause_id, settings.numbering, settings.pause_slots,
                       reward_function.reward.max_pauses_total)

    class WallClockBudget(TrainerCallback):
        """Stops training once `budget_s` seconds have passed since it began."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if time.perf_counter() - self.started >= budget_s:
                control.should_training_stop = True

    defaults = dict(max_steps=1_000_000, lr_scheduler_type="constant", report_to="none", save_strategy="no",
                    use_cpu=not torch.cuda.is_available(), disable_tqdm=True, logging_steps=10,
                    generation_kwargs={"use_cache": False})  # PauseRules numbers whole sequences
    config = GRPOConfig(output_dir=output_dir, max_completion_length=max_completion_length,
                        **{**defaults, **grpo_args})
    trainer = GRPOTrainer(model=model, reward_funcs=reward_function, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[WallClockBudget()])
    return trainer, rules


@torch.no_grad()
def evaluate_pause_as_token(lm, tokenizer, task_spec: str, examples, urgencies: list[float], max_pauses_total: int,
                            max_new_tokens: int, batch_size: int = 500) -> list[dict]:
    """Greedy `generate` of an LM that emits `<pause>` itself (under PauseRules), scored like the sweep."""
    from adaptive_pause.eval.sweep import ALL, _summarise
    from adaptive_pause.tasks import get_task

    task = get_task(task_spec)
    pause_id, eos_id = tokenizer.convert_tokens_to_ids("<pause>"), tokenizer.eos_token_id
    lm.eval()
    rows = []
    for u in urgencies:
        scores, pauses, ms = [], [], []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            batch = tokenizer([urgency_prompt(e.prompt, u) for e in chunk], add_special_tokens=False,
                              padding=True, padding_side="left", return_tensors="pt").to(lm.device)
            started = time.perf_counter()
            out = lm.generate(**batch, do_sample=False, max_new_tokens=max_pauses_total + max_new_tokens,
                              use_cache=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos_id)
            elapsed_ms = (time.perf_counter() - started) * 1000 / len(chunk)
            completion = out[:, batch["input_ids"].shape[1]:].cpu()  # (rows, steps)
            is_eos = completion == eos_id
            # steps up to the first EOS (all of them when none)
            before_end = (is_eos.long().cumsum(-1) - is_eos.long()) == 0
            pauses += ((completion == pause_id) & before_end).sum(-1).tolist()
            texts = tokenizer.batch_decode(completion.masked_fill(~before_end, tokenizer.pad_token_id),
                                           skip_special_tokens=True)
            scores += [task.score(text, e.answer) for text, e in zip(texts, chunk)]
            ms += [elapsed_ms] * len(chunk)
        row = {"task": task_spec, "urgency": float(u), "difficulty": ALL}
        row.update(_summarise(torch.tensor(scores, dtype=torch.float), torch.tensor(pauses), torch.tensor(ms),
                              float(u), max_pauses_total))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# The two arms
# ---------------------------------------------------------------------------


def _packaged(stage: str) -> dict:
    from adaptive_pause.demo import _stage_yaml

    return _stage_yaml(None, stage)


def build_model(out: Path, seed: int) -> Path:
    """The demo's pretrain + finetune stages into OUT/model/; a finished finetune there is reused."""
    from adaptive_pause.config import from_dict
    from adaptive_pause.training.finetune import FinetuneConfig, run_finetune
    from adaptive_pause.training.pretrain import PretrainConfig, run_pretrain

    finetune_dir = out / "model" / "finetune"
    if (finetune_dir / "adapter").is_dir() and (finetune_dir / "model").is_dir():
        print(f"grpo_baseline: reusing the finetuned model in {finetune_dir}", flush=True)
        return finetune_dir
    common = {"seed": seed, "progress": False}
    run_pretrain(from_dict(PretrainConfig, {**_packaged("pretrain"), **common,
                                            "output_dir": str(out / "model" / "pretrain")}))
    run_finetune(from_dict(FinetuneConfig, {**_packaged("finetune"), **common, "output_dir": str(finetune_dir),
                                            "base_model": str(out / "model" / "pretrain")}))
    return finetune_dir


def train_ours(model_run_dir: Path, out: Path, budget_s: float, seed: int, threads: int, overrides: dict) -> dict:
    """The shipped controller recipe, its iterations capped to fit `budget_s` (timed on a probe run)."""
    from adaptive_pause.config import from_dict
    from adaptive_pause.ppo.config import PPOConfig
    from adaptive_pause.ppo.trainer import train

    data = {**_packaged("controller"), "seed": seed, "progress": False, "env": "lm", "torch_threads": threads,
            "model_run_dir": str(model_run_dir), "output_dir": str(out / "ours"), **overrides}
    probe = train(from_dict(PPOConfig, {**data, "iterations": PROBE_ITERATIONS, "output_dir": str(out / "ours_probe"),
                                        "checkpoint_every": PROBE_ITERATIONS}))
    seconds_per_iteration = probe["trainer"]["elapsed_s"] / PROBE_ITERATIONS
    iterations = max(1, min(data["iterations"], int(budget_s / seconds_per_iteration)))
    print(f"grpo_baseline: ours: {seconds_per_iteration:.3f} s per PPO iteration on the probe; "
          f"{iterations} of the recipe's {data['iterations']} iterations fit {budget_s:.0f} s", flush=True)
    result = train(from_dict(PPOConfig, {**data, "iterations": iterations}))
    return {"run_dir": str(out / "ours"), "iterations": iterations, "recipe_iterations": data["iterations"],
            "probe_seconds_per_iteration": seconds_per_iteration, "train_s": result["trainer"]["elapsed_s"],
            "episodes": result["trainer"]["episodes"], "config": data}


def train_grpo(model_run_dir: Path, out: Path, budget_s: float, seed: int, overrides: dict) -> dict:
    from adaptive_pause.config import from_dict
    from adaptive_pause.training.finetune import FinetuneConfig, lora_config
    from adaptive_pause.modeling import AdaptivePauseModel, pause_settings

    recipe = _packaged("controller")
    merged = AdaptivePauseModel.from_pretrained(model_run_dir, merge_adapter=True)  # the finetuned LM, plain HF
    lm, tokenizer = merged.lm, merged.tokenizer
    pause_id = pause_settings(lm, tokenizer).pause_id
    # The finetune stage's LoRA (rank, alpha, targets), fresh on the merged model, without its trainable
    # <pause> row: TRL's fused LM head reads `lm_head.bias`, which peft's tied TrainableTokensWrapper lacks.
    lora = lora_config(from_dict(FinetuneConfig, {**_packaged("finetune"), "base_model": str(model_run_dir)}),
                       pause_id)
    lora.trainable_token_indices = None
    grpo_args = {"learning_rate": 1e-3, "num_generations": 8, "per_device_train_batch_size": 64, "beta": 0.0,
                 "temperature": 1.0, "seed": seed, **overrides}
    reward_function = MetaRewardFunction(recipe["tasks"], pause_id, recipe["max_pauses_total"])
    # More prompts than the budget can use: the callback, not the data, ends training.
    dataset = grpo_dataset(recipe["tasks"], 200_000, seed)
    trainer, rules = build_grpo_trainer(lm, tokenizer, lora, dataset, reward_function, str(out / "grpo"), budget_s,
                                        recipe["max_pauses_total"] + recipe["max_new_tokens"], **grpo_args)
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    return {"trainer": trainer, "tokenizer": tokenizer, "rules": rules, "train_s": train_s,
            "episodes": reward_function.episodes, "steps": trainer.state.global_step,
            "grpo_args": {k: v for k, v in grpo_args.items()}, "log_history": trainer.state.log_history}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def plot(ours: list[dict], fixed: list[dict], grpo: list[dict], grpo_start: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    by_k = sorted({(int(r["param"]), r["mean_pauses"], r["accuracy"]) for r in fixed})
    left.plot([k[1] for k in by_k], [k[2] for k in by_k], "s--", color="grey", label="fixed k (the finetuned LM)")
    for rows, style, label in ((ours, "o-", "ours: controller PPO"), (grpo, "D-", "TRL GRPO, pause-as-token"),
                               (grpo_start, "x:", "pause-as-token before GRPO")):
        left.plot([r["mean_pauses"] for r in rows], [r["accuracy"] for r in rows], style, label=label)
        for r in rows:
            left.annotate(f"u={r['urgency']:g}", (r["mean_pauses"], r["accuracy"]), textcoords="offset points",
                          xytext=(4, 4), fontsize=7)
        right.plot([r["urgency"] for r in rows], [r["meta_reward"] for r in rows], style, label=label)
    best_fixed = [max(r["meta_reward"] for r in fixed if r["urgency"] == u) for u in [r["urgency"] for r in ours]]
    right.plot([r["urgency"] for r in ours], best_fixed, "s--", color="grey", label="best fixed k at each u")
    left.set(xlabel="mean pauses per answer", ylabel="accuracy", title="accuracy vs delay (held-out)")
    right.set(xlabel="urgency u", ylabel="meta-reward", title="meta-reward per urgency (held-out)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_run_dir", default=None,
                        help="a finetune run directory (model/ + adapter/); empty: build the demo's into OUT/model")
    parser.add_argument("--out", default=str(ROOT / "runs/grpo_baseline"))
    parser.add_argument("--budget_s", type=float, default=540.0,
                        help="training wall clock of each arm, seconds (GRPO gets at least what ours used)")
    parser.add_argument("--urgencies", type=float, nargs="+", default=URGENCIES)
    parser.add_argument("--num_examples", type=int, default=500, help="held-out examples")
    parser.add_argument("--eval_seed", type=int, default=1_000_003, help="seed of the held-out examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each arm (ours' default)")
    parser.add_argument("--ppo", nargs="*", default=[], help="controller PPO overrides key=value")
    parser.add_argument("--grpo", nargs="*", default=[], help="GRPOConfig overrides key=value")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.budget_s) and args.budget_s > 0):
        raise ValueError(f"budget_s: must be a positive number of seconds, got {args.budget_s}")
    if not all(0 <= u <= 1 for u in args.urgencies):
        raise ValueError(f"urgencies: must lie in [0, 1], got {args.urgencies}")
    if args.num_examples < 1 or args.threads < 1:
        raise ValueError(f"num_examples, threads: must be >= 1, got {args.num_examples}, {args.threads}")
    out = Path(args.out)
    for part in ("ours", "ours_probe", "grpo"):
        if (out / part).exists():
            raise ValueError(f"out: {out / part} exists (an earlier run); choose another --out, and pass "
                             f"--model_run_dir {out / 'model' / 'finetune'} to reuse its model")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model_run_dir = Path(args.model_run_dir) if args.model_run_dir else build_model(out, args.seed)
    build_s = time.perf_counter() - started

    from adaptive_pause.eval.sweep import ALL, SweepConfig, run_sweep
    from adaptive_pause.eval.tables import markdown_table
    from adaptive_pause.tasks import get_task

    ours = train_ours(model_run_dir, out, args.budget_s, args.seed, args.threads, _parse_overrides(args.ppo))
    recipe = ours["config"]
    grpo_budget = max(args.budget_s, ours["train_s"])
    grpo = train_grpo(model_run_dir, out, grpo_budget, args.seed, _parse_overrides(args.grpo))
    torch.set_num_threads(args.threads)  # the trainers may have changed it

    eval_started = time.perf_counter()
    sweep = SweepConfig(run_dir=ours["run_dir"], urgencies=list(args.urgencies), num_examples=args.num_examples,
                        fixed_ks=[0, 1, 2, 4, 8, 16], confidence_high=-1.0, random_ps=[], max_pauses=recipe["max_pauses"],
                        max_pauses_total=recipe["max_pauses_total"],
                        first_token_pauses_only=recipe["first_token_pauses_only"], seed=args.eval_seed, progress=False)
    swept = [r for r in run_sweep(sweep) if r["difficulty"] == ALL]
    ours_rows = [r for r in swept if r["policy"] == "learned"]
    fixed_rows = [r for r in swept if r["policy"] == "fixed"]
    task_spec = recipe["tasks"][0]
    examples = get_task(task_spec).examples(args.num_examples, args.eval_seed)  # the sweep's held-out examples
    eval_args = (task_spec, examples, list(args.urgencies), recipe["max_pauses_total"], recipe["max_new_tokens"])
    model = grpo["trainer"].model
    grpo_rows = evaluate_pause_as_token(model, grpo["tokenizer"], *eval_args)
    with model.disable_adapter():  # the same LM before GRPO: what pause-as-token starts from
        start_rows = evaluate_pause_as_token(model, grpo["tokenizer"], *eval_args)
    eval_s = time.perf_counter() - eval_started

    head = ["u", "ours acc", "ours pauses", "ours meta", "GRPO acc", "GRPO pauses", "GRPO meta",
            "before-GRPO acc", "before-GRPO pauses", "best fixed k meta"]
    body = []
    for mine, theirs, before in zip(ours_rows, grpo_rows, start_rows):
        u = mine["urgency"]
        best = max((r for r in fixed_rows if r["urgency"] == u), key=lambda r: r["meta_reward"])
        body.append([f"{u:.2f}", f"{mine['accuracy']:.3f}", f"{mine['mean_pauses']:.2f}", f"{mine['meta_reward']:+.3f}",
                     f"{theirs['accuracy']:.3f}", f"{theirs['mean_pauses']:.2f}", f"{theirs['meta_reward']:+.3f}",
                     f"{before['accuracy']:.3f}", f"{before['mean_pauses']:.2f}",
                     f"{best['meta_reward']:+.3f} (k={best['param']})"])
    print(markdown_table(head, body))
    ours_eps = ours["episodes"] / ours["train_s"]
    grpo_eps = grpo["episodes"] / grpo["train_s"]
    ours_meta = sum(r["meta_reward"] for r in ours_rows) / len(ours_rows)
    grpo_meta = sum(r["meta_reward"] for r in grpo_rows) / len(grpo_rows)
    print(f"ours: {ours['iterations']} PPO iterations, {ours['episodes']} episodes in {ours['train_s']:.0f} s; "
          f"GRPO: {grpo['steps']} steps, {grpo['episodes']} episodes in {grpo['train_s']:.0f} s "
          f"(budget {args.budget_s:.0f} s each; GRPO's {grpo_budget:.0f} s); model build {build_s:.0f} s, "
          f"evaluation {eval_s:.0f} s, wall {time.perf_counter() - started:.0f} s")

    out.mkdir(parents=True, exist_ok=True)
    plot(ours_rows, fixed_rows, grpo_rows, start_rows, out / "grpo_baseline.png")
    report = {
        "model_run_dir": str(model_run_dir), "budget_s": args.budget_s, "grpo_budget_s": grpo_budget,
        "threads": args.threads, "num_examples": args.num_examples, "eval_seed": args.eval_seed, "seed": args.seed,
        "build_s": build_s, "eval_s": eval_s, "wall_s": time.perf_counter() - started,
        "ours": {k: v for k, v in ours.items()}, "ours_rows": ours_rows, "fixed_rows": fixed_rows,
        "grpo": {k: v for k, v in grpo.items() if k not in ("trainer", "tokenizer", "rules")},
        "grpo_rows": grpo_rows, "before_grpo_rows": start_rows,
        "ours_episodes_per_s": ours_eps, "grpo_episodes_per_s": grpo_eps,
        "ours_mean_meta_reward": ours_meta, "grpo_mean_meta_reward": grpo_meta,
    }
    (out / "grpo_baseline.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out / 'grpo_baseline.json'} and {out / 'grpo_baseline.png'}")
    print(f"grpo_baseline: ours_episodes_per_s={ours_eps:.1f} grpo_episodes_per_s={grpo_eps:.1f} "
          f"speed_ratio={ours_eps / grpo_eps:.1f} ours_mean_meta_reward={ours_meta:.3f} "
          f"grpo_mean_meta_reward={grpo_meta:.3f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
