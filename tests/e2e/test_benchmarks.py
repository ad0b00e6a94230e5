"""Every benchmark in benchmarks/ runs end to end in its smoke mode (tiny models, 1-2 steps) and writes its results.

Measurements are never asserted (no timings, no ratios' values): only that each script exits 0 and its JSON has the
figures it promises, with consistent counts. ``ppo_vs_trl112.py`` needs trl 1.12.0 (``make bench`` installs it into
``.bench/trl112``); without it the posttrain side still runs and the comparison records why it was skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def run(tmp_path, script, *args, timeout=900):
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("POSTTRAIN_PRECISION", None)
    proc = subprocess.run([sys.executable if not script.endswith(".sh") else "bash", str(BENCH / script), *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
def test_sft_throughput_smoke(tmp_path):
    out = tmp_path / "sft.json"
    proc = run(tmp_path, "sft_throughput.py", "--smoke", "--output", out)
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"stock-default", "stock-competent", "posttrain"}
    for name, result in report["results"].items():
        assert result["steps"] == 1, name
        assert result["tokens"] > 0 and result["tokens_per_s"] > 0, name
        # MFU divides a throughput by a matmul peak measured at another moment: on a loaded machine it can pass 1,
        # so only its presence and sign are behaviour here (no timed assertion in a test)
        assert result["peak_rss_mib"] > 0 and result["mfu"] > 0, name
        assert result["model_flops"] > 0 and result["dtype"] in report["matmul_peak"], name
    stock, competent, ours = (report["results"][n] for n in ("stock-default", "stock-competent", "posttrain"))
    # the same packed rows for posttrain and the competent stock run; stock's padded batch is wider
    assert ours["tokens"] == competent["tokens"]
    assert stock["config"]["gradient_checkpointing"] and not competent["config"]["gradient_checkpointing"]
    assert competent["config"]["assistant_only_loss"] and competent["config"]["packing"]
    # assistant-only loss: fewer trained tokens than stock's full-sequence loss per real token; posttrain's LM head
    # runs only where a label is trained, TRL's at every position
    assert competent["trained_tokens"] < competent["tokens"]
    assert ours["lm_head_positions"] < competent["lm_head_positions"]
    assert report["data"]["training_template_renders_same_text"]
    for key in ("posttrain/stock-default", "posttrain/stock-competent"):
        assert {"tokens_per_s", "peak_rss", "mfu"} <= set(report["ratios"][key])
        assert report["ratios"][key]["tokens_per_s"] > 0
    assert "ratio posttrain/stock-competent" in proc.stdout


@pytest.mark.slow
def test_preference_throughput_smoke(tmp_path):
    out = tmp_path / "preference.json"
    proc = run(tmp_path, "preference_throughput.py", "--smoke", "--output", out)
    report = json.loads(out.read_text())
    assert set(report["runs"]) == {
        "dpo-stock",
        "dpo-posttrain",
        "reward-stock",
        "reward-stock-lora",
        "reward-posttrain",
        "ppo-posttrain",
    }
    for name, result in report["runs"].items():
        assert result["steps"] == 1 and result["steps_per_s"] > 0 and result["peak_rss_mib"] > 0, name
    for stage in ("dpo", "reward"):
        assert report["ratios"][stage]["steps_per_s"] > 0
        assert f"ratio {stage} posttrain/stock" in proc.stdout
    # posttrain's stages ran with the fast paths on (the fused LoRA add at least); stock has none
    for name in ("dpo-posttrain", "reward-posttrain", "ppo-posttrain"):
        assert "fused_lora: LoRA added by one addmm" in report["runs"][name]["fast_paths"], name
    assert report["runs"]["dpo-stock"]["fast_paths"] is None


def test_sft_flop_count_counts_what_each_lm_head_computes():
    sys.path.insert(0, str(BENCH))
    import torch
    from sft_throughput import batch_flops

    shapes = {"base_linear_params": 10, "lora_params": 1, "vocab_size": 100, "hidden_size": 4, "layers": 1,
              "attention_dim": 2}  # fmt: skip
    labels = torch.tensor([[-100, -100, 5, 6, -100, -100, 7, -100]])
    inputs = {"input_ids": torch.zeros(1, 8, dtype=torch.long), "labels": labels,
              "position_ids": torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]])}  # fmt: skip
    trained = batch_flops(inputs, shapes, "trained")
    every = batch_flops(inputs, shapes, "all")
    assert trained["real_tokens"] == every["real_tokens"] == 8
    assert trained["trained_tokens"] == 3
    assert trained["lm_head_positions"] == 3  # positions 1, 2, 5 predict a trained token
    assert every["lm_head_positions"] == 6  # two sequences of 4: every position but each one's last
    body = 8 * (4 * 10 + 6 * 1) + 6 * 2 * 1 * (16 + 16)
    assert trained["model_flops"] == body + 3 * 4 * 100 * 4
    assert every["model_flops"] == body + 6 * 4 * 100 * 4


def test_eval_throughput_smoke(tmp_path):
    out = tmp_path / "eval.json"
    run(tmp_path, "eval_throughput.py", "--smoke", "--threads", "1", "--json", out)
    figures = json.loads(out.read_text())
    assert figures["prompts"] == 4 and figures["speedup"] > 0
    for name in ("one_at_a_time", "batched"):
        assert figures[name]["tokens"] > 0 and figures[name]["tokens_per_s"] > 0
    assert 0 <= figures["identical_replies"] <= 4


@pytest.mark.slow
def test_dpo_sweep_smoke(tmp_path, monkeypatch):
    out = tmp_path / "dpo.json"
    run(tmp_path, "dpo_sweep.py", "--smoke", "--workdir", tmp_path / "work", "--output", out)
    report = json.loads(out.read_text())
    assert report["precompute_ratio"] > 0
    assert report["script"] == "benchmarks/dpo_sweep.py" and report["machine"]["cpu_class"] in ("AVX2", "AVX512-BF16")
    assert report["date"].startswith("20") and report["settings"]["smoke"] is True
    assert {r["precompute_ref_log_probs"] for r in report["runs"].values()} == {True, False}
    assert report["best"] in report["runs"] and "delta" in report["runs"][report["best"]]
    # chosen on the validation pool, reported on the sealed test pool: only the chosen point has a test score
    assert report["selection_suite"] == "builtin-validation" and report["report_suite"] == "builtin"
    assert all("validation" in r for r in report["runs"].values() if not r["precompute_ref_log_probs"])
    assert [n for n, r in report["runs"].items() if "score" in r] == [report["best"]]
    monkeypatch.syspath_prepend(str(BENCH))
    from figures import render_dpo_sweep

    table = render_dpo_sweep(report)  # the docs/results.md section this file would give
    assert sum(line.endswith("| yes |") for line in table.splitlines()) == 1
    assert "sealed test pool" in table and "Not measured" not in table


def test_dpo_sweep_refuses_to_choose_on_the_test_pool(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / "dpo_sweep.py"), "--smoke", "--select-suite", "builtin",
                           "--workdir", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode != 0
    assert "--select-suite: suite 'builtin' reads the sealed test pool" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_ppo_vs_trl112_smoke(tmp_path):
    out = tmp_path / "ppo.json"
    run(tmp_path, "ppo_vs_trl112.py", "--smoke", "--output", out)
    report = json.loads(out.read_text())
    assert report["posttrain"]["steps"] == 1 and report["posttrain"]["steps_per_s"] > 0
    if (ROOT / ".bench" / "trl112" / "trl").is_dir() and "skipped" not in report["trl112"]:
        assert report["speed_ratio"] > 0
    else:  # only the comparison needs trl 1.12.0; everything up to it ran
        assert "trl" in report["trl112"]["skipped"]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu.json"
    run(tmp_path, "gpu_check.sh", "--dry-run", "--workdir", tmp_path / "work", "--output", out)
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["row_tokens"] == 64
    assert set(report["models"]) == {"llama-3.2-1b", "llama-3.1-8b"}
    for shape, entry in report["models"].items():
        assert entry["sizes"]["num_hidden_layers"] == 2, shape
        for name in ("posttrain", "stock-trl"):
            result = entry["sft"][name]
            # MFU against a peak measured at another moment: only its sign is behaviour (see test_sft_throughput_smoke)
            assert result["steps"] == 1 and result["tokens_per_s"] > 0 and result["mfu"] > 0, (shape, name)
        assert {"tokens_per_s", "peak_gpu_memory", "mfu"} <= set(entry["ratios_posttrain_over_stock"])
    # the fast-path numerics ran (on the CPU in a dry run) and decide what auto may turn on
    numerics = report["fast_path_numerics"]
    assert set(numerics) == {"varlen_attention", "fused_lora"}
    assert all(r["exact_everywhere"] for r in numerics.values()), numerics
    assert numerics["varlen_attention"]["architectures"]["llama"]["on"]
    assert not numerics["varlen_attention"]["architectures"]["gemma2"]["on"]
    decision = report["models"]["llama-3.2-1b"]["fast_paths_auto_on_this_device"]
    assert set(decision) == {"varlen_attention", "fused_lora"} and decision["fused_lora"]["speed_ratio_vs_none"] > 0
    rl = report["models"]["llama-3.2-1b"]["rl"]
    assert rl["dpo"]["steps"] == 1 and rl["ppo"]["steps"] == 1


@pytest.mark.slow
def test_tool_sft_smoke(tmp_path):
    out = tmp_path / "tool_sft.json"
    run(tmp_path, "tool_sft.py", "--smoke", "--work", tmp_path / "work", "--output", out)
    report = json.loads(out.read_text())
    assert set(report["models"]) == {"base", "sft"}
    for scores in report["models"].values():
        assert set(scores) >= {"tool_use", "tool_call", "tool_name", "tool_arguments", "final_answer"}
        assert scores["tool_use"]["n"] == 4
    assert set(report["delta_sft_minus_base"]) >= {"tool_use", "tool_call"}
    assert report["delta_sft_minus_base"]["tool_use"]["paired"]
    assert report["settings"]["chat_template"].startswith("posttrain's tool-capable ChatML")
    assert report["machine"]["cpu_count"] and report["timings"]["sft_s"] > 0


def test_reward_from_rules_smoke(tmp_path):
    out = tmp_path / "reward_from_rules.json"
    proc = run(tmp_path, "reward_from_rules.py", "--smoke", "--workdir", tmp_path / "work", "--output", out)
    report = json.loads(out.read_text())
    assert report["script"] == "benchmarks/reward_from_rules.py" and report["smoke"] and report["date"]
    assert report["machine_class"] in ("AVX512-BF16", "AVX2")
    # the reward model's held-out (validation-pool) accuracy with its interval, overall and per task
    held_out = report["reward_model"]["validation_accuracy"]
    assert {"accuracy", "low", "high", "n", "above_chance"} <= set(held_out) and held_out["n"] > 0
    assert held_out["low"] <= held_out["accuracy"] <= held_out["high"]
    assert report["reward_model"]["validation_accuracy_by_task"]
    assert report["pairs"]["train"]["pool"] == "train" and report["pairs"]["validation"]["pool"] == "validation"
    # PPO learns from the reward model only: the rule check is logged with weight 0
    assert report["settings"]["ppo"]["rewards"][1] == {"name": "task", "weight": 0.0}
    assert report["ppo"]["tasks"] and set(report["ppo"]["tasks"]) <= set(
        report["reward_model"]["validation_accuracy_by_task"]
    )
    # SFT vs PPO on the sealed test pool: per task each score and the paired difference
    for table in (report["test"]["ppo_tasks"], report["test"]["builtin"]):
        assert "all" in table
        for task, row in table.items():
            assert {"sft", "ppo", "delta"} <= set(row), task
            assert row["delta"]["paired"] and row["delta"]["n"] == row["sft"]["n"], task
    assert set(report["test"]["ppo_tasks"]) == {*report["ppo"]["tasks"], "all"}
    assert isinstance(report["tasks_raised_with_paired_ci_above_zero"], list)
    assert {"pairs_train", "pairs_validation", "reward", "ppo", "evaluate", "total"} <= set(report["wall_times_s"])
    assert "validation pairwise accuracy" in proc.stdout


def test_reasoning_rl_grid_sweeps_the_prompt_filter(tmp_path):
    """``lr[:steps[:filter]]`` points: the filter becomes the run's ``prompt_filter_samples`` and its label's ``-fK``;
    a point without one keeps the recipe's config unchanged (so earlier runs are reused)."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("reasoning_rl", BENCH / "reasoning_rl.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.grid("5e-5,2e-4:48,5e-5:24:4,1e-4:24:4:4", 24) == [
        (5e-5, 24, 0, 1), (2e-4, 48, 0, 1), (5e-5, 24, 4, 1), (1e-4, 24, 4, 4)
    ]  # fmt: skip
    with pytest.raises(SystemExit, match="batch multiplier"):
        bench.grid("1e-4:24:0:0", 24)
    args = argparse.Namespace(rl_steps=24, rl_samples=8, completion_length=64, seed=0, smoke=False)
    assert bench.sweep_label(args, "grpo", (5e-5, 24, 4, 1)) == "grpo-working-lr5e-05-f4"
    assert bench.sweep_label(args, "ppo", (2e-4, 48, 0, 1)) == "ppo-working-lr0.0002-s48"
    assert bench.sweep_label(args, "grpo", (1e-4, 24, 4, 4)) == "grpo-working-lr0.0001-f4-b4"
    filtered = bench.rl_config(args, "grpo", tmp_path / "sft", tmp_path / "out", (5e-5, 24, 4, 1))
    plain = bench.rl_config(args, "grpo", tmp_path / "sft", tmp_path / "out", (5e-5, 24, 0, 1))
    assert filtered["prompt_filter_samples"] == 4 and "prompt_filter_samples" not in plain
    assert {k: v for k, v in filtered.items() if k != "prompt_filter_samples"} == plain
    # the batch multiplier scales prompts per step, not the updates per step nor GRPO's replies per prompt
    grpo4 = bench.rl_config(args, "grpo", tmp_path / "sft", tmp_path / "out", (5e-5, 24, 0, 4))
    assert grpo4["per_device_train_batch_size"] == 4 * plain["per_device_train_batch_size"]
    assert grpo4["num_generations"] == plain["num_generations"]
    ppo1 = bench.rl_config(args, "ppo", tmp_path / "sft", tmp_path / "out", (5e-5, 24, 0, 1))
    ppo4 = bench.rl_config(args, "ppo", tmp_path / "sft", tmp_path / "out", (5e-5, 24, 0, 4))
    changed = {k for k in ppo1 if ppo1[k] != ppo4[k]}
    assert changed == set(bench.BATCH_KEYS["ppo"]) and all(ppo4[k] == 4 * ppo1[k] for k in changed)
    assert ppo4["num_mini_batches"] == ppo1["num_mini_batches"]


