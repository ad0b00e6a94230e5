"""posttrain's commands as data: the one table of their names, summaries, aliases and how each starts.

:data:`STAGE_SPECS` is what the pipeline needs to know about a command (does it exist, is it an alias, does it train
and so start under ``accelerate launch``); :data:`posttrain.stages.STAGES` adds to each entry where its code is and
how to load it. The CLI's usage text, the config reference and the generated ``recipes/<name>.py`` read the same
entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StageSpec:
    name: str
    summary: str
    launch: Literal["accelerate", "python"]
    #: ``recipes/<name>.py`` exists (generated) and runs ``recipes/configs/smollm2-135m/<name>.yaml`` by default
    recipe: bool = True
    aliases: tuple[str, ...] = ()
    #: one line for the config reference (how the stage relates to its library)
    reference: str = ""

    @property
    def trains(self) -> bool:
        return self.launch == "accelerate"


STAGE_SPECS: dict[str, StageSpec] = {
    s.name: s
    for s in (
        StageSpec(
            "sft",
            "supervised fine-tuning with (Q)LoRA and chat templates",
            "accelerate",
            reference="QLoRA SFT with chat templates (TRL `SFTTrainer`)",
        ),
        StageSpec(
            "reward",
            "reward model (sequence classification) on preference pairs",
            "accelerate",
            reference="reward model on preference pairs (TRL `RewardTrainer`)",
        ),
        StageSpec(
            "dpo",
            "direct preference optimization on top of the SFT result",
            "accelerate",
            reference="DPO on preference pairs (TRL `DPOTrainer`)",
        ),
        StageSpec(
            "kto",
            "KTO on unpaired desirable/undesirable replies (or pairs, kto_from_pairs) on top of the SFT result",
            "accelerate",
            reference="KTO on unpaired rows or preference pairs (TRL `KTOTrainer`)",
        ),
        StageSpec(
            "orpo",
            "ORPO (odds-ratio preference optimization, no reference model) on top of the SFT result",
            "accelerate",
            reference="ORPO on preference pairs (TRL `trl.experimental.orpo.ORPOTrainer`)",
        ),
        StageSpec(
            "simpo",
            "SimPO (length-normalized, reference-free) on top of the SFT result",
            "accelerate",
            reference="SimPO on preference pairs (TRL `trl.experimental.cpo.CPOTrainer`, loss_type simpo)",
        ),
        StageSpec(
            "ppo",
            "PPO (posttrain's trainer) on a LoRA adapter: reward model and/or rule rewards, KL to the start model",
            "accelerate",
            reference="PPO against a reward model and/or rule rewards (posttrain's trainer)",
        ),
        StageSpec(
            "grpo",
            "GRPO (TRL) with posttrain's rewards as reward_funcs",
            "accelerate",
            reference="GRPO (TRL `GRPOTrainer`) with posttrain's rewards",
        ),
        StageSpec(
            "rloo",
            "RLOO (TRL) with posttrain's rewards as reward_funcs",
            "accelerate",
            reference="RLOO (TRL `RLOOTrainer`) with posttrain's rewards",
        ),
        StageSpec(
            "pairs",
            "on-policy preference pairs: sample n replies, score (rule checks or a reward model), keep best vs worst",
            "python",
            reference="on-policy preference pairs from a model, scored by rule checks or a reward model",
        ),
        StageSpec(
            "evaluate",
            "rule-based and model-based suites on models, adapters, GGUF files or endpoints",
            "python",
            aliases=("eval",),
            reference="rule-based and model-based evaluation, reports",
        ),
        StageSpec(
            "merge",
            "merge the adapter chain (SFT -> DPO/PPO) into full-precision weights, report logit drift",
            "python",
            reference="adapter chain merged into full-precision weights",
        ),
        StageSpec(
            "export",
            "GGUF (llama.cpp) + quantized types + Ollama Modelfile, verified; non-zero exit on failure",
            "python",
            reference="GGUF conversion, quantization, Ollama Modelfile, verification",
        ),
        StageSpec(
            "pipeline",
            "every stage in order (SFT, reward, DPO, PPO, evaluate, merge, export), skipping finished ones",
            "python",
            reference="every stage in order",
        ),
        StageSpec(
            "plan",
            "estimate a training config's peak memory (term by term) and step time before anything loads",
            "python",
            recipe=False,
            reference="memory and time plan of a training stage's config (docs/plan.md)",
        ),
        StageSpec("model", "materialize an embedded model alias and print its local folder", "python", recipe=False),
    )
}

#: other names of a command (``eval``): ``{alias: name}``
ALIASES = {alias: stage.name for stage in STAGE_SPECS.values() for alias in stage.aliases}
