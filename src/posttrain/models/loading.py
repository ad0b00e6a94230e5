"""Tokenizer, quantization, model and LoRA construction, with precision chosen for the hardware.

QLoRA follows Dettmers et al. 2023 (arXiv:2305.14314): NF4 weights, double quantization, bf16 compute where the
hardware has it. On CPU, bitsandbytes' 4-bit kernels run too (bf16 compute is the faster choice on AVX512-BF16).
"""

from __future__ import annotations

import torch

from posttrain.configs import ModelConfig
from posttrain.log import get_logger
from posttrain.models.quantized import keep_4bit_weights_for_training
from posttrain.precision import compute_dtype

logger = get_logger(__name__)


def load_tokenizer(model_path: str, model_args: ModelConfig, *, trust_remote_code: bool = False):
    """The tokenizer of ``model_path``: ``model_args.model_name_or_path`` as
    :func:`~posttrain.models.resolve.resolve_model` resolved it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        model_path,
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
    )


def quantization_config(model_args: ModelConfig, dtype: torch.dtype):
    """bitsandbytes config for 4-bit (NF4 by default) or 8-bit loading; None for full precision."""
    from transformers import BitsAndBytesConfig

    if model_args.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=model_args.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=model_args.use_bnb_nested_quant,
            bnb_4bit_compute_dtype=dtype,
            # FSDP-QLoRA shards the packed 4-bit weights, which needs them stored in the float dtype of the rest.
            bnb_4bit_quant_storage=model_args.bnb_4bit_quant_storage or torch.uint8,
        )
    if model_args.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_model(model_path: str, model_args: ModelConfig, training_args, *, model_class=None, **extra_kwargs):
    """Load the (optionally 4-bit) base model at ``model_path`` (resolved by
    :func:`~posttrain.models.resolve.resolve_model`) for training, with dtype and device placement set for
    accelerate."""
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM

    model_class = model_class or AutoModelForCausalLM
    dtype = compute_dtype(training_args)
    if model_args.dtype not in (None, "auto"):
        dtype = getattr(torch, model_args.dtype)
    quant = quantization_config(model_args, dtype)
    kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=dtype,
    )
    if quant is not None:
        kwargs["quantization_config"] = quant
        if torch.cuda.is_available():  # each DDP rank holds its whole quantized copy on its own GPU
            kwargs["device_map"] = {"": PartialState().local_process_index}
    kwargs.update(extra_kwargs)
    if training_args.model_init_kwargs:
        kwargs.update(training_args.model_init_kwargs)
    model = model_class.from_pretrained(model_path, **kwargs)
    keep_4bit_weights_for_training(model)  # an eval-mode pass must not repack weights that train afterwards
    model.config.use_cache = not training_args.gradient_checkpointing
    return model


#: LoRA targets when the config names none: every linear layer but the output head (peft's shorthand, what the
#: shipped configs use). peft's own default is a per-architecture list that many (Granite, Phi-3, ...) lack.
DEFAULT_LORA_TARGETS = "all-linear"


def lora_config(
    model_args: ModelConfig, *, new_token_ids: list[int] | None = None, tied_embeddings: bool = True, task_type=None
):
    """peft LoRA config from the model args; tokens added to the vocabulary get their embedding rows trained.

    Without ``lora_target_modules`` (and ``lora_target_parameters``) every linear layer except the output head is
    adapted (:data:`DEFAULT_LORA_TARGETS`), for every architecture; the main process says so.

    With tied embeddings peft ties the trained rows into ``lm_head``; otherwise ``lm_head``'s rows for the new
    tokens are trained too, so the model can learn to *emit* them (``<|im_end|>`` above all).
    """
    from trl import get_peft_config

    if not model_args.use_peft:
        return None
    config = get_peft_config(model_args)
    if not model_args.lora_target_modules and not model_args.lora_target_parameters:
        config.target_modules = DEFAULT_LORA_TARGETS
        logger.info(
            f"posttrain: lora_target_modules not set: LoRA adapts all linear layers ({DEFAULT_LORA_TARGETS}, "
            "except the output head)"
        )
    if task_type is not None:
        config.task_type = task_type
    if new_token_ids:
        # Trains only the new rows of the embedding (and, through weight tying or an explicit entry, of lm_head).
        config.trainable_token_indices = {"embed_tokens": list(new_token_ids)}
        if not tied_embeddings:
            config.trainable_token_indices["lm_head"] = list(new_token_ids)
    return config