@pytest.mark.slow
def test_reasoning_rl_smoke(tmp_path):
    out = tmp_path / "reasoning_rl.json"
    proc = run(tmp_path, "reasoning_rl.py", "--smoke", "--work", tmp_path / "work", "--output", out,
               "--grpo-grid", "1e-4,2e-4:2", "--ppo-grid", "3e-4:2", "--samples-per-prompt", "2")  # fmt: skip
    report = json.loads(out.read_text())
    # learning rate and steps chosen on the validation suite, the chosen run being the final working-style model
    selection = report["selection"]
    runs = selection["grpo"]["runs"]
    assert selection["suite"] == "reasoning-validation"
    assert set(runs) == {"grpo-working-lr0.0001", "grpo-working-lr0.0002-s2"}
    assert (runs["grpo-working-lr0.0002-s2"]["learning_rate"], runs["grpo-working-lr0.0002-s2"]["steps"]) == (2e-4, 2)
    assert selection["grpo"]["chosen"] in runs and selection["ppo"]["chosen"] == "ppo-working-lr0.0003-s2"
    for row in runs.values():
        assert row["score"]["n"] == 6 and row["delta"]["paired"], row
        assert row["sampled_score"]["n"] == 6 and row["sampled_delta"]["paired"], row
    assert selection["grpo"]["chosen_by"] == "sampled"  # the choice reads the sampled pass rate
    chosen = runs[selection["grpo"]["chosen"]]["sampled_delta"]
    assert all((r["sampled_delta"]["delta"], r["sampled_delta"]["low"]) <= (chosen["delta"], chosen["low"])
               for r in runs.values())  # fmt: skip
    evaluated = json.loads((tmp_path / "work" / "select" / "results.json").read_text())
    assert {r["suite"] for r in evaluated["samples"]} == {"reasoning-validation"}
    # the sampled passes: Ollama's default sampling, one seed per draw, the validation pool only while choosing
    for folder in ("select", "eval"):
        seeds = set()
        for draw in (1, 2):
            sampled = json.loads((tmp_path / "work" / f"{folder}-sampled{draw}" / "results.json").read_text())
            config = yaml.safe_load((tmp_path / "work" / f"{'select-evaluate' if folder == 'select' else 'evaluate'}"
                                     f"-sampled{draw}.yaml").read_text())  # fmt: skip
            assert (config["do_sample"], config["temperature"], config["top_p"]) == (True, 0.8, 0.9)
            seeds.add(config["seed"])
            suites = {r["suite"] for r in sampled["samples"]}
            assert suites == {"reasoning-validation" if folder == "select" else "reasoning"}
        assert len(seeds) == 2
    answer = yaml.safe_load((tmp_path / "work" / "ppo-answer.yaml").read_text())
    assert (answer["learning_rate"], answer["max_steps"]) == (3e-4, 2)
    assert "validation" in report["settings"]["selection"] and "ppo: lr 0.0003, 2 steps" in report["settings"]["rl"]
    labels = ["base"] + [f"{stage}-{style}" for style in ("working", "answer") for stage in ("sft", "grpo", "ppo")]
    assert list(report["models"]) == labels
    for label, model in report["models"].items():
        assert model["score"]["n"] == 6, label  # 2 test-pool prompts x 3 tasks
        assert set(model["per_task"]) == {"letter_count", "arithmetic", "decimal_compare"}, label
        assert 0 <= model["shows_working"] <= 1 and model["mean_reasoning_tokens"] >= 0, label
        if label == "base":  # (sampled passes skip the base model)
            assert "sampled" not in model
        else:
            sampled = model["sampled"]
            assert sampled["score"]["n"] == 6 and sampled["draws"] == 2 and 0 <= sampled["shows_working"] <= 1, label
    # RL - its SFT, paired on the same prompts, for the score and the share of replies showing working
    for name in ("grpo-working - sft-working", "ppo-working - sft-working", "grpo-answer - sft-answer",
                 "ppo-answer - sft-answer", "sft-working - sft-answer"):  # fmt: skip
        for measure in ("score", "shows_working", "reasoning_tokens", "sampled_score"):
            assert report["deltas"][name][measure]["paired"] and report["deltas"][name][measure]["n"] == 6
    assert report["machine"]["class"] in ("AVX512-BF16", "AVX2") and report["script"] == "benchmarks/reasoning_rl.py"
    assert report["date"] and report["timings_s"]["total"] > 0
    assert set(report["timings_s"]) >= set(labels[1:]) | {"evaluate", "evaluate-sampled1", "evaluate-sampled2"}
    assert "sampled as Ollama's defaults" in report["settings"]["eval"]
    assert "reasoning_rl] wrote" in proc.stdout


