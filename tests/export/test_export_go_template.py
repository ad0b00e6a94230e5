"""Jinja chat templates → Go text/template: byte equality under Go's own text/template, clear errors otherwise."""

from __future__ import annotations

import re

import pytest

from posttrain.export.go_template import TemplateTranslationError, ollama_values, translate
from posttrain.export.prompts import TEMPLATE_CONVERSATIONS

CHATML = (
    "{%- for message in messages -%}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n{{- '<|im_start|>assistant\\n' -}}\n{%- endif -%}\n"
)
# SmolLM2-Instruct's own template (the embedded default model): a default system prompt when none is given
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Zephyr style: block tags on their own lines (trim_blocks/lstrip_blocks), eos_token, loop.last
ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""
# Llama-3 style: bos_token, set inside if/else (incl. `messages = messages[1:]`), `tools is not none`
LLAMA3 = """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if message['role'] == 'assistant' and message.tool_calls is defined %}{{ raise_exception('no tools') }}{% endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}"""
TEMPLATES = {"chatml": CHATML, "smollm2": SMOLLM2, "zephyr": ZEPHYR, "llama3": LLAMA3}
CONSTANTS = {"bos_token": "<s>", "eos_token": "</s>"}


def jinja_render(template: str, messages: list[dict]) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    generation = messages[-1]["role"] != "assistant"
    rendered, _ = render_jinja_template(
        [messages], chat_template=template, add_generation_prompt=generation, **CONSTANTS
    )
    return rendered[0]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_go_renders_like_jinja(name, go_tool):
    from posttrain.export.gorender import render_go

    assert len(TEMPLATE_CONVERSATIONS) >= 10
    assert any(c[0]["role"] == "system" for c in TEMPLATE_CONVERSATIONS)
    assert any(sum(m["role"] == "user" for m in c) > 1 for c in TEMPLATE_CONVERSATIONS)
    go = translate(TEMPLATES[name], constants=CONSTANTS)
    renders = render_go(go.text, [ollama_values(c) for c in TEMPLATE_CONVERSATIONS])
    for conversation, (output, error) in zip(TEMPLATE_CONVERSATIONS, renders, strict=True):
        assert not error
        assert output == jinja_render(TEMPLATES[name], conversation), conversation


def test_chatml_translation_is_readable():
    text = translate(CHATML).text
    assert "{{ range $i, $message := $.Messages }}<|im_start|>{{ $message.Role }}\n{{ $message.Content }}" in text
    assert text.endswith("{{ if $add_generation_prompt }}<|im_start|>assistant\n{{ end }}")


def test_raise_exception_is_dropped_with_a_note():
    template = (
        "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}"
        "{{ m.content }}{% endfor %}"
    )
    assert any("raise_exception" in note for note in translate(template).notes)
    # unreachable for chat requests (tool_calls is undefined): dropped without a note
    assert not translate(LLAMA3, constants=CONSTANTS).notes


def test_literal_braces_are_escaped(go_tool):
    from posttrain.export.gorender import render_go

    go = translate("{{ '{{ literal }}' }}{% for m in messages %}{{ m.content }}{% endfor %}")
    [(output, error)] = render_go(go.text, [ollama_values([{"role": "user", "content": "x"}])])
    assert (output, error) == ("{{ literal }}x", "")


@pytest.mark.parametrize(
    ("template", "construct"),
    [
        ("{% for m in messages %}{{ m.content | trim }}{% endfor %}", "filter '| trim'"),
        ("{{ messages[-1]['content'] }}", "negative index"),
        ("{% macro f(x) %}{{ x }}{% endmacro %}{{ f(1) }}", "{% macro %}"),
        ("{% set ns = namespace(x=1) %}{{ ns.x }}", "namespace()"),
        ("{% for m in messages %}{{ m.content.strip() }}{% endfor %}", "method call .strip()"),
        ("{% for m in messages %}{{ loop.index0 - 1 }}{% endfor %}", "arithmetic (-)"),
        ("{% if 'x' in messages[0]['content'] %}y{% endif %}", "operator 'in'"),
    ],
)
def test_untranslatable_constructs_are_named(template, construct):
    with pytest.raises(TemplateTranslationError, match="line 1: .*" + re.escape(construct)):
        translate(template)


def test_ollama_values_collate_like_ollama():
    values = ollama_values(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    )
    assert values["System"] == "S"
    assert values["Messages"] == [{"Role": "system", "Content": "S"}, {"Role": "user", "Content": "a\n\nb"}]
