"""Online RL: posttrain's PPO (:mod:`.ppo`, math in :mod:`.ppo_core`), rewards shared with evaluation checks
(:mod:`.rewards`), prompt loading (:mod:`.prompts`) and the RL stage configs (:mod:`.config`). GRPO and RLOO run on
TRL's trainers (:mod:`posttrain.training.grpo`)."""
