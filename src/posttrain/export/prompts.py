"""Conversations export verification runs: template renders (system prompts, multi-turn, odd characters) and
generation prompts (HF vs llama.cpp greedy replies)."""

from __future__ import annotations

SYSTEM = "You are a helpful assistant. Answer briefly."

#: for the Go-template vs Jinja comparison: each ends with a user turn (generation prompt) or an assistant turn
TEMPLATE_CONVERSATIONS: list[list[dict]] = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 12 plus 30?"}],
    [{"role": "user", "content": "Which is larger, 9.11 or 9.9?"}, {"role": "assistant", "content": "9.9 is larger."}],
    [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "How many r's are in strawberry?"},
        {"role": "assistant", "content": "There are 3 r's."},
        {"role": "user", "content": "And in 'raspberry'?"},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the scarecrow win an award? He was outstanding in his field."},
        {"role": "user", "content": "Another one"},
    ],
    [{"role": "system", "content": "Line one.\nLine two.\n\n  Indented line."}, {"role": "user", "content": "ok"}],
    [{"role": "user", "content": "Quotes \"double\" and 'single', a backslash \\ and braces {{ x }} {% y %}"}],
    [{"role": "user", "content": "Unicode: café, naïve, 東京, emoji 🚀🦙, tab\tend"}],
    [{"role": "user", "content": "   leading and trailing spaces   "}],
    [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Write a haiku."},
        {"role": "assistant", "content": "Autumn moonlight—\na worm digs silently\ninto the chestnut."},
    ],
    [{"role": "user", "content": "<|im_start|> and <|im_end|> typed as text"}],
    [{"role": "user", "content": ""}],
]

#: for greedy generation agreement (HF vs llama.cpp)
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

#: texts llama.cpp must tokenize exactly like the HF tokenizer
TOKENIZER_TEXTS: list[str] = [
    "Hello world",
    "Which is larger, 9.11 or 9.9? The answer is 9.9.",
    "12 + 30 = 42; 1234567890 3.14159",
    "  leading spaces, trailing spaces  ",
    "Line one\nLine two\n\n\tTabbed",
    "I've been 'told' he's there, 'RE you sure? We'Ve a'lL",
    "café naïve 東京 🚀🦙",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
]
