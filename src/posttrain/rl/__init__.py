"""Online RL: posttrain's PPO (:mod:`.ppo`, math in :mod:`.ppo_core`), rewards shared with evaluation checks
(:mod:`.rewards`), prompt loading (:mod:`.prompts`), the RL stage configs (:mod:`.config`) and on-policy preference
pairs (:mod:`.pairs`). GRPO and RLOO run on TRL's trainers (:mod:`posttrain.stages.grpo`)."""
