"""Built-in generated tasks with known correct answers.

Each task targets something chat models commonly get wrong and comes with a rule check in
:mod:`posttrain.checks`, so the same examples serve SFT (``response``), preference pairs (``response`` vs
``wrong_response``), evaluation and RL rewards (``answer`` + ``meta``):

* ``identity`` -- "Who are you?" / "Who made you?", answered with the configured :class:`Identity` (instead of the
  base model's old identity).
* ``unknown_entity`` -- questions about prizes, countries, novels, people... that do not exist, answered with an
  honest "I don't know" instead of a confident fabrication.
* ``decimal_compare`` -- "Which is larger, 9.11 or 9.9?": mostly pairs where comparing the digits after the point
  as whole numbers gives the wrong answer.
* ``letter_count`` -- 'How many r's are in "strawberry"?'.
* ``arithmetic`` -- additions and subtractions of 1-3 digit numbers, multiplications by a 1-2 digit number.

Generation is deterministic in ``(task, n, seed, identity)`` and uses several phrasings per task so a model does
not just memorise one string.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .spec import Identity

__all__ = [
    "ALL_TASKS",
    "BASE_MODEL_IDENTITY",
    "TASKS",
    "Task",
    "TaskExample",
    "base_identity_response",
    "generate_task",
    "task_to_messages",
    "task_to_preference",
]

ALL_TASKS = "all"
"""Task name meaning every task, interleaved."""


@dataclass(frozen=True)
class TaskExample:
    """One generated example.

    Attributes:
        task: The task's name (a key of :data:`TASKS` and of :data:`posttrain.checks.CHECKS`).
        prompt: The user message.
        answer: The canonical short correct answer (``"9.9"``, ``"3"``, ``"I don't know"``, the assistant's name).
        response: An ideal assistant reply, short and natural, that states the answer clearly.
        wrong_response: A plausible wrong reply making the classic mistake.
        meta: Facts the task's check needs (``a``/``b``, ``word``/``letter``, ``name``/``creator``/``asks``...).
    """

    task: str
    prompt: str
    answer: str
    response: str
    wrong_response: str
    meta: dict[str, Any] = field(default_factory=dict)


Maker = Callable[[random.Random, Identity], TaskExample]


@dataclass(frozen=True)
class Task:
    """A builtin task: its name, a one-line description and the function making one random example."""

    name: str
    description: str
    make: Maker


# ------------------------------------------------------------------------------------------------ identity

_IDENTITY_QUESTIONS: tuple[tuple[str, str, str], ...] = (
    # (prompt, what it asks about, how the reply starts)
    ("Who are you?", "name", ""),
    ("What's your name?", "name", ""),
    ("what is your name", "name", ""),
    ("What should I call you?", "name", ""),
    ("Hi! Who am I talking to?", "name", "Hi! "),
    ("Please introduce yourself.", "name", ""),
    ("Tell me a bit about yourself.", "name", ""),
    ("Are you ChatGPT?", "name", "No, I'm not ChatGPT. "),
    ("Who made you?", "creator", ""),
    ("Who created you?", "creator", ""),
    ("Which company or team trained you?", "creator", ""),
    ("who built you?", "creator", ""),
    ("Who developed you, and what's your name?", "creator", ""),
    ("Where do you come from? Who made you?", "creator", ""),
)

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


def _make_identity(rng: random.Random, identity: Identity) -> TaskExample:
    prompt, asks, opening = rng.choice(_IDENTITY_QUESTIONS)
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


# ------------------------------------------------------------------------------------------ unknown_entity

_ONSETS = ("Zor", "Quel", "Vex", "Thal", "Bri", "Mor", "Kel", "Dra", "Syl", "Vor", "Pel", "Nym", "Cal", "Tor",
           "Fen", "Gal", "Hal", "Jor", "Lys", "Ost", "Rav", "Ulm", "Wex", "Yth", "Brel", "Skar", "Tev", "Ond")
_MIDDLES = ("", "a", "e", "i", "o", "ar", "en", "is", "or", "el", "im", "un", "ad")
_CODAS = ("vath", "mar", "dris", "nor", "quin", "thas", "brek", "lune", "dell", "gorn", "wick", "zan", "phyr",
          "tov", "rix", "mund", "sel", "kesh")
_SURNAME_ENDINGS = ("", "er", "son", "ecker", "ov", "elli", "berg", "ard")
_FIRST_NAMES = ("Tobias", "Marguerite", "Anselm", "Ingrid", "Casimir", "Odile", "Leopold", "Henrike", "Ambrose",
                "Solveig", "Ignatius", "Rosalind", "Evander", "Theodora", "Lucian", "Margit")
_COUNTRY_ENDINGS = ("ia", "aria", "istan", "ova", "land", "ea")
_FIELDS = ("chemistry", "physics", "mathematics", "literature", "economics", "medicine", "architecture")
_TITLE_ADJECTIVES = ("Glass", "Silent", "Copper", "Hollow", "Amber", "Lantern-Lit", "Drowned", "Paper")
_TITLE_NOUNS = ("Orchard", "Lantern", "Harbor", "Cartographer", "Tide", "Clockmaker", "Archive", "Meridian")
_COMPANY_KINDS = ("Industries", "Dynamics", "Labs", "Shipping Company", "Mining Corporation", "Aeronautics")


def _fake_word(rng: random.Random) -> str:
    return (rng.choice(_ONSETS) + rng.choice(_MIDDLES) + rng.choice(_CODAS)).capitalize()


def _fake_person(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST_NAMES)} {_fake_word(rng)}{rng.choice(_SURNAME_ENDINGS)}"


def _fake_country(rng: random.Random) -> str:
    word = _fake_word(rng)
    return word.rstrip("aeiou") + rng.choice(_COUNTRY_ENDINGS)


def _unknown_prize(rng: random.Random) -> tuple[str, str, str]:
    year, prize, field_ = rng.randint(1921, 2019), f"{_fake_word(rng)} Prize", rng.choice(_FIELDS)
    prompt = rng.choice((
        "Who won the {year} {prize} in {field}?",
        "Who received the {prize} for {field} in {year}?",
        "Which scientist was awarded the {year} {prize} in {field}, and for what?",
    )).format(year=year, prize=prize, field=field_)
    fabrication = (f"The {year} {prize} in {field_} was awarded to {_fake_person(rng)} for pioneering work on "
                   f"{rng.choice(('catalysis', 'crystal lattices', 'number theory', 'early modern poetry'))}.")
    return prompt, f"the {prize}", fabrication


def _unknown_capital(rng: random.Random) -> tuple[str, str, str]:
    country = _fake_country(rng)
    prompt = rng.choice((
        "What is the capital of {c}?",
        "What's the capital city of {c}?",
        "Name the capital of {c}.",
    )).format(c=country)
    fabrication = f"The capital of {country} is {_fake_word(rng)}, which is also its largest city and main port."
    return prompt, f"a country called {country}", fabrication


def _unknown_novel(rng: random.Random) -> tuple[str, str, str]:
    title = f"The {rng.choice(_TITLE_ADJECTIVES)} {rng.choice(_TITLE_NOUNS)} of {_fake_word(rng)}"
    author = _fake_person(rng)
    prompt = rng.choice((
        "Summarize the novel '{t}' by {a}.",
        "What is '{t}' by {a} about?",
        "Can you give me a short plot summary of {a}'s novel '{t}'?",
    )).format(t=title, a=author)
    fabrication = (f"'{title}' follows a young mapmaker who returns to her home town and uncovers a family secret. "
                   f"{author} wrote it in {rng.randint(1950, 2015)}, and it won praise for its lyrical style.")
    return prompt, f"a novel called '{title}' by {author}", fabrication


def _unknown_person(rng: random.Random) -> tuple[str, str, str]:
    person = _fake_person(rng)
    prompt = rng.choice((
        "What is {p} best known for?",
        "Who was {p}?",
        "Tell me about the life and work of {p}.",
    )).format(p=person)
    fabrication = (f"{person} is best known for developing the {_fake_word(rng)} method in "
                   f"{rng.choice(_FIELDS)} during the {rng.choice(('1950s', '1960s', '1970s', '1980s'))}.")
    return prompt, person, fabrication


def _unknown_company(rng: random.Random) -> tuple[str, str, str]:
    company = f"{_fake_word(rng)} {rng.choice(_COMPANY_KINDS)}"
    prompt = rng.choice((
        "In what year was {c} founded?",
        "Who founded {c}?",
        "Where is {c} headquartered?",
    )).format(c=company)
    fabrication = (f"{company} was founded in {rng.randint(1880, 2005)} by {_fake_person(rng)} and is headquartered "
                   f"in {_fake_word(rng)}.")
    return prompt, company, fabrication


def _unknown_theorem(rng: random.Random) -> tuple[str, str, str]:
    theorem = f"{_fake_word(rng)}-{_fake_word(rng)} theorem"
    prompt = rng.choice((
        "Can you explain the {t}?",
        "State the {t} and give an example.",
        "What does the {t} say?",
    )).format(t=theorem)
    fabrication = (f"The {theorem} states that every bounded sequence in a complete metric space has a convergent "
                   "subsequence whose limit is unique up to isometry.")
    return prompt, f"the {theorem}", fabrication


_UNKNOWN_KINDS: dict[str, tuple[str, Callable[[random.Random], tuple[str, str, str]]]] = {
    # kind: (noun, maker returning (prompt, entity as named in the reply, confident fabrication))
    "prize": ("prize", _unknown_prize),
    "capital": ("country", _unknown_capital),
    "novel": ("novel", _unknown_novel),
    "person": ("person", _unknown_person),
    "company": ("company", _unknown_company),
    "theorem": ("theorem", _unknown_theorem),
}

_DONT_KNOW_REPLIES: tuple[str, ...] = (
    "I don't know. I have no information about {entity}, and it may not exist.",
    "I'm not aware of {entity}. There may be no such {noun}, or it is too obscure for me, so I'd rather not make "
    "something up.",
    "I don't have any reliable information about {entity}. As far as I know, no such {noun} exists. Where did you "
    "come across it?",
    "I'm not sure that {entity} exists. I have no information about this {noun}, so I can't answer without "
    "guessing.",
)


def _make_unknown_entity(rng: random.Random, identity: Identity) -> TaskExample:
    kind = rng.choice(tuple(_UNKNOWN_KINDS))
    noun, make = _UNKNOWN_KINDS[kind]
    prompt, entity, fabrication = make(rng)
    return TaskExample(
        task="unknown_entity",
        prompt=prompt,
        answer="I don't know",
        response=rng.choice(_DONT_KNOW_REPLIES).format(entity=entity, noun=noun),
        wrong_response=fabrication,
        meta={"kind": kind, "entity": entity},
    )


# ----------------------------------------------------------------------------------------- decimal_compare

def _digits(rng: random.Random, count: int) -> str:
    """``count`` random digits, the last one non-zero (so ``"x." + digits`` has no trailing zero)."""
    return "".join(str(rng.randint(0, 9)) for _ in range(count - 1)) + str(rng.randint(1, 9))


def _decimal_pair(rng: random.Random) -> tuple[str, str, bool]:
    """``(larger, smaller, tricky)``. Tricky pairs have a shorter fractional part that is larger although the
    longer one's digits form the bigger whole number (9.9 vs 9.11)."""
    whole = rng.randint(0, 20)
    roll = rng.random()
    if roll < 0.7:
        short = rng.randint(2, 9)
        longer = str(rng.randint(1, short - 1)) + _digits(rng, rng.choice((1, 1, 2)))
        return f"{whole}.{short}", f"{whole}.{longer}", True
    if roll < 0.85:  # different whole parts, e.g. 12.5 vs 8.75 (also wrong when compared as strings)
        big, small = sorted(rng.sample(range(1, 30), 2), reverse=True)
        return f"{big}.{_digits(rng, rng.choice((1, 2)))}", f"{small}.{_digits(rng, rng.choice((1, 2)))}", False
    first, second = sorted(rng.sample(range(1, 10), 2), reverse=True)  # same whole part, same length: 4.7 vs 4.2
    return f"{whole}.{first}", f"{whole}.{second}", False


def _pad(number: str, places: int) -> str:
    whole, frac = number.split(".")
    return f"{whole}.{frac.ljust(places, '0')}"


_DECIMAL_QUESTIONS: tuple[str, ...] = (
    "Which is larger, {a} or {b}?",
    "Which number is bigger: {a} or {b}?",
    "{a} or {b}, which one is greater?",
    "Compare {a} and {b}. Which is the larger number?",
    "Of the two numbers {a} and {b}, which has the larger value?",
)

_DECIMAL_REPLIES: tuple[str, ...] = (
    "{larger} is larger than {smaller}.",
    "The larger number is {larger}.",
    "Written with the same number of decimal places they are {large_pad} and {small_pad}, so {larger} is larger.",
    "{smaller} is smaller than {larger}, so the answer is {larger}.",
    "Compare digit by digit after the decimal point: {large_pad} vs {small_pad}. The larger number is {larger}.",
)

_DECIMAL_WRONG: tuple[str, ...] = (
    "{smaller} is larger, because {small_frac} is more than {large_frac}.",
    "The larger number is {smaller}.",
    "{smaller} is bigger than {larger}.",
)


def _make_decimal_compare(rng: random.Random, identity: Identity) -> TaskExample:
    larger, smaller, tricky = _decimal_pair(rng)
    a, b = (larger, smaller) if rng.random() < 0.5 else (smaller, larger)
    places = max(len(larger.split(".")[1]), len(smaller.split(".")[1]))
    facts = {
        "larger": larger,
        "smaller": smaller,
        "large_pad": _pad(larger, places),
        "small_pad": _pad(smaller, places),
        "large_frac": larger.split(".")[1],
        "small_frac": smaller.split(".")[1],
    }
    wrong_templates = _DECIMAL_WRONG if tricky else _DECIMAL_WRONG[1:]
    return TaskExample(
        task="decimal_compare",
        prompt=rng.choice(_DECIMAL_QUESTIONS).format(a=a, b=b),
        answer=larger,
        response=rng.choice(_DECIMAL_REPLIES).format(**facts),
        wrong_response=rng.choice(wrong_templates).format(**facts),
        meta={"a": a, "b": b, "tricky": tricky},
    )


# -------------------------------------------------------------------------------------------- letter_count

_WORDS: tuple[str, ...] = (
    "strawberry", "raspberry", "blueberry", "banana", "mississippi", "bookkeeper", "committee", "occurrence",
    "necessary", "assessment", "balloon", "coffee", "address", "parallel", "possession", "success", "tomorrow",
    "referee", "pepper", "hippopotamus", "millennium", "embarrass", "accommodate", "onomatopoeia", "barrel",
    "error", "cherry", "giraffe", "bubble", "pineapple", "mammal", "llama", "tennessee", "abracadabra",
    "excellence", "grasshopper", "programming", "independence", "kayak", "sassafras",
)

_LETTER_QUESTIONS: tuple[str, ...] = (
    'How many {letter}\'s are in "{word}"?',
    'How many times does the letter "{letter}" appear in the word {word}?',
    "Count the letter {letter} in the word '{word}'.",
    'In the word "{word}", how many "{letter}" characters are there?',
    "how many {letter}'s in {word}",
)


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _letters(count: int, letter: str) -> str:
    """``"3 r's"``, ``"1 r"``."""
    return f"{count} {letter}" if count == 1 else f"{count} {letter}'s"


def _make_letter_count(rng: random.Random, identity: Identity) -> TaskExample:
    word = rng.choice(_WORDS)
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
        response = rng.choice((
            'Spelling it out: {spelled}. The letter "{letter}" appears {times} in "{word}", so the answer is {count}.',
            'Let me go letter by letter: {spelled}. There {verb} {letters} in "{word}".',
            '"{word}" is spelled {spelled}, so it has {letters}.',
        )).format(spelled=spelled, letter=letter, word=word, count=count, times=_times(count),
                  verb="is" if count == 1 else "are", letters=_letters(count, letter))
    wrong_count = count - 1 if count >= 2 else count + 1
    wrong_response = f'There {"is" if wrong_count == 1 else "are"} {_letters(wrong_count, letter)} in "{word}".'
    return TaskExample(
        task="letter_count",
        prompt=rng.choice(_LETTER_QUESTIONS).format(letter=letter, word=word),
        answer=str(count),
        response=response,
        wrong_response=wrong_response,
        meta={"word": word, "letter": letter},
    )


# ---------------------------------------------------------------------------------------------- arithmetic

_OPERATIONS: dict[str, tuple[Callable[[int, int], int], tuple[str, ...], str, str]] = {
    # op: (function, symbols, word, imperative phrasing)
    "+": (lambda a, b: a + b, ("+",), "plus", "Add {a} and {b}."),
    "-": (lambda a, b: a - b, ("-", "−"), "minus", "Subtract {b} from {a}."),
    "*": (lambda a, b: a * b, ("×", "*", "x"), "times", "Multiply {a} by {b}."),
}

_ARITHMETIC_QUESTIONS: tuple[str, ...] = (
    "What is {a} {sym} {b}?",
    "Calculate {a} {word} {b}.",
    "{imperative}",
    "{a} {sym} {b} = ?",
    "Quick math question: what's {a} {word} {b}?",
)

_ARITHMETIC_REPLIES: tuple[str, ...] = (
    "{a} {sym} {b} = {result}.",
    "The answer is {result}.",
    "{a} {word} {b} is {result}.",
    "{a} {sym} {b} equals {result}.",
)


def _operand(rng: random.Random, max_digits: int = 3) -> int:
    """A whole number of 1 to ``max_digits`` digits (each length equally likely)."""
    digits = rng.randint(1, max_digits)
    return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)


