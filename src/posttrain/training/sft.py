"""posttrain's SFT training: the loss settings it supports, the rows it trains on (chat template rendering with
assistant-only loss masks) and TRL's ``SFTTrainer`` with a loss computed only at the trained positions. The stage is
:mod:`posttrain.stages.sft`; the choice and checks of the chat template are :mod:`.sft_templates`.
"""

from __future__ import annotations

from posttrain.chat_templates import tokenize_conversations
from posttrain.configs import SFTConfig
from posttrain.data.formats import with_system_prompt
from posttrain.data.tools import Conversation
from posttrain.errors import ConfigError

#: TRL's ``SFTConfig.loss_type`` values (``chunked_nll`` is turned into ``nll`` by the config itself)
LOSS_TYPES = ("nll", "dft")


#: Elements (rows x vocabulary) of log-probabilities per chunk of the entropy metric: its temporaries stay small.
_ENTROPY_CHUNK = 1 << 24


def check_loss_settings(training_args: SFTConfig) -> None:
    """Refuse, before anything loads, the ``SFTConfig`` loss settings posttrain's SFT cannot give their TRL meaning.

    posttrain renders every conversation (prompt-completion rows included) with an assistant-only loss mask, so the
    prompt is never trained: ``completion_only_loss: false`` (TRL: train the prompt of prompt-completion rows too)
    would be silently ignored.
    """
    if training_args.completion_only_loss is False:
        raise ConfigError(
            "SFTConfig.completion_only_loss=False is not supported by posttrain's SFT loss: every conversation "
            "(prompt-completion rows too) is trained on its assistant turns only; leave completion_only_loss unset"
        )
    if training_args.loss_type not in LOSS_TYPES:
        raise ConfigError(
            f"SFTConfig.loss_type={training_args.loss_type!r} is not supported by posttrain's SFT loss: "
            f"choose {' or '.join(LOSS_TYPES)}"
        )


