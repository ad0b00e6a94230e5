"""``chat_template: auto`` with tool data: posttrain's tool-capable ChatML is added when the model's own template
cannot render the tool calls (SmolLM2's), not for plain data nor a template that renders them, and the SFT output's
tokenizer carries it (what evaluation, merge and export read)."""

from __future__ import annotations

import json

import pytest
from families import build_tiny_family_model, load_family_tokenizer

from posttrain.chat_templates import load_template
from posttrain.data import load_conversations

TOOL_DATA = [{"path": "builtin:calculator", "num_samples": 4}]
PLAIN_DATA = [{"path": "builtin:arithmetic", "num_samples": 4}]


class Embeddings:
    num_embeddings = 10**6


class NoModel:
    """What ``setup_chat_template`` touches of a model whose vocabulary already has the ChatML tokens."""

    class config:
        @staticmethod
        def get_text_config():
            return None

    generation_config = None

    def get_input_embeddings(self):
        return Embeddings()


@pytest.mark.parametrize("family, data, fires", [
    ("smollm2", TOOL_DATA, True),  # ChatML without a tool format: the call would train as an empty reply
    ("smollm2", PLAIN_DATA, False),
    ("qwen2_5", TOOL_DATA, False),  # renders tools itself: kept
])  # fmt: skip
def test_auto_adds_tool_capable_chatml_only_where_the_own_template_cannot_render_tools(family, data, fires):
    from posttrain.training.sft_templates import add_tool_template, check_template_support

    tokenizer = load_family_tokenizer(family)
    own = tokenizer.chat_template
    lines = []
    added = add_tool_template(
        load_conversations(data, seed=0), NoModel(), tokenizer, model_name=family, log=lambda *a, **k: lines.append(a)
    )
    if not fires:
        assert added is None and lines == [] and tokenizer.chat_template == own
        return
    assert added == [] and tokenizer.chat_template == load_template("chatml")  # SmolLM2 has <|im_start|>/<|im_end|>
    [(line,)] = lines
    assert line.startswith(f"posttrain: chat_template auto: the chat template of {family} cannot render the data's")
    assert "does not render tool calls" in line and "tool-capable ChatML template (chatml)" in line
    check_template_support(load_conversations(data, seed=0), tokenizer)  # now it renders them


def test_sft_with_tool_data_saves_the_tool_template_and_records_it(tmp_path, capsys):
    from posttrain.stages import run_stage

    from tiny import write_sft_config

    model = build_tiny_family_model("smollm2", tmp_path / "model")
    config = write_sft_config(
        tmp_path, model, datasets=TOOL_DATA, max_steps=1, load_in_4bit=False, max_length=512, show_example=False
    )
    run_stage("sft", ["--config", str(config)])
    out = tmp_path / "out"
    printed = capsys.readouterr().out
    assert printed.count("posttrain: chat_template auto:") == 1
    saved = json.loads((out / "tokenizer_config.json").read_text()).get("chat_template")
    if saved is None:  # transformers 5 writes it beside the config
        saved = (out / "chat_template.jinja").read_text()
    assert saved == load_template("chatml")
    assert json.loads((out / "run_manifest.json").read_text())["chat_template"] == "chatml (auto: tool calls)"
    assert "| chat template | chatml (auto: tool calls) |" in (out / "README.md").read_text()