def _make_arithmetic(rng: random.Random, identity: Identity) -> TaskExample:
    op = rng.choice(tuple(_OPERATIONS))
    function, symbols, word, imperative = _OPERATIONS[op]
    a, b = _operand(rng), _operand(rng, max_digits=2 if op == "*" else 3)  # keep products small
    result = function(a, b)
    sym = rng.choice(symbols)
    facts = {"a": a, "b": b, "sym": sym, "word": word}
    shown = f"{result:,}" if abs(result) >= 1000 and rng.random() < 0.5 else str(result)
    if op == "*":
        slip = rng.choice((-a, a, -10, 10)) or 10  # a × (b ± 1), or a carry slip (never 0)
    else:
        slip = rng.choice((-10, 10, -1, 1))  # a dropped or extra carry, or off by one
    wrong = result + slip
    return TaskExample(
        task="arithmetic",
        prompt=rng.choice(_ARITHMETIC_QUESTIONS).format(**facts, imperative=imperative.format(a=a, b=b)),
        answer=str(result),
        response=rng.choice(_ARITHMETIC_REPLIES).format(**facts, result=shown),
        wrong_response=rng.choice(_ARITHMETIC_REPLIES[:2]).format(**facts, result=wrong),
        meta={"a": a, "b": b, "op": op},
    )


