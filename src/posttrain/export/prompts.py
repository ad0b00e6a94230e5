"""Conversations export verification renders (system prompts, multi-turn, odd characters) and the texts it
tokenizes. The generation prompts (HF vs llama.cpp greedy replies) are in :mod:`posttrain.models.sample_conversations`,
as the merge measures its logit drift on them too."""

from __future__ import annotations

from posttrain.models.sample_conversations import SYSTEM

#: for the Go-template vs Jinja comparison (rendered the way Ollama renders a chat request, with and without a
#: Modelfile SYSTEM): system / no system, multi-turn, prefills (a trailing assistant message), empty and
#: whitespace-only content, unicode, text that looks like Go or Jinja template syntax or like special tokens, and
#: messages Ollama collates (consecutive turns of one role). Roles alternate after an optional system message
#: except in the last three, which Gemma's and Mistral's templates refuse unless Ollama's collation merges them.
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
    [{"role": "user", "content": " \n\t "}],
    [
        {
            "role": "user",
            "content": "Go: {{ .Prompt }} {{ .System }} {{- end }} {{ range .Messages }}{{ .Content }}{{ end }}",
        }
    ],
    [
        {
            "role": "user",
            "content": "Jinja: {% if messages %}{{ messages[0]['content'] }}{% endif %} {# note #} {{ bos_token }}",
        }
    ],
    [
        {
            "role": "user",
            "content": "Tokens: <|eot_id|> <|start_header_id|>user<|end_header_id|> <start_of_turn> [INST] </s>",
        },
        {"role": "assistant", "content": "<think>not really</think>\n<end_of_turn>"},
        {"role": "user", "content": "ok"},
    ],
    [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "List three primes."},
        {"role": "assistant", "content": "2, 3, 5."},
        {"role": "user", "content": "Three more, please."},
        {"role": "assistant", "content": "Sure: 7, 11,"},
    ],
    [{"role": "system", "content": ""}, {"role": "user", "content": "An empty system message."}],
    [{"role": "user", "content": "\u00a0non-breaking and ideographic\u3000spaces\u2003"}],
    [
        {"role": "system", "content": "Reply in French."},
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "Un"},
        {"role": "user", "content": "Two"},
        {"role": "assistant", "content": "Deux"},
        {"role": "user", "content": "Three"},
        {"role": "assistant", "content": "Trois"},
        {"role": "user", "content": "Four"},
    ],
    [
        {"role": "user", "content": "Say nothing."},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Now say hi."},
    ],
    [{"role": "user", "content": "\n\nSurrounded by newlines\n\n"}],
    [{"role": "user", "content": "مرحبا, עברית, combining e\u0301, ZWJ 👩\u200d💻"}],
    [{"role": "user", "content": "First part."}, {"role": "user", "content": "Second part."}],
    [
        {"role": "system", "content": "System one."},
        {"role": "system", "content": "System two."},
        {"role": "user", "content": "Two system messages."},
    ],
    [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Before."},
        {"role": "system", "content": "A system message mid-conversation."},
        {"role": "user", "content": "After."},
    ],
]

#: Modelfile SYSTEM used by the comparison (each conversation is checked without and with it)
MODELFILE_SYSTEM = "You are Posttrain Assistant.\nAnswer briefly."

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
