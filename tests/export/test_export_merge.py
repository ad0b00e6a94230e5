"""Merging adapter chains into full-precision weights: logits unchanged (fp32), chain discovery, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_export import make_adapter

from posttrain.models.adapters import AdapterError


def test_merged_logits_match_adapter_on_within_1e4(tiny_chat_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.models.merge import merge_chain, sample_prompt_ids, save_merged

    adapter = make_adapter(tiny_chat_model, tmp_path / "sft")
    model, tokenizer, report = merge_chain(str(adapter))
    assert report.adapters == [str(adapter.resolve())] and report.max_drift < 1e-4
    out = save_merged(model, tokenizer, tmp_path / "merged", report)
    for name in (
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "generation_config.json",
        "merge_report.json",
    ):
        assert (out / name).is_file(), name
    assert not list(out.glob("adapter_*"))

    # independently: adapter on (peft) vs the saved merged folder
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompts = sample_prompt_ids(tokenizer, [[{"role": "user", "content": "Who are you?"}]])
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_model, dtype=torch.float32)
    adapter_on = PeftModel.from_pretrained(base, adapter).eval()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        ids = torch.tensor(prompts)
        expected, got = adapter_on(input_ids=ids).logits, merged(input_ids=ids).logits
        with adapter_on.disable_adapter():
            plain = adapter_on(input_ids=ids).logits
    assert (expected - got).abs().max().item() < 1e-4
    assert (expected - plain).abs().max().item() > 1e-2  # the adapter does change the model
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tokenizer.eos_token_id


def test_adapter_chain_through_the_merge_cache(tiny_chat_model, tmp_path, monkeypatch):
    """SFT adapter → (cached merge, as DPO trains on) → DPO adapter: the chain is found and merged in order."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from posttrain.models.merge import adapter_chain, merge_chain, merged_adapter, sample_prompt_ids

    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    sft = make_adapter(tiny_chat_model, tmp_path / "sft", seed=1)
    sft_merged = merged_adapter(sft)
    dpo = make_adapter(sft_merged, tmp_path / "dpo", seed=2)
    base, adapters = adapter_chain(str(dpo))
    assert base == str(tiny_chat_model) and adapters == [sft.resolve(), dpo.resolve()]

    model, tokenizer, report = merge_chain(str(dpo))
    assert len(report.drift) == 2 and report.max_drift < 1e-4
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sft_merged), dpo).eval()
    ids = torch.tensor(sample_prompt_ids(tokenizer, [[{"role": "user", "content": "Hello!"}]]))
    with torch.no_grad():
        assert (reference(input_ids=ids).logits - model(input_ids=ids).logits).abs().max().item() < 1e-4

    # the cached merge is gone: the DPO adapter's run manifest names its base
    import shutil

    shutil.rmtree(sft_merged)
    (dpo / "run_manifest.json").write_text(json.dumps({"stage": "dpo", "base_model": str(sft)}))
    assert adapter_chain(str(dpo))[1] == [sft.resolve(), dpo.resolve()]


def test_merge_cache_stays_under_its_bound(tiny_chat_model, tmp_path, monkeypatch):
    """Each new merge evicts the least recently used ones past ``POSTTRAIN_MERGED_CACHE_GB``; a cache hit counts as a
    use, the merge just made stays, and an evicted merge is rebuilt on demand."""
    import os

    from posttrain.models.merge import merged_adapter

    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    adapters = [make_adapter(tiny_chat_model, tmp_path / f"a{i}", seed=i) for i in range(3)]
    first = merged_adapter(adapters[0])
    size = sum(f.stat().st_size for f in first.rglob("*") if f.is_file())
    monkeypatch.setenv("POSTTRAIN_MERGED_CACHE_GB", str(2.5 * size / 2**30))  # room for two merges
    second = merged_adapter(adapters[1])
    os.utime(first, (1, 1))  # a0 is the least recently used merge ...
    os.utime(second, (2, 2))
    assert merged_adapter(adapters[0]) == first  # ... until a hit uses it again
    third = merged_adapter(adapters[2])
    assert first.is_dir() and third.is_dir() and not second.exists()
    assert not Path(str(second) + ".lock").exists()
    assert merged_adapter(adapters[1]) == second and (second / "config.json").is_file()  # rebuilt
    assert sum(1 for p in (tmp_path / "cache" / "merged").iterdir() if p.is_dir()) == 2


@pytest.mark.parametrize("value", ["0", "-1", "lots", "inf"])
def test_merge_cache_bound_must_be_positive(value, monkeypatch):
    from posttrain.errors import UserError
    from posttrain.models.merge import merged_cache_limit

    monkeypatch.setenv("POSTTRAIN_MERGED_CACHE_GB", value)
    with pytest.raises(UserError, match="POSTTRAIN_MERGED_CACHE_GB"):
        merged_cache_limit()


def test_adapter_whose_base_does_not_match(tiny_chat_model, tmp_path):
    from posttrain.models.merge import merge_chain

    adapter = make_adapter(tiny_chat_model, tmp_path / "sft")
    big = tmp_path / "other-base"
    _wider_model(tiny_chat_model, big)
    with pytest.raises(AdapterError, match="does not fit its base"):
        merge_chain(str(adapter), base_model=str(big))


def _wider_model(source, target):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(source)
    config.hidden_size, config.intermediate_size = 96, 192
    LlamaForCausalLM(config).save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)


def test_quantized_base_is_refused(tiny_chat_model, tmp_path):
    import shutil

    from posttrain.models.merge import merge_chain

    base = tmp_path / "bnb-base"
    shutil.copytree(tiny_chat_model, base)
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(config))
    adapter = make_adapter(tiny_chat_model, tmp_path / "sft", base_name=str(base))
    with pytest.raises(AdapterError, match="stored quantized"):
        merge_chain(str(adapter))


def test_merge_stage_writes_folder_and_manifest(tiny_chat_model, tmp_path):
    from posttrain.configs import parse_args
    from posttrain.errors import ConfigError
    from posttrain.stages import merge as stage_merge

    adapter = make_adapter(tiny_chat_model, tmp_path / "sft")
    config = tmp_path / "merge.yaml"
    config.write_text(json.dumps({"model_name_or_path": str(adapter), "output_dir": str(tmp_path / "merged")}))
    report = stage_merge.main(*parse_args(stage_merge.make_parser(), ["--config", str(config)]))
    manifest = json.loads((tmp_path / "merged" / "run_manifest.json").read_text())
    assert manifest["stage"] == "merge" and manifest["merge"]["max_drift"] == report.max_drift < 1e-4
    with pytest.raises(ConfigError, match="4-bit"):
        parse_args(stage_merge.make_parser(), ["--config", str(config), "--dtype", "int4"])
