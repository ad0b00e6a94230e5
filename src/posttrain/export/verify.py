"""Verify the artifact that ships, against the merged HF model it came from.

* **Tokenization**: llama.cpp must split texts (plain, digits, whitespace, unicode, chat special tokens) into
  exactly the HF tokenizer's ids -- this is what checks the pre-tokenizer fallback.
* **Greedy generations**: the same prompt ids go through the HF model (float32) and each GGUF (llama.cpp); the
  greedy replies are compared token by token. ``prompts_identical`` is the share of prompts whose whole reply
  matches; ``token_agreement`` the mean share of reply tokens before the first difference. Where two replies part,
  the HF model scores both tokens: a *near tie* (HF's own token more likely by at most ``tie_margin`` nats) is a flip
  that rounding the weights to 16 bits can cause, not a conversion fault, so it counts as agreeing
  (``prompts_agreeing``); a reply that parts at a confident token does not.
* **Go template**: the Modelfile's ``TEMPLATE`` rendered by Go's ``text/template`` (data shaped like Ollama's) must
  equal the tokenizer's Jinja rendering byte for byte on every conversation of
  :data:`~posttrain.export.prompts.TEMPLATE_CONVERSATIONS` (generation prompt iff the last turn is not the
  assistant's, as Ollama does); and on tool and thinking conversations (:data:`TOOL_CONVERSATIONS`), tool JSON
  compared parsed, with the trained tool-call reply parsed back by Ollama's parsers (:func:`check_go_template`).
* **End of turn**: the token the template puts after an assistant reply (and the tokenizer's EOS) must be an EOS
  in ``generation_config``, an end-of-generation token of llama.cpp for the GGUF, and a ``PARAMETER stop`` of the
  Modelfile; the GGUF must carry the tokenizer's chat template, and a rendered chat prompt tokenized by llama.cpp
  (adding BOS as the GGUF says) must give the HF prompt ids -- no missing or doubled BOS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.chat_templates import adds_bos
from posttrain.chat_templates.stops import end_of_turn_tokens, eos_id_list
from posttrain.export.gorender import GO_PACKAGE_HINT, GoUnavailableError, render_ollama
from posttrain.export.modelfile import parse_modelfile, stop_problems
from posttrain.export.prompts import MODELFILE_SYSTEM, TEMPLATE_CONVERSATIONS, TOKENIZER_TEXTS
from posttrain.log import get_logger
from posttrain.models.sample_conversations import GENERATION_CONVERSATIONS

logger = get_logger(__name__)


@dataclass
class ExportCheck:
    """One verification result of an export: passed (True), failed (False) or report-only (None)."""

    name: str
    passed: bool | None  # None: skipped / report-only
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "info"}[self.passed]


def load_gguf(path: Path, *, n_ctx: int = 1024, threads: int | None = None):
    from llama_cpp import Llama

    return Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        logits_all=True,
        verbose=False,
        n_threads=threads or max(1, os.cpu_count() or 1),
    )


# ------------------------------------------------------------------------------------------------ tokenization


def chat_prompt_ids(tokenizer, conversation: list[dict]) -> list[int]:
    """The prompt ids posttrain trains and generates with: BOS once where the tokenizer adds it
    (:func:`posttrain.chat_templates.encode_rendered`), as llama.cpp and Ollama send it."""
    from posttrain.chat_templates import encode_rendered

    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return encode_rendered(tokenizer, text)["input_ids"]


def check_tokenization(tokenizer, llm, texts: list[str] | None = None, *, label: str = "") -> ExportCheck:
    texts = list(texts or TOKENIZER_TEXTS)
    if tokenizer.chat_template:
        texts += [
            tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in TEMPLATE_CONVERSATIONS[:4]
        ]
    mismatches, space_prefix = [], []
    spm = (getattr(llm, "metadata", None) or {}).get("tokenizer.ggml.model") == "llama"
    for text in texts:
        hf = tokenizer(text, add_special_tokens=False)["input_ids"]
        gguf = list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        if hf == gguf:
            continue
        # llama.cpp's SentencePiece tokenizer always adds its space prefix; HF's Metaspace adds none before a
        # leading space. A chat prompt never starts a text fragment with a space, so that alone is reported only.
        if spm and text[:1] == " " and tokenizer(" " + text, add_special_tokens=False)["input_ids"] == gguf:
            space_prefix.append({"text": text, "hf": hf, "llama_cpp": gguf})
        else:
            mismatches.append({"text": text, "hf": hf, "llama_cpp": gguf})
    identical = len(texts) - len(mismatches) - len(space_prefix)
    known = (
        f"; {len(space_prefix)} starting with a space differ only by llama.cpp's SentencePiece space prefix (HF "
        "adds none before a space; chat prompts never start with one)"
        if space_prefix
        else ""
    )
    return ExportCheck(
        f"tokenization[{label}]" if label else "tokenization",
        not mismatches,
        f"{identical}/{len(texts)} texts tokenized identically{known}",
        {"texts": len(texts), "mismatches": mismatches[:5], "space_prefix_only": space_prefix[:5]},
    )


# ------------------------------------------------------------------------------------------------ generations


def greedy_hf(model, prompt_ids: list[int], *, max_new_tokens: int, stops: list[int]) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops or None,
            pad_token_id=stops[0] if stops else None,
            top_p=None,
            top_k=None,
            temperature=None,
        )
    return out[0, len(prompt_ids) :].tolist()


def greedy_llama(llm, prompt_ids: list[int], *, max_new_tokens: int, stops: list[int]) -> list[int]:
    import numpy as np

    llm.reset()
    llm.eval(prompt_ids)
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        if token in stops:
            break
        llm.eval([token])
    return out


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two replies differ (None when identical)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def divergence_margins(
    model, prompts: list[list[int]], reference: list[list[int]], candidate: list[list[int]]
) -> list[float | None]:
    """Per prompt: log p(HF's token) - log p(the other token) under the HF model where the replies first differ
    (None for identical replies; inf when one reply simply ends there)."""
    import torch

    margins: list[float | None] = []
    for prompt, a, b in zip(prompts, reference, candidate):
        k = first_difference(a, b)
        if k is None:
            margins.append(None)
        elif k >= len(a) or k >= len(b):
            margins.append(float("inf"))
        else:
            with torch.no_grad():
                logits = model(torch.tensor([prompt + a[:k]])).logits[0, -1].float().log_softmax(-1)
            margins.append(float(logits[a[k]] - logits[b[k]]))
    return margins


def agreement(reference: list[list[int]], candidate: list[list[int]]) -> dict[str, float]:
    identical = sum(a == b for a, b in zip(reference, candidate))
    shares = []
    for a, b in zip(reference, candidate):
        prefix = 0
        for x, y in zip(a, b):
            if x != y:
                break
            prefix += 1
        shares.append(prefix / max(len(a), len(b), 1))
    n = max(len(reference), 1)
    return {"prompts": len(reference), "prompts_identical": identical / n, "token_agreement": sum(shares) / n}


def check_generations(
    gtype: str,
    hf_replies,
    gguf_replies,
    *,
    threshold: float | None,
    margins: list[float | None] | None = None,
    tie_margin: float = 0.0,
) -> ExportCheck:
    """Pass when the share of prompts whose replies are identical or part at a near tie reaches ``threshold``."""
    stats = agreement(hf_replies, gguf_replies)
    margins = margins or [None] * len(hf_replies)
    ties = sum(m is not None and m <= tie_margin for m in margins)
    stats["near_ties"] = ties
    stats["divergence_margins"] = [None if m is None else round(m, 4) for m in margins]
    stats["prompts_agreeing"] = stats["prompts_identical"] + ties / max(len(hf_replies), 1)
    passed = None if threshold is None else stats["prompts_agreeing"] >= threshold
    target = "" if threshold is None else f" (target ≥ {threshold:.0%} identical or near ties)"
    tied = f", {ties} more part at a near tie (≤ {tie_margin:g} nats under HF)" if ties else ""
    return ExportCheck(
        f"generations[{gtype}]",
        passed,
        f"{stats['prompts_identical']:.0%} of {stats['prompts']} greedy replies identical to HF{tied}{target}; "
        f"token agreement {stats['token_agreement']:.1%}",
        stats,
    )


# ------------------------------------------------------------------------------------------------ Go template


#: tools offered in the tool conversations: only fields Ollama's api.Tool keeps (a property's "default" or
#: "minimum" would be dropped on the way into Ollama, a real difference the verification would report)
VERIFY_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. Paris"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Local time in a time zone.",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string", "description": "IANA name, e.g. Europe/Paris"}},
                "required": ["timezone"],
            },
        },
    },
]


def _call(name: str, arguments: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": arguments}, "id": call_id}


_WEATHER_CALL = _call("get_weather", {"city": "Paris", "unit": "celsius"}, "call_1")
_TIME_CALL = _call("get_time", {"timezone": "Europe/Paris"}, "call_2")
_ASK = {"role": "user", "content": "What's the weather in Paris, and what time is it there?"}

#: tool and thinking conversations in posttrain's normalised form (:mod:`posttrain.data.tools`), each checked where
#: the Jinja template renders what it exercises (:func:`jinja_renders_extras`)
TOOL_CONVERSATIONS: list[dict[str, Any]] = [
    {"name": "tools in the request", "tools": VERIFY_TOOLS, "messages": [_ASK]},
    {
        "name": "tools and a system message",
        "tools": VERIFY_TOOLS,
        "messages": [{"role": "system", "content": "You are a weather bot."}, _ASK],
    },
    {
        "name": "a tool call and its result",
        "tools": VERIFY_TOOLS,
        "messages": [
            _ASK,
            {"role": "assistant", "content": "", "tool_calls": [_WEATHER_CALL]},
            {
                "role": "tool",
                "content": '{"temperature": 18, "sky": "clear"}',
                "name": "get_weather",
                "tool_call_id": "call_1",
            },
        ],
    },
    {
        "name": "the final answer after a tool result",
        "tools": VERIFY_TOOLS,
        "messages": [
            _ASK,
            {"role": "assistant", "content": "", "tool_calls": [_WEATHER_CALL]},
            {"role": "tool", "content": "18 degrees, clear sky", "name": "get_weather", "tool_call_id": "call_1"},
            {"role": "assistant", "content": "It is 18 °C and clear in Paris."},
            {"role": "user", "content": "Thanks! <b>And</b> tomorrow?"},
        ],
    },
    {
        "name": "two calls in one turn",
        "tools": VERIFY_TOOLS,
        "messages": [
            _ASK,
            {"role": "assistant", "content": "Let me check both.", "tool_calls": [_WEATHER_CALL, _TIME_CALL]},
            {"role": "tool", "content": "18 degrees", "name": "get_weather", "tool_call_id": "call_1"},
            {"role": "tool", "content": "14:05", "name": "get_time", "tool_call_id": "call_2"},
        ],
    },
    {
        "name": "tool calls in the history of a request without tools",
        "messages": [
            _ASK,
            {"role": "assistant", "content": "", "tool_calls": [_WEATHER_CALL]},
            {"role": "tool", "content": "18 degrees", "name": "get_weather", "tool_call_id": "call_1"},
            {"role": "assistant", "content": "18 °C in Paris."},
            {"role": "user", "content": "Great."},
        ],
    },
    {
        "name": "reasoning in the history",
        "messages": [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help?", "reasoning_content": "A greeting."},
            {"role": "user", "content": "What is 2 + 2?"},
        ],
    },
    {
        "name": "reasoning before a tool call",
        "tools": VERIFY_TOOLS,
        "messages": [
            _ASK,
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "I need the weather tool.",
                "tool_calls": [_WEATHER_CALL],
            },
            {"role": "tool", "content": "18 degrees", "name": "get_weather", "tool_call_id": "call_1"},
        ],
    },
]


def _without(case: dict[str, Any], feature: str) -> dict[str, Any]:
    if feature == "tools":
        return {**case, "tools": None}
    key = {"tool calls": "tool_calls", "reasoning": "reasoning_content"}[feature]
    return {**case, "messages": [{k: v for k, v in m.items() if k != key} for m in case["messages"]]}


def jinja_renders_extras(render_jinja, case: dict[str, Any]) -> list[str]:
    """The features of a tool/thinking conversation (``tools``, ``tool calls``, ``reasoning``) that the Jinja
    template ignores: rendering it without the feature gives the same text (as the SFT stage decides what a template
    trains). A case is checked only where the template renders all of its features."""

    def render(c):
        kwargs = {"tools": c["tools"]} if c.get("tools") else {}
        return render_jinja(c["messages"], add_generation_prompt=True, **kwargs)

    present = []
    if case.get("tools"):
        present.append("tools")
    if any(m.get("tool_calls") for m in case["messages"]):
        present.append("tool calls")
    if any(m.get("reasoning_content") for m in case["messages"]):
        present.append("reasoning")
    try:
        full = render(case)
    except Exception:
        return []  # refused: compare_with_jinja reports it as not applicable
    ignored = []
    for feature in present:
        try:
            if render(_without(case, feature)) == full:
                ignored.append(feature)
        except Exception:
            continue
    return ignored


def trained_tool_reply(render_jinja, end_of_turn: list[str]) -> tuple[str, str] | None:
    """``(prompt, reply)``: the prompt for a tool-calling turn and the assistant reply the Jinja template trains for
    it (a call to ``get_weather``, with the template's own think block), cut at the end of turn; None when the
    template does not render the call."""
    ask = [_ASK]
    answer = [_ASK, {"role": "assistant", "content": "", "tool_calls": [_WEATHER_CALL]}]
    try:
        prompt = render_jinja(ask, add_generation_prompt=True, tools=VERIFY_TOOLS)
        full = render_jinja(answer, add_generation_prompt=False, tools=VERIFY_TOOLS)
    except Exception:
        return None
    if not full.startswith(prompt) or "get_weather" not in full[len(prompt) :]:
        return None
    reply = full[len(prompt) :]
    cut = [reply.index(t) for t in end_of_turn if t and t in reply]
    return prompt, (reply[: min(cut)] if cut else reply)


def check_go_template(
    tokenizer, go_template: str | None, *, translation_error: str | None = None, system: str | None = None
) -> ExportCheck:
    """The Modelfile TEMPLATE rendered the way Ollama renders a chat request (SYSTEM insertion, collation,
    ``.System``, legacy path, thinking default, prefill, ``.Tools``/``.ToolCalls``/tool results/``.Thinking``;
    ``gotemplate/main.go``) plus the BOS the runner adds, vs. the tokenizer's Jinja rendering (plus the BOS the
    tokenizer adds), on every conversation of :data:`~posttrain.export.prompts.TEMPLATE_CONVERSATIONS` without and
    with the Modelfile ``SYSTEM``, and on each :data:`TOOL_CONVERSATIONS` case whose tools, tool calls and reasoning
    the Jinja template renders (think on and off where the template has thinking tags).

    Everything is compared byte for byte except JSON objects (tool schemas in the system prompt, call arguments):
    Go's ``json.Marshal`` writes them compact and in struct order, Jinja's ``tojson`` with ", "/": " in dict order,
    so those spans are compared parsed (:func:`~posttrain.export.go_template.json_segments`). A Jinja template that
    renders tools with a TEMPLATE that has no ``.Tools`` fails (Ollama answers "does not support tools"), as does a
    TEMPLATE Ollama would not use because the GGUF's Jinja advertises more capabilities
    (``shouldPreferChatTemplate``). With tools, a reply in the format the Jinja template trains (its think block
    included) must come back from Ollama's parsers as the call: name and arguments."""
    if go_template is None:
        return ExportCheck(
            "go_template",
            None,
            f"no TEMPLATE in the Modelfile (Ollama uses the GGUF's Jinja template): {translation_error}",
            {"translated": False, "reason": translation_error},
        )
    try:
        run = _render_go_template(tokenizer, go_template, system)
    except GoUnavailableError as err:
        return ExportCheck("go_template", None, f"skipped: {err}", {"skipped": True, "install": GO_PACKAGE_HINT})
    except ValueError as err:
        return ExportCheck("go_template", False, f"the Go template does not parse: {err}")
    summary, problems, call_parsed = _go_template_summary(run)
    if problems:
        summary += "; " + "; ".join(problems)
    return ExportCheck(
        "go_template", run.result.passed and not problems, summary, _go_template_details(run, call_parsed)
    )


@dataclass
class _GoTemplateRun:
    """What :func:`check_go_template` measured: the chat comparison, the tool/thinking one (None without cases), the
    tool cases the Jinja template does not render (name -> features), the template's capabilities, and the trained
    tool-call reply ``(prompt, reply)`` with what Ollama's parsers made of it."""

    source: str  # "known <family> template" or "translated template"
    result: Any
    tools: Any
    ignored: dict[str, list[str]]
    info: Any
    trained: tuple[str, str] | None
    parsed: Any


def _render_go_template(tokenizer, go_template: str, system: str | None) -> _GoTemplateRun:
    """Render ``go_template`` as Ollama does and compare with Jinja; raises GoUnavailableError without ``go`` and
    ValueError when the template does not parse."""
    from posttrain.export.go_template import compare_with_jinja
    from posttrain.export.gorender import parse_replies, template_info
    from posttrain.export.known_templates import match_known

    known = match_known(tokenizer.chat_template)

    def render_jinja(messages, **kwargs):
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)

    systems = (None, system or MODELFILE_SYSTEM)
    options = {
        "bos_token": tokenizer.bos_token,
        "adds_bos": adds_bos(tokenizer),
        "model_family": "qwen3" if known is not None and known.name == "qwen3" else None,
    }
    tool_cases, ignored = [], {}
    for case in TOOL_CONVERSATIONS:
        features = jinja_renders_extras(render_jinja, case)
        if features:
            ignored[case["name"]] = features
        else:
            tool_cases.append(case)
    result = compare_with_jinja(go_template, render_jinja, TEMPLATE_CONVERSATIONS, systems=systems, **options)
    tools = compare_with_jinja(go_template, render_jinja, tool_cases, **options) if tool_cases else None
    if tools is not None and tools.checked == 0:  # the Jinja template refuses every case (Gemma: no tool role)
        ignored.update({d["case"]: ["refused"] for d in tools.not_applicable if "case" in d})
        tools = None
    info = template_info(go_template, tokenizer.chat_template)
    parsed = None
    trained = trained_tool_reply(render_jinja, end_of_turn_tokens(tokenizer)) if "tools" in info.capabilities else None
    if trained is not None:
        [parsed] = parse_replies(go_template, [trained[1]], tools=VERIFY_TOOLS, prompt=trained[0])
    source = f"known {known.name} template" if known is not None else "translated template"
    return _GoTemplateRun(source, result, tools, ignored, info, trained, parsed)


