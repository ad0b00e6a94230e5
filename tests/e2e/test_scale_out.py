"""The shipped scale-out configs run, not only ship: 2-rank training through the real recipes under each engine on CPU.

Each engine is ``accelerate launch`` of ``recipes/sft.py`` (then, where parameters are sharded, ``recipes/dpo.py`` on
the SFT adapter) with a config written from the shipped YAML, whose engine settings (``fsdp_config``,
``deepspeed_config``, rendezvous) are kept as they are; only what a CPU host needs is overridden (2 processes, no
mixed precision, a free local port; the multi-node config gets 127.0.0.1 and two launches with ``--machine_rank`` 0
and 1, one process each). ``use_cpu: true`` is *not* set: with it accelerate's launcher starts one process; without
it, on a host without CUDA, torchrun starts the ranks on the CPU and they talk over gloo.

* ``fsdp`` -- ``fsdp_qlora.yaml``: FSDP2 over gloo with the 4-bit (NF4) weights stored as float32
  (``bnb_4bit_quant_storage``, the CPU counterpart of the bfloat16 storage the config asks for on GPUs).
  accelerate 1.15 does not enable FSDP on a CPU-only host (it silently runs DDP); ``engine_probe/sitecustomize.py``
  lifts that one gate. SFT, then DPO.
* ``deepspeed_zero3`` -- ``deepspeed_zero3.yaml``: ZeRO-3 with DeepSpeed's CPU accelerator (gloo), LoRA in fp32 (the
  config does not combine with 4-bit). SFT, then DPO. Skipped when ``deepspeed`` is not installed (``make setup``
  installs it).
* ``multi_node`` -- ``multi_node.yaml``: two "machines" on localhost (c10d rendezvous), DDP, 4-bit. SFT.

Asserted for every run: both ranks finish and the engine really wraps the model (each rank prints what
``Accelerator.prepare`` returned: FSDP2 DTensors / ZeRO-3 partitions holding part of every parameter, or DDP across
two node ranks); the stage's ``posttrain: fast paths:`` line reports ``fused_lora: off: ...`` where the parameters
are sharded (and not under DDP); the saved adapter loads back with peft and holds the trained weights; the loss curve
and the adapter match a 1-rank run on the same data with the same effective batch (8 = 2 ranks x 4) within
``LOSS_RTOL`` / ``ADAPTER_ATOL`` (measured: at most 3e-7 relative and 5e-6 absolute; fp32, 3 steps).

What these engines do only on GPUs (bf16, NCCL, CUDA-only peft paths, real second hosts) is checked by
``benchmarks/gpu_check.sh --engines``; see docs/scaling.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tiny import (
    accelerate_launch,
    engine_probe,
    engine_reports,
    fast_paths_report,
    free_port,
    write_sft_config,
    write_stage_config,
)

ROOT = Path(__file__).resolve().parents[2]
STEPS, PER_RANK_BATCH, RANKS = 3, 4, 2
LOSS_RTOL = 1e-4  # relative, per logged step: fp32 reductions in another order (reduce-scatter, ZeRO partitions)
ADAPTER_ATOL = 1e-4  # absolute, per LoRA weight (the largest trained weights are ~0.13)
FOUR_BIT = {"load_in_4bit": True, "bnb_4bit_quant_storage": "float32"}
DPO_PAIRS = [{"path": "builtin:decimal_compare", "num_samples": 32}]

ENGINES = {
    "fsdp": {"config": "fsdp_qlora.yaml", "settings": FOUR_BIT, "sharded": True},
    "deepspeed_zero3": {"config": "deepspeed_zero3.yaml", "settings": {"load_in_4bit": False}, "sharded": True},
    "multi_node": {"config": "multi_node.yaml", "settings": FOUR_BIT, "sharded": False},
}
#: the only top-level keys a CPU variant may change; everything else (engine options included) is the shipped file's
CPU_OVERRIDES = {"num_processes", "mixed_precision", "main_process_ip", "main_process_port"}


def cpu_variant(name: str, tmp_path: Path) -> Path:
    """The shipped config with the CPU overrides only (written to ``tmp_path``)."""
    shipped = yaml.safe_load((ROOT / "accelerate_configs" / name).read_text())
    variant = {**shipped, "num_processes": RANKS, "mixed_precision": "no", "main_process_port": free_port()}
    if shipped["num_machines"] > 1:
        variant["main_process_ip"] = "127.0.0.1"
    assert {k for k in variant if variant[k] != shipped.get(k)} <= CPU_OVERRIDES
    path = tmp_path / f"cpu-{name}"
    path.write_text(yaml.safe_dump(variant))
    return path


def child_env(cache: Path) -> dict:
    """fp32 (exact comparisons), one thread per rank, the engine probe, and a merge cache of this test's own (a
    stage started from an adapter merges it first: that merge runs under the engine too)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "POSTTRAIN_PRECISION": "fp32"}
    env["POSTTRAIN_CACHE"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(engine_probe()), env.get("PYTHONPATH", "")) if p)
    return env


