"""Supervised fine-tuning with (Q)LoRA and chat templates on TRL's SFTTrainer.

Conversations are rendered with the tokenizer's chat template and tokenized here, with an assistant-only loss mask
(:func:`posttrain.chat_templates.tokenize_conversations`: one sequence per conversation, or one per diverging assistant
turn for a template that is not prefix-preserving, such as Qwen3's); TRL then builds labels, truncates, packs and
trains. Tool calls, tool results, reasoning, ``tools`` and ``chat_template_kwargs`` (:mod:`posttrain.data.tools`) go
to every rendering; :func:`check_template_support` first makes sure the template renders them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from posttrain import chat_templates
from posttrain.chat_templates import ChatTemplateError, tokenize_conversations, training_segments
from posttrain.configs import ModelConfig, PosttrainArguments, SFTConfig
from posttrain.data import fingerprint, load_conversations
from posttrain.data.formats import with_system_prompt
from posttrain.data.loading import ORIGIN_COLUMN
from posttrain.data.tools import Conversation
from posttrain.data.validation import TOOL_ROLE, DataError
from posttrain.errors import ConfigError
from posttrain.training.common import (
    eval_split,
    finish_run,
    load_model_and_tokenizer,
    peft_config,
    start_run,
    train,
)

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


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, SFTConfig, ModelConfig))


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


def _warn(message: str) -> None:
    print(f"posttrain: warning: {message}", flush=True)


_TOOL_CAPABLE = "tool-capable template"
"""In every problem message about a tool-using row (what :func:`add_tool_template` looks for)."""


def _unrendered(tokenizer, conversation: Conversation, system_prompt: str | None, template: str):
    """``(problem, reasoning)`` for one conversation: the first tool call, tool schema or tool result the template
    does not render (a sentence, or None), and the 1-based index of the first assistant message whose
    ``reasoning_content`` is not in its trained reply (or None)."""
    messages = with_system_prompt(conversation.messages, system_prompt)
    offset = len(messages) - len(conversation.messages)  # a system prompt the stage adds
    tool_use = bool(conversation.tools) or any(m["role"] == TOOL_ROLE for m in conversation.messages)
    advice = (
        f"set `chat_template:` to a {_TOOL_CAPABLE} (`chatml`, or a .jinja file such as the model family's template "
        "with tool support), or leave the tool calls out of the data"
        if tool_use
        else "set `chat_template:` to a template that renders it (a .jinja file)"
    )
    try:
        segments = training_segments(
            tokenizer, messages, tools=conversation.tools, template_kwargs=conversation.chat_template_kwargs
        )
    except ChatTemplateError as error:
        kwargs = conversation.chat_template_kwargs
        if not kwargs:
            return str(error), None
        return (
            f"{error} (rendered with the row's chat_template_kwargs {json.dumps(kwargs)}: do they contradict the "
            "row, such as reasoning_content with enable_thinking false?)"
        ), None
    except Exception as error:  # the template's own raise_exception, or what it cannot handle
        return f"{template} cannot render this conversation ({type(error).__name__}: {error}); {advice}", None
    replies = [segment.text[a:b] for segment in segments for a, b in segment.spans]
    texts = [segment.text for segment in segments]
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    reasoning_missing = None
    for i, reply in zip(assistants, replies):
        message = messages[i]
        for call in message.get("tool_calls", ()):
            name = call["function"]["name"]
            if name not in reply:
                return (
                    f"message {i + 1 - offset} calls tool {name!r}, but {template} does not render tool calls (the "
                    f"trained reply lacks {name!r}); {advice}"
                ), None
        reasoning = (message.get("reasoning_content") or "").strip()
        if reasoning and reasoning not in reply and reasoning_missing is None:
            reasoning_missing = i + 1 - offset
    for tool in conversation.tools or ():
        name = tool["function"]["name"]
        if not any(name in text for text in texts):
            return (
                f"the row lists tools, but {template} does not render them (the rendered conversation lacks "
                f"{name!r}); {advice}"
            ), None
    for i, message in enumerate(messages):
        content = message["content"].strip() if message["role"] == TOOL_ROLE else ""
        escaped = json.dumps(content, ensure_ascii=False)[1:-1]
        if content and not any(content in text or escaped in text for text in texts):
            return (
                f"message {i + 1 - offset} is a tool result, but {template} does not render tool results (the "
                f"rendered conversation lacks its content); {advice}"
            ), None
    return None, reasoning_missing


def check_template_support(
    data,
    tokenizer,
    *,
    system_prompt: str | None = None,
    template: str | None = None,
    warn: Callable[[str], None] = _warn,
) -> None:
    """Make sure the chat template renders what the rows give it besides plain messages, before anything trains.

    ``data`` is a dataset or a ``DatasetDict`` from :func:`~posttrain.data.load_conversations`; only rows with tool
    calls, tool results, reasoning, ``tools`` or ``chat_template_kwargs`` are rendered (as training renders them).
    ``template`` names the template in messages (default: ``the chat template of <tokenizer path>``).

    Raises:
        DataError: Naming the row (file and line/row) and the template, when a tool call is missing from its trained
            reply, a listed tool or a tool result from the rendered conversation, or the template fails on the row.

    Warns (``warn``, one line each, once per call with a count): when the template leaves an assistant message's
    ``reasoning_content`` out of the trained reply (only the replies are trained), and for each
    ``chat_template_kwargs`` key the template's source never mentions (e.g. ``enable_thinking`` for a template
    without a thinking switch: it changes nothing).
    """
    splits = list(data.values()) if isinstance(data, Mapping) else [data]
    template = template or f"the chat template of {getattr(tokenizer, 'name_or_path', '') or 'the tokenizer'}"
    source = chat_templates.template_source(tokenizer)
    reasoning_rows, reasoning_missing, first_missing = 0, 0, ""
    unused: dict[str, list[str]] = {}
    for split in splits:
        if ORIGIN_COLUMN not in split.column_names:  # plain messages only
            continue
        for row in split:
            conversation = Conversation.from_row(row)
            if not conversation.has_extras:
                continue
            origin = row.get(ORIGIN_COLUMN) or "a training row"
            for key in chat_templates.unreferenced_template_kwargs(source, conversation.chat_template_kwargs or {}):
                unused.setdefault(key, []).append(origin)
            problem, missing = _unrendered(tokenizer, conversation, system_prompt, template)
            if problem is not None:
                raise DataError(origin, problem)
            if any(m.get("reasoning_content") for m in conversation.messages):
                reasoning_rows += 1
            if missing is not None:
                reasoning_missing += 1
                first_missing = first_missing or f"{origin}, message {missing}"
    if reasoning_missing:
        warn(
            f"{reasoning_missing} of {reasoning_rows} conversations with 'reasoning_content' (first: {first_missing}) "
            f"lose it: {template} does not render it, so the reasoning is not trained, only the replies are"
        )
    for key, origins in unused.items():
        rows = "1 row" if len(origins) == 1 else f"{len(origins)} rows"
        warn(
            f"chat_template_kwargs key {key!r} ({rows}, first: {origins[0]}) is never referenced by {template}: it "
            "changes nothing"
        )


def _has_tool_rows(data) -> bool:
    splits = list(data.values()) if isinstance(data, Mapping) else [data]
    for split in splits:
        if ORIGIN_COLUMN not in split.column_names:  # plain messages only
            continue
        for row in split:
            conversation = Conversation.from_row(row)
            if conversation.tools or any(m["role"] == TOOL_ROLE or m.get("tool_calls") for m in conversation.messages):
                return True
    return False


def add_tool_template(
    data, model, tokenizer, *, system_prompt: str | None = None, model_name: str = "the model", log=print
) -> list[int] | None:
    """``chat_template: auto`` with tool-calling rows the tokenizer's own template cannot render: add posttrain's
    tool-capable ChatML (Hermes/Qwen2.5-style ``<tool_call>`` JSON, ``chatml.jinja``), as ChatML is added to a base
    model without a template, and say so in one line.

    The template goes into the tokenizer the run saves, so evaluation, merge and export (the merged tokenizer's
    ``chat_template``, the GGUF's Jinja template, the Ollama TEMPLATE) use the same one. Returns the ids of tokens
    added to the vocabulary (``<|im_start|>``/``<|im_end|>`` for a model without them), or None when the own
    template is kept (no tool rows, or it renders them; :func:`check_template_support` then judges it as usual).
    """
    if not _has_tool_rows(data):
        return None
    if tokenizer.chat_template == chat_templates.load_template("chatml"):
        return None
    try:
        check_template_support(data, tokenizer, system_prompt=system_prompt, warn=lambda message: None)
        return None
    except DataError as error:
        if _TOOL_CAPABLE not in str(error):  # a problem of another kind (template variables): not ours to fix
            return None
        problem = str(error)
    new_ids = chat_templates.setup_chat_template(model, tokenizer, "chatml")
    log(
        f"posttrain: chat_template auto: the chat template of {model_name} cannot render the data's tool calls "
        f"({problem.split('; set `chat_template:`')[0]}); using posttrain's tool-capable ChatML template (chatml), "
        "saved with the tokenizer so that evaluation, merge and export use it too",
        flush=True,
    )
    return new_ids


def main(pt_args: PosttrainArguments, training_args: SFTConfig, model_args: ModelConfig):
    """Data → tokenizer/model → SFTTrainer → train → save adapter, tokenizer, model card, manifest."""

    check_loss_settings(training_args)
    run = start_run(training_args)
    # Data first: every row is validated before a model is loaded or an output directory exists.
    data = load_conversations(
        pt_args.datasets, test_split_size=pt_args.test_split_size, seed=training_args.seed, identity=pt_args.identity
    )
    model, tokenizer, new_token_ids = load_model_and_tokenizer(pt_args, training_args, model_args)
    template_used = pt_args.chat_template
    template_name = (
        f"the chat template of {model_args.model_name_or_path}"
        if pt_args.chat_template == "auto"
        else f"chat template {pt_args.chat_template!r}"
    )
    if pt_args.chat_template == "auto":
        added = add_tool_template(
            data,
            model,
            tokenizer,
            system_prompt=pt_args.system_prompt,
            model_name=model_args.model_name_or_path,
            log=print if run.state.is_main_process else lambda *a, **k: None,
        )
        if added is not None:
            new_token_ids = [*new_token_ids, *added]
            template_used = "chatml (auto: tool calls)"
            template_name = "posttrain's tool-capable ChatML template (chosen by chat_template: auto)"
    check_template_support(
        data,
        tokenizer,
        system_prompt=pt_args.system_prompt,
        template=template_name,
        warn=_warn if run.state.is_main_process else lambda message: None,
    )

    with run.state.main_process_first():
        tokenized = {
            split: tokenize_dataset(data[split], tokenizer, system_prompt=pt_args.system_prompt) for split in data
        }
    tokenized = {
        split: chat_templates.check_lengths(
            ds, training_args.max_length, pt_args.overlong_samples, name=split, tokenizer=tokenizer
        )
        for split, ds in tokenized.items()
    }
    stats = chat_templates.check_mask_coverage(tokenized["train"])
    if run.state.is_main_process and pt_args.show_example:
        example = tokenized["train"][0]
        print(f"── training example 0 (trained text in ⟦ ⟧; {stats.fraction:.0%} of all tokens are trained) ──")
        print(chat_templates.format_masked(tokenizer, example["input_ids"], example["assistant_masks"]))
        print("─" * 60, flush=True)

    trainer = trainer_class()(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=eval_split(tokenized, training_args),
        processing_class=tokenizer,
        peft_config=peft_config(model, model_args, new_token_ids),
    )
    result = train(run, trainer, training_args, fast=pt_args.fast_paths)

    metrics = dict(result.metrics)
    if "test" in tokenized:  # every rank takes part in evaluation
        metrics.update(trainer.evaluate(tokenized["test"]))
    trainer.save_model(training_args.output_dir)
    if run.state.is_main_process:
        tokenizer.save_pretrained(training_args.output_dir)
    finish_run(
        run,
        trainer,
        stage="sft",
        title=f"SFT adapter for {model_args.model_name_or_path}",
        configs=(pt_args, training_args, model_args),
        data_fingerprint=fingerprint(data, pt_args.datasets),
        summary={
            "trained tokens": f"{stats.trained} of {stats.total} ({stats.fraction:.1%})",
            "chat template": template_used,
        },
        metrics=metrics,
        new_special_tokens=tokenizer.convert_ids_to_tokens(new_token_ids),
        loss_mask={"trained_tokens": stats.trained, "total_tokens": stats.total},
        chat_template=template_used,
    )
    if run.state.is_main_process:
        print(f"posttrain: SFT adapter, tokenizer, README.md and run_manifest.json saved to {training_args.output_dir}")
    return trainer
