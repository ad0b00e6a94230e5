"""posttrain: from an open base model to a chat model running in Ollama.

Stages (each a recipe under ``recipes/`` and a ``posttrain <stage>`` command): SFT with 4-bit QLoRA and chat
templates, preference RL (reward model, DPO, PPO, GRPO/RLOO), evaluation, and export to GGUF/Ollama.
"""

__version__ = "0.1.0"