def run_engine(stage, spec, config, folder, env) -> str:
    """The stage's recipe on 2 ranks under the engine; its output (asserted successful)."""
    shipped = yaml.safe_load((ROOT / "accelerate_configs" / spec["config"]).read_text())
    machines = shipped["num_machines"]
    for _attempt in range(2):  # once more on another port if the free one was taken before the ranks bound it
        codes, output = accelerate_launch(
            cpu_variant(spec["config"], folder),
            ROOT / "recipes" / f"{stage}.py",
            "--config",
            config,
            cwd=folder,
            env=env,
            machines=machines,
            timeout=240,  # ~25 s here; a hang (ranks waiting on each other) fails instead of stalling CI
        )
        if codes == [0] * machines or "address already in use" not in output.lower():
            break
    errors = [line for line in output.splitlines() if "Error: " in line and "ChildFailedError" not in line]
    assert codes == [0] * machines, f"{stage}: return codes {codes}; errors: {errors}\n{output[-6000:]}"
    return output


def run_reference(stage, config, folder, env) -> None:
    """The same stage on 1 rank (no accelerate, no engine)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / f"{stage}.py"), "--config", str(config)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{stage} reference:\n{proc.stderr[-4000:]}"


def check_engine(output: str, spec: dict, machines: int) -> None:
    """The engine wrapped the model on both ranks; the fast paths that read weights directly stood down for it."""
    reports = engine_reports(output)
    assert sorted(r["rank"] for r in reports) == list(range(RANKS)), output[-4000:]
    for r in reports:
        assert r["world"] == RANKS
        if spec["config"] == "fsdp_qlora.yaml":
            assert r["distributed_type"] == "FSDP" and "FSDPLlamaDecoderLayer" in r["wrappers"], r
            assert r["linear4bit"] > 0, r  # the 4-bit layers themselves are sharded
        elif spec["config"] == "deepspeed_zero3.yaml":
            assert r["distributed_type"] == "DEEPSPEED" and r["zero_stage"] == 3, r
        else:
            assert r["distributed_type"] == "MULTI_CPU" and r["wrappers"] == ["DistributedDataParallel"], r
        if spec["sharded"]:  # every parameter is split: each rank holds about half of the model
            assert r["sharded_params"] == r["params"] and r["local_numel"] < 0.6 * r["full_numel"], r
        else:
            assert r["sharded_params"] == 0 and r["local_numel"] == r["full_numel"], r
    if machines > 1:
        assert sorted(r["node"] for r in reports) == list(range(machines))
    paths = fast_paths_report(output)
    assert paths["fused_lora"].startswith("off: ") == spec["sharded"], paths


def adapter_file(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def check_result(out: Path, reference: Path) -> None:
    """Both ranks trained; the adapter loads back with peft and equals the 1-rank run's; so does the loss curve."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["world_size"] == RANKS
    assert [r["steps"] for r in manifest["ranks"]] == [STEPS] * RANKS

    saved = adapter_file(out)
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out)
    loaded = {n.replace(".default", ""): p.detach() for n, p in model.named_parameters() if ".default" in n}
    assert saved and set(loaded) == set(saved)
    assert all(bool((loaded[k] == saved[k].to(loaded[k].dtype)).all()) for k in saved)
    assert any(float(v.abs().max()) > 0 for k, v in saved.items() if "lora_B" in k)  # lora_B starts at zero

    expected = adapter_file(reference)
    assert set(saved) == set(expected)
    worst = max(float((saved[k].float() - expected[k].float()).abs().max()) for k in expected)
    assert worst < ADAPTER_ATOL, f"adapter differs from the 1-rank run by {worst:.2e}"
    expected_losses = json.loads((reference / "run_manifest.json").read_text())["loss_curve"]
    assert len(manifest["loss_curve"]) == len(expected_losses) == STEPS
    assert manifest["loss_curve"] == pytest.approx(expected_losses, rel=LOSS_RTOL)


