"""The Ollama Modelfile: ``FROM`` the GGUF, ``TEMPLATE`` (Go, translated from the Jinja chat template),
``SYSTEM``, ``PARAMETER stop`` for every end-of-turn token, ``PARAMETER num_ctx``.

Values are written the way Ollama's Modelfile parser reads them back unchanged: multi-line values inside
``\"\"\"...\"\"\"`` (kept byte for byte, but ``\"\"\"`` cannot occur inside, and characters that are neither printable
nor space/tab/newline are dropped by Ollama, so they are refused here), single-line values in double quotes.

When the chat template cannot be translated, the Modelfile has no ``TEMPLATE``: Ollama then uses the Jinja
template kept in the GGUF's metadata (``tokenizer.chat_template``), and the Modelfile says why in a comment.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import posttrain
from posttrain.chat_templates import adds_bos as tokenizer_adds_bos
from posttrain.chat_templates.stops import end_of_turn_tokens, special_token_strings
from posttrain.export import ExportError
from posttrain.log import get_logger

logger = get_logger(__name__)

DEFAULT_NUM_CTX = 4096


class ModelfileError(ExportError):
    """A value the Modelfile format cannot carry unchanged."""


def _printable(value: str) -> bool:
    return all(ch in "\n\r\t" or ch.isprintable() for ch in value)


def quote_multiline(value: str, what: str) -> str:
    if '"""' in value:
        raise ModelfileError(f'{what} contains """, which ends a Modelfile value early')
    if not _printable(value):
        bad = sorted({f"U+{ord(ch):04X}" for ch in value if not (ch in "\n\r\t" or ch.isprintable())})
        raise ModelfileError(f"{what} contains characters Ollama's Modelfile parser drops: {', '.join(bad)}")
    return f'"""{value}"""'


def quote_line(value: str, what: str) -> str:
    if '"' in value or "\n" in value or "\r" in value or not value.isprintable():
        raise ModelfileError(f"{what} {value!r} cannot be written as a Modelfile parameter")
    return f'"{value}"'


@dataclass
class Modelfile:
    gguf: str  # path written after FROM (relative to the Modelfile)
    template: str | None  # Go template; None: rely on the GGUF's Jinja template
    stops: list[str]
    system: str | None = None
    num_ctx: int = DEFAULT_NUM_CTX
    template_note: str | None = None  # why there is no TEMPLATE
    parameters: dict[str, str] = field(default_factory=dict)
    template_source: str = "translated"  # "known:<family>" or "translated": the path the TEMPLATE took
    adds_bos: bool = False  # the GGUF says add_bos_token: the runner writes BOS, the TEMPLATE must not
    capabilities: str | None = None  # what the TEMPLATE renders beyond role/content (tools, thinking), for a comment

    def render(self) -> str:
        lines = [
            f"# Ollama Modelfile written by posttrain {posttrain.__version__}",
            "#   ollama create <name> -f Modelfile && ollama run <name>",
            f"FROM {self.gguf}",
        ]
        if self.template is not None:
            if self.template_source.startswith("known:"):
                family = self.template_source.split(":", 1)[1]
                lines.append(
                    f"# Go template: posttrain's known {family} template (adapted from Ollama's), chosen because the"
                    " tokenizer's Jinja chat template is that family's"
                )
            else:
                lines.append("# Go template translated from the tokenizer's Jinja chat template (AST translation)")
            bos = (
                "; BOS is added by the runner (the GGUF's add_bos_token), not by the TEMPLATE" if self.adds_bos else ""
            )
            lines.append(f"# Checked against the Jinja rendering with Ollama's chat handling{bos}.")
            lines.append(
                f"# The TEMPLATE renders {self.capabilities or 'plain role/content messages: no tools, no thinking'}."
            )
            for line in (self.template_note or "").splitlines():
                lines.append(f"#   {line}")
            lines.append(f"TEMPLATE {quote_multiline(self.template, 'the chat template')}")
        else:
            lines.append(
                "# No TEMPLATE: Ollama uses the Jinja chat template stored in the GGUF (tokenizer.chat_template),"
                " unless `ollama create` finds it within 100 edits of one of its own templates (template/index.json)."
            )
            for line in (self.template_note or "").splitlines():
                lines.append(f"#   {line}")
        if self.stops:
            lines.append(
                "# Stops: the chat template's end-of-turn markers, the tokenizer's EOS (and a known family's role "
                "markers, as Ollama's own templates stop): " + ", ".join(self.stops)
            )
        if self.system:
            lines.append(f"SYSTEM {quote_multiline(self.system, 'the system prompt')}")
        for stop in self.stops:
            lines.append(f"PARAMETER stop {quote_line(stop, 'the stop token')}")
        lines.append(f"PARAMETER num_ctx {int(self.num_ctx)}")
        for key, value in self.parameters.items():
            lines.append(f"PARAMETER {key} {value}")
        return "\n".join(lines) + "\n"


