"""Evaluation: suites (YAML) of rule-checked, judged and model-scored prompts, run on any model and compared across
stages (base -> SFT -> DPO -> PPO).

Modules: :mod:`.config` (run settings), :mod:`.suites` (suite files and packaged data), :mod:`.backends` (HF models,
GGUF via llama.cpp, OpenAI-compatible endpoints), :mod:`.judges` (LLM-as-judge prompts and verdict parsing),
:mod:`.embedding` (similarity to references), :mod:`.stats` (bootstrap CIs), :mod:`.runner` (generate with a cache,
score, summarise), :mod:`.report` (Markdown and HTML reports). The command is :mod:`posttrain.stages.evaluate`. Rule
checks live in :mod:`posttrain.checks` and :mod:`posttrain.tasks`, shared with RL rewards.
"""
