"""Evaluation: suites (YAML) of rule-checked, judged and model-scored prompts, run on any model and compared across
stages (base -> SFT -> DPO -> PPO).

Modules: :mod:`.config` (run settings), :mod:`.suites` (suite files and packaged data), :mod:`.backends` (HF models,
GGUF via llama.cpp, OpenAI-compatible endpoints), :mod:`.cache` (the generation cache), :mod:`.generation` (each
model's replies to each suite, as records), :mod:`.tool_loop` (tool suites), :mod:`.reasoning` (a thinking model's
reasoning split from its answer), :mod:`.scoring` (rule checks, embedding, reward model, judges), :mod:`.judges`
(LLM-as-judge prompts and verdict parsing), :mod:`.embedding` (similarity to references), :mod:`.summary` (means with
bootstrap CIs, deltas between stages), :mod:`.results` (results.json), :mod:`.overlap` (held-out check),
:mod:`.runner` (wires them: validate, generate, score, summarise), :mod:`.report` (Markdown and HTML reports, with
:mod:`.formatting` and :mod:`.charts`). The command is :mod:`posttrain.stages.evaluate`. Rule checks live in
:mod:`posttrain.checks` and :mod:`posttrain.tasks`, shared with RL rewards.
"""