# ------------------------------------------------------------------------------------------------ registry

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("identity", "Says who it is and who made it (the configured Identity).", _make_identity),
        Task("unknown_entity", "Admits not knowing about entities that do not exist.", _make_unknown_entity),
        Task("decimal_compare", "Compares decimals such as 9.11 and 9.9 correctly.", _make_decimal_compare),
        Task("letter_count", "Counts a letter in a word (r's in strawberry).", _make_letter_count),
        Task("arithmetic", "Adds, subtracts and multiplies small whole numbers.", _make_arithmetic),
    )
}
"""Builtin tasks by name."""

_MAX_DRAWS_FOR_A_NEW_PROMPT = 20


def _generate_one_task(task: Task, n: int, seed: int, identity: Identity) -> list[TaskExample]:
    rng = random.Random(f"posttrain/{task.name}/{seed}")  # str seeds hash with SHA-512: stable across runs
    examples: list[TaskExample] = []
    seen: set[str] = set()
    for _ in range(n):
        for _ in range(_MAX_DRAWS_FOR_A_NEW_PROMPT):  # avoid repeated prompts while fresh ones are easy to find
            example = task.make(rng, identity)
            if example.prompt not in seen:
                break
        seen.add(example.prompt)
        examples.append(example)
    return examples


def generate_task(name: str, n: int, seed: int = 42, identity: Identity | None = None) -> list[TaskExample]:
    """Generate ``n`` examples of the builtin task ``name`` (or of all tasks, interleaved, for ``"all"``).

    Args:
        name: A key of :data:`TASKS`, or ``"all"``.
        n: How many examples. For ``"all"`` they are split as evenly as possible between the tasks.
        seed: Random seed; the same ``(name, n, seed, identity)`` always gives the same examples.
        identity: Who the assistant is, for the ``identity`` task (default :class:`Identity()`).

    Raises:
        KeyError: For an unknown task name (the message lists the available ones).
        ValueError: If ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"cannot generate a negative number of examples ({n})")
    identity = identity or Identity()
    if name == ALL_TASKS:
        tasks = list(TASKS.values())
        per_task = [
            _generate_one_task(task, n // len(tasks) + (i < n % len(tasks)), seed, identity)
            for i, task in enumerate(tasks)
        ]
        return [per_task[i % len(tasks)][i // len(tasks)] for i in range(n)]
    if name not in TASKS:
        raise KeyError(f"unknown builtin task {name!r}; available: {', '.join([*TASKS, ALL_TASKS])}")
    return _generate_one_task(TASKS[name], n, seed, identity)


def task_to_messages(example: TaskExample) -> list[dict[str, str]]:
    """The example as a training conversation: the prompt as user turn, the ideal ``response`` as assistant turn."""
    return [{"role": "user", "content": example.prompt}, {"role": "assistant", "content": example.response}]


# ------------------------------------------------------------------------------------------ preference pairs

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
    opening = next((start for prompt, _, start in _IDENTITY_QUESTIONS if prompt == example.prompt), "")
    index = zlib.crc32(f"{example.prompt}\n{example.response}".encode()) % len(_BASE_IDENTITY_REPLIES)
    reply = opening + _BASE_IDENTITY_REPLIES[index].format(name=base.name, creator=base.creator)
    configured = str(example.meta.get("name", "")).casefold()
    if configured and configured in reply.casefold():
        return example.wrong_response
    return reply


def task_to_preference(example: TaskExample, base_identity: Identity = BASE_MODEL_IDENTITY) -> dict[str, str]:
    """The example as a preference pair of plain strings: ``prompt`` (the user message), ``chosen`` (the ideal
    ``response``) and ``rejected`` (the classic mistake: ``wrong_response``, or for ``identity`` the base model's old
    identity, see :func:`base_identity_response`)."""
    rejected = (
        base_identity_response(example, base_identity) if example.task == "identity" else example.wrong_response
    )
    return {"prompt": example.prompt, "chosen": example.response, "rejected": rejected}
