"""Online RL: posttrain's PPO (the loop :mod:`.ppo`; its model :mod:`.ppo_model`, rollout :mod:`.ppo_rollout`, reward
normalization :mod:`.reward_normalization`, checkpoints :mod:`.ppo_checkpoint` and math :mod:`.ppo_core`), rewards
shared with evaluation checks (:mod:`.rewards`), the reward-hacking guard (:mod:`.guard`, in a training loop
:mod:`.guard_stop`, its held-out choice :mod:`.heldout`), prompt loading (:mod:`.prompts`, :mod:`.prompt_items`), the
RL stage configs (:mod:`.config`) and on-policy preference pairs (:mod:`.pairs`). GRPO and RLOO run on TRL's trainers
(:mod:`posttrain.stages.grpo`)."""
