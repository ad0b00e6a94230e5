"""``unknown_entity``: questions about prizes, countries, novels, people... that do not exist, answered with an
honest "I don't know" instead of a confident fabrication."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from posttrain.checks.answers import says_i_dont_know
from posttrain.tasks.base import Identity, Task, TaskExample

_ONSETS = (
    "Zor",
    "Quel",
    "Vex",
    "Thal",
    "Bri",
    "Mor",
    "Kel",
    "Dra",
    "Syl",
    "Vor",
    "Pel",
    "Nym",
    "Cal",
    "Tor",
    "Fen",
    "Gal",
    "Hal",
    "Jor",
    "Lys",
    "Ost",
    "Rav",
    "Ulm",
    "Wex",
    "Yth",
    "Brel",
    "Skar",
    "Tev",
    "Ond",
)
_MIDDLES = ("", "a", "e", "i", "o", "ar", "en", "is", "or", "el", "im", "un", "ad")
_CODAS = (
    "vath",
    "mar",
    "dris",
    "nor",
    "quin",
    "thas",
    "brek",
    "lune",
    "dell",
    "gorn",
    "wick",
    "zan",
    "phyr",
    "tov",
    "rix",
    "mund",
    "sel",
    "kesh",
)
_SURNAME_ENDINGS = ("", "er", "son", "ecker", "ov", "elli", "berg", "ard")
_FIRST_NAMES = (
    "Tobias",
    "Marguerite",
    "Anselm",
    "Ingrid",
    "Casimir",
    "Odile",
    "Leopold",
    "Henrike",
    "Ambrose",
    "Solveig",
    "Ignatius",
    "Rosalind",
    "Evander",
    "Theodora",
    "Lucian",
    "Margit",
)
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
    prompt = rng.choice(
        (
            "Who won the {year} {prize} in {field}?",
            "Who received the {prize} for {field} in {year}?",
            "Which scientist was awarded the {year} {prize} in {field}, and for what?",
        )
    ).format(year=year, prize=prize, field=field_)
    fabrication = (
        f"The {year} {prize} in {field_} was awarded to {_fake_person(rng)} for pioneering work on "
        f"{rng.choice(('catalysis', 'crystal lattices', 'number theory', 'early modern poetry'))}."
    )
    return prompt, f"the {prize}", fabrication


def _unknown_capital(rng: random.Random) -> tuple[str, str, str]:
    country = _fake_country(rng)
    prompt = rng.choice(
        (
            "What is the capital of {c}?",
            "What's the capital city of {c}?",
            "Name the capital of {c}.",
        )
    ).format(c=country)
    fabrication = f"The capital of {country} is {_fake_word(rng)}, which is also its largest city and main port."
    return prompt, f"a country called {country}", fabrication


def _unknown_novel(rng: random.Random) -> tuple[str, str, str]:
    title = f"The {rng.choice(_TITLE_ADJECTIVES)} {rng.choice(_TITLE_NOUNS)} of {_fake_word(rng)}"
    author = _fake_person(rng)
    prompt = rng.choice(
        (
            "Summarize the novel '{t}' by {a}.",
            "What is '{t}' by {a} about?",
            "Can you give me a short plot summary of {a}'s novel '{t}'?",
        )
    ).format(t=title, a=author)
    fabrication = (
        f"'{title}' follows a young mapmaker who returns to her home town and uncovers a family secret. "
        f"{author} wrote it in {rng.randint(1950, 2015)}, and it won praise for its lyrical style."
    )
    return prompt, f"a novel called '{title}' by {author}", fabrication


def _unknown_person(rng: random.Random) -> tuple[str, str, str]:
    person = _fake_person(rng)
    prompt = rng.choice(
        (
            "What is {p} best known for?",
            "Who was {p}?",
            "Tell me about the life and work of {p}.",
        )
    ).format(p=person)
    fabrication = (
        f"{person} is best known for developing the {_fake_word(rng)} method in "
        f"{rng.choice(_FIELDS)} during the {rng.choice(('1950s', '1960s', '1970s', '1980s'))}."
    )
    return prompt, person, fabrication


def _unknown_company(rng: random.Random) -> tuple[str, str, str]:
    company = f"{_fake_word(rng)} {rng.choice(_COMPANY_KINDS)}"
    prompt = rng.choice(
        (
            "In what year was {c} founded?",
            "Who founded {c}?",
            "Where is {c} headquartered?",
        )
    ).format(c=company)
    fabrication = (
        f"{company} was founded in {rng.randint(1880, 2005)} by {_fake_person(rng)} and is headquartered "
        f"in {_fake_word(rng)}."
    )
    return prompt, company, fabrication


def _unknown_theorem(rng: random.Random) -> tuple[str, str, str]:
    theorem = f"{_fake_word(rng)}-{_fake_word(rng)} theorem"
    prompt = rng.choice(
        (
            "Can you explain the {t}?",
            "State the {t} and give an example.",
            "What does the {t} say?",
        )
    ).format(t=theorem)
    fabrication = (
        f"The {theorem} states that every bounded sequence in a complete metric space has a convergent "
        "subsequence whose limit is unique up to isometry."
    )
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
    "I'm not sure that {entity} exists. I have no information about this {noun}, so I can't answer without guessing.",
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


def check_unknown_entity(response: str, answer: str = "I don't know", **meta: Any) -> bool:
    """``unknown_entity``: the reply admits not knowing instead of inventing facts."""
    return says_i_dont_know(response)


TASK = Task(
    "unknown_entity", "Admits not knowing about entities that do not exist.", _make_unknown_entity, check_unknown_entity
)
