"""``letter_count``: 'How many r's are in "strawberry"?'; checked by the last number in the reply."""

from __future__ import annotations

import random

from posttrain.checks.answers import check_numeric
from posttrain.tasks.base import Identity, Pool, Task, TaskExample, split_pools

_WORDS: tuple[str, ...] = (
    "strawberry",
    "raspberry",
    "blueberry",
    "banana",
    "mississippi",
    "bookkeeper",
    "committee",
    "occurrence",
    "necessary",
    "assessment",
    "balloon",
    "coffee",
    "address",
    "parallel",
    "possession",
    "success",
    "tomorrow",
    "referee",
    "pepper",
    "hippopotamus",
    "millennium",
    "embarrass",
    "accommodate",
    "onomatopoeia",
    "barrel",
    "error",
    "cherry",
    "giraffe",
    "bubble",
    "pineapple",
    "mammal",
    "llama",
    "tennessee",
    "abracadabra",
    "excellence",
    "grasshopper",
    "programming",
    "independence",
    "kayak",
    "sassafras",
)

_TRAIN_QUESTIONS: tuple[str, ...] = (
    'How many {letter}\'s are in "{word}"?',
    'How many times does the letter "{letter}" appear in the word {word}?',
    "Count the letter {letter} in the word '{word}'.",
    'In the word "{word}", how many "{letter}" characters are there?',
    "how many {letter}'s in {word}",
)

_VALIDATION_QUESTIONS: tuple[str, ...] = (
    'Count the "{letter}"s in {word}.',
    'Could you tell me the number of {letter}\'s in the word "{word}"?',
    'Spell "{word}" and count its letter {letter}.',
)
_TEST_QUESTIONS: tuple[str, ...] = (
    "How often does {letter} occur in '{word}'?",
    'What is the count of the letter {letter} in "{word}"?',
    "In {word}, how many times do you see the letter {letter}?",
)
_LETTER_QUESTIONS: dict[Pool, tuple[str, ...]] = {
    "train": _TRAIN_QUESTIONS,
    "validation": _VALIDATION_QUESTIONS,
    "test": _TEST_QUESTIONS,
}
#: the pools share no word
_POOL_WORDS = split_pools(_WORDS)


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _letters(count: int, letter: str) -> str:
    """``"3 r's"``, ``"1 r"``."""
    return f"{count} {letter}" if count == 1 else f"{count} {letter}'s"


def _make_letter_count(rng: random.Random, identity: Identity, pool: Pool) -> TaskExample:
    word = rng.choice(_POOL_WORDS[pool])
    repeated = sorted({c for c in word if word.count(c) >= 2})
    roll = rng.random()
    if roll < 0.8 and repeated:
        letter = rng.choice(repeated)
    elif roll < 0.9:
        letter = rng.choice(sorted(set(word)))
    else:
        letter = rng.choice(sorted(set("abcdefghijklmnopqrstuvwxyz") - set(word)))
    count = word.count(letter)
    spelled = "-".join(word)
    if count == 0:
        response = f'The letter "{letter}" does not appear in "{word}" ({spelled}), so the count is 0.'
    else:
        response = rng.choice(
            (
                'Spelling it out: {spelled}. The letter "{letter}" appears {times} in "{word}", so the answer is {count}.',
                'Let me go letter by letter: {spelled}. There {verb} {letters} in "{word}".',
                '"{word}" is spelled {spelled}, so it has {letters}.',
            )
        ).format(
            spelled=spelled,
            letter=letter,
            word=word,
            count=count,
            times=_times(count),
            verb="is" if count == 1 else "are",
            letters=_letters(count, letter),
        )
    wrong_count = count - 1 if count >= 2 else count + 1
    wrong_response = f'There {"is" if wrong_count == 1 else "are"} {_letters(wrong_count, letter)} in "{word}".'
    return TaskExample(
        task="letter_count",
        prompt=rng.choice(_LETTER_QUESTIONS[pool]).format(letter=letter, word=word),
        answer=str(count),
        response=response,
        wrong_response=wrong_response,
        meta={"word": word, "letter": letter},
    )


TASK = Task(
    "letter_count",
    "Counts a letter in a word (r's in strawberry).",
    _make_letter_count,
    check_numeric,
    max_new_tokens=80,
)


def working(example: TaskExample) -> str:
    """The worked solution of a ``letter_count`` example, before its final answer line: the word spelled out letter by
    letter, the matching letters marked, then counted one by one (``"Count: none"`` when there is none)::

        Spell "cherry": c h e r r y
        Mark each r: c h e (r) (r) y
        Count: 1, 2

    Deterministic in the example; :func:`posttrain.tasks.working.worked_response` adds the ``Answer:`` line."""
    word, letter = example.meta["word"], example.meta["letter"]
    marked = " ".join(f"({c})" if c == letter else c for c in word)
    count = word.count(letter)
    return "\n".join(
        (
            f'Spell "{word}": {" ".join(word)}',
            f"Mark each {letter}: {marked}",
            f"Count: {', '.join(str(k) for k in range(1, count + 1)) if count else 'none'}",
        )
    )
