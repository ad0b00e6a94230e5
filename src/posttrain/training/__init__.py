"""What the TRL-trainer stages share: the run folder published by rename, model and tokenizer set-up for training,
interrupt and resume handling (:mod:`.common`), SFT's trainer and tokenization (:mod:`.sft`) and chat template
checks (:mod:`.sft_templates`), DPO's pair fitting and margins (:mod:`.dpo`), the training fast paths
(:mod:`.fast_paths`), and the GRPO/RLOO wiring of posttrain's rewards (:mod:`.rl_common`). The stages themselves are
:mod:`posttrain.stages`."""