def _go_template_summary(run: _GoTemplateRun) -> tuple[str, list[str], bool | None]:
    """``(summary, problems, whether the trained tool call parses back)`` of a Go template comparison."""
    result, tools, info = run.result, run.tools, run.info
    problems = []
    doubled = f"; BOS doubled in {result.doubled_bos}" if result.doubled_bos else ""
    skipped = f" ({len(result.not_applicable)} refused by the Jinja template)" if result.not_applicable else ""
    legacy = "" if result.uses_messages else " (legacy .Prompt/.Response path)"
    if result.prefill_closed:
        skipped += (
            f"; {result.prefill_closed} prefills are closed by the template (Jinja's continue_final_message leaves "
            "them open): Ollama starts a new turn after a trailing assistant message"
        )
    summary = (
        f"{result.equal}/{result.checked} chat requests render as Ollama would send them identically to Jinja "
        f"({run.source}{legacy}){skipped}{doubled}"
    )
    if tools is not None:
        summary += (
            f"; tools/thinking: {tools.equal}/{tools.checked} identical ({tools.equal_modulo_json} once tool JSON "
            "is compared parsed)"
        )
        if not tools.passed:
            names = sorted({d["case"] for d in tools.differences})
            errors = sorted({d["error"] for d in tools.differences if d["error"]})
            problems.append(f"differs on {', '.join(names)}" + (f" (Ollama: {'; '.join(errors)})" if errors else ""))
    if info.prefer_chat_template:
        problems.append(
            f"Ollama would ignore this TEMPLATE: the GGUF's Jinja template advertises "
            f"{', '.join(info.chat_template_capabilities)}, the TEMPLATE {', '.join(info.capabilities) or 'nothing'}"
        )
    call_parsed = None
    if run.trained is not None:
        want = _WEATHER_CALL["function"]
        call_parsed = run.parsed.tool_calls == [{"name": want["name"], "arguments": want["arguments"]}]
        if not call_parsed:
            problems.append(
                f"Ollama's parser (tool tag {info.tool_tag!r}) does not extract the call from the trained reply "
                f"{run.trained[1]!r}: got {run.parsed.tool_calls}, content {run.parsed.content!r}"
            )
        else:
            summary += f"; a trained tool call ({info.tool_tag}...) parses back into name and arguments"
    return summary, problems, call_parsed


