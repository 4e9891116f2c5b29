"""Throughput and latency of `adaptive-pause serve` under C concurrent clients, against one at a time.

The server runs as a subprocess on loopback; clients use the official `openai` client (AsyncOpenAI,
streaming, greedy). At each C (1, 8, 32, 64 by default) the same `--requests` prompts (addition:1-3) are
sent with at most C in flight; C = 1 is "the same requests one at a time". `--warmup` untimed requests go
first, so one-time costs (the client's lazily built types, the first forwards) do not slow C = 1 alone.
Per C: answers/s, answer and all (pauses included) tokens/s, p50/p95 latency, p50 time to first answer
token, CPU ms per answer of the server and of the clients' process (they share the cores), and errors:
failed requests plus answers that differ from the one-at-a-time answers. The model: `--run_dir`, or one
built here with the demo's stage configs and `--build_steps` steps, served with its controller or
`ConfidenceThreshold(0.9)`, with the demo controller's decode limits. Bounded by `--requests` and `--time_limit`.

Prints a table, writes JSON, and ends with `bench_serve: c32_speedup=X p95_ms=Y errors=N`.
Must not: assert speed, or talk to anything but loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run_dir", default=None, help="a run to serve (default: build a demo-shaped one)")
    p.add_argument("--build_steps", type=int, default=150, help="pretrain steps of the built model (finetune: 1/10)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--requests", type=int, default=128, help="requests per concurrency level")
    p.add_argument("--urgency", type=float, default=0.3)
    p.add_argument("--time_limit", type=float, default=900.0, help="seconds for all levels; later levels are skipped")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    p.add_argument("--warmup", type=int, default=16, help="untimed requests before the first level")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "bench_serve.json"))
    return p.parse_args(argv)


def build_run(root: Path, steps: int) -> Path:
    """pretrain -> LoRA finetune with the demo's configs (fewer steps), plus a controller if it has none."""
    from adaptive_pause.config import from_dict
    from adaptive_pause.training.finetune import FinetuneConfig, run_finetune
    from adaptive_pause.training.pretrain import PretrainConfig, run_pretrain

    def stage(name: str) -> dict:
        return yaml.safe_load(resources.files("adaptive_pause").joinpath(f"configs/demo_{name}.yaml").read_text())

    pre = from_dict(PretrainConfig, {**stage("pretrain"), "output_dir": str(root / "pretrain"), "max_steps": steps,
                                     "warmup_steps": max(1, steps // 15), "progress": False})
    run_pretrain(pre)
    ft_steps = max(2, steps // 10)
    ft = from_dict(FinetuneConfig, {**stage("finetune"), "output_dir": str(root / "finetune"),
                                    "base_model": str(root / "pretrain"), "max_steps": ft_steps,
                                    "warmup_steps": 1, "progress": False})
    return run_finetune(ft)


def ensure_controller(run: Path) -> str:
    from policies import ConfidenceThreshold
    from policies.io import save_policy

    if (run / "controller").is_dir():
        return "the run's controller"
    save_policy(ConfidenceThreshold(0.9), run / "controller")
    return "ConfidenceThreshold(0.9) (the run had no controller)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "adaptive_pause.cli", "serve", str(run), "--host", "127.0.0.1", "--port",
               str(port), "--model_name", "demo", "--max_batch", "64", "--max_queue", "1024", "--max_new_tokens", "5",
               "--max_pauses", "16", "--max_pauses_total", "16", "--first_token_pauses_only"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start in 120 s")


async def one(client, prompt: str, urgency: float) -> dict:
    start = time.perf_counter()
    first, text, usage = None, "", None
    stream = await client.completions.create(model="demo", prompt=prompt, max_tokens=5, temperature=0, stream=True,
                                             extra_body={"urgency": urgency})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text and first is None:
            first = time.perf_counter() - start
        text += chunk.choices[0].text if chunk.choices else ""
        usage = getattr(chunk, "usage", None) or usage
    return {"latency": time.perf_counter() - start, "ttft": first, "text": text,
            "tokens": usage.completion_tokens, "pauses": usage.pause_tokens}


async def level(url: str, prompts: list[str], concurrency: int, urgency: float) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    gate = asyncio.Semaphore(concurrency)

    async def guarded(prompt):
        async with gate:
            try:
                return await one(client, prompt, urgency)
            except Exception as err:  # noqa: BLE001 - a failed request is counted, not fatal
                return {"error": f"{type(err).__name__}: {err}"}

    start = time.perf_counter()
    results = await asyncio.gather(*(guarded(p) for p in prompts))
    wall = time.perf_counter() - start
    await client.close()
    return {"wall": wall, "results": results}


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) `pid` has used so far, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed_level(url: str, prompts: list[str], concurrency: int, urgency: float, server_pid: int) -> dict:
    server_cpu, client_cpu = process_cpu_s(server_pid), time.process_time()
    run = await level(url, prompts, concurrency, urgency)
    after = process_cpu_s(server_pid)
    run["server_cpu_s"] = None if server_cpu is None or after is None else after - server_cpu
    run["client_cpu_s"] = time.process_time() - client_cpu
    return run


def summarise(concurrency: int, run: dict, reference: list | None) -> dict:
    ok = [r for r in run["results"] if "error" not in r]
    wrong = 0 if reference is None else sum(
        1 for r, ref in zip(run["results"], reference) if "error" not in r and r["text"] != ref)
    lat = sorted(r["latency"] for r in ok) or [float("nan")]
    ttft = sorted(r["ttft"] for r in ok if r["ttft"] is not None) or [float("nan")]
    tokens = sum(r["tokens"] for r in ok)
    pauses = sum(r["pauses"] for r in ok)
    return {"concurrency": concurrency, "requests": len(run["results"]), "failed": len(run["results"]) - len(ok),
            "wrong": wrong, "wall_s": run["wall"], "answers_per_s": len(ok) / run["wall"],
            "answer_tokens_per_s": tokens / run["wall"], "all_tokens_per_s": (tokens + pauses) / run["wall"],
            "p50_ms": 1000 * statistics.median(lat), "p95_ms": 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))],
            "ttft_p50_ms": 1000 * statistics.median(ttft), "pauses_per_answer": pauses / max(1, len(ok)),
            "server_cpu_ms_per_answer": None if run.get("server_cpu_s") is None else
            1000 * run["server_cpu_s"] / max(1, len(ok)),
            "client_cpu_ms_per_answer": 1000 * run["client_cpu_s"] / max(1, len(ok))}


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        run = Path(args.run_dir) if args.run_dir else build_run(Path(tmp), args.build_steps)
        controller = ensure_controller(run) if not args.run_dir else "the run's controller"
        from adaptive_pause.tasks import get_task

        task, rng = get_task("addition:1-3"), random.Random(0)
        prompts = [task.sample(rng).prompt for _ in range(args.requests)]
        port = free_port()
        server = start_server(run, port, args.threads)
        url = f"http://127.0.0.1:{port}"
        rows, reference = [], None
        try:
            if args.warmup:
                warm = [task.sample(rng).prompt for _ in range(args.warmup)]
                asyncio.run(level(url, warm[: args.warmup // 2], 8, args.urgency))
                asyncio.run(level(url, warm[args.warmup // 2:], 1, args.urgency))
            for c in args.concurrency:
                if time.monotonic() - started > args.time_limit:
                    print(f"bench_serve: skipping C={c}: --time_limit {args.time_limit:.0f} s reached", flush=True)
                    continue
                result = asyncio.run(timed_level(url, prompts, c, args.urgency, server.pid))
                if reference is None:
                    reference = [r.get("text") for r in result["results"]]
                rows.append(summarise(c, result, reference))
                print(f"  C={c}: {rows[-1]['answers_per_s']:.1f} answers/s", flush=True)
                for message in sorted({r["error"] for r in result["results"] if "error" in r})[:3]:
                    print(f"  C={c}: failed: {message}", flush=True)
        finally:
            server.terminate()
            server.wait(30)
    base = rows[0]["answers_per_s"] if rows and rows[0]["concurrency"] == 1 else float("nan")
    header = ("C", "answers/s", "speedup", "ans tok/s", "all tok/s", "p50 ms", "p95 ms", "TTFT p50",
              "server CPU ms/answer", "client CPU ms/answer", "failed", "wrong")
    print(f"bench_serve: {args.requests} requests per level, urgency {args.urgency}, controller: {controller}; "
          f"{rows[0]['pauses_per_answer'] if rows else 0:.1f} pauses per answer")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join([str(r["concurrency"]), f"{r['answers_per_s']:.1f}", f"{r['answers_per_s'] / base:.2f}x",
                          f"{r['answer_tokens_per_s']:.0f}", f"{r['all_tokens_per_s']:.0f}", f"{r['p50_ms']:.0f}",
                          f"{r['p95_ms']:.0f}", f"{r['ttft_p50_ms']:.0f}",
                          "n/a" if r["server_cpu_ms_per_answer"] is None else f"{r['server_cpu_ms_per_answer']:.1f}",
                          f"{r['client_cpu_ms_per_answer']:.1f}", str(r["failed"]), str(r["wrong"])]))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"args": vars(args), "controller": controller, "levels": rows}, indent=2))
    c32 = next((r for r in rows if r["concurrency"] == 32), None)
    errors = sum(r["failed"] + r["wrong"] for r in rows) + (len(args.concurrency) - len(rows)) * args.requests
    speedup = c32["answers_per_s"] / base if c32 else float("nan")
    print(f"bench_serve: c32_speedup={speedup:.2f} p95_ms={c32['p95_ms'] if c32 else float('nan'):.0f} "
          f"errors={errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
