"""Speed of the one decode loop against `transformers`' `model.generate`, on the same model, prompts and tokens.

What is compared, per batch size (1, 16, 64 by default):
- `hf`: `model.generate` on left-padded prompt + k `<pause>` tokens, greedy, KV cache, `<pause>` suppressed.
- `ours`: `AdaptivePauseModel.generate` with the *learned* head (`PauseControllerHead`, consulted at every
  step) set to always pause, `max_pauses = max_pauses_total = k`: so it writes exactly k pauses, then
  answers: the same tokens as `hf` (checked: `same_tokens`), one forward pass per token.
- `ours_spec`: the same learned head with `speculate_pauses=k`: when the head pauses, up to k pauses are
  prefilled in one pass and kept as far as the head confirms them (decisions identical to pause by pause;
  here every speculated pause is confirmed, so no compute is wasted: the best case of speculation).
- `ours_chunked`: `FixedPauses(k)` with `chunk_pauses=True`: the k known pauses are prefilled in one forward
  pass. Same tokens (compute), fewer sequential forward passes (latency).

Tokens per second count every token the model processes: prompt + pauses + answer tokens (EOS included).
Each figure is the median over `--repeats` timed runs after one warm-up; `hf` and `ours` alternate within a
repeat so that load from other processes hits both alike. Position numbering is `contiguous` (the only one HF
`generate` can reproduce).

Prints a table, writes JSON, and ends with one line:
`bench_generate: device=D ratio_b1=X ratio_b16=Y ratio_b64=Z` (ours / hf tokens per second, ours = the learned
head deciding pause by pause: k more sequential passes than hf, which prefills the k pauses with the prompt),
followed by the same ratios for `ours_spec` in `spec_ratio_b...` keys.

Must not: benchmark quality (that is the sweeps), or use a second decode loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from adaptive_pause.modeling import AdaptivePauseModel, ModelConfig, load_lm
from adaptive_pause.tasks import get_task
from policies import FixedPauses, PauseControllerHead


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--k", type=int, default=4, help="pauses before the answer")
    p.add_argument("--max_new_tokens", type=int, default=32, help="answer tokens per row")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (median reported)")
    p.add_argument("--task", default="addition:1-3", help="where the prompts come from")
    p.add_argument("--hidden_size", type=int, default=128, help="tiny model width (embedded default: 128)")
    p.add_argument("--num_layers", type=int, default=2, help="tiny model depth")
    p.add_argument("--model", default=None, help="an HF model id or directory instead of the tiny model")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--clock", default="wall", choices=["wall", "process"],
                   help="wall: perf_counter (what a user waits); process: this process's CPU time, robust on a CPU "
                        "shared with other jobs (CPU only: it does not see GPU time)")
    p.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/bench_generate_D.json)")
    return p.parse_args(argv)


def build_model(args) -> AdaptivePauseModel:
    config = ModelConfig(name_or_path=args.model, hidden_size=args.hidden_size, num_layers=args.num_layers,
                         num_heads=max(1, args.hidden_size // 32), intermediate_size=4 * args.hidden_size,
                         position_numbering="contiguous")
    lm, tokenizer = load_lm(config, seed=0)
    dtype = getattr(torch, args.dtype)
    lm = lm.to(device=args.device, dtype=dtype).eval()
    # The learned head, initialised to pause with probability ~1: the caps then fix the tokens to prompt + k
    # pauses + answer, while the head still runs (and costs) at every step.
    head = PauseControllerHead(int(lm.config.hidden_size), initial_pause_prob=1 - 1e-6).to(args.device).eval()
    return AdaptivePauseModel(lm, tokenizer, head)


CLOCK = time.perf_counter


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_hf(model: AdaptivePauseModel, prompts, k: int, max_new_tokens: int, device: str):
    """HF's real path on the same prompts: tokenize, append k pauses, left-pad, generate, decode the answers.

    Timed from text to text, like `run_ours` (whose `generate` also tokenizes and decodes), so neither side
    gets its tokenization for free.
    """
    pause, pad = model.settings.pause_id, model.tokenizer.pad_token_id
    eos = model.tokenizer.eos_token_id
    sync(device)
    t0 = CLOCK()
    prompt_ids = model.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    width = max(len(p) for p in prompt_ids) + k
    input_ids = torch.tensor([[pad] * (width - len(p) - k) + p + [pause] * k for p in prompt_ids], device=device)
    starts = torch.tensor([width - len(p) - k for p in prompt_ids], device=device)
    mask = (torch.arange(width, device=device)[None, :] >= starts[:, None]).long()
    with torch.no_grad():
        out = model.lm.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                do_sample=False, suppress_tokens=[pause], pad_token_id=pad, use_cache=True,
                                eos_token_id=eos)
    answers = []
    for row in out[:, width:].tolist():
        answers.append(row[: row.index(eos)] if eos in row else row)
    model.tokenizer.batch_decode(answers, skip_special_tokens=True)
    sync(device)
    seconds = CLOCK() - t0
    emitted = sum(len(a) + (1 if len(a) < max_new_tokens else 0) for a in answers)  # + EOS where it stopped
    tokens = sum(len(p) + k for p in prompt_ids) + emitted
    return seconds, tokens, answers, max_new_tokens  # HF: one forward pass per new token


def run_ours(model: AdaptivePauseModel, prompts, k: int, max_new_tokens: int, device: str, mode: str):
    sync(device)
    t0 = CLOCK()
    if mode == "ours_chunked":
        out = model.generate(prompts, urgency=0.5, policy=FixedPauses(k), max_new_tokens=max_new_tokens,
                             max_pauses=k, max_pauses_total=k, chunk_pauses=True)
    else:
        out = model.generate(prompts, urgency=0.5, max_new_tokens=max_new_tokens, max_pauses=k,
                             max_pauses_total=k, speculate_pauses=k if mode == "ours_spec" and k >= 2 else 0)
    sync(device)
    seconds = CLOCK() - t0
    prompt_tokens = sum(len(p) for p in model.encode(prompts))
    tokens = prompt_tokens + sum(out.pauses) + sum(len(a) + (r == "eos") for a, r in
                                                   zip(out.answer_ids, out.finish_reasons))
    return seconds, tokens, out.answer_ids, out.forward_passes + 1  # + the prefill


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_generate: --device cuda requested but torch.cuda.is_available() is False")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    global CLOCK
    if args.clock == "process":
        if args.device.startswith("cuda"):
            raise SystemExit("bench_generate: --clock process cannot see GPU time; use --clock wall with cuda")
        CLOCK = time.process_time
    torch.manual_seed(0)
    model = build_model(args)
    task = get_task(args.task)
    rows = []
    for batch in args.batch_sizes:
        prompts = [e.prompt for e in task.examples(batch, seed=batch)]
        timings = {"hf": [], "ours": [], "ours_spec": [], "ours_chunked": []}
        results = {}
        for repeat in range(args.repeats + 1):  # the first round is a warm-up
            for name in timings:
                if name == "hf":
                    res = run_hf(model, prompts, args.k, args.max_new_tokens, args.device)
                else:
                    res = run_ours(model, prompts, args.k, args.max_new_tokens, args.device, name)
                if repeat > 0:
                    timings[name].append(res[0])
                results[name] = res
        same = all(results[name][2] == results["hf"][2] for name in timings)
        row = {"batch": batch, "same_tokens": same}
        for name, times in timings.items():
            median = statistics.median(times)
            row[name] = {"median_s": median, "min_s": min(times), "tokens": results[name][1],
                         "tokens_per_s": results[name][1] / median, "forward_passes": results[name][3],
                         "times_s": times}
        row["ratio"] = row["ours"]["tokens_per_s"] / row["hf"]["tokens_per_s"]
        row["spec_ratio"] = row["ours_spec"]["tokens_per_s"] / row["hf"]["tokens_per_s"]
        row["chunked_ratio"] = row["ours_chunked"]["tokens_per_s"] / row["hf"]["tokens_per_s"]
        rows.append(row)

    header = (f"{'batch':>5} | {'hf tok/s':>9} | {'ours tok/s':>10} | {'ours/hf':>7} | {'spec tok/s':>10} | "
              f"{'spec/hf':>7} | {'chunked tok/s':>13} | {'chunk/hf':>8} | {'passes hf/ours/spec/chunk':>25} | "
              f"{'same':>5}")
    print(f"bench_generate on {args.device} ({torch.get_num_threads()} threads, {args.clock} clock), model "
          f"{args.model or f'tiny d={args.hidden_size} L={args.num_layers}'}, k={args.k} pauses, "
          f"{args.max_new_tokens} answer tokens, median of {args.repeats}")
    print(header)
    print("-" * len(header))
    for r in rows:
        passes = "/".join(str(r[n]["forward_passes"]) for n in ("hf", "ours", "ours_spec", "ours_chunked"))
        print(f"{r['batch']:>5} | {r['hf']['tokens_per_s']:>9.0f} | {r['ours']['tokens_per_s']:>10.0f} | "
              f"{r['ratio']:>7.3f} | {r['ours_spec']['tokens_per_s']:>10.0f} | {r['spec_ratio']:>7.3f} | "
              f"{r['ours_chunked']['tokens_per_s']:>13.0f} | {r['chunked_ratio']:>8.3f} | {passes:>25} | "
              f"{str(r['same_tokens']):>5}")
    device_name = args.device
    if args.device.startswith("cuda"):
        device_name = "cuda"
    output = Path(args.output or f"benchmarks/results/bench_generate_{device_name}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in vars(args).items()}
    meta["threads_used"] = torch.get_num_threads()
    if args.device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name()
    output.write_text(json.dumps({"config": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {output}")
    ratios = " ".join(f"ratio_b{r['batch']}={r['ratio']:.3f}" for r in rows)
    ratios += " " + " ".join(f"spec_ratio_b{r['batch']}={r['spec_ratio']:.3f}" for r in rows)
    print(f"bench_generate: device={device_name} {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