#: measured on a 2-core VM shared with other jobs (SFT, then DPO where sharded, each with its 1-rank run): fsdp 43-46 s,
#: deepspeed_zero3 48 s (+~70 s the first time on a machine: DeepSpeed compiles its CPU shared-memory comm op, which
#: torch caches), multi_node 21-24 s (SFT only) -- `slow` marks the ones over 30 s
PARAMS = [pytest.param(name, marks=[pytest.mark.slow] if spec["sharded"] else []) for name, spec in ENGINES.items()]


@pytest.mark.parametrize("engine", PARAMS)
def test_two_ranks_through_each_shipped_engine(engine, tmp_path, tiny_chat_model):
    spec = ENGINES[engine]
    if engine == "deepspeed_zero3":
        pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (make setup installs it)")
    machines = yaml.safe_load((ROOT / "accelerate_configs" / spec["config"]).read_text())["num_machines"]
    env = child_env(tmp_path / "cache")

    # SFT on 2 ranks under the engine, and on 1 rank with twice the per-device batch
    sft, sft_ref = tmp_path / "sft", tmp_path / "sft-1rank"
    for folder, batch in ((sft, PER_RANK_BATCH), (sft_ref, PER_RANK_BATCH * RANKS)):
        folder.mkdir()
        write_sft_config(
            folder, tiny_chat_model, max_steps=STEPS, per_device_train_batch_size=batch, **spec["settings"]
        )
    output = run_engine("sft", spec, sft / "sft.yaml", sft, env)
    run_reference("sft", sft_ref / "sft.yaml", sft_ref, env)
    check_engine(output, spec, machines)
    check_result(sft / "out", sft_ref / "out")
    if not spec["sharded"]:
        return  # DPO under DDP is what tests/e2e/test_distributed.py-style runs already cover

    # DPO from the engine's SFT adapter (merged first, under the engine), on 2 ranks and on 1
    dpo, dpo_ref = tmp_path / "dpo", tmp_path / "dpo-1rank"
    for folder, batch in ((dpo, PER_RANK_BATCH), (dpo_ref, PER_RANK_BATCH * RANKS)):
        folder.mkdir()
        settings = {"model_name_or_path": str(sft / "out"), "datasets": DPO_PAIRS, "max_steps": STEPS,
                    "per_device_train_batch_size": batch, "learning_rate": 5e-3, "beta": 0.1, "max_length": 256,
                    "output_dir": str(folder / "out"), **spec["settings"]}  # fmt: skip
        write_stage_config(folder, "dpo", settings)
    output = run_engine("dpo", spec, dpo / "dpo.yaml", dpo, env)
    run_reference("dpo", dpo_ref / "dpo.yaml", dpo_ref, env)
    check_engine(output, spec, machines)
    check_result(dpo / "out", dpo_ref / "out")


def test_gpu_engine_check_plans_every_shipped_engine(tmp_path):
    """``gpu_check.sh --engines --dry-run`` (CPU, seconds): the GPU check runs the shipped files, changing only the
    process count and the local address."""
    out = tmp_path / "plan.json"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--engines", "--dry-run", "--workdir", str(tmp_path / "w"),
         "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    cases = json.loads(out.read_text())["cases"]
    assert {c["plan"]["config"] for c in cases.values()} == {spec["config"] for spec in ENGINES.values()}
    for case in cases.values():
        plan = case["plan"]
        shipped = yaml.safe_load((ROOT / "accelerate_configs" / plan["config"]).read_text())
        variant = yaml.safe_load(Path(plan["accelerate_config"]).read_text())
        assert {k for k in variant if variant[k] != shipped.get(k)} <= {"num_processes", *CPU_OVERRIDES}
        assert Path(plan["recipes"]["scaled"]).is_file() and Path(plan["recipes"]["reference"]).is_file()