@dataclass
class TemplateChoice:
    """The Modelfile's TEMPLATE and stops: a known family's, a translation, or none (with the reason)."""

    template: str | None
    stops: list[str]
    source: str  # "known:<family>", "translated" or "none"
    note: str | None = None  # why there is no TEMPLATE (or what the translation dropped)
    adds_bos: bool = False
    capabilities: str | None = None  # what the TEMPLATE renders beyond role/content (Modelfile comment)


# Ollama's choice between a Modelfile TEMPLATE and the GGUF's Jinja template, ported from server/images.go
# (github.com/ollama/ollama at fb30760996871fa9460115c753afd2c60d4ab0f7, lines 187-310 and 790-795): when the
# Jinja template advertises more capabilities than the TEMPLATE (unless the TEMPLATE round-trips tools and the Jinja
# does not), Ollama uses the Jinja template (llama.cpp renders it) and ignores the TEMPLATE, unless
# OLLAMA_GO_TEMPLATE is set. gotemplate/main.go has the same port, run on the real Go template by the verification.


def ollama_jinja_capabilities(chat_template: str) -> list[str]:
    """``chatTemplateCapabilities``: what Ollama believes a GGUF's Jinja chat template supports (substring tests)."""
    caps = []
    if "tools" in chat_template or "tool_call" in chat_template:
        caps.append("tools")
    thinking = "<think>" in chat_template and "</think>" in chat_template
    if not thinking:
        thinking = (
            ("content.split('</think>')" in chat_template or 'content.split("</think>")' in chat_template)
            and "reasoning_content" not in chat_template
            and "<SPECIAL_12>" not in chat_template
        )
    if thinking:
        caps.append("thinking")
    return caps


def _jinja_tool_round_trip(chat_template: str) -> bool:
    """``chatTemplateHasToolRoundTrip``."""
    if "tools" not in chat_template and "tool_call" not in chat_template:
        return False
    calls = "tool_calls" in chat_template or "assistant_tool_call" in chat_template
    results = (
        "tool_response",
        "tool_results",
        "role'] == 'tool'",
        'role\'] == "tool"',
        "role\"] == 'tool'",
        'role"] == "tool"',
        "message.role == 'tool'",
        'message.role == "tool"',
        "ipython",
    )
    return calls and any(r in chat_template for r in results)


def ollama_prefers_jinja(chat_template: str, go_capabilities: list[str], go_tool_round_trip: bool) -> bool:
    """``shouldPreferChatTemplate``: whether Ollama would use the GGUF's Jinja template instead of a TEMPLATE with
    these capabilities."""
    jinja = ollama_jinja_capabilities(chat_template)
    if len(jinja) > len(go_capabilities):
        return not go_tool_round_trip or _jinja_tool_round_trip(chat_template)
    if set(jinja) != set(go_capabilities) or "tools" not in jinja:
        return False
    return _jinja_tool_round_trip(chat_template) and not go_tool_round_trip


def choose_template(tokenizer, constants: dict[str, str]) -> TemplateChoice:
    """Known family template first (:mod:`~posttrain.export.known_templates`), AST translation otherwise
    (:mod:`~posttrain.export.go_template`); when the GGUF adds BOS (the tokenizer does), the Go template never
    writes it: the runner adds it (Ollama ``llm/llama_server.go`` ``tokenizerAddsBOS``), so it would be doubled.
    A template Go cannot express gives no TEMPLATE and the reason (its construct and line)."""
    from posttrain.export.go_template import TemplateTranslationError, translate
    from posttrain.export.known_templates import go_template_for, match_known

    stops = end_of_turn_tokens(tokenizer)
    adds_bos = tokenizer_adds_bos(tokenizer)
    if not tokenizer.chat_template:
        return TemplateChoice(None, stops, "none", "the tokenizer has no chat template", adds_bos)
    known = match_known(tokenizer.chat_template)
    bos = constants.get("bos_token")
    if known is not None:
        specials = set(special_token_strings(tokenizer))
        stops += [s for s in known.stops if s in specials and s not in stops]
        capabilities = ["tools"] * known.tools + ["thinking"] * known.thinking
        why = _prefers_jinja_note(tokenizer.chat_template, capabilities, known.tools, f"the known {known.name}")
        if why:
            return TemplateChoice(None, stops, "none", why, adds_bos)
        template = go_template_for(known, bos_token=bos, adds_bos=adds_bos)
        return TemplateChoice(template, stops, f"known:{known.name}", None, adds_bos, _describe(known))
    # a translation renders role/content only (tools, tool calls and reasoning are None/undefined for it): where
    # Ollama would prefer the GGUF's Jinja template over it anyway, the Modelfile says so (and why a translation
    # would not do either, when it fails)
    why = _prefers_jinja_note(tokenizer.chat_template, [], False, "a translated")
    try:
        # with BOS added by the runner, the template's bos_token prints nothing (else BOS would be doubled)
        bos_constant = {"bos_token": ""} if adds_bos else {}
        translated = translate(tokenizer.chat_template, constants={**constants, **bos_constant})
        quote_multiline(translated.text, "the translated chat template")
    except (TemplateTranslationError, ModelfileError) as err:
        reason = f"the chat template cannot be translated to Go: {err}"
        return TemplateChoice(None, stops, "none", f"{why}; besides, {reason}" if why else reason, adds_bos)
    if why:
        return TemplateChoice(None, stops, "none", why, adds_bos)
    return TemplateChoice(translated.text, stops, "translated", "\n".join(translated.notes) or None, adds_bos)


