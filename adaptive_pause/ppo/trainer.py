"""`adaptive-pause train-controller`: the PPO run loop under Accelerate.

Owns: building the reward, the head and the rollout source from a `PPOConfig`; the iteration loop
(urgencies drawn per episode or group, rollout, advantages, update, gathered metrics, tensorboard, the
analytic evaluation, periodic checkpoints, an exact `--resume`, the NaN stop with the last good checkpoint
kept), rollouts and updates split across processes; and the finished run directory (config.yaml,
controller/, state/, logs/, and for LM runs a loadable model/ + adapter/).

Must not: implement the algorithm (`algorithm.py`), a rollout source (`sources.py`), a decode loop, a
controller (`policies/`) or a reward (`rewards/`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from accelerate import PartialState
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from policies import PauseControllerHead, PausePlanningHead
from rewards import Reward, make_reward

from ..checkpoint import NonFiniteLossError, write_json_atomic
from ..config import load_yaml, parse_cli, save_yaml, to_dict
from ..envs.analytic import AnalyticModel, evaluate_analytic, format_analytic
from ..modeling import AdaptivePauseModel
from ..rundir import claim_run, identity
from ..tasks import data_record, get_task
from ..training.loop import make_accelerator, prepare, unsharded
from .algorithm import (JointEvaluation, PolicyEvaluation, Rollout, explained_variance, make_batch, ppo_update,
                        stop_if_diverged)
from .checkpoint import RESUMABLE_CHANGES, check_resumable, load_checkpoint, save_checkpoint
from .config import PPOConfig
from .outcome import train_outcome
from .sources import AnalyticSource, LMSource


def sample_urgency(config: PPOConfig, n: int, generator: torch.Generator) -> torch.Tensor:  # (n,)
    if config.urgency_distribution == "uniform":
        return config.urgency_low + (config.urgency_high - config.urgency_low) * torch.rand(n, generator=generator)
    values = torch.tensor(config.urgency_values, dtype=torch.float32)
    return values[torch.randint(len(values), (n,), generator=generator)]


URGENCY_BUCKETS = 5  # rollout metrics per urgency bucket [0, 0.2), ..., [0.8, 1]


def rollout_sums(rollout: Rollout, reward: Reward) -> torch.Tensor:
    """Per-process sums for gathered metrics; layout: see `rollout_metrics`. (5 + 3 * buckets,)"""
    urgency, score, pauses = rollout.urgency.cpu(), rollout.score.float().cpu(), rollout.pauses.float().cpu()
    episode_reward = reward.reward(score, pauses, urgency)  # (episodes,)
    bucket = (urgency * URGENCY_BUCKETS).long().clamp(max=URGENCY_BUCKETS - 1)
    one_hot = nn.functional.one_hot(bucket, URGENCY_BUCKETS).float()  # (episodes, buckets)
    head = torch.stack([
        torch.tensor(float(urgency.numel())), episode_reward.sum(), score.sum(), pauses.sum(),
        rollout.decision.sum().float().cpu(),
    ])
    return torch.cat([head, one_hot.sum(0), (one_hot * pauses[:, None]).sum(0),
                      (one_hot * episode_reward[:, None]).sum(0)])


def rollout_metrics(sums: torch.Tensor) -> dict[str, float]:
    episodes = sums[0].item()
    metrics = {"rollout/meta_reward": sums[1].item() / episodes, "rollout/accuracy": sums[2].item() / episodes,
               "rollout/pauses": sums[3].item() / episodes, "rollout/decisions": sums[4].item() / episodes}
    counts, pauses, rewards = sums[5:].view(3, URGENCY_BUCKETS)
    for b in range(URGENCY_BUCKETS):
        if counts[b] > 0:
            name = f"u{b / URGENCY_BUCKETS:.1f}-{(b + 1) / URGENCY_BUCKETS:.1f}"
            metrics[f"rollout/pauses_{name}"] = (pauses[b] / counts[b]).item()
            metrics[f"rollout/meta_reward_{name}"] = (rewards[b] / counts[b]).item()
    return metrics


def build_reward(config: PPOConfig) -> Reward:
    kwargs = {"deadline": {"min_budget": config.deadline_min_budget},
              "discounted": {"rate": config.discount_rate}}.get(config.reward, {})
    return make_reward(config.reward, config.reward_pause_normaliser(), **kwargs)


def build_policy(config: PPOConfig, hidden_size: int) -> PauseControllerHead:
    """The learned head (`controller`: per-step or planning); on the LM it also reads the top answer-token
    probability (the decode loop records it). With train_adapter its input hidden state is not detached: its
    gradient reaches the adapter."""
    if config.controller == "plan":
        return PausePlanningHead(hidden_size, max_count=config.max_pauses, width=config.head_width,
                                 pause_scale=float(max(config.pause_cap(), 1)), use_top_prob=True,
                                 detach_features=not config.train_adapter, prompt_summary=config.prompt_summary,
                                 initial_pause_prob=config.initial_pause_prob)
    return PauseControllerHead(hidden_size, width=config.head_width, pause_scale=float(max(config.pause_cap(), 1)),
                               use_top_prob=config.env == "lm", initial_pause_prob=config.initial_pause_prob,
                               detach_features=not config.train_adapter, prompt_summary=config.prompt_summary)


def build_source(config: PPOConfig, reward: Reward, device: torch.device):
    """(rollout source, analytic model or None) for `config.env`."""
    if config.env == "analytic":
        model = AnalyticModel(config.analytic)
        return AnalyticSource(model, reward), model
    lm = AdaptivePauseModel.from_pretrained(config.model_run_dir, device=device)
    source = LMSource(lm, [get_task(spec) for spec in config.tasks], config)
    if source.max_pauses_total != reward.max_pauses_total:
        raise ValueError(f"max_pauses_total: the decode loop's pause budget {source.max_pauses_total} differs from "
                         f"the reward's normaliser {reward.max_pauses_total}")
    return source, None


def train(config: PPOConfig) -> dict:
    """Run PPO as configured; returns the final evaluation (analytic) and counters. Raises NonFiniteLossError."""
    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    claim = claim_run(config.output_dir, "train-controller", identity(to_dict(config), RESUMABLE_CHANGES),
                      config.resume, config.overwrite)
    accelerator = make_accelerator(claim.work)
    try:
        result = _train(config, accelerator, claim.work)
        claim.finish()
        return result
    finally:
        claim.release()
        # Whether training finished or raised (a NaN loss and config errors are raised on every rank alike),
        # the process group goes before the interpreter: a rank exiting with a live gloo group aborts
        # ("terminate called without an active exception"). Destroying it twice is a no-op.
        accelerator.end_training()


def _train(config: PPOConfig, accelerator, run_dir: Path) -> dict:
    rank, world = accelerator.process_index, accelerator.num_processes
    if config.episodes_per_iteration % world:
        raise ValueError(f"episodes_per_iteration: {config.episodes_per_iteration} does not split evenly over "
                         f"{world} processes")
    if (config.episodes_per_iteration // world) % config.group_size:
        raise ValueError(f"group_size: {config.group_size} does not divide the {config.episodes_per_iteration // world} "
                         f"episodes per process (episodes_per_iteration {config.episodes_per_iteration} over {world})")
    if config.train_adapter and config.episodes_per_iteration // world < config.num_minibatches:
        raise ValueError(f"num_minibatches: train_adapter splits whole episodes, and {config.num_minibatches} "
                         f"minibatches need at least as many episodes per process, got "
                         f"{config.episodes_per_iteration // world}; raise episodes_per_iteration")
    if not config.resume and (run_dir / "state").exists():
        raise ValueError(f"output_dir: {run_dir} already holds a run (state/); pass --resume true to continue it, "
                         "or choose another output_dir")
    if config.resume:
        if not (run_dir / "config.yaml").is_file():
            raise ValueError(f"resume: {run_dir / 'config.yaml'} not found; nothing to resume from")
        check_resumable(load_yaml(PPOConfig, run_dir / "config.yaml"), config)
    if config.controller == "outcome":  # fitted by supervision on observed outcomes, not PPO
        return train_outcome(config, accelerator, run_dir)

    reward = build_reward(config)
    source, model = build_source(config, reward, accelerator.device)

    torch.manual_seed(config.seed)  # the same initial head on every process
    policy = build_policy(config, source.hidden_size)
    lm = source.model.lm if config.train_adapter else None  # joint LoRA training: the LM is in the loss
    if lm is None:
        evaluator = PolicyEvaluation(policy)
        groups = [{"params": list(policy.parameters()), "lr": config.learning_rate}]
    else:
        evaluator = JointEvaluation(policy, lm, source.model.settings.pause_id)
        groups = [{"params": list(policy.parameters()), "lr": config.learning_rate},
                  {"params": [param for _, param in source.adapter_parameters()], "lr": config.adapter_learning_rate}]
    base_lrs = [group["lr"] for group in groups]
    optimizer = torch.optim.Adam(groups, eps=1e-5)
    evaluator, optimizer = prepare(accelerator, evaluator, optimizer)
    policy = accelerator.unwrap_model(evaluator).policy
    generators = {"rollout": torch.Generator().manual_seed(config.seed * 1000 + 2 * rank + 1),
                  "update": torch.Generator().manual_seed(config.seed * 1000 + 2 * rank + 2)}

    trainer = {"iteration": 0, "episodes": 0, "decisions": 0, "elapsed_s": 0.0, "num_processes": world,
               "last_good_iteration": 0}
    if config.resume:
        trainer = load_checkpoint(run_dir, policy, evaluator, optimizer, generators, accelerator, lm)
        if accelerator.is_main_process:
            print(f"train-controller: resuming from {run_dir / 'state'} at iteration {trainer['iteration']}",
                  flush=True)
    if accelerator.is_main_process:
        save_yaml(config, run_dir / "config.yaml")
    writer = SummaryWriter(str(run_dir / "logs"), purge_step=trainer["iteration"] + 1) \
        if accelerator.is_main_process else None
    local_episodes = config.episodes_per_iteration // world

    start_iteration = trainer["iteration"]
    start_time = time.perf_counter() - trainer["elapsed_s"]
    bar = tqdm(total=config.iterations, initial=start_iteration, desc="ppo", dynamic_ncols=True,
               disable=not (config.progress and accelerator.is_main_process))
    evaluation: list[dict] = []
    metrics: dict[str, float] = {}  # the last iteration's (empty when resuming a finished run)
    try:
        for iteration in range(start_iteration + 1, config.iterations + 1):
            iteration_start = time.perf_counter()
            fraction = 1 - (iteration - 1) / config.iterations if config.anneal_lr else 1.0
            lr = config.learning_rate * fraction
            for group, base_lr in zip(optimizer.param_groups, base_lrs):  # the head's, then the adapter's
                group["lr"] = base_lr * fraction

            group = config.group_size  # one urgency per group of episodes (rloo); 1: per episode
            urgency = sample_urgency(config, local_episodes // group, generators["rollout"]).repeat_interleave(group)
            with unsharded(evaluator):  # FSDP2: the decode loop runs the LM and head outside their forward
                rollout = source.collect(policy, urgency, generators["rollout"])
            batch = make_batch(rollout, reward, config.gamma, config.gae_lambda, config.advantage, group)
            sums = accelerator.reduce(rollout_sums(rollout, reward).to(accelerator.device), "sum").cpu()
            stop_if_diverged({"reward": sums[1], "advantages": batch.advantages, "value estimates": batch.values,
                              "policy log-probs": rollout.action_log_probs}, accelerator, f"iteration {iteration}")
            ev = explained_variance(batch.values, batch.returns)
            stats = ppo_update(evaluator, optimizer, batch, config, generators["update"], accelerator,
                               where=f"iteration {iteration}")

            metrics = rollout_metrics(sums)
            metrics.update({f"losses/{k}": v for k, v in stats.items() if k != "update_epochs"})
            metrics["losses/explained_variance"] = ev
            trainer["iteration"] = iteration
            trainer["episodes"] += int(sums[0].item())
            trainer["decisions"] += int(sums[4].item())
            trainer["elapsed_s"] = time.perf_counter() - start_time
            metrics.update({"charts/learning_rate": lr, "charts/update_epochs": stats["update_epochs"],
                            "charts/episodes": trainer["episodes"],
                            "charts/episodes_per_s": sums[0].item() / (time.perf_counter() - iteration_start)})
            if (iteration % config.eval_every == 0 or iteration == config.iterations) and model is not None:
                with unsharded(evaluator):
                    evaluation = evaluate_analytic(policy, model, reward, config.eval_urgencies) \
                        if accelerator.is_main_process else []
                if evaluation:
                    for row in evaluation:
                        metrics[f"eval/fraction_of_optimum_u{row['urgency']:.2f}"] = row["fraction_of_optimum"]
                        metrics[f"eval/meta_reward_u{row['urgency']:.2f}"] = row["greedy"]
                    metrics["eval/min_fraction_of_optimum"] = min(r["fraction_of_optimum"] for r in evaluation)
            if writer is not None:
                for key, value in metrics.items():
                    writer.add_scalar(key, value, iteration)
            postfix = {"reward": f"{metrics['rollout/meta_reward']:.3f}", "pauses": f"{metrics['rollout/pauses']:.2f}",
                       "kl": f"{metrics['losses/approx_kl']:.4f}"}
            if lm is not None:
                postfix.update(acc=f"{metrics['rollout/accuracy']:.3f}", kl_ref=f"{metrics['losses/kl_ref']:.4f}")
            bar.set_postfix(**postfix)
            bar.update(1)
            if not config.progress and accelerator.is_main_process and (
                    iteration % config.eval_every == 0 or iteration == config.iterations):
                print(f"train-controller: iteration {iteration}/{config.iterations} "
                      + " ".join(f"{k}={v}" for k, v in postfix.items()), flush=True)
            if iteration % config.checkpoint_every == 0 or iteration == config.iterations:
                trainer["last_good_iteration"] = iteration
                _record_data(config, accelerator, run_dir, source)  # before the state: a kill between redraws them
                save_checkpoint(run_dir, policy, evaluator, optimizer, generators, dict(trainer),
                                accelerator, lm)
    except NonFiniteLossError as error:
        last = trainer["last_good_iteration"]
        kept = f"{run_dir / 'state'} (iteration {last})" if last else "none (no checkpoint was written yet)"
        raise NonFiniteLossError(f"{error}; training stopped; the last good checkpoint is {kept}, left intact") from None
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    with unsharded(evaluator):  # FSDP2: full weights for the evaluation and the check (a no-op elsewhere)
        if not evaluation and model is not None and accelerator.is_main_process:  # e.g. resuming a finished run
            evaluation = evaluate_analytic(policy, model, reward, config.eval_urgencies)
        # DDP keeps the replicas identical; check it rather than trust it (cheap: one gather of a small head,
        # and of the adapter when it is trained).
        trained_tensors = list(policy.parameters()) + ([] if lm is None else
                                                       [p for _, p in source.adapter_parameters()])
        flat = torch.cat([p.detach().flatten().to(accelerator.device) for p in trained_tensors])[None]
        replicas = accelerator.gather(flat)  # (processes, parameters)
        in_sync = bool((replicas == replicas[:1]).all())
    saved = {}  # under FSDP2 the saves below read gathered weights: a shard's state dict is a collective
    if accelerator.is_fsdp2:
        full = get_model_state_dict(evaluator, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        part = lambda prefix: {k.removeprefix(prefix): v for k, v in full.items() if k.startswith(prefix)}  # noqa: E731
        saved = {"policy_state_dict": part("policy."), "state_dict": part("lm.") or None}
    result = {"trainer": trainer, "evaluation": evaluation, "num_processes": world, "replicas_in_sync": in_sync,
              "metrics": metrics}  # the last iteration's gathered scalars
    if accelerator.is_main_process:
        if isinstance(source, LMSource):  # make run_dir a loadable AdaptivePauseModel: model/, adapter/, controller/
            # the run's urgency estimator (if any) reads the same LM: it comes along, for generate(urgency="auto")
            trained = AdaptivePauseModel(source.model.lm, source.model.tokenizer, policy,
                                         urgency_estimator=source.model.urgency_estimator)
            # the pause settings the controller was trained under: generate and sweep decode with them by default
            trained.trained_decode = {"max_pauses": config.max_pauses, "max_pauses_total": config.max_pauses_total,
                                      "first_token_pauses_only": config.first_token_pauses_only}
            trained.save_pretrained(run_dir, **saved)
        write_json_atomic(result, run_dir / "result.json")
    _record_data(config, accelerator, run_dir, source)
    accelerator.wait_for_everyone()  # every rank waits for the main one's saves; `train` then tears down
    return result


def _record_data(config: PPOConfig, accelerator, run_dir: Path, source) -> None:
    """run_dir/data.json: the file-backed examples every process drew so far, joined with those an earlier part
    of the run recorded (every process calls it: each draws its own episodes; the main one writes)."""
    if not isinstance(source, LMSource):
        return
    seen = source.seen
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object([{name: sorted(ids) for name, ids in seen.items()}])
        seen = {name: set().union(*(part.get(name, []) for part in parts)) for name in seen}
    if accelerator.is_main_process:
        write_json_atomic(data_record("train-controller", "dev", list(config.tasks), source.tasks,
                                      _with_earlier(run_dir, seen)), run_dir / "data.json")


def _with_earlier(run_dir: Path, seen: dict[str, set[str]]) -> dict[str, set[str]]:
    """`seen` joined with the ids an earlier part of this run recorded (a resumed run saw both)."""
    try:
        earlier = json.loads((run_dir / "data.json").read_text())["tasks"]
    except (OSError, ValueError, KeyError, TypeError):
        return seen
    return {name: ids | set(earlier.get(name, {}).get("example_ids", [])) for name, ids in seen.items()}


def main(argv: list[str] | None = None) -> int:
    config = parse_cli(PPOConfig, argv, prog="adaptive-pause train-controller")
    try:
        result = train(config)
    except NonFiniteLossError as error:
        print(f"adaptive-pause train-controller: error: {error}", file=sys.stderr)
        return 1
    if result.get("controller") == "outcome":
        return 0  # train_outcome printed its held-out line
    if PartialState().is_main_process and result["evaluation"]:
        rows = result["evaluation"]
        print(format_analytic(rows))
        minutes = result["trainer"]["elapsed_s"] / 60
        print(f"trained {result['trainer']['iteration']} iterations, {result['trainer']['episodes']} episodes, "
              f"{minutes:.2f} min on {result['num_processes']} process(es)")
        print(f"analytic: min_fraction_of_optimum={min(r['fraction_of_optimum'] for r in rows):.4f}")
    elif PartialState().is_main_process:  # an LM run: its last iteration's gathered figures, one line
        metrics, trainer = result["metrics"], result["trainer"]
        figures = " ".join(f"{key.split('/')[-1]}={metrics[key]:.3f}" for key in
                           ("rollout/meta_reward", "rollout/accuracy", "rollout/pauses") if key in metrics)
        print(f"train-controller: done iterations={trainer['iteration']} episodes={trainer['episodes']} {figures} "
              f"minutes={trainer['elapsed_s'] / 60:.2f} split=dev")
    return 0
