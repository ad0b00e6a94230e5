"""Verify the artifact that ships, against the merged HF model it came from.

* **Tokenization**: llama.cpp must split texts (plain, digits, whitespace, unicode, chat special tokens) into
  exactly the HF tokenizer's ids -- this is what checks the pre-tokenizer fallback.
* **Greedy generations**: the same prompt ids go through the HF model (float32) and each GGUF (llama.cpp); the
  greedy replies are compared token by token. ``prompts_identical`` is the share of prompts whose whole reply
  matches; ``token_agreement`` the mean share of reply tokens before the first difference. Where two replies part,
  the HF model scores both tokens: a *near tie* (HF's own token more likely by at most ``tie_margin`` nats) is a flip
  that rounding the weights to 16 bits can cause, not a conversion fault, so it counts as agreeing
  (``prompts_agreeing``); a reply that parts at a confident token does not.
* **Go template**: the Modelfile's ``TEMPLATE`` rendered by Go's ``text/template`` (data shaped like Ollama's) must
  equal the tokenizer's Jinja rendering byte for byte on every conversation of
  :data:`~posttrain.export.prompts.TEMPLATE_CONVERSATIONS` (generation prompt iff the last turn is not the
  assistant's, as Ollama does).
* **End of turn**: the token the template puts after an assistant reply (and the tokenizer's EOS) must be an EOS
  in ``generation_config``, an end-of-generation token of llama.cpp for the GGUF, and a ``PARAMETER stop`` of the
  Modelfile; the GGUF must carry the tokenizer's chat template, and a rendered chat prompt tokenized by llama.cpp
  (adding BOS as the GGUF says) must give the HF prompt ids -- no missing or doubled BOS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.export.go_template import compare_with_jinja
from posttrain.export.gorender import GO_PACKAGE_HINT, GoUnavailableError, render_ollama
from posttrain.export.modelfile import parse_modelfile
from posttrain.export.prompts import (
    GENERATION_CONVERSATIONS,
    MODELFILE_SYSTEM,
    TEMPLATE_CONVERSATIONS,
    TOKENIZER_TEXTS,
)
from posttrain.export.special_tokens import end_of_turn_tokens, stop_problems


@dataclass
class Check:
    name: str
    passed: bool | None  # None: skipped / report-only
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "info"}[self.passed]


def load_gguf(path: Path, *, n_ctx: int = 1024, threads: int | None = None):
    from llama_cpp import Llama

    return Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        logits_all=True,
        verbose=False,
        n_threads=threads or max(1, os.cpu_count() or 1),
    )


# ------------------------------------------------------------------------------------------------ tokenization


def chat_prompt_ids(tokenizer, conversation: list[dict]) -> list[int]:
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def check_tokenization(tokenizer, llm, texts: list[str] | None = None, *, label: str = "") -> Check:
    texts = list(texts or TOKENIZER_TEXTS)
    if tokenizer.chat_template:
        texts += [
            tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in TEMPLATE_CONVERSATIONS[:4]
        ]
    mismatches = []
    for text in texts:
        hf = tokenizer(text, add_special_tokens=False)["input_ids"]
        gguf = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if hf != list(gguf):
            mismatches.append({"text": text, "hf": hf, "llama_cpp": list(gguf)})
    passed = not mismatches
    return Check(
        f"tokenization[{label}]" if label else "tokenization",
        passed,
        f"{len(texts) - len(mismatches)}/{len(texts)} texts tokenized identically",
        {"texts": len(texts), "mismatches": mismatches[:5]},
    )


# ------------------------------------------------------------------------------------------------ generations


def greedy_hf(model, prompt_ids: list[int], *, max_new_tokens: int, stops: list[int]) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops or None,
            pad_token_id=stops[0] if stops else None,
            top_p=None,
            top_k=None,
            temperature=None,
        )
    return out[0, len(prompt_ids) :].tolist()


def greedy_llama(llm, prompt_ids: list[int], *, max_new_tokens: int, stops: list[int]) -> list[int]:
    import numpy as np

    llm.reset()
    llm.eval(prompt_ids)
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        if token in stops:
            break
        llm.eval([token])
    return out


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two replies differ (None when identical)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def divergence_margins(
    model, prompts: list[list[int]], reference: list[list[int]], candidate: list[list[int]]
) -> list[float | None]:
    """Per prompt: log p(HF's token) - log p(the other token) under the HF model where the replies first differ
    (None for identical replies; inf when one reply simply ends there)."""
    import torch

    margins: list[float | None] = []
    for prompt, a, b in zip(prompts, reference, candidate):
        k = first_difference(a, b)
        if k is None:
            margins.append(None)
        elif k >= len(a) or k >= len(b):
            margins.append(float("inf"))
        else:
            with torch.no_grad():
                logits = model(torch.tensor([prompt + a[:k]])).logits[0, -1].float().log_softmax(-1)
            margins.append(float(logits[a[k]] - logits[b[k]]))
    return margins


def agreement(reference: list[list[int]], candidate: list[list[int]]) -> dict[str, float]:
    identical = sum(a == b for a, b in zip(reference, candidate))
    shares = []
    for a, b in zip(reference, candidate):
        prefix = 0
        for x, y in zip(a, b):
            if x != y:
                break
            prefix += 1
        shares.append(prefix / max(len(a), len(b), 1))
    n = max(len(reference), 1)
    return {"prompts": len(reference), "prompts_identical": identical / n, "token_agreement": sum(shares) / n}


def check_generations(
    gtype: str,
    hf_replies,
    gguf_replies,
    *,
    threshold: float | None,
    margins: list[float | None] | None = None,
    tie_margin: float = 0.0,
) -> Check:
    """Pass when the share of prompts whose replies are identical or part at a near tie reaches ``threshold``."""
    stats = agreement(hf_replies, gguf_replies)
    margins = margins or [None] * len(hf_replies)
    ties = sum(m is not None and m <= tie_margin for m in margins)
    stats["near_ties"] = ties
    stats["divergence_margins"] = [None if m is None else round(m, 4) for m in margins]
    stats["prompts_agreeing"] = stats["prompts_identical"] + ties / max(len(hf_replies), 1)
    passed = None if threshold is None else stats["prompts_agreeing"] >= threshold
    target = "" if threshold is None else f" (target ≥ {threshold:.0%} identical or near ties)"
    tied = f", {ties} more part at a near tie (≤ {tie_margin:g} nats under HF)" if ties else ""
    return Check(
        f"generations[{gtype}]",
        passed,
        f"{stats['prompts_identical']:.0%} of {stats['prompts']} greedy replies identical to HF{tied}{target}; "
        f"token agreement {stats['token_agreement']:.1%}",
        stats,
    )


# ------------------------------------------------------------------------------------------------ Go template


def check_go_template(
    tokenizer, go_template: str | None, *, translation_error: str | None = None, system: str | None = None
) -> Check:
    """The Modelfile TEMPLATE rendered the way Ollama renders a chat request (SYSTEM insertion, collation,
    ``.System``, legacy path, thinking default, prefill; ``gotemplate/main.go``) plus the BOS the runner adds, vs.
    the tokenizer's Jinja rendering (plus the BOS the tokenizer adds), on every conversation of
    :data:`~posttrain.export.prompts.TEMPLATE_CONVERSATIONS`, without and with the Modelfile ``SYSTEM``."""
    from posttrain.export.known_templates import match_known
    from posttrain.export.special_tokens import tokenizer_adds_bos

    if go_template is None:
        return Check(
            "go_template",
            None,
            f"no TEMPLATE in the Modelfile (Ollama uses the GGUF's Jinja template): {translation_error}",
            {"translated": False, "reason": translation_error},
        )
    known = match_known(tokenizer.chat_template)

    def render_jinja(messages, **kwargs):
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)

    systems = (None, system or MODELFILE_SYSTEM)
    try:
        result = compare_with_jinja(
            go_template,
            render_jinja,
            TEMPLATE_CONVERSATIONS,
            systems=systems,
            bos_token=tokenizer.bos_token,
            adds_bos=tokenizer_adds_bos(tokenizer),
            model_family="qwen3" if known is not None and known.name == "qwen3" else None,
        )
    except GoUnavailableError as err:
        return Check("go_template", None, f"skipped: {err}", {"skipped": True, "install": GO_PACKAGE_HINT})
    except ValueError as err:
        return Check("go_template", False, f"the Go template does not parse: {err}")
    path = f"known {known.name} template" if known is not None else "translated template"
    doubled = f"; BOS doubled in {result.doubled_bos}" if result.doubled_bos else ""
    skipped = f" ({len(result.not_applicable)} refused by the Jinja template)" if result.not_applicable else ""
    legacy = "" if result.uses_messages else " (legacy .Prompt/.Response path)"
    if result.prefill_closed:
        skipped += (
            f"; {result.prefill_closed} prefills are closed by the template (Jinja's continue_final_message leaves "
            "them open): Ollama starts a new turn after a trailing assistant message"
        )
    return Check(
        "go_template",
        result.passed,
        f"{result.equal}/{result.checked} chat requests render as Ollama would send them identically to Jinja "
        f"({path}{legacy}){skipped}{doubled}",
        {
            "equal": result.equal,
            "conversations": result.checked,
            "template_source": path,
            "uses_messages": result.uses_messages,
            "thinking": result.thinking,
            "doubled_bos": result.doubled_bos,
            "prefill_closed": result.prefill_closed,
            "not_applicable": result.not_applicable[:3],
            "differences": result.differences[:3],
        },
    )


# ------------------------------------------------------------------------------------------------ end of turn


def gguf_metadata(path: Path) -> dict[str, Any]:
    """Scalar tokenizer/general metadata of a GGUF (gguf-py's reader; no llama.cpp needed)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out = {}
    for key, value in reader.fields.items():
        if key.startswith(
            ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores")
        ):
            continue
        try:
            out[key] = value.contents()
        except (ValueError, TypeError, IndexError):
            continue
    return out


def check_end_of_turn(tokenizer, generation_config, gguf_path: Path, llm, modelfile_text: str) -> Check:
    import llama_cpp

    problems: list[str] = []
    tokens = end_of_turn_tokens(tokenizer)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokens]
    eos = getattr(generation_config, "eos_token_id", None)
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    stops = parse_modelfile(modelfile_text).get("PARAMETER stop", [])
    metadata = gguf_metadata(gguf_path)
    for token, token_id in zip(tokens, ids):
        if token_id not in eos:
            problems.append(f"{token} (id {token_id}) is not an eos_token_id of generation_config ({eos})")
        if not llama_cpp.llama_vocab_is_eog(vocab, token_id):
            problems.append(
                f"{token} (id {token_id}) does not end generation in llama.cpp (GGUF eos id "
                f"{metadata.get('tokenizer.ggml.eos_token_id')}, eot id "
                f"{metadata.get('tokenizer.ggml.eot_token_id')})"
            )
        if token not in stops:
            problems.append(f"{token} is not a PARAMETER stop of the Modelfile ({stops})")
    problems += [f"PARAMETER stop {p}" for p in stop_problems(tokenizer, stops)]
    template = (parse_modelfile(modelfile_text).get("TEMPLATE") or [None])[0]
    add_bos_gguf = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    if template and add_bos_gguf and tokenizer.bos_token:
        try:  # what Ollama sends: the runner's BOS + the rendered TEMPLATE (llm/llama_server.go tokenizerAddsBOS)
            [(prompt, _)] = render_ollama(template, [TEMPLATE_CONVERSATIONS[1]]).renders
        except (GoUnavailableError, ValueError):
            prompt = ""
        if prompt.startswith(tokenizer.bos_token):
            problems.append(
                f"the Modelfile TEMPLATE writes {tokenizer.bos_token} and the GGUF adds BOS too (add_bos_token): "
                "Ollama would send a doubled BOS"
            )
    if tokenizer.chat_template and metadata.get("tokenizer.chat_template") != tokenizer.chat_template:
        problems.append("the GGUF's tokenizer.chat_template differs from the tokenizer's chat template")
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    bos_ok = True
    if tokenizer.chat_template:
        conversation = TEMPLATE_CONVERSATIONS[1]
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        hf = tokenizer(text, add_special_tokens=False)["input_ids"]
        # llama.cpp's Jinja path drops a leading BOS the template writes when it adds BOS itself
        # (common/chat.cpp apply: "To avoid double BOS / EOS tokens"), as Ollama's runner does with a TEMPLATE
        sent = text
        if add_bos and tokenizer.bos_token and sent.startswith(tokenizer.bos_token):
            sent = sent[len(tokenizer.bos_token) :]
        gguf = list(llm.tokenize(sent.encode("utf-8"), add_bos=add_bos, special=True))
        if hf != gguf:
            bos_ok = False
            problems.append(
                f"a rendered chat prompt tokenized by llama.cpp (add_bos={add_bos}) differs from HF's "
                f"prompt ids (first ids: HF {hf[:4]}, llama.cpp {gguf[:4]}): missing or doubled BOS?"
            )
    summary = (
        f"end-of-turn {tokens} consistent across tokenizer, generation_config, GGUF and Modelfile"
        if not problems
        else "; ".join(problems)
    )
    return Check(
        "end_of_turn",
        not problems,
        summary,
        {
            "tokens": tokens,
            "ids": ids,
            "generation_config_eos": eos,
            "modelfile_stops": stops,
            "gguf_eos": metadata.get("tokenizer.ggml.eos_token_id"),
            "gguf_eot": metadata.get("tokenizer.ggml.eot_token_id"),
            "gguf_add_bos": add_bos,
            "bos_consistent": bos_ok,
            "gguf_pre_tokenizer": metadata.get("tokenizer.ggml.pre"),
        },
    )


# ------------------------------------------------------------------------------------------------ report


def write_report(checks: list[Check], path_json: Path, path_md: Path, *, title: str, extra: dict | None = None):
    import json

    data = {
        "title": title,
        "passed": all(c.passed is not False for c in checks),
        **(extra or {}),
        "checks": [{"name": c.name, "status": c.status, "summary": c.summary, "details": c.details} for c in checks],
    }
    path_json.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    lines = [
        f"# {title}",
        "",
        f"**{'PASSED' if data['passed'] else 'FAILED'}**",
        "",
        "| check | status | result |",
        "|---|---|---|",
    ]
    for check in checks:
        lines.append(f"| {check.name} | {check.status} | {check.summary.replace('|', chr(92) + '|')} |")
    path_md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def print_checks(checks: list[Check]) -> None:
    for check in checks:
        print(f"posttrain: verify {check.name:<22} {check.status:>4}  {check.summary}", flush=True)


def default_generation_conversations(limit: int | None = None) -> list[list[dict]]:
    return GENERATION_CONVERSATIONS[:limit] if limit else list(GENERATION_CONVERSATIONS)
