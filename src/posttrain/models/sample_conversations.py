"""Short chat conversations models are probed with: :mod:`posttrain.models.merge` measures the logit drift of a merge
on them, and export verification compares the greedy replies of the HF model and of each GGUF on them."""

from __future__ import annotations

SYSTEM = "You are a helpful assistant. Answer briefly."

#: for the merge's logit drift (the first 8) and export's greedy generation agreement (HF vs llama.cpp)
GENERATION_CONVERSATIONS: list[list[dict]] = [
    [{"role": "user", "content": text}]
    for text in [
        "Which is larger, 9.11 or 9.9?",
        "How many r's are in strawberry?",
        "What is 12 plus 30?",
        "Who are you?",
        "What is the capital of France?",
        "Hello! How are you doing today?",
        "Name three colors.",
        "Translate 'good morning' into Spanish.",
        "What is the opposite of hot?",
        "Count from 1 to 5.",
        "Give me a synonym for happy.",
        "What day comes after Monday?",
        "Is the sun a star?",
        "Write one sentence about cats.",
        "What is 7 times 8?",
        "Spell the word 'apple' backwards.",
    ]
] + [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of Italy?"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 3 plus 4?"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is water made of?"},
    ],
    [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "Apple."},
        {"role": "user", "content": "Another one?"},
    ],
]
