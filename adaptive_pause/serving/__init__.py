"""An OpenAI-compatible HTTP server for adaptive-pause runs (`adaptive-pause serve RUN_DIR`).

Parts: `protocol` (request models, error JSON, response and chunk shapes), `scheduler` (the bounded queue and
iteration-level batching onto the one decode loop), `app` (the FastAPI routes, auth, limits, streaming),
`command` (the CLI). Needs the `serve` extra (fastapi, uvicorn).

Must not: decode by itself (decoding/ does) or train.
"""

from .app import create_app

__all__ = ["create_app"]
