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
repeat, in ABBA order (the order reverses every repeat), so that load from other processes and the state one
call leaves for the next hit both alike. Memory is measured in an untimed round after the warm-up, never while
timing (its sampling thread competes for the GIL and the cores). The `paired` column is the median (and
quartiles) of the per-repeat ratios: how precisely the ratio is known on a machine whose speed drifts between
repeats.
Position numbering is `contiguous` (the only one HF `generate` can reproduce).

Prints a table, writes JSON, and ends with one line:
`bench_generate: device=D model=NAME ratio_b1=X ratio_b16=Y ratio_b64=Z` (ours / hf tokens per second, ours =
the learned head deciding pause by pause: k more sequential passes than hf, which prefills the k pauses with
the prompt), followed by the same ratios for `ours_spec` in `spec_ratio_b...` keys when it ran.
`--model PATH --k 0 --variants hf ours` is the pretrained-model comparison (SmolLM2-135M in docs/benchmarks.md):
no pauses, so both sides process exactly the same tokens. `peak MB` is the most resident memory (CPU: RSS
sampled every 2 ms in an untimed round; CUDA: `max_memory_allocated`) above what was resident before the call.

Must not: benchmark quality (that is the sweeps), or use a second decode loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from adaptive_pause.modeling import AdaptivePauseModel, ModelConfig, load_lm
from adaptive_pause.tasks import get_task
from policies import FixedPauses, PauseControllerHead


VARIANTS = ("hf", "ours", "ours_spec", "ours_chunked")


class PeakMemory:
    """The most memory a call holds above what was resident when it started, in MB.

    CPU: a thread samples this process's resident set (/proc/self/statm) every 2 ms (a short peak between
    samples can be missed); CUDA: torch's allocator statistics (exact)."""

    def __init__(self, device: str):
        self.device, self.peak_mb = device, 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = self._peak = self._rss()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.002):
                self._peak = max(self._peak, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = (max(self._peak, self._rss()) - self._base) / 2**20
        return False


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
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="which runs to time (hf is always included: the ratios are against it)")
    p.add_argument("--model_name", default=None, help="NAME in the last line (default: the model's directory name)")
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
    prompt_ids = model.encode(list(prompts))  # the same encoding as ours (a chat template where the model has one)
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


def spread(times: list[float]) -> float:
    """Half the range of the timed runs, relative to their median: the table's +- figure."""
    return (max(times) - min(times)) / 2 / statistics.median(times)


def paired_ratios(hf_times: list[float], our_times: list[float], hf_tokens: int, our_tokens: int) -> dict:
    """ours/hf tokens per second within each repeat (the two sides ran back to back), summarised by the median
    and the quartiles: slow drifts of the machine hit both sides of a pair alike, so this spread says how
    precisely the ratio is known, where the per-side +- also holds the machine's drift."""
    ratios = sorted((our_tokens / o) / (hf_tokens / h) for h, o in zip(hf_times, our_times))
    quartiles = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else [ratios[0]] * 3
    return {"median": statistics.median(ratios), "q1": quartiles[0], "q3": quartiles[2], "ratios": ratios}


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
    variants = ["hf"] + [v for v in VARIANTS[1:] if v in args.variants]
    rows = []
    for batch in args.batch_sizes:
        prompts = [e.prompt for e in task.examples(batch, seed=batch)]
        timings = {name: [] for name in variants}
        peaks = {name: 0.0 for name in variants}
        results = {}
        def call(name):
            if name == "hf":
                return run_hf(model, prompts, args.k, args.max_new_tokens, args.device)
            return run_ours(model, prompts, args.k, args.max_new_tokens, args.device, name)

        for name in variants:  # warm-up
            results[name] = call(name)
        # Memory in a round of its own that is not timed: the CPU sampler is a thread that wakes every 2 ms and
        # takes the GIL, which slowed both sides by about 15% at batch 1 on 2 cores, and not alike.
        for name in variants:
            with PeakMemory(args.device) as memory:
                results[name] = call(name)
            peaks[name] = memory.peak_mb
        for repeat in range(args.repeats):
            # ABBA order (hf, ours, ours, hf, ...): whichever side runs second in a pair would otherwise always
            # meet the state the first left (caches, allocator, the CPU's clock) and take the drift of the pair.
            for name in (variants if repeat % 2 == 0 else variants[::-1]):
                results[name] = res = call(name)
                timings[name].append(res[0])
        same = all(results[name][2] == results["hf"][2] for name in variants)
        row = {"batch": batch, "same_tokens": same}
        for name, times in timings.items():
            median = statistics.median(times)
            row[name] = {"median_s": median, "min_s": min(times), "max_s": max(times), "spread": spread(times),
                         "tokens": results[name][1], "tokens_per_s": results[name][1] / median,
                         "forward_passes": results[name][3], "peak_mb": peaks[name], "times_s": times}
        for name, key in (("ours", "ratio"), ("ours_spec", "spec_ratio"), ("ours_chunked", "chunked_ratio")):
            if name in row:
                row[key] = row[name]["tokens_per_s"] / row["hf"]["tokens_per_s"]
                row[key + "_paired"] = paired_ratios(timings["hf"], timings[name], results["hf"][1],
                                                     results[name][1])
        rows.append(row)

    model_name = args.model_name or (Path(args.model).name if args.model else
                                     f"tiny-d{args.hidden_size}-L{args.num_layers}")
    print(f"bench_generate on {args.device} ({torch.get_num_threads()} threads, {args.clock} clock), model "
          f"{args.model or model_name}, k={args.k} pauses, {args.max_new_tokens} answer tokens, median of "
          f"{args.repeats} (+- half the range); paired: the median of the per-repeat ratios [quartiles]")
    ratio_names = {"ours": "ours/hf", "ours_spec": "spec/hf", "ours_chunked": "chunk/hf"}
    header = f"{'batch':>5} | " + " | ".join(
        f"{name + ' tok/s':>20} | {name + ' MB':>10}"
        + (f" | {ratio_names[name]:>8} | {'paired [q1, q3]':>22}" if name != "hf" else "")
        for name in variants) + f" | {'passes ' + '/'.join(variants):>22} | {'same':>5}"
    print(header)
    print("-" * len(header))
    for r in rows:
        cells = []
        for name in variants:
            cell = f"{r[name]['tokens_per_s']:>10.0f} +- {100 * r[name]['spread']:>4.1f}% | {r[name]['peak_mb']:>10.0f}"
            if name != "hf":
                cell += f" | {r[name]['tokens_per_s'] / r['hf']['tokens_per_s']:>8.3f}"
                key = {"ours": "ratio", "ours_spec": "spec_ratio", "ours_chunked": "chunked_ratio"}[name]
                paired = r[key + "_paired"]
                cell += f" | {paired['median']:.3f} [{paired['q1']:.3f}, {paired['q3']:.3f}]"
            cells.append(cell)
        passes = "/".join(str(r[n]["forward_passes"]) for n in variants)
        print(f"{r['batch']:>5} | " + " | ".join(cells) + f" | {passes:>22} | {str(r['same_tokens']):>5}")
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
    keys = [f"ratio_b{r['batch']}={r['ratio']:.3f}" for r in rows if "ratio" in r]
    keys += [f"spec_ratio_b{r['batch']}={r['spec_ratio']:.3f}" for r in rows if "spec_ratio" in r]
    print(f"bench_generate: device={device_name} model={model_name} {' '.join(keys)}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
