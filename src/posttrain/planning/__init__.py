"""Plans made before anything loads: a model's shape read from its ``config.json`` (:mod:`.model_shape`), this
machine's matmul peak (:mod:`.hardware`) and the memory and time terms of one training step (:mod:`.estimate`).
``posttrain plan`` (:mod:`posttrain.stages.plan`) prints them; docs/plan.md gives the formulas and their check."""