def _go_template_details(run: _GoTemplateRun, call_parsed: bool | None) -> dict[str, Any]:
    result, tools, info = run.result, run.tools, run.info
    return {
        "equal": result.equal,
        "conversations": result.checked,
        "template_source": run.source,
        "uses_messages": result.uses_messages,
        "thinking": result.thinking,
        "capabilities": info.capabilities,
        "tool_tag": info.tool_tag if "tools" in info.capabilities else None,
        "thinking_tags": list(info.thinking_tags) if result.thinking else None,
        "chat_template_capabilities": info.chat_template_capabilities,
        "prefer_chat_template": info.prefer_chat_template,
        "doubled_bos": result.doubled_bos,
        "prefill_closed": result.prefill_closed,
        "not_applicable": result.not_applicable[:3],
        "differences": result.differences[:3],
        "tool_cases": {
            "checked": 0 if tools is None else tools.checked,
            "equal": 0 if tools is None else tools.equal,
            "equal_modulo_json": 0 if tools is None else tools.equal_modulo_json,
            "not_rendered_by_jinja": run.ignored,
            "not_applicable": [] if tools is None else tools.not_applicable[:3],
            "differences": [] if tools is None else tools.differences[:3],
        },
        "tool_call_parsed": call_parsed,
    }


# ------------------------------------------------------------------------------------------------ end of turn


