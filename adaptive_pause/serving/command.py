"""`adaptive-pause serve RUN_DIR`: load a run and serve it over HTTP (uvicorn).

Owns: the command's flags (host, port, batch and queue bounds, API key, body limit, default urgency, model
name, and every `DecodeConfig` field as the server's defaults and limits) and the loopback-only rule: a
non-loopback host needs `--api_key`.

Must not: define routes (app.py) or schedule (scheduler.py).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import socket
import threading
import time
from pathlib import Path

from ..config import add_arguments, from_dict, given_values
from ..decoding import DecodeConfig


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def background_server(app, host: str = "127.0.0.1", start_timeout: float = 30.0):
    """Run `app` with uvicorn in a thread of this process on `host` and a free port; yields its base URL
    (tests and benchmarks: the server and its clients in one process)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(start_timeout)
        sock.close()


def _urgency(text: str) -> float | str:
    """--urgency: "auto" or a number (its range is checked with the run, by `create_app`)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number in [0, 1] or auto, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaptive-pause serve", argument_default=argparse.SUPPRESS,
                                     description="Serve a run's LM and pause controller with an OpenAI-compatible API.")
    parser.add_argument("run_dir", help="run directory (model/, optional adapter/, controller/)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default; any other needs --api_key)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max_batch", type=int, default=64, help="rows in the running decode batch")
    parser.add_argument("--max_queue", type=int, default=256, help="waiting requests; beyond it: 429 + Retry-After")
    parser.add_argument("--api_key", default=os.environ.get("ADAPTIVE_PAUSE_API_KEY"),
                        help="bearer token clients must send (default: $ADAPTIVE_PAUSE_API_KEY)")
    parser.add_argument("--max_body_bytes", type=int, default=1 << 20, help="largest request body")
    parser.add_argument("--urgency", type=_urgency, default=0.3,
                        help="urgency of requests that give none: a number in [0, 1], or auto (the run's estimator)")
    parser.add_argument("--model_name", default=None, help="the model id clients send (default: the run's folder name)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: where the model loads)")
    parser.add_argument("--merge_adapter", action="store_true", default=False, help="fold LoRA into the weights")
    add_arguments(parser, DecodeConfig, skip=("record_features", "prompt_summary", "stop_strings"),
                  beside_positionals=True)
    args = parser.parse_args(argv)
    if not is_loopback(args.host) and not args.api_key:
        raise ValueError(f"host: {args.host!r} is not a loopback address; serving beyond this machine needs --api_key")
    if not 0 < args.port < 65536:
        raise ValueError(f"port: must be in 1..65535, got {args.port}")
    if not Path(args.run_dir).is_dir():
        raise ValueError(f"run_dir: {args.run_dir} is not a directory")
    given = given_values(args, DecodeConfig)
    from_dict(DecodeConfig, given)  # check the flags before loading anything
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:  # and the port
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((args.host, args.port))
        except OSError as err:
            raise ValueError(f"port: cannot listen on {args.host}:{args.port} ({err.strerror})") from None

    import uvicorn  # the serve extra: pip install 'adaptive-pause[serve]'

    from ..modeling import AdaptivePauseModel
    from .app import create_app

    model = AdaptivePauseModel.from_pretrained(args.run_dir, merge_adapter=args.merge_adapter, device=args.device)
    # The run's trained pause settings (decode.yaml) are the server's defaults; flags override them.
    decode_config = from_dict(DecodeConfig, {"record_features": False, **model.trained_decode, **given})
    name = args.model_name or Path(args.run_dir).resolve().name
    app = create_app(model, model_name=name, decode_config=decode_config, urgency=args.urgency,
                     max_batch=args.max_batch, max_queue=args.max_queue, api_key=args.api_key,
                     max_body_bytes=args.max_body_bytes)
    print(f"adaptive-pause serve: model {name!r} on http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
