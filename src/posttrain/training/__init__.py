"""What the TRL-trainer stages share: the run folder published by rename, model and tokenizer set-up for training,
interrupt and resume handling (:mod:`.common`), and the GRPO/RLOO wiring of posttrain's rewards
(:mod:`.rl_common`). The stages themselves are :mod:`posttrain.stages`."""