def stop_problems(tokenizer, stops: list[str]) -> list[str]:
    """Modelfile stops that disagree with the tokenizer: every stop must be one special/added token of it."""
    specials = set(special_token_strings(tokenizer))
    return [f"{stop!r} is not a special token of the tokenizer" for stop in stops if stop not in specials]


def _describe(known) -> str | None:
    parts = []
    if known.tools:
        parts.append(
            "tools: .Tools in the system turn, .ToolCalls as <tool_call>...</tool_call> (the prefix Ollama's tool "
            "parser reads off this template), tool results"
        )
    if known.thinking:
        parts.append("thinking: .Thinking between <think> and </think> (Ollama infers the tags; think defaults to on)")
    return "; ".join(parts) or None


def _prefers_jinja_note(chat_template: str, capabilities: list[str], round_trip: bool, what: str) -> str | None:
    """Why the Modelfile has no TEMPLATE when Ollama would prefer the GGUF's Jinja template over it."""
    if not ollama_prefers_jinja(chat_template, capabilities, round_trip):
        return None
    jinja = ", ".join(ollama_jinja_capabilities(chat_template))
    return (
        f"the chat template advertises {jinja} to Ollama, {what} Go template {', '.join(capabilities) or 'none of them'}: "
        "Ollama would prefer the GGUF's Jinja template and ignore a TEMPLATE (server/images.go "
        "shouldPreferChatTemplate), so none is written; Ollama renders the Jinja template with llama.cpp"
    )


def default_num_ctx(config: dict, requested: int | None = None) -> int:
    """``requested``, else the model's context length capped at 4096 (Ollama allocates the KV cache for it)."""
    limit = config.get("max_position_embeddings") or DEFAULT_NUM_CTX
    if requested:
        return min(int(requested), int(limit))
    return min(DEFAULT_NUM_CTX, int(limit))


def parse_modelfile(text: str) -> dict[str, list[str]]:
    """A small reader of what :meth:`Modelfile.render` writes (``FROM``, ``TEMPLATE``, ``SYSTEM``, parameters),
    for the end-of-turn audit and the tests."""
    out: dict[str, list[str]] = {}
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t\r\n":
            i += 1
            continue
        if text[i] == "#":
            i = text.find("\n", i) if "\n" in text[i:] else n
            continue
        end = i
        while end < n and text[end].isalpha():
            end += 1
        command = text[i:end].upper()
        i = end + 1
        if command == "PARAMETER":
            end = i
            while end < n and text[end] not in " \t":
                end += 1
            command, i = f"PARAMETER {text[i:end]}", end + 1
        if text.startswith('"""', i):
            close = text.index('"""', i + 3)
            value, i = text[i + 3 : close], close + 3
        else:
            close = text.find("\n", i)
            close = n if close < 0 else close
            value, i = text[i:close].strip(), close
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
        out.setdefault(command, []).append(value)
    return out


def ollama_commands(name: str, modelfile: Path) -> list[str]:
    return [f"ollama create {shlex.quote(name)} -f {shlex.quote(str(modelfile))}", f"ollama run {shlex.quote(name)}"]


def ollama_create(name: str, modelfile: Path) -> bool:
    """Run ``ollama create`` when an ``ollama`` binary is on PATH; otherwise log the exact commands."""
    commands = ollama_commands(name, modelfile)
    ollama = shutil.which("ollama")
    if ollama is None:
        logger.info(
            "posttrain: no `ollama` binary on PATH; to serve the model with Ollama run:\n  %s", "\n  ".join(commands)
        )
        return False
    logger.info("posttrain: %s", commands[0])
    result = subprocess.run([ollama, "create", name, "-f", str(modelfile)], cwd=modelfile.parent)
    if result.returncode != 0:
        logger.warning(
            "`ollama create` exited with %d; run it again by hand:\n  %s", result.returncode, "\n  ".join(commands)
        )
        return False
    return True