@pytest.mark.slow
def test_reasoning_rl_select_only_never_reads_the_test_pool(tmp_path, monkeypatch):
    """``--select-only``: the working SFT and the grid points, scored on the validation pool, then a results file with
    the selection table alone; no answer-only SFT, no final runs, no test-pool evaluation."""
    out = tmp_path / "selection.json"
    proc = run(tmp_path, "reasoning_rl.py", "--smoke", "--select-only", "--work", tmp_path / "work", "--output", out,
               "--grpo-grid", "1e-4,1e-4:1::2")  # fmt: skip
    report = json.loads(out.read_text())
    runs = report["selection"]["grpo"]["runs"]
    assert set(runs) == {"grpo-working-lr0.0001", "grpo-working-lr0.0001-b2"} and "models" not in report
    assert runs["grpo-working-lr0.0001-b2"]["batch_multiplier"] == 2
    assert (
        runs["grpo-working-lr0.0001-b2"]["rollouts_per_step"] == 2 * runs["grpo-working-lr0.0001"]["rollouts_per_step"]
    )
    trained = yaml.safe_load((tmp_path / "work" / "grpo-working-lr0.0001-b2.yaml").read_text())
    assert (
        trained["per_device_train_batch_size"]
        == 2
        * yaml.safe_load((tmp_path / "work" / "grpo-working-lr0.0001.yaml").read_text())["per_device_train_batch_size"]
    )
    evaluated = json.loads((tmp_path / "work" / "select" / "results.json").read_text())
    assert {r["suite"] for r in evaluated["samples"]} == {"reasoning-validation"}
    assert not (tmp_path / "work" / "sft-answer").exists() and not (tmp_path / "work" / "eval").exists()
    assert "validation only" in proc.stdout
    monkeypatch.syspath_prepend(str(BENCH))
    from figures import _selection_table

    rows = [line for line in _selection_table(report["selection"]) if line.startswith("| grpo |")]
    assert (
        len(rows) == 2 and "| off | x2 (8 per step) |" in rows[1] and sum(row.endswith("| yes |") for row in rows) == 1
    )


def test_reasoning_rl_select_only_needs_a_grid(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "reasoning_rl.py"), "--select-only", "--work", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "--select-only needs --grpo-grid or --ppo-grid" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_reasoning_rl_refuses_a_negative_sample_count(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "reasoning_rl.py"), "--samples-per-prompt", "-1", "--work",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "--samples-per-prompt must be >= 0 (got -1)" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_preference_methods_smoke(tmp_path):
    out = tmp_path / "preference_methods.json"
    proc = run(tmp_path, "preference_methods.py", "--smoke", "--work", tmp_path / "work", "--output", out)
    report = json.loads(out.read_text())
    assert list(report["runs"]) == ["dpo", "kto", "orpo", "simpo"]
    for name, r in report["runs"].items():
        assert r["steps"] == 1 and r["seconds"] > 0 and r["peak_rss_mib"] > 0, name
        assert r["delta"]["paired"] and r["delta"]["n"] == report["sft"]["total"], name
        assert r["heldout_margin"]["reference"] is not None, name
    assert report["machine"]["class"] in ("AVX512-BF16", "AVX2") and report["date"]
    assert "[preference_methods] wrote" in proc.stdout