def trainer_class():
    """TRL's ``SFTTrainer`` with a loss computed only where it is needed.

    With assistant-only loss most positions carry no label, yet a plain LM head (and TRL's fused one off GPU)
    projects every position onto the whole vocabulary. Here the model is asked for logits at the positions whose
    next token is trained only (transformers' ``logits_to_keep``), through the model's own forward, so peft's
    trainable new-token rows of ``lm_head`` (``<|im_end|>`` added to a base model) are applied and learned --
    TRL's fused head reads ``lm_head.weight`` directly and would skip them.

    The loss is TRL 1.16's ``SFTTrainer.compute_loss`` otherwise: ``loss_type`` (``nll``, ``dft``),
    ``label_smoothing_factor`` (with ``nll``), the MoE load-balancing loss (``router_aux_loss_coef``, or the model
    config's, when the model returns router logits), ``average_tokens_across_devices`` and the logged metrics
    (``mean_token_accuracy``, ``entropy``, ``num_tokens``, ``aux_loss``) are the same. TRL's own ``compute_loss``
    runs where the compact path is not the same computation: under context or sequence parallelism (pre-shifted
    labels) and with a ``compute_loss_func``. ``assistant_only_loss: true`` is what posttrain's masks already do (TRL
    would refuse the pre-tokenized rows).
    """
    import torch
    from trl import SFTTrainer

    class PosttrainSFTTrainer(SFTTrainer):
        def __init__(self, *args, **kwargs):
            training_args = kwargs.get("args")
            assistant_only = getattr(training_args, "assistant_only_loss", False)
            if assistant_only:  # the rows carry posttrain's assistant masks already: the same labels
                training_args.assistant_only_loss = False
            try:
                super().__init__(*args, **kwargs)
            finally:
                if assistant_only:
                    training_args.assistant_only_loss = True

        def _compact_loss_applies(self, inputs) -> bool:
            """Whether the compact loss is TRL's computation for this batch (else TRL's own compute_loss runs)."""
            if self.compute_loss_func is not None or "shift_labels" in inputs:
                return False
            parallelism = getattr(self.accelerator, "parallelism_config", None)
            return not (parallelism is not None and getattr(parallelism, "sp_enabled", False))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self._compact_loss_applies(inputs):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            labels = inputs["labels"]
            forward = {key: value for key, value in inputs.items() if key != "labels"}
            forward["use_cache"] = False
            if self.aux_loss_enabled:  # MoE: the model returns its load-balancing loss as `aux_loss`
                forward["output_router_logits"] = True
            targets = labels[:, 1:]  # position t predicts token t + 1
            keep = (targets != -100).any(dim=0).nonzero().flatten()
            if keep.numel() == 0:  # nothing trained in this micro-batch: keep one position, contributing zero
                keep = torch.zeros(1, dtype=torch.long, device=labels.device)
            outputs = model(**forward, logits_to_keep=keep)
            kept = targets[:, keep]
            valid = kept != -100
            # one log-softmax feeds the loss, its gradient and the metrics (cross_entropy would compute it too)
            log_probs = outputs.logits.float().log_softmax(-1)
            token_log_probs = log_probs.gather(-1, kept.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            per_token = -token_log_probs
            if self.args.loss_type == "dft":  # DFT (arXiv:2508.05629): each token's -log p weighted by its p
                per_token = per_token * token_log_probs.exp().detach()
            elif self.args.label_smoothing_factor:  # transformers' LabelSmoother: the mean -log p over the vocab
                eps = self.args.label_smoothing_factor
                per_token = (1 - eps) * per_token - eps * log_probs.mean(-1)
            per_token = per_token.masked_fill(~valid, 0.0)
            num_tokens = valid.sum() if num_items_in_batch is None else num_items_in_batch
            loss = per_token.sum() / torch.as_tensor(num_tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # DDP averages gradients; undo it for a token mean
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            if self.aux_loss_enabled:  # a per-micro-batch mean: averaged over accumulation steps, as TRL does
                steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
                loss = loss + self.router_aux_loss_coef * outputs.aux_loss.to(loss.device) / steps
            self._log_metrics(mode, inputs, log_probs.detach(), kept, valid, outputs)
            if return_outputs:  # callers of the outputs (compute_metrics) expect logits at every position
                with torch.no_grad():
                    outputs = model(**forward)
            return (loss, outputs) if return_outputs else loss

        def _log_metrics(self, mode, inputs, log_probs, kept, valid, outputs):
            """TRL's SFT metrics, over the trained positions: ``entropy``, ``mean_token_accuracy``, ``num_tokens``
            (every input token seen in training so far) and, for MoE models, ``aux_loss``."""
            gather = self.accelerator.gather_for_metrics
            with torch.no_grad():
                rows = max(1, _ENTROPY_CHUNK // log_probs.shape[-1])
                entropy = torch.cat(
                    [-(chunk.exp() * chunk).sum(-1) for chunk in log_probs.flatten(0, 1).split(rows)]
                ).view_as(kept)
                correct = (log_probs.argmax(-1) == kept) & valid
                sums = torch.stack([valid.sum().float(), (entropy * valid).sum(), correct.sum().float()])
                num_valid, entropy_sum, num_correct = gather(sums.view(1, 3)).sum(0).tolist()
            self._metrics[mode]["entropy"].append(entropy_sum / num_valid if num_valid > 0 else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append(num_correct / num_valid if num_valid > 0 else 0.0)
            if mode == "train":  # padding-free batches have no attention mask: every position is a token
                if "attention_mask" in inputs:
                    local = inputs["attention_mask"].sum()
                else:
                    local = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
                self._total_train_tokens += gather(local).sum().item() // self._tp_size
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            if self.aux_loss_enabled:
                self._metrics[mode]["aux_loss"].append(gather(outputs.aux_loss.detach()).mean().item())

    return PosttrainSFTTrainer


def tokenize_dataset(conversations, tokenizer, *, system_prompt: str | None = None):
    """Map a ``messages`` dataset to ``input_ids`` + ``assistant_masks`` with the tokenizer's chat template (a
    conversation may give several rows where the template is not prefix-preserving). Rows with tool calls,
    reasoning, ``tools`` or ``chat_template_kwargs`` (:meth:`~posttrain.data.tools.Conversation.from_row`) render
    with them."""

    def tokenize(batch):
        columns = list(batch)
        rows = []
        for k in range(len(batch["messages"])):
            conversation = Conversation.from_row({column: batch[column][k] for column in columns})
            rows += tokenize_conversations(
                tokenizer,
                with_system_prompt(conversation.messages, system_prompt),
                tools=conversation.tools,
                template_kwargs=conversation.chat_template_kwargs,
            )
        return {key: [row[key] for row in rows] for key in ("input_ids", "assistant_masks")}

    return conversations.map(
        tokenize,
        batched=True,
        remove_columns=conversations.column_names,
        desc="Rendering chat template and loss masks",
    )