def gguf_metadata(path: Path) -> dict[str, Any]:
    """Scalar tokenizer/general metadata of a GGUF (gguf-py's reader; no llama.cpp needed)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out = {}
    for key, value in reader.fields.items():
        if key.startswith(
            ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores")
        ):
            continue
        try:
            out[key] = value.contents()
        except (ValueError, TypeError, IndexError):
            continue
    return out


def check_end_of_turn(tokenizer, generation_config, gguf_path: Path, llm, modelfile_text: str) -> ExportCheck:
    import llama_cpp

    problems: list[str] = []
    tokens = end_of_turn_tokens(tokenizer)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokens]
    eos = eos_id_list(getattr(generation_config, "eos_token_id", None))
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    stops = parse_modelfile(modelfile_text).get("PARAMETER stop", [])
    metadata = gguf_metadata(gguf_path)
    for token, token_id in zip(tokens, ids):
        if token_id not in eos:
            problems.append(f"{token} (id {token_id}) is not an eos_token_id of generation_config ({eos})")
        if not llama_cpp.llama_vocab_is_eog(vocab, token_id):
            problems.append(
                f"{token} (id {token_id}) does not end generation in llama.cpp (GGUF eos id "
                f"{metadata.get('tokenizer.ggml.eos_token_id')}, eot id "
                f"{metadata.get('tokenizer.ggml.eot_token_id')})"
            )
        if token not in stops:
            problems.append(f"{token} is not a PARAMETER stop of the Modelfile ({stops})")
    problems += [f"PARAMETER stop {p}" for p in stop_problems(tokenizer, stops)]
    template = (parse_modelfile(modelfile_text).get("TEMPLATE") or [None])[0]
    add_bos_gguf = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    if template and add_bos_gguf and tokenizer.bos_token:
        try:  # what Ollama sends: the runner's BOS + the rendered TEMPLATE (llm/llama_server.go tokenizerAddsBOS)
            [(prompt, _)] = render_ollama(template, [TEMPLATE_CONVERSATIONS[1]]).renders
        except (GoUnavailableError, ValueError):
            prompt = ""
        if prompt.startswith(tokenizer.bos_token):
            problems.append(
                f"the Modelfile TEMPLATE writes {tokenizer.bos_token} and the GGUF adds BOS too (add_bos_token): "
                "Ollama would send a doubled BOS"
            )
    if tokenizer.chat_template and metadata.get("tokenizer.chat_template") != tokenizer.chat_template:
        problems.append("the GGUF's tokenizer.chat_template differs from the tokenizer's chat template")
    from posttrain.chat_templates import has_generation_tags

    if has_generation_tags(metadata.get("tokenizer.chat_template")):
        problems.append("the GGUF's tokenizer.chat_template has TRL's {% generation %} training markers")
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    bos_ok = True
    if tokenizer.chat_template:
        conversation = TEMPLATE_CONVERSATIONS[1]
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        hf = chat_prompt_ids(tokenizer, conversation)  # what training and HF generation start the prompt with
        # llama.cpp's Jinja path drops a leading BOS the template writes when it adds BOS itself
        # (common/chat.cpp apply: "To avoid double BOS / EOS tokens"), as Ollama's runner does with a TEMPLATE
        sent = text
        if add_bos and tokenizer.bos_token and sent.startswith(tokenizer.bos_token):
            sent = sent[len(tokenizer.bos_token) :]
        gguf = list(llm.tokenize(sent.encode("utf-8"), add_bos=add_bos, special=True))
        if hf != gguf:
            bos_ok = False
            problems.append(
                f"a rendered chat prompt tokenized by llama.cpp (add_bos={add_bos}) differs from HF's "
                f"prompt ids (first ids: HF {hf[:4]}, llama.cpp {gguf[:4]}): missing or doubled BOS?"
            )
    summary = (
        f"end-of-turn {tokens} consistent across tokenizer, generation_config, GGUF and Modelfile"
        if not problems
        else "; ".join(problems)
    )
    return ExportCheck(
        "end_of_turn",
        not problems,
        summary,
        {
            "tokens": tokens,
            "ids": ids,
            "generation_config_eos": eos,
            "modelfile_stops": stops,
            "gguf_eos": metadata.get("tokenizer.ggml.eos_token_id"),
            "gguf_eot": metadata.get("tokenizer.ggml.eot_token_id"),
            "gguf_add_bos": add_bos,
            "bos_consistent": bos_ok,
            "gguf_pre_tokenizer": metadata.get("tokenizer.ggml.pre"),
        },
    )


# ------------------------------------------------------------------------------------------------ report


def write_report(checks: list[ExportCheck], path_json: Path, path_md: Path, *, title: str, extra: dict | None = None):
    import json

    data = {
        "title": title,
        "passed": all(c.passed is not False for c in checks),
        **(extra or {}),
        "checks": [{"name": c.name, "status": c.status, "summary": c.summary, "details": c.details} for c in checks],
    }
    path_json.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    lines = [
        f"# {title}",
        "",
        f"**{'PASSED' if data['passed'] else 'FAILED'}**",
        "",
        "| check | status | result |",
        "|---|---|---|",
    ]
    for check in checks:
        lines.append(f"| {check.name} | {check.status} | {check.summary.replace('|', chr(92) + '|')} |")
    path_md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def print_checks(checks: list[ExportCheck]) -> None:
    for check in checks:
        logger.info("posttrain: verify %-22s %4s  %s", check.name, check.status, check.summary)


def default_generation_conversations(limit: int | None = None) -> list[list[dict]]:
    return GENERATION_CONVERSATIONS[:limit] if limit else list(GENERATION_CONVERSATIONS)
