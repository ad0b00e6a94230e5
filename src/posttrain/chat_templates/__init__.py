"""Chat templates: choose/apply the Jinja template, add ChatML to base models, and build assistant-only loss masks.

Masks are computed from the template itself, so any prefix-preserving template works without ``{% generation %}``
markers: for every assistant turn ``i`` the characters between ``render(messages[:i], add_generation_prompt=True)``
and ``render(messages[:i+1])`` are the assistant's reply *including* the end-of-turn token (``<|im_end|>``), which
is what makes a model learn to stop. Tokens whose text starts inside such a span are trained; everything else
(system, user, role headers) is masked out of the loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from posttrain.errors import UserError

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
PAD_CANDIDATES = ("<|pad|>", "<pad>", "<|finetune_right_pad_id|>", "<|endoftext|>")


class ChatTemplateError(UserError, ValueError):
    """A chat template that cannot be used for training (missing, not prefix-preserving, ...)."""


def builtin_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.jinja"))


def load_template(name_or_path: str) -> str:
    """Template text from a built-in name (``chatml``) or a ``.jinja`` file path."""
    builtin = TEMPLATE_DIR / f"{name_or_path}.jinja"
    if builtin.is_file():
        return builtin.read_text(encoding="utf-8")
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ChatTemplateError(
        f"chat template '{name_or_path}' is neither a file nor a built-in template ({', '.join(builtin_templates())})"
    )


def setup_chat_template(model, tokenizer, choice: str = "auto") -> list[int]:
    """Make ``tokenizer`` carry a chat template and ``model`` agree on its special tokens.

    ``auto`` keeps the tokenizer's own template and adds ChatML only when there is none; ``chatml`` or a path
    replaces it. When ChatML's ``<|im_start|>``/``<|im_end|>`` are new to the vocabulary they are added as special
    tokens, the embeddings are resized (new rows start at the mean embedding) and their ids are returned so the
    caller makes those rows trainable. ``<|im_end|>`` becomes EOS (training and generation stop there).
    """
    if choice == "auto" and tokenizer.chat_template:
        template = None
    else:
        template = load_template("chatml" if choice == "auto" else choice)

    new_ids: list[int] = []
    if template is not None:
        tokenizer.chat_template = template
        if all(token in template for token in CHATML_TOKENS):
            missing = [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
            if missing:
                tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
                new_ids = tokenizer.convert_tokens_to_ids(missing)
            tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        # A pad distinct from EOS: sequence-classification heads find the last real token by the pad id.
        vocab = tokenizer.get_vocab()
        pad = next((t for t in PAD_CANDIDATES if t in vocab and t != tokenizer.eos_token), tokenizer.eos_token)
        tokenizer.pad_token = pad

    embeddings = model.get_input_embeddings()
    if len(tokenizer) > embeddings.num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    for config in (model.config.get_text_config(), getattr(model, "generation_config", None)):
        if config is not None:
            config.eos_token_id = tokenizer.eos_token_id
            config.pad_token_id = tokenizer.pad_token_id
    return new_ids


def render(tokenizer, messages: list[dict], *, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the ``[start, end)`` character spans of every assistant reply."""
    full = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        through = render(tokenizer, messages[: i + 1])
        if not (through.startswith(before) and full.startswith(through)):
            raise ChatTemplateError(
                "the chat template is not prefix-preserving (rendering a conversation up to an assistant turn is "
                "not a prefix of rendering the whole conversation), so assistant-only loss masks cannot be derived "
                f"from it; set `chat_template` to a training template (e.g. chatml). First differing turn: {i}"
            )
        spans.append((len(before), len(through)))
    return full, spans


def tokenize_conversation(tokenizer, messages: list[dict]) -> dict[str, list[int]]:
    """``input_ids`` of the rendered conversation and ``assistant_masks`` (1 = token is trained)."""
    text, spans = assistant_spans(tokenizer, messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s <= start < e for s, e in spans)) for start, _ in encoding["offset_mapping"]]
    return {"input_ids": encoding["input_ids"], "assistant_masks": mask}


@dataclass
class MaskStats:
    trained: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trained / self.total if self.total else 0.0


def check_mask_coverage(dataset, *, name: str = "train") -> MaskStats:
    """Fail when the loss mask covers 0% or 100% of the tokens: either nothing or everything would be trained."""
    trained = total = 0
    for mask in dataset["assistant_masks"]:
        trained += sum(mask)
        total += len(mask)
    stats = MaskStats(trained, total)
    if total == 0 or trained == 0:
        raise ChatTemplateError(f"{name} data: the assistant-only loss mask covers 0% of {total} tokens")
    if trained == total:
        raise ChatTemplateError(
            f"{name} data: the loss mask covers 100% of {total} tokens: prompts would be trained too"
        )
    return stats


def check_lengths(dataset, max_length: int | None, policy: str, *, name: str = "train", tokenizer=None):
    """Conversations longer than ``max_length`` tokens: ``error`` names them (row, length, opening words), ``drop``
    removes them (with a warning), ``truncate`` keeps them for the trainer to cut."""
    if not max_length:
        return dataset
    lengths = [len(ids) for ids in dataset["input_ids"]]
    over = [i for i, n in enumerate(lengths) if n > max_length]
    if not over or policy == "truncate":
        return dataset

    def describe(i: int) -> str:
        opening = tokenizer.decode(dataset[i]["input_ids"][:24]) if tokenizer is not None else ""
        return f"row {i} ({lengths[i]} tokens{', ' + repr(opening[:60]) if opening else ''})"

    if policy == "error":
        listed = "; ".join(describe(i) for i in over[:5]) + (f"; and {len(over) - 5} more" if len(over) > 5 else "")
        raise ChatTemplateError(
            f"{name} data: {len(over)} of {len(lengths)} conversations are longer than max_length {max_length} "
            f"tokens: {listed}. Raise max_length, or set overlong_samples: drop (skip them) or truncate (cut them)"
        )
    if len(over) == len(lengths):
        raise ChatTemplateError(
            f"{name} data: every conversation is longer than max_length {max_length} tokens "
            "(overlong_samples: drop would leave nothing)"
        )
    logger.warning(
        "%s data: dropping %d of %d conversations longer than max_length %d tokens",
        name,
        len(over),
        len(lengths),
        max_length,
    )
    return dataset.select([i for i, n in enumerate(lengths) if n <= max_length])


def format_masked(tokenizer, input_ids: list[int], mask: list[int], *, color: bool = False) -> str:
    """Human-readable rendering: trained text in green (``color``) or between ``⟦`` and ``⟧``."""
    pieces, run, run_flag = [], [], None
    for token, flag in zip(input_ids, mask):
        if run and flag != run_flag:
            pieces.append((run_flag, tokenizer.decode(run)))
            run = []
        run.append(token)
        run_flag = flag
    if run:
        pieces.append((run_flag, tokenizer.decode(run)))
    out = []
    for flag, text in pieces:
        if flag:
            out.append(f"\033[32m{text}\033[0m" if color else f"⟦{text}⟧")
        else:
            out.append(text)
    return "".join(out)
