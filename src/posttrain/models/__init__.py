"""Models: what a name means and how a model is loaded, adapted, merged and scored.

Modules: :mod:`.registry` (embedded aliases, local folders, hub ids, the model cache), :mod:`.loading` (tokenizer,
4-bit quantization, LoRA), :mod:`.adapters` (adapter folders and their base), :mod:`.merge` (the adapter chain merged
into full-precision weights, the one merge implementation), :mod:`.weights` (safetensors-only loading, pickle refusal),
:mod:`.reward` (reward models), :mod:`.reward_accuracy` (how well one ranks pairs), :mod:`.generation` (batched,
KV-cached sampling).
"""
