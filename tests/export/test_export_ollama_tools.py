"""Tools and thinking in the Modelfile TEMPLATE, as Ollama renders the prompt and parses the reply.

The Go side is Ollama's own code ported in ``gotemplate/main.go`` (template data, capability checks, the tool-call
tag and thinking tags read off the template, the streaming tool and thinking parsers); the reference is the real
tokenizer's Jinja template (tests/families.py) or posttrain's ``chatml.jinja``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from posttrain.export import verify
from posttrain.export.go_template import json_segments
from posttrain.export.known_templates import _CALL, _QWEN25, KNOWN_TEMPLATES, _chatml, go_template_for, match_known

CHATML_JINJA = Path(__file__).parents[2] / "src" / "posttrain" / "chat_templates" / "chatml.jinja"
TOOL_FAMILIES = {"chatml": "chatml", "qwen2_5": "qwen2.5", "qwen3": "qwen3"}


def tokenizer_for(family: str):
    """posttrain's chatml on SmolLM2's tokenizer, or the family's real tokenizer and template."""
    families = pytest.importorskip("families")
    try:
        tokenizer = families.load_family_tokenizer("smollm2" if family == "chatml" else family)
    except families.FamilyAssetsMissing as err:
        pytest.skip(str(err))
    if family == "chatml":
        tokenizer.chat_template = CHATML_JINJA.read_text(encoding="utf-8")
    return tokenizer


def known_go_template(tokenizer) -> str:
    from posttrain.chat_templates import adds_bos as tokenizer_adds_bos

    known = match_known(tokenizer.chat_template)
    assert known is not None
    return go_template_for(known, bos_token=tokenizer.bos_token, adds_bos=tokenizer_adds_bos(tokenizer))


def token_chunks(tokenizer, text: str) -> list[str]:
    """``text`` as the runner streams it: one piece per token."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = [tokenizer.decode([i]) for i in ids]
    assert "".join(pieces) == text
    return pieces


@pytest.mark.parametrize("family", sorted(TOOL_FAMILIES))
def test_tool_and_thinking_conversations_render_like_jinja(family, go_tool):
    """Tools in the request, calls (one and two per turn), tool results, the final answer and reasoning render as
    Jinja does (tool JSON compared parsed, the rest byte for byte), and a reply in the trained format comes back
    from Ollama's parsers as the call."""
    tokenizer = tokenizer_for(family)
    assert match_known(tokenizer.chat_template).name == TOOL_FAMILIES[family]
    check = verify.check_go_template(tokenizer, known_go_template(tokenizer))
    details = check.details
    assert check.passed, (check.summary, details["tool_cases"]["differences"][:1])
    tools = details["tool_cases"]
    # all tool cases render (reasoning only in Qwen3, and only after the last query); think on and off for Qwen3
    assert tools["checked"] == tools["equal"] == (14 if family == "qwen3" else 6)
    assert tools["equal_modulo_json"] > 0  # Go's compact JSON is not Jinja's tojson: compared parsed
    assert details["capabilities"] == (["tools", "thinking"] if family == "qwen3" else ["tools"])
    assert details["tool_tag"] == "<tool_call>" and details["tool_call_parsed"] is True
    assert details["prefer_chat_template"] is False  # Ollama uses this TEMPLATE, not the GGUF's Jinja
    if family == "qwen3":
        assert details["thinking_tags"] == ["<think>", "</think>"]
        assert set(tools["not_rendered_by_jinja"]) == {"reasoning in the history"}  # Qwen3 drops old reasoning


