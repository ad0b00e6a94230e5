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
from dataclasses import dataclass, field
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
    """What Ollama's chat handling makes of each conversation (before the runner adds BOS), and what Ollama reads
    off the template (server/images.go capabilities, tools/template.go ``parseTag``, thinking/template.go
    ``InferTags``)."""

    renders: list[tuple[str, str]]  # (prompt, error) per conversation
    uses_messages: bool  # False: Ollama's legacy per-turn .System/.Prompt/.Response path
    thinking: bool  # the template has thinking tags (Ollama's InferTags): Think defaults to true
    capabilities: list[str] = field(default_factory=list)  # "tools", "insert", "thinking"
    tool_tag: str = "{"  # what starts a tool call in a reply ("{": any JSON object that opens the reply)
    thinking_tags: tuple[str, str] = ("", "")
    tool_round_trip: bool = False  # .Tools, .ToolCalls and tool results (goTemplateHasToolRoundTrip)
    chat_template_capabilities: list[str] = field(default_factory=list)  # the GGUF's Jinja, as Ollama sees it
    prefer_chat_template: bool = False  # Ollama would use the GGUF's Jinja template instead of this TEMPLATE


def _renders(out: dict[str, Any]) -> OllamaRenders:
    return OllamaRenders(
        [(r["output"], r["error"]) for r in out["renders"]],
        bool(out["uses_messages"]),
        bool(out["thinking"]),
        list(out.get("capabilities") or []),
        out.get("tool_tag") or "{",
        tuple(out.get("thinking_tags") or ("", "")),
        bool(out.get("tool_round_trip")),
        list(out.get("chat_template_capabilities") or []),
        bool(out.get("prefer_chat_template")),
    )


def render_ollama(
    template: str,
    conversations: list[list[dict[str, Any]]],
    *,
    system: str | None = None,
    think: list[bool | None] | None = None,
    tools: list[list[dict[str, Any]] | None] | None = None,
    chat_template: str | None = None,
) -> OllamaRenders:
    """The prompt Ollama renders from a Modelfile ``TEMPLATE`` (and ``SYSTEM``) for each chat request: SYSTEM
    insertion, collation, ``.System``, ``.Tools``, ``.ToolCalls``, tool results, the legacy path and thinking
    defaults as in Ollama's Go code (see ``gotemplate/main.go``). ``conversations`` are posttrain's normalised
    messages (:mod:`posttrain.data.tools`), sent as Ollama's API takes them (:func:`ollama_request_message`).
    ``think``: the request's ``think`` per conversation (None: unset); ``tools``: its tool schemas per
    conversation. A request with tools to a TEMPLATE without ``.Tools`` renders the error Ollama answers ("does not
    support tools"). ``chat_template``: the GGUF's Jinja template, to tell whether Ollama would prefer it."""
    cases = [
        {
            "messages": [ollama_request_message(m) for m in conversation],
            "think": None if think is None else think[i],
            "tools": None if tools is None else tools[i],
        }
        for i, conversation in enumerate(conversations)
    ]
    request = {"template": template, "mode": "chat", "system": system or "", "cases": cases}
    return _renders(_run({**request, "chat_template": chat_template or ""}))


def template_info(template: str, chat_template: str | None = None) -> OllamaRenders:
    """What Ollama reads off a TEMPLATE (capabilities, tool-call tag, thinking tags) and whether it would prefer the
    GGUF's Jinja ``chat_template`` over it, without rendering anything."""
    return _renders(_run({"template": template, "mode": "chat", "cases": [], "chat_template": chat_template or ""}))


def ollama_request_message(message: dict[str, Any]) -> dict[str, Any]:
    """A normalised posttrain message as Ollama's ``/api/chat`` takes it (``api/types.go`` ``Message``):
    ``reasoning_content`` is ``thinking``, a tool result's ``name`` is ``tool_name``, calls keep their
    ``{"function": {"name", "arguments"}}`` shape (arguments as an object; JSON text is decoded as Ollama's OpenAI
    endpoint does)."""
    out: dict[str, Any] = {
        "role": message["role"],
        "content": message.get("content") or "",
        "thinking": message.get("reasoning_content") or message.get("thinking") or "",
    }
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {
                **({"id": call["id"]} if call.get("id") else {}),
                "function": {
                    "name": (call.get("function") or call)["name"],
                    "arguments": (call.get("function") or call).get("arguments") or {},
                },
            }
            for call in message["tool_calls"]
        ]
    if message["role"] == "tool":
        out["tool_name"] = message.get("tool_name") or message.get("name") or ""
        out["tool_call_id"] = message.get("tool_call_id") or ""
    return out


@dataclass
class ParsedReply:
    """A model reply as Ollama's chat API returns it: the thinking, the content and the tool calls it parsed."""

    content: str
    thinking: str
    tool_calls: list[dict[str, Any]]


def parse_replies(
    template: str,
    replies: list[str | list[str]],
    *,
    tools: list[dict[str, Any]] | None = None,
    think: bool | None = None,
    prompt: str = "",
) -> list[ParsedReply]:
    """Parse model replies the way Ollama's ``ChatHandler`` does with this TEMPLATE: the thinking parser (tags from
    ``InferTags``, on when ``think`` is not false) and then the tool parser (the tag from ``parseTag``, when the
    request has ``tools``) over the reply streamed in chunks. A reply given as a string is streamed one character
    at a time (a token is usually longer: both reach the same result with these parsers unless a chunk holds both
    content and a call, which Ollama then drops). ``prompt``: the rendered prompt (one ending in the opening tag
    starts inside the thinking)."""
    cases = [{"chunks": list(reply), "tools": tools, "think": think, "prompt": prompt} for reply in replies]
    out = _run({"template": template, "mode": "parse", "cases": cases})
    return [
        ParsedReply(
            r["content"],
            r["thinking"],
            [
                {"name": c["function"]["name"], "arguments": c["function"].get("arguments") or {}}
                for c in r.get("tool_calls") or []
            ],
        )
        for r in out.get("replies") or []
    ]
