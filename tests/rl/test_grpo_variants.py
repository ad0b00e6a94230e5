"""GRPO's loss variants (TRL 1.16 ``loss_type``, GSPO via ``importance_sampling_level: sequence``) and RLOO: each one
selectable from a posttrain config, checked at parse time, and each one learning on the tiny model (docs/rl.md#grpo-
loss-variants)."""

import json

import pytest
import trl
from test_grpo import LEARNING, _sampled_number_rate

from posttrain.errors import ConfigError
from posttrain.rl.config import GRPO_LOSS_TYPES, IMPORTANCE_SAMPLING_LEVELS
from posttrain.stages import run_stage

from tiny import write_stage_config

# name: (stage, config keys). GSPO is TRL's recommended setup (the `grpo` per-reply mean with one sequence-level
# ratio); LUSPO needs the sequence-level ratio too; VESPO computes its sequence weights itself (token level, the default).
VARIANTS = {
    "dapo": ("grpo", {}),  # TRL's default loss_type
    "grpo": ("grpo", {"loss_type": "grpo"}),
    "dr_grpo": ("grpo", {"loss_type": "dr_grpo"}),
    "bnpo": ("grpo", {"loss_type": "bnpo"}),
    "cispo": ("grpo", {"loss_type": "cispo"}),  # epsilon_high defaults to 5.0 (posttrain.rl.config)
    "sapo": ("grpo", {"loss_type": "sapo"}),
    "luspo": ("grpo", {"loss_type": "luspo", "importance_sampling_level": "sequence"}),
    "vespo": ("grpo", {"loss_type": "vespo"}),
    "gspo": ("grpo", {"loss_type": "grpo", "importance_sampling_level": "sequence"}),
    "rloo": ("rloo", {}),  # RLOO's defaults: beta 0.05, raw leave-one-out advantages
    "rloo_normalized": ("rloo", {"normalize_advantages": True}),
}


def test_every_trl_loss_type_is_covered():
    """posttrain's list of loss types is TRL's (a TRL upgrade that adds one fails here) and each has a learning test."""
    help_text = next(f for f in trl.GRPOConfig.__dataclass_fields__.values() if f.name == "loss_type").metadata["help"]
    listed = help_text.split("Supported values are ", 1)[1].split(". ", 1)[0]
    assert sorted(v.strip(" '") for v in listed.replace(", and ", ", ").split(", ")) == sorted(GRPO_LOSS_TYPES)
    covered = {settings.get("loss_type", "dapo") for stage, settings in VARIANTS.values() if stage == "grpo"}
    assert covered == set(GRPO_LOSS_TYPES)
    assert trl.GRPOConfig.loss_type == "dapo" and IMPORTANCE_SAMPLING_LEVELS == ("token", "sequence")


@pytest.mark.parametrize(
    ("stage", "settings", "message"),
    [
        ("grpo", {"loss_type": "ppo"}, "loss_type must be one of dapo, grpo, dr_grpo, bnpo, cispo, sapo, luspo, vespo"),
        ("grpo", {"importance_sampling_level": "seq"}, "importance_sampling_level must be one of token, sequence"),
        ("grpo", {"scale_rewards": "std"}, "scale_rewards must be one of group, batch, none"),
        ("grpo", {"loss_type": "cispo", "epsilon_high": 0.28}, "epsilon_high is the cap of CISPO's importance weights"),
        ("rloo", {"reward_clip_range": [1.0, -1.0]}, "reward_clip_range must be two numbers [min, max] with min < max"),
        ("rloo", {"loss_type": "grpo"}, "unknown config key 'loss_type'"),  # RLOO has one loss
    ],
    ids=["loss_type", "importance_sampling_level", "scale_rewards", "cispo_epsilon_high", "reward_clip_range", "rloo"],
)
def test_unknown_variant_is_a_config_error(tmp_path, capsys, stage, settings, message):
    """A ConfigError at parse time, before any model loads (the model path does not exist; TRL itself finds an unknown
    loss_type only in the first loss computation): the stage exits with status 2 and one line naming the config file,
    the key and the valid values."""
    config = tmp_path / f"{stage}.yaml"
    config.write_text(json.dumps({"model_name_or_path": str(tmp_path / "absent"), "report_to": "none", **settings}))
    with pytest.raises(SystemExit) as exit_info:
        run_stage(stage, ["--config", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"posttrain: error: {config}: {message}"), err


def test_config_classes_raise_config_error(tmp_path):
    from posttrain.rl.config import GRPOConfig

    with pytest.raises(ConfigError, match="^loss_type must be one of dapo, grpo, .*vespo \\(got 'gspo'\\)$"):
        GRPOConfig(output_dir=str(tmp_path), loss_type="gspo")  # GSPO is importance_sampling_level: sequence
    assert GRPOConfig(output_dir=str(tmp_path), loss_type="cispo").epsilon_high == 5.0
    assert GRPOConfig(output_dir=str(tmp_path), scale_rewards=False).scale_rewards == "none"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_learns_the_rewarded_behaviour(tmp_path, tiny_chat_model, monkeypatch, variant):
    """A learning signal per variant on held-out prompts: with ``has_number`` rewarded, the share of sampled replies to
    16 unseen prompts that state a number rises from ~0.2 to far above (test_grpo's settings: 24 steps, 4 prompts x 8
    replies). A variant that leaves the policy where it started (no gradient, a sign error, a weight clipped to
    nothing) fails the margin."""
    monkeypatch.setenv("POSTTRAIN_PRECISION", "fp32")
    stage, variant_settings = VARIANTS[variant]
    settings = {"model_name_or_path": str(tiny_chat_model), **LEARNING, "rewards": ["has_number"], **variant_settings}
    if stage == "rloo":
        del settings["beta"]  # RLOO's own default (0.05: a KL penalty in the reward against the adapter disabled)
    trainer, metrics = run_stage(stage, ["--config", str(write_stage_config(tmp_path, stage, settings))])
    if stage == "grpo":  # the variant reached TRL's loss
        assert trainer.loss_type == variant_settings.get("loss_type", "dapo")
        assert trainer.importance_sampling_level == variant_settings.get("importance_sampling_level", "token")
    else:
        assert trainer.normalize_advantages == variant_settings.get("normalize_advantages", False)
    assert trainer.state.global_step == LEARNING["max_steps"]
    model = trainer.accelerator.unwrap_model(trainer.model)
    start = _sampled_number_rate(model, trainer.processing_class, reference=True)
    trained = _sampled_number_rate(model, trainer.processing_class, reference=False)
    assert trained >= start + 0.3, (variant, start, trained)
    assert metrics["eval_has_number_policy"] > metrics["eval_has_number_reference"], metrics  # held-out, greedy