def test_qwen3_replies_parse_with_think_on_and_off(go_tool):
    """Ollama's thinking parser (tags inferred from the TEMPLATE) then tool parser (tag read off the TEMPLATE), on
    the reply streamed token by token."""
    from posttrain.export.gorender import parse_replies, render_ollama

    tokenizer = tokenizer_for("qwen3")
    template = known_go_template(tokenizer)
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
    want = [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    [(prompt_on, _)] = render_ollama(template, [ask], tools=[verify.VERIFY_TOOLS]).renders
    [(prompt_off, _)] = render_ollama(template, [ask], tools=[verify.VERIFY_TOOLS], think=[False]).renders
    assert prompt_off == prompt_on + "<think>\n\n</think>\n\n"

    thinking = "<think>\nThe user wants the weather.\n</think>\n\n"
    [on] = parse_replies(
        template, [token_chunks(tokenizer, thinking + call)], tools=verify.VERIFY_TOOLS, prompt=prompt_on
    )
    assert on.thinking.strip() == "The user wants the weather." and on.content == "" and on.tool_calls == want
    [off, plain] = parse_replies(
        template,
        [token_chunks(tokenizer, call), token_chunks(tokenizer, "It is sunny.")],
        tools=verify.VERIFY_TOOLS,
        think=False,
        prompt=prompt_off,
    )
    [no_tools] = parse_replies(template, [token_chunks(tokenizer, call)], think=False)
    assert off.thinking == "" and off.tool_calls == want and off.content == ""
    assert plain.content == "It is sunny." and plain.tool_calls == []
    assert no_tools.tool_calls == [] and no_tools.content == call  # no tools in the request: no tool parser
    # two calls in one reply, with text before them (Ollama sends the text as content)
    [two] = parse_replies(
        template,
        [token_chunks(tokenizer, "Checking.\n" + call + "\n" + call.replace("Paris", "Rome"))],
        tools=verify.VERIFY_TOOLS,
        think=False,
    )
    assert [c["arguments"]["city"] for c in two.tool_calls] == ["Paris", "Rome"] and two.content == "Checking.\n"


def test_a_template_that_drops_tool_calls_fails_the_verification(go_tool):
    """The guard: Qwen2.5's Go template without its `{{ if .ToolCalls }}` block renders assistant turns without
    their calls, and Ollama then reads no tool tag off it ("{"), so the trained reply is not parsed either."""
    tokenizer = tokenizer_for("qwen2_5")
    calls_block = "{{- if .ToolCalls }}{{ range .ToolCalls }}\n" + _CALL + "{{ end }}{{ end }}"
    assert calls_block in _QWEN25
    check = verify.check_go_template(tokenizer, _QWEN25.replace(calls_block, ""))
    assert check.passed is False
    assert "a tool call and its result" in check.summary and "two calls in one turn" in check.summary
    assert check.details["tool_tag"] == "{" and check.details["tool_call_parsed"] is False


def test_a_template_without_tools_fails_where_jinja_renders_them(go_tool):
    """Plain ChatML (no .Tools) for posttrain's tool-aware chatml.jinja: Ollama answers "does not support tools"
    and would prefer the GGUF's Jinja template anyway; both are reported."""
    tokenizer = tokenizer_for("chatml")
    check = verify.check_go_template(tokenizer, _chatml(None))
    assert check.passed is False
    assert "does not support tools" in check.summary and "tools in the request" in check.summary
    assert "Ollama would ignore this TEMPLATE" in check.summary and check.details["prefer_chat_template"] is True


def test_modelfile_omits_a_template_ollama_would_not_use():
    """A translated template renders role/content only; when the Jinja template advertises tools, Ollama would
    prefer the GGUF's Jinja, so the Modelfile has no TEMPLATE and says why. Plain templates keep theirs."""
    from posttrain.export.modelfile import Modelfile, choose_template

    tokenizer = tokenizer_for("chatml")
    plain = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    tokenizer.chat_template = plain
    choice = choose_template(tokenizer, {})
    assert choice.source == "translated" and choice.template is not None
    tokenizer.chat_template = "{% if tools is not none %}{{ raise_exception('no tools') }}{% endif %}" + plain
    choice = choose_template(tokenizer, {})
    assert choice.template is None and "shouldPreferChatTemplate" in choice.note
    text = Modelfile("./m.gguf", None, choice.stops, template_note=choice.note).render()
    assert "advertises tools to Ollama" in text and "\nTEMPLATE" not in text
    assert 'PARAMETER stop "<|im_end|>"' in text


def test_python_and_go_ports_agree_on_capabilities(go_tool):
    """modelfile.py decides without Go (the export must run without it) what gotemplate/main.go reads off the real
    template: the capabilities each known template declares and whether Ollama prefers the Jinja."""
    from posttrain.export.gorender import template_info
    from posttrain.export.modelfile import ollama_jinja_capabilities, ollama_prefers_jinja

    jinjas = [CHATML_JINJA.read_text(encoding="utf-8"), "plain", "{{ tools }}", "<think></think> tools tool_calls"]
    for known in KNOWN_TEMPLATES:
        declared = ["tools"] * known.tools + ["thinking"] * known.thinking
        for jinja in jinjas:
            info = template_info(known.go, jinja)
            assert info.capabilities == declared and info.tool_round_trip == known.tools, known.name
            assert info.chat_template_capabilities == ollama_jinja_capabilities(jinja)
            assert info.prefer_chat_template == ollama_prefers_jinja(jinja, declared, known.tools), known.name


def test_json_segments_compare_json_parsed_and_text_exactly():
    jinja = '<tools>\n{"name": "f", "parameters": {"a": 1, "b": [1, 2]}}\n</tools>\n{"name": <function-name>}'
    go = '<tools>\n{"parameters":{"b":[1,2],"a":1},"name":"f"}\n</tools>\n{"name": <function-name>}'
    assert json_segments(jinja) == json_segments(go)
    assert json_segments(jinja) != json_segments(go.replace('"a":1', '"a":2'))
    assert json_segments(jinja) != json_segments(go.replace("</tools>\n", "</tools>"))
    assert json_segments('{"name": <function-name>}') == ['{"name": <function-name>}']
