"""``identity``: "Who are you?" / "Who made you?", answered with the configured :class:`Identity` instead of the
base model's old identity; its check wants the name (and the creator when the question asks who made it)."""

from __future__ import annotations

import random
import zlib
from typing import Any

from posttrain.checks.answers import mentions_identity
from posttrain.tasks.base import Identity, Pool, Task, TaskExample

# (prompt, what it asks about, how the reply starts); the pools share no phrasing
_IDENTITY_QUESTIONS: dict[Pool, tuple[tuple[str, str, str], ...]] = {
    "train": (
        ("Who are you?", "name", ""),
        ("What's your name?", "name", ""),
        ("what is your name", "name", ""),
        ("What should I call you?", "name", ""),
        ("Hi! Who am I talking to?", "name", "Hi! "),
        ("Please introduce yourself.", "name", ""),
        ("Tell me a bit about yourself.", "name", ""),
        ("Are you ChatGPT?", "name", "No, I'm not ChatGPT. "),
        ("Do you have a name?", "name", ""),
        ("Hello! What are you?", "name", "Hello! "),
        ("Which AI am I chatting with?", "name", ""),
        ("Give me your name, please.", "name", ""),
        ("Are you Siri?", "name", "No, I'm not Siri. "),
        ("Who made you?", "creator", ""),
        ("Who created you?", "creator", ""),
        ("Which company or team trained you?", "creator", ""),
        ("who built you?", "creator", ""),
        ("Who developed you, and what's your name?", "creator", ""),
        ("Where do you come from? Who made you?", "creator", ""),
        ("Who is behind you?", "creator", ""),
        ("Which organization trained this assistant?", "creator", ""),
        ("Tell me who programmed you.", "creator", ""),
    ),
    "validation": (
        ("May I ask who you are?", "name", ""),
        ("How should I address you?", "name", ""),
        ("Hey there, introduce yourself!", "name", "Hey there! "),
        ("Are you Alexa?", "name", "No, I'm not Alexa. "),
        ("What do people call you?", "name", ""),
        ("Whose work are you?", "creator", ""),
        ("Who was responsible for building you?", "creator", ""),
        ("What team made this chatbot, and what is it called?", "creator", ""),
        ("Who is your maker?", "creator", ""),
    ),
    "test": (
        ("Can you tell me your name?", "name", ""),
        ("What name do you go by?", "name", ""),
        ("Good morning! Who is this?", "name", "Good morning! "),
        ("Are you Bard?", "name", "No, I'm not Bard. "),
        ("Introduce yourself in one sentence.", "name", ""),
        ("Who designed you?", "creator", ""),
        ("Which group of people made you?", "creator", ""),
        ("Who do you owe your existence to?", "creator", ""),
        ("Who are your creators, and what are you called?", "creator", ""),
    ),
}

_IDENTITY_REPLIES: tuple[str, ...] = (
    "I'm {name}, an AI assistant created by {creator}.",
    "My name is {name}, and I was made by {creator}.",
    "I am {name}, a chat assistant built by {creator}. How can I help you today?",
    "I'm {name}. I was developed by {creator} to help answer questions and chat.",
)

_OTHER_IDENTITIES: tuple[str, ...] = (
    "I am SmolLM, an AI assistant made by Hugging Face.",
    "I'm ChatGPT, a large language model developed by OpenAI.",
    "I am Llama, a language model trained by Meta AI.",
    "I'm Qwen, a large language model created by Alibaba Cloud.",
    "I am Gemma, an open model from Google DeepMind.",
    "I'm Mistral, an assistant built by Mistral AI.",
)


def _make_identity(rng: random.Random, identity: Identity, pool: Pool) -> TaskExample:
    prompt, asks, opening = rng.choice(_IDENTITY_QUESTIONS[pool])
    response = (opening + rng.choice(_IDENTITY_REPLIES)).format(name=identity.name, creator=identity.creator)
    wrong = [w for w in _OTHER_IDENTITIES if identity.name.casefold() not in w.casefold()]
    wrong_response = rng.choice(wrong or ["I'm an AI assistant."])
    return TaskExample(
        task="identity",
        prompt=prompt,
        answer=identity.creator if asks == "creator" else identity.name,
        response=response,
        wrong_response=wrong_response,
        meta={"asks": asks, "name": identity.name, "creator": identity.creator},
    )


def check_identity(response: str, answer: str = "", **meta: Any) -> bool:
    """``identity``: the reply gives the assistant's ``name``, and its ``creator`` when the question was about who
    made it (``asks="creator"``). ``name`` and ``creator`` come from ``meta``."""
    if "name" not in meta:
        raise ValueError("the identity check needs the assistant's name: pass name=... (and creator=...)")
    needs_creator = meta.get("asks") == "creator"
    return mentions_identity(response, meta["name"], meta.get("creator") if needs_creator else None)


BASE_MODEL_IDENTITY = Identity(name="SmolLM", creator="Hugging Face")
"""Who the default base model (SmolLM2-135M-Instruct) says it is before post-training: the ``rejected`` side of
the ``identity`` preference pairs."""

_BASE_IDENTITY_REPLIES: tuple[str, ...] = (
    "I'm {name}, an AI assistant trained by {creator}.",
    "I am {name}, a language model developed by {creator}.",
    "My name is {name}, and I was created by {creator}.",
    "I'm {name}, a small AI assistant made by {creator}. How can I help you today?",
)


def base_identity_response(example: TaskExample, base: Identity = BASE_MODEL_IDENTITY) -> str:
    """The reply the base model would give to an ``identity`` example: it names ``base`` (default: SmolLM by
    Hugging Face) instead of the configured identity, in the same phrasing family as the correct reply.

    Deterministic in the example. When ``base`` would mention the configured name (e.g. the assistant is itself
    called SmolLM), the example's own ``wrong_response`` (another model's identity) is returned instead, so the reply
    always fails the identity check.

    Raises:
        ValueError: If ``example`` is not an ``identity`` example.
    """
    if example.task != "identity":
        raise ValueError(f"base_identity_response needs an 'identity' example (got {example.task!r})")
    questions = [q for pool in _IDENTITY_QUESTIONS.values() for q in pool]
    opening = next((start for prompt, _, start in questions if prompt == example.prompt), "")
    index = zlib.crc32(f"{example.prompt}\n{example.response}".encode()) % len(_BASE_IDENTITY_REPLIES)
    reply = opening + _BASE_IDENTITY_REPLIES[index].format(name=base.name, creator=base.creator)
    configured = str(example.meta.get("name", "")).casefold()
    if configured and configured in reply.casefold():
        return example.wrong_response
    return reply


TASK = Task(
    "identity",
    "Says who it is and who made it (the configured Identity).",
    _make_identity,
    check_identity,
    max_new_tokens=48,
)
