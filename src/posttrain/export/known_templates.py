"""Go templates of known chat-template families, chosen before any AST translation.

Ollama ships one Go template per family (``template/*.gotmpl`` with its stops in ``template/*.json``, picked by
``template/template.go`` ``Named`` when a Modelfile has no ``TEMPLATE``). Those templates do not reproduce the
families' Jinja templates byte for byte (Ollama's ``chatml.gotmpl`` has no SmolLM2/Qwen default system prompt,
``llama3-instruct.gotmpl`` does not trim contents, none leaves a trailing assistant message open), so each family
here has Ollama's template *adapted* to its Jinja, with these rules:

* the data is Ollama's: ``.Messages`` after ``collate`` (``template/template.go``), ``$.IsThinkSet``/``$.Think``;
* a trailing assistant message is a prefill: its content is left open, no end of turn and no generation prompt, as
  transformers' ``continue_final_message=True`` renders it (Ollama does nothing special for a prefill with a
  ``.Messages`` template: the template decides, ``server/routes.go`` ``ChatHandler``);
* no BOS: the runner adds it when the GGUF says ``tokenizer.ggml.add_bos_token`` (``llm/llama_server.go``
  ``tokenizerAddsBOS``); :func:`go_template_for` prepends it only when the GGUF does not add it;
* tools and thinking as Ollama passes them (``.Tools``, ``.ToolCalls``, tool messages, ``.Thinking``) where the
  Jinja renders them (posttrain's ChatML, Qwen2.5, Qwen3), written so that Ollama reads the right tool-call prefix
  and thinking tags off the template (see ``_TOOLS_INTRO`` below); a family whose Jinja advertises capabilities its
  Go template lacks gets no TEMPLATE (:func:`posttrain.export.modelfile.ollama_prefers_jinja`);
* Jinja's ``| trim`` (Python ``str.strip()``) is the recursive ``{{ define "posttrain_trim" }}`` below (Go's
  text/template has no string functions, but ``slice``/``len``/``eq`` on strings are enough).

A template is known when its source is byte-identical (after ``strip()``) to a family's; a fine-tune whose template
changed is translated instead (:mod:`posttrain.export.go_template`). Either way the export verifies the Go template
against the tokenizer's own Jinja rendering.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

# Python's str.isspace() characters, as Go string literals, by UTF-8 length (what Jinja's `trim` strips).
_WS1 = ['" "', r'"\t"', r'"\n"', r'"\v"', r'"\f"', r'"\r"', r'"\x1c"', r'"\x1d"', r'"\x1e"', r'"\x1f"']
_WS2 = [r'"\u0085"', r'"\u00a0"']
_WS3 = [rf'"\u{code:04x}"' for code in [0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]]


def _trim_define() -> str:
    """``{{ template "posttrain_trim" X }}`` prints ``X.strip()``: one whitespace character off the front or the
    back per recursion (``len (slice $s n)`` is ``len($s) - n``: text/template has no arithmetic)."""
    out = ['{{- define "posttrain_trim" }}{{- $s := . }}']
    branches = []
    for n, chars in ((1, _WS1), (2, _WS2), (3, _WS3)):
        branches.append(
            (f"and (ge (len $s) {n}) (eq (slice $s 0 {n}) {' '.join(chars)})", f"(slice $s {n})"),
        )
    for n, chars in ((1, _WS1), (2, _WS2), (3, _WS3)):
        branches.append(
            (
                f"and (ge (len $s) {n}) (eq (slice $s (len (slice $s {n}))) {' '.join(chars)})",
                f"(slice $s 0 (len (slice $s {n})))",
            )
        )
    for i, (condition, rest) in enumerate(branches):
        out.append(f'{{{{- {"if" if i == 0 else "else if"} {condition} }}}}{{{{ template "posttrain_trim" {rest} }}}}')
    out.append("{{- else }}{{ $s }}{{ end }}{{- end }}")
    return "\n".join(out)


TRIM_DEFINE = _trim_define()

#: ``$last``: whether message ``$i`` is the last one (Ollama's own templates use the same expression)
_LAST = "{{- $last := eq (len (slice $.Messages $i)) 1 -}}"


def _chatml(default_system: str | None) -> str:
    default = (
        f'{{{{- if and (eq $i 0) (ne .Role "system") }}}}<|im_start|>system\n{default_system}<|im_end|>\n{{{{ end }}}}'
        if default_system
        else ""
    )
    return (
        "{{- $prefill := false }}\n"
        "{{- range $i, $_ := .Messages }}\n" + _LAST + "\n" + default + "<|im_start|>{{ .Role }}\n{{ .Content }}"
        '{{ if and $last (eq .Role "assistant") }}{{ $prefill = true }}{{ else }}<|im_end|>\n{{ end }}\n'
        "{{- end }}\n"
        "{{- if not $prefill }}<|im_start|>assistant\n{{ end }}"
    )


# Tools, as Hermes/Qwen2.5-style templates render them (posttrain's chatml.jinja, Qwen2.5, Qwen3): the schemas as
# JSON lines inside <tools></tools> in the system turn, each call as <tool_call>\n{"name": ..., "arguments": ...}
# \n</tool_call>, results inside <tool_response></tool_response>. Ollama prints a tool (`{{ . }}`) and a call's
# arguments (`{{ .Function.Arguments }}`) as compact JSON through their String methods (template/template.go
# templateTool, templateArgs), where Jinja's `tojson` writes ", "/": " separators: the verification compares those
# JSON spans parsed. Ollama reads the tool-call prefix off the template (tools/template.go parseTag: the first text
# inside the first `{{ if ... .ToolCalls }}`, cut before "{"), so each template prints the calls inside
# `{{ if .ToolCalls }}` with `<tool_call>` as its first text; conditions that must not be mistaken for it read the
# calls through a variable (`$calls`).
_TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "{{- range .Tools }}\n{{ . }}\n{{- end }}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
    'XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)
_CALL = '<tool_call>\n{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}\n</tool_call>'
#: `$calls` has another call after call `$j`
_MORE_CALLS = "(ne (len (slice $calls $j)) 1)"
_FIRST_SYSTEM = 'and .Messages (eq (index .Messages 0).Role "system")'
#: Qwen's tool results: consecutive tool messages share one user turn
_QWEN_TOOL_RESULT = (
    '{{- if or (eq $i 0) (ne $previous "tool") }}<|im_start|>user{{ end }}\n<tool_response>\n{{ .Content }}\n'
    "</tool_response>"
    '{{- if or $last (ne (index (slice $.Messages $i) 1).Role "tool") }}<|im_end|>\n{{ end }}\n'
)


def _chatml_tools() -> str:
    """posttrain's own ``chat_templates/chatml.jinja``: ChatML, plus Hermes-style tools when a request has them."""
    return (
        "{{- $prefill := false }}\n"
        "{{- if .Tools }}<|im_start|>system\n"
        f"{{{{ if {_FIRST_SYSTEM} }}}}{{{{ (index .Messages 0).Content }}}}\n\n{{{{ end }}}}"
        + _TOOLS_INTRO
        + "{{ end }}\n"
        "{{- range $i, $_ := .Messages }}\n" + _LAST + "\n"
        "{{- $calls := .ToolCalls }}\n"
        '{{- if and (eq .Role "system") $.Tools (eq $i 0) }}\n'
        '{{- else if and (eq .Role "assistant") $calls }}<|im_start|>assistant\n'
        "{{ if .Content }}{{ .Content }}\n{{ end }}"
        "{{- if .ToolCalls }}{{ range $j, $_ := .ToolCalls }}" + _CALL + f"{{{{ if {_MORE_CALLS} }}}}\n{{{{ end }}}}"
        "{{ end }}{{ end }}<|im_end|>\n"
        '{{ else if eq .Role "tool" }}<|im_start|>tool\n<tool_response>\n{{ .Content }}\n</tool_response><|im_end|>\n'
        "{{ else }}<|im_start|>{{ .Role }}\n{{ .Content }}"
        '{{ if and $last (eq .Role "assistant") }}{{ $prefill = true }}{{ else }}<|im_end|>\n{{ end }}\n'
        "{{- end }}\n"
        "{{- end }}\n"
        "{{- if not $prefill }}<|im_start|>assistant\n{{ end }}"
    )


_QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5: the default system prompt also heads the tools block; an assistant turn with calls puts each call on a
# new line after the (optional) content.
_QWEN25 = (
    "{{- if .Tools }}<|im_start|>system\n"
    f"{{{{ if {_FIRST_SYSTEM} }}}}{{{{ (index .Messages 0).Content }}}}{{{{ else }}}}{_QWEN_DEFAULT_SYSTEM}{{{{ end }}}}"
    "\n\n" + _TOOLS_INTRO + f"{{{{ else if {_FIRST_SYSTEM} }}}}<|im_start|>system\n"
    "{{ (index .Messages 0).Content }}<|im_end|>\n"
    f"{{{{ else }}}}<|im_start|>system\n{_QWEN_DEFAULT_SYSTEM}<|im_end|>\n"
    "{{ end }}\n"
    '{{- $prefill := false }}{{ $previous := "" }}\n'
    "{{- range $i, $_ := .Messages }}\n" + _LAST + "\n"
    "{{- $calls := .ToolCalls }}\n"
    '{{- if or (eq .Role "user") (and (eq .Role "system") (ne $i 0)) (and (eq .Role "assistant") (not $calls)) }}'
    "<|im_start|>{{ .Role }}\n{{ .Content }}"
    '{{ if and $last (eq .Role "assistant") }}{{ $prefill = true }}{{ else }}<|im_end|>\n{{ end }}\n'
    '{{- else if eq .Role "assistant" }}<|im_start|>assistant{{ if .Content }}\n{{ .Content }}{{ end }}'
    "{{- if .ToolCalls }}{{ range .ToolCalls }}\n" + _CALL + "{{ end }}{{ end }}<|im_end|>\n"
    '{{ else if eq .Role "tool" }}' + _QWEN_TOOL_RESULT + "{{- end }}{{ $previous = .Role }}\n"
    "{{- end }}\n"
    "{{- if not $prefill }}<|im_start|>assistant\n{{ end }}"
)

