"""Render Go templates with Go's own ``text/template``: the small program in ``gotemplate/main.go``, built once
with the ``go`` tool (Debian/Ubuntu: ``apt-get install golang-go``) into ``$POSTTRAIN_CACHE/gotemplate/``.

Builds run offline (``GOPROXY=off``, ``GOTOOLCHAIN=local``: the program has no dependencies).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.models.registry import cache_dir

SOURCE_DIR = Path(__file__).parent / "gotemplate"
GO_PACKAGE_HINT = "golang-go (Debian/Ubuntu: apt-get install -y golang-go; or https://go.dev/dl)"


class GoUnavailableError(RuntimeError):
    """No ``go`` tool to build the renderer with."""


def go_available() -> bool:
    return shutil.which("go") is not None


def renderer_binary() -> Path:
    """The built renderer, rebuilt when ``main.go`` changes."""
    from filelock import FileLock

    go = shutil.which("go")
    if go is None:
        raise GoUnavailableError(f"checking the Modelfile's Go template needs the `go` tool: install {GO_PACKAGE_HINT}")
    digest = hashlib.sha256((SOURCE_DIR / "main.go").read_bytes() + (SOURCE_DIR / "go.mod").read_bytes())
    target = cache_dir() / "gotemplate" / f"gotemplate-{digest.hexdigest()[:12]}"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_file():
            env = {**os.environ, "GOPROXY": "off", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
            env.setdefault("GOCACHE", str(cache_dir() / "gotemplate" / "go-build"))
            tmp = target.with_suffix(".tmp")
            result = subprocess.run(
                [go, "build", "-o", str(tmp), "."], cwd=SOURCE_DIR, env=env, capture_output=True, text=True, timeout=600
            )
            if result.returncode != 0:
                raise GoUnavailableError(f"building {SOURCE_DIR / 'main.go'} failed:\n{result.stderr.strip()}")
            tmp.replace(target)
    return target


def _run(request: dict[str, Any]) -> dict[str, Any]:
    binary = renderer_binary()
    result = subprocess.run(
        [str(binary)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    if result.returncode != 0:
        raise ValueError(result.stderr.strip() or f"{binary} exited with status {result.returncode}")
    return json.loads(result.stdout)


def render_go(template: str, cases: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Execute ``template`` once per data mapping in ``cases`` as is; returns ``(output, error)`` pairs.

    Raises ``ValueError`` when the template does not parse as a Go template.
    """
    out = _run({"template": template, "mode": "data", "cases": cases})
    return [(r["output"], r["error"]) for r in out["renders"]]


@dataclass
class OllamaRenders:
    """What Ollama's chat handling makes of each conversation (before the runner adds BOS)."""

    renders: list[tuple[str, str]]  # (prompt, error) per conversation
    uses_messages: bool  # False: Ollama's legacy per-turn .System/.Prompt/.Response path
    thinking: bool  # the template has thinking tags (Ollama's InferTags): Think defaults to true


def render_ollama(
    template: str,
    conversations: list[list[dict[str, Any]]],
    *,
    system: str | None = None,
    think: list[bool | None] | None = None,
) -> OllamaRenders:
    """The prompt Ollama renders from a Modelfile ``TEMPLATE`` (and ``SYSTEM``) for each chat request: SYSTEM
    insertion, collation, ``.System``, the legacy path and thinking defaults as in Ollama's Go code (see
    ``gotemplate/main.go``). ``think``: the request's ``think`` per conversation (None: unset)."""
    cases = [
        {
            "messages": [
                {"role": m["role"], "content": m.get("content") or "", "thinking": m.get("thinking") or ""}
                for m in conversation
            ],
            "think": None if think is None else think[i],
        }
        for i, conversation in enumerate(conversations)
    ]
    out = _run({"template": template, "mode": "chat", "system": system or "", "cases": cases})
    return OllamaRenders(
        [(r["output"], r["error"]) for r in out["renders"]], bool(out["uses_messages"]), bool(out["thinking"])
    )
