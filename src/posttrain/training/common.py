"""What every training stage shares: model + tokenizer + chat template set-up, LoRA config, and the run record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Run:
    """A stage in progress: accelerate state and wall-clock start."""

    state: object
    started: float = field(default_factory=time.time)


def start_run(training_args) -> Run:
    from accelerate import PartialState
    from transformers import set_seed

    set_seed(training_args.seed)
    return Run(state=PartialState())


def load_model_and_tokenizer(pt_args, training_args, model_args, *, sequence_classification: bool = False):
    """Tokenizer, (4-bit) model and chat template set up together; returns the ids of tokens added to the vocab."""
    from posttrain import chat_templates
    from posttrain.modeling import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_args, trust_remote_code=training_args.trust_remote_code)
    if sequence_classification:
        from transformers import AutoModelForSequenceClassification

        model = load_model(model_args, training_args, model_class=AutoModelForSequenceClassification, num_labels=1)
    else:
        model = load_model(model_args, training_args)
    new_token_ids = chat_templates.setup_chat_template(model, tokenizer, pt_args.chat_template)
    return model, tokenizer, new_token_ids


def peft_config(model, model_args, new_token_ids, *, task_type: str | None = None):
    from posttrain.modeling import lora_config

    tied = bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False))
    return lora_config(model_args, new_token_ids=new_token_ids, tied_embeddings=tied, task_type=task_type)


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    if system_prompt and messages and messages[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def rank_summary(trainer, state) -> dict:
    """This rank's view after training: its index, steps taken and a checksum of its trainable weights."""
    checksum = sum(p.detach().double().sum().item() for p in trainer.model.parameters() if p.requires_grad)
    return {"rank": state.process_index, "steps": trainer.state.global_step, "trainable_checksum": checksum}


def logged(trainer, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def finish_run(
    run: Run,
    trainer,
    *,
    stage: str,
    title: str,
    configs: tuple,
    data_fingerprint: dict,
    summary: dict,
    metrics: dict,
    **fields,
) -> None:
    """Gather every rank's summary, then (main process) write the model card and, last, the run manifest."""
    from accelerate.utils import gather_object

    from posttrain.manifest import write_manifest, write_model_card

    pt_args, training_args, model_args = configs
    ranks = gather_object([rank_summary(trainer, run.state)])  # proves every rank trained (and stayed in sync)
    if run.state.is_main_process:
        losses = logged(trainer, "loss")
        write_model_card(
            training_args.output_dir,
            title=title,
            base_model=model_args.model_name_or_path,
            summary={
                "stage": f"{stage} ({'QLoRA' if model_args.load_in_4bit else 'LoRA'})",
                "steps": trainer.state.global_step,
                "first / last logged loss": f"{losses[0]:.4f} / {losses[-1]:.4f}" if losses else "n/a",
                **summary,
            },
        )
        write_manifest(
            training_args.output_dir,
            stage=stage,
            configs=configs,
            seed=training_args.seed,
            base_model=model_args.model_name_or_path,
            data_fingerprint=data_fingerprint,
            loss_curve=losses,
            metrics=metrics,
            world_size=run.state.num_processes,
            ranks=ranks,
            wall_time_s=round(time.time() - run.started, 1),
            **fields,
        )
    run.state.wait_for_everyone()