# Qwen3: the reasoning of assistant turns after the last user query is kept (`.Thinking`, Ollama's message field);
# `.Thinking` inside the range over `.Messages` between the <think> text nodes is what Ollama's
# thinking/template.go InferTags reads as the thinking capability, so Think defaults to true (ChatHandler) and
# `think: false` adds Qwen3's empty think block, like Jinja's `enable_thinking=False`. A user message that is a
# wrapped tool result (<tool_response>...</tool_response>) is not a query.
_QWEN3 = (
    "{{- if .Tools }}<|im_start|>system\n"
    f"{{{{ if {_FIRST_SYSTEM} }}}}{{{{ (index .Messages 0).Content }}}}\n\n{{{{ end }}}}"
    + _TOOLS_INTRO
    + f"{{{{ else if {_FIRST_SYSTEM} }}}}<|im_start|>system\n"
    "{{ (index .Messages 0).Content }}<|im_end|>\n{{ end }}\n"
    "{{- $lastQuery := 0 }}{{ if .Messages }}{{ $lastQuery = len (slice .Messages 1) }}{{ end }}\n"
    "{{- range $i, $_ := .Messages }}"
    '{{ if and (eq .Role "user") (not (and (ge (len .Content) 31) (eq (slice .Content 0 15) "<tool_response>") '
    '(eq (slice .Content (len (slice .Content 16))) "</tool_response>"))) }}{{ $lastQuery = $i }}{{ end }}'
    "{{ end }}\n"
    '{{- $prefill := false }}{{ $previous := "" }}\n'
    "{{- range $i, $_ := .Messages }}\n" + _LAST + "\n"
    "{{- $calls := .ToolCalls }}\n"
    '{{- if or (eq .Role "user") (and (eq .Role "system") (ne $i 0)) }}<|im_start|>{{ .Role }}\n'
    "{{ .Content }}<|im_end|>\n"
    '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n'
    "{{- if and (gt $i $lastQuery) (or $last .Thinking) }}\n<think>\n{{ .Thinking }}\n</think>\n\n{{ else }}\n{{ end }}"
    "{{ .Content }}{{ if and $calls .Content }}\n{{ end }}"
    "{{- if .ToolCalls }}{{ range $j, $_ := .ToolCalls }}" + _CALL + f"{{{{ if {_MORE_CALLS} }}}}\n{{{{ end }}}}"
    "{{ end }}{{ end }}"
    "{{ if and $last (not $calls) }}{{ $prefill = true }}{{ else }}<|im_end|>\n{{ end }}\n"
    '{{- else if eq .Role "tool" }}' + _QWEN_TOOL_RESULT + "{{- end }}{{ $previous = .Role }}\n"
    "{{- end }}\n"
    "{{- if not $prefill }}<|im_start|>assistant\n"
    "{{ if and $.IsThinkSet (not $.Think) }}<think>\n\n</think>\n\n{{ end }}{{ end }}"
)

_LLAMA3 = (
    "{{- $prefill := false }}\n"
    "{{- range $i, $_ := .Messages }}\n" + _LAST + "\n"
    "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    '{{ template "posttrain_trim" .Content }}'
    '{{ if and $last (eq .Role "assistant") }}{{ $prefill = true }}{{ else }}<|eot_id|>{{ end }}\n'
    "{{- end }}\n"
    "{{- if not $prefill }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ end }}\n" + TRIM_DEFINE
)

_GEMMA3 = (
    '{{- $prefix := "" }}{{ $start := 0 }}\n'
    '{{- if and .Messages (eq (index .Messages 0).Role "system") }}'
    '{{ $prefix = print (index .Messages 0).Content "\\n\\n" }}{{ $start = 1 }}{{ end }}\n'
    "{{- $prefill := false }}\n"
    "{{- range $i, $_ := .Messages }}{{ if ge $i $start }}\n" + _LAST + "\n"
    '<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}{{ end }}\n'
    '{{ if eq $i $start }}{{ $prefix }}{{ end }}{{ template "posttrain_trim" .Content }}'
    '{{ if and $last (eq .Role "assistant") }}{{ $prefill = true }}{{ else }}<end_of_turn>\n{{ end }}\n'
    "{{- end }}{{ end }}\n"
    "{{- if not $prefill }}<start_of_turn>model\n{{ end }}\n" + TRIM_DEFINE
)

