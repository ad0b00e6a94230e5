"""Serve what ships: llama-cpp-python's OpenAI-compatible server on the GGUF (127.0.0.1 only), queried through
the evaluation's endpoint client (:class:`posttrain.evaluation.backends.OpenAIBackend`) on a small suite.

The server renders chats with the Jinja template stored in the GGUF -- the same path newer Ollama versions take --
so this checks template, BOS/EOS and stopping end to end. Needs ``pip install 'llama-cpp-python[server]'``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from posttrain.evaluation.config import EvalArguments
from posttrain.evaluation.runner import evaluate
from posttrain.log import get_logger

logger = get_logger(__name__)


class ServeError(RuntimeError):
    """The llama.cpp server could not be started or did not answer."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_available() -> bool:
    try:
        import fastapi  # noqa: F401
        import llama_cpp.server  # noqa: F401
        import sse_starlette  # noqa: F401
        import starlette_context  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def llama_server(
    gguf: Path,
    *,
    alias: str,
    n_ctx: int,
    log_path: Path,
    threads: int | None = None,
    port: int | None = None,
    timeout: float = 180.0,
) -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` on ``127.0.0.1``; yield its ``/v1`` base URL; stop it afterwards."""
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--model_alias",
        alias,
        "--n_threads",
        str(threads or max(1, os.cpu_count() or 1)),
    ]
    base = f"http://127.0.0.1:{port}/v1"
    logger.info("posttrain: starting llama.cpp's OpenAI-compatible server on %s (%s)", base, gguf.name)
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise ServeError(f"the llama.cpp server exited with {process.returncode}; see {log_path}")
                try:
                    with urllib.request.urlopen(f"{base}/models", timeout=5) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise ServeError(
                        f"the llama.cpp server did not answer on {base} within {timeout:.0f}s; see {log_path}"
                    )
                time.sleep(0.5)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve_and_evaluate(
    gguf: Path,
    output_dir: Path,
    *,
    alias: str,
    n_ctx: int,
    suite: str,
    max_samples: int,
    system_prompt: str | None,
    max_new_tokens: int | None = None,
    identity=None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run ``suite`` (``max_samples`` per source) against the served GGUF; returns a summary of results.json."""

    output_dir.mkdir(parents=True, exist_ok=True)
    with llama_server(gguf, alias=alias, n_ctx=n_ctx, threads=threads, log_path=output_dir / "server.log") as base:
        settings: dict[str, Any] = dict(
            models=[{"label": "served", "model": alias, "endpoint": base}],
            suites=[suite],
            max_samples=max_samples,
            output_dir=str(output_dir),
            system_prompt=system_prompt,
            progress=False,
            concurrency=1,
            max_retries=1,
            request_timeout=300.0,
            bootstrap_samples=200,
            max_new_tokens=max_new_tokens,
        )
        if identity is not None:
            settings.update(assistant_name=identity.name, assistant_creator=identity.creator)
        results_path = evaluate(EvalArguments(**settings))
    results = json.loads(Path(results_path).read_text(encoding="utf-8"))
    samples = results.get("samples", [])
    answered = [s for s in samples if s.get("output") is not None]
    finished = sum(bool(s.get("finished")) for s in answered)
    scores: dict[str, list[float]] = {}
    for sample in answered:
        for name, value in (sample.get("scores") or {}).items():
            if value is not None:
                scores.setdefault(name, []).append(float(value))
    return {
        "endpoint": "127.0.0.1 (llama_cpp.server)",
        "suite": suite,
        "status": results.get("status"),
        "error": results.get("error"),
        "samples": len(samples),
        "answered": len(answered),
        "finished": finished,
        "scores": {k: sum(v) / len(v) for k, v in scores.items()},
        "results": str(results_path),
    }