# Mistral-Nemo's Jinja puts the system message into the *last* user message (none when the conversation ends with
# an assistant message), ends assistant messages with </s> and has no generation prompt.
_MISTRAL_NEMO = (
    '{{- $system := "" }}{{ $hasSystem := false }}{{ $start := 0 }}\n'
    '{{- if and .Messages (eq (index .Messages 0).Role "system") }}'
    "{{ $system = (index .Messages 0).Content }}{{ $hasSystem = true }}{{ $start = 1 }}{{ end }}\n"
    "{{- range $i, $_ := .Messages }}{{ if ge $i $start }}\n" + _LAST + "\n"
    '{{- if eq .Role "user" }}[INST]{{ if and $last $hasSystem }}{{ $system }}\n\n{{ end }}{{ .Content }}[/INST]\n'
    '{{- else if eq .Role "assistant" }}{{ .Content }}{{ if not $last }}</s>{{ end }}\n'
    "{{- end }}{{ end }}{{ end }}"
)


@dataclass(frozen=True)
class KnownTemplate:
    name: str
    ollama_template: str  # the Ollama template/*.gotmpl it is adapted from
    go: str  # without BOS
    stops: tuple[str, ...]  # Ollama's stops for the family (kept when they are tokens of the tokenizer)
    jinja_starts_with_bos: bool = False
    sha256: tuple[str, ...] = ()
    chatml_file: bool = False  # posttrain's own chat_templates/chatml.jinja
    tools: bool = False  # renders .Tools, .ToolCalls and tool results (Ollama's tools capability)
    thinking: bool = False  # renders .Thinking between tags Ollama infers (Ollama's thinking capability)


KNOWN_TEMPLATES: tuple[KnownTemplate, ...] = (
    KnownTemplate(
        "chatml",
        "chatml",
        _chatml_tools(),
        ("<|im_start|>", "<|im_end|>"),
        chatml_file=True,
        tools=True,
    ),
    KnownTemplate(
        "smollm2",
        "chatml",
        _chatml("You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
        ("<|im_start|>", "<|im_end|>"),
        sha256=("872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788",),
    ),
    KnownTemplate(
        "qwen2.5",
        "chatml",
        _QWEN25,
        ("<|im_start|>", "<|im_end|>"),
        tools=True,
        sha256=("55b2f4a26ac9ee719330a61a0c39d9e538b0e9322212f048326318cff4f8674a",),
    ),
    KnownTemplate(
        "qwen3",
        "chatml",
        _QWEN3,
        ("<|im_start|>", "<|im_end|>"),
        tools=True,
        thinking=True,
        sha256=("87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5",),
    ),
    KnownTemplate(
        "llama3",
        "llama3-instruct",
        _LLAMA3,
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        jinja_starts_with_bos=True,
        sha256=("ba03a121d097859c7b5b9cd03af99aafe95275210d2876f642ad9929a150f122",),
    ),
    KnownTemplate(
        "gemma3",
        "gemma3-instruct",
        _GEMMA3,
        ("<end_of_turn>",),
        jinja_starts_with_bos=True,
        sha256=("8d9e3a3c114fb2053ec500184677af4f7e5f8ec2582443cd535834e68b3ade29",),
    ),
    KnownTemplate(
        "mistral-nemo",
        "mistral-instruct",
        _MISTRAL_NEMO,
        ("</s>",),
        jinja_starts_with_bos=True,
        sha256=("c7a94f505398612940c13ee95070d0d152bcb7b4afbd74a06ff148a82a02851c",),
    ),
)


def _digest(source: str) -> str:
    return hashlib.sha256(source.strip().encode("utf-8")).hexdigest()


def _chatml_digest() -> str:
    path = Path(__file__).parent.parent / "chat_templates" / "chatml.jinja"
    return _digest(path.read_text(encoding="utf-8")) if path.is_file() else ""


def match_known(chat_template: str | None) -> KnownTemplate | None:
    """The known family whose Jinja template is exactly ``chat_template`` (None when there is none)."""
    if not chat_template:
        return None
    digest = _digest(chat_template)
    for known in KNOWN_TEMPLATES:
        if digest in known.sha256 or (known.chatml_file and digest == _chatml_digest()):
            return known
    return None


def go_template_for(known: KnownTemplate, *, bos_token: str | None, adds_bos: bool) -> str:
    """The family's Go template for a GGUF that does (``adds_bos``) or does not add BOS itself: the template writes
    the BOS its Jinja writes only when the runner will not."""
    if known.jinja_starts_with_bos and not adds_bos and bos_token:
        return bos_token + known.go
    return known.go
