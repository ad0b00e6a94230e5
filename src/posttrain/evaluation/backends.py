"""Where replies come from: a local HF model (base, LoRA adapter or merged folder), a GGUF file through llama.cpp, or
an OpenAI-compatible chat endpoint (Ollama, llama.cpp's server, vLLM...).

Every backend has ``fingerprint()`` (what the generation cache is keyed on, together with the prompt and settings)
and ``generate(conversations, settings, on_result=..., tools=..., template_kwargs=...)``, which calls
``on_result(index, output)`` as each reply is ready so the caller can cache it at once: a run that fails half-way
keeps what it had. ``tools`` is one tool-schema list (or None) per conversation and ``template_kwargs`` extra chat
template variables (``{"enable_thinking": False}``); both reach the chat template however the backend renders it
(HF: ``apply_chat_template``; GGUF: the GGUF's own template through llama-cpp-python's Jinja formatter; endpoint:
``tools`` and ``chat_template_kwargs`` in the request body, as vLLM and llama.cpp's server read them).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from posttrain.chat_templates import load_template, setup_chat_template
from posttrain.errors import ConfigError, UserError
from posttrain.evaluation.reasoning import (
    ENDPOINT_DEFAULT,
    PLAIN,
    ReasoningFormat,
    decode_reply,
    detect_reasoning_format,
    tokenizer_renderer,
)
from posttrain.log import get_logger
from posttrain.models.generation import generate, load_model_for_generation, render_prompt
from posttrain.models.registry import ModelNotFoundError
from posttrain.models.resolve import resolve_model
from posttrain.models.weights import check_gguf
from posttrain.precision import torch_dtype_name

logger = get_logger(__name__)

__all__ = [
    "DEFAULT_BASE_URL",
    "Backend",
    "BackendError",
    "EndpointError",
    "GGUFBackend",
    "GenerationSettings",
    "HFBackend",
    "OpenAIBackend",
    "Output",
    "folder_fingerprint",
    "resolve_dtype",
]

DEFAULT_BASE_URL = "http://localhost:11434/v1"
"""Ollama's OpenAI-compatible API on this machine (llama.cpp's ``llama-server`` listens on ``:8080/v1``)."""


class BackendError(UserError, RuntimeError):
    """A backend that cannot run: a missing optional package, an unusable model file."""


class EndpointError(BackendError):
    """An endpoint that refused, failed or timed out after every retry; the message names the URL."""


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = 0

    def key(self) -> dict[str, Any]:
        """The settings that change a reply (sampling knobs only count when sampling)."""
        if not self.do_sample:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return asdict(self)


@dataclass
class Output:
    text: str  # the reply as generated, reasoning markers kept (<think>, harmony channels): reasoning.split_reasoning
    finished: bool  # ended with EOS / end of turn within max_new_tokens
    num_tokens: int
    reasoning: str | None = None  # reasoning an endpoint returned apart from the content (reasoning_content)


OnResult = Callable[[int, Output], None]
Tools = Sequence[list[dict] | None] | None
"""One tool-schema list (or None: no tools) per conversation, or None for no tools at all."""


class Backend(Protocol):
    def fingerprint(self) -> str: ...

    def generate(
        self,
        conversations: Sequence[list[dict]],
        settings: GenerationSettings,
        *,
        progress: bool = True,
        on_result: OnResult | None = None,
        tools: Tools = None,
        template_kwargs: Mapping | None = None,
    ) -> list[Output]: ...

    def close(self) -> None: ...

    # Optional (the runner falls back when a backend lacks them):
    #   reasoning_format(template_kwargs) -> ReasoningFormat   how replies mark reasoning (from the chat template)
    #   template_source() -> str | None                        the chat template's text (None: unknown)
    #   count_tokens(texts) -> list[int] | None                token counts (reasoning length), None: unknown


def _format_key(template_kwargs: Mapping | None) -> str:
    return json.dumps(dict(template_kwargs or {}), sort_keys=True, default=str)


# -------------------------------------------------------------------------------------------------- fingerprints

_HASH_LIMIT = 32 * 2**20


def _file_digest(path: Path) -> str:
    """sha256 of files up to 32 MiB; size and modification time for bigger ones (weights), so fingerprinting a
    model costs nothing while retraining into the same folder still changes it."""
    stat = path.stat()
    if stat.st_size > _HASH_LIMIT:
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_fingerprint(path: str | os.PathLike) -> str:
    """A short hash of a model folder's top-level files (or of one file), following an adapter to its base model."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for file in files:
        digest.update(f"{file.name}={_file_digest(file)};".encode())
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if base and Path(base).exists():
            digest.update(folder_fingerprint(base).encode())
        elif base:
            digest.update(f"base={base}".encode())
    return digest.hexdigest()[:16]


def _tools_per_conversation(tools: Tools, conversations: Sequence) -> list[list[dict] | None]:
    """``tools`` checked against the conversations: one entry (a list or None) per conversation."""
    if tools is None:
        return [None] * len(conversations)
    tools = list(tools)
    if len(tools) != len(conversations):
        raise ValueError(f"tools: one tool list (or None) per conversation: got {len(tools)} for {len(conversations)}")
    return [t or None for t in tools]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled or total == 0, unit="prompt")


# ---------------------------------------------------------------------------------------------------- HF models

DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(dtype: str) -> str:
    """``auto`` follows the training precision (:mod:`posttrain.precision`: ``POSTTRAIN_PRECISION``, else bfloat16 on
    GPUs with bf16 and on CPUs with AVX512-BF16/AMX, about twice as fast there, float32 elsewhere)."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    if dtype == "auto":
        return torch_dtype_name()
    return dtype


class HFBackend:
    """A causal LM loaded with :func:`posttrain.models.generation.load_model_for_generation` (alias, folder, adapter or
    merged folder), generating in length-sorted left-padded batches with the KV cache."""

    def __init__(
        self,
        name_or_path: str,
        *,
        batch_size: int = 16,
        chat_template: str = "auto",
        label: str = "",
        dtype: str = "auto",
    ):

        self.name = name_or_path
        self.path = resolve_model(name_or_path)  # ModelNotFoundError before anything loads
        self.batch_size = batch_size
        self.chat_template = chat_template
        self.label = label or name_or_path
        self.dtype = resolve_dtype(dtype)
        self._model = self._tokenizer = None
        self._template_only = None  # a tokenizer loaded to read the template without the model
        self._formats: dict[str, ReasoningFormat] = {}

    def fingerprint(self) -> str:
        local = Path(self.path)
        source = folder_fingerprint(local) if local.exists() else f"hub:{self.path}"
        return f"hf:{source}:template={self.chat_template}:dtype={self.dtype}"

    def _load(self):
        if self._model is None:
            import torch

            self._model, self._tokenizer = load_model_for_generation(self.path, dtype=getattr(torch, self.dtype))
            if self.chat_template != "auto" or not self._tokenizer.chat_template:
                setup_chat_template(self._model, self._tokenizer, self.chat_template)
        return self._model, self._tokenizer

    def _template_tokenizer(self):
        """The tokenizer with the chat template generation uses, without loading the model when it is not loaded."""
        if self._tokenizer is not None:
            return self._tokenizer
        if self._template_only is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.path)
            if self.chat_template != "auto" or not tokenizer.chat_template:
                tokenizer.chat_template = load_template(
                    "chatml" if self.chat_template == "auto" else self.chat_template
                )
            self._template_only = tokenizer
        return self._template_only

    def template_source(self) -> str:
        from posttrain.chat_templates import template_source

        return template_source(self._template_tokenizer())

    def reasoning_format(self, template_kwargs: Mapping | None = None) -> ReasoningFormat:
        key = _format_key(template_kwargs)
        if key not in self._formats:
            tokenizer = self._template_tokenizer()
            self._formats[key] = detect_reasoning_format(
                tokenizer_renderer(tokenizer, template_kwargs), self.template_source()
            )
        return self._formats[key]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        tokenizer = self._template_tokenizer()
        return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) if t else 0 for t in texts]

    def generate(self, conversations, settings, *, progress=True, on_result=None, tools=None, template_kwargs=None):

        model, tokenizer = self._load()
        tools = _tools_per_conversation(tools, conversations)
        fmt = self.reasoning_format(template_kwargs)
        lengths = [
            len(render_prompt(tokenizer, c, tools=t, template_kwargs=template_kwargs))
            for c, t in zip(conversations, tools)
        ]
        order = sorted(range(len(conversations)), key=lambda i: lengths[i])
        chunk = self.batch_size * 4  # a few batches per call: progress and the cache advance as they finish
        outputs: list[Output | None] = [None] * len(conversations)
        with _progress(len(conversations), f"Generating ({self.label})", progress) as bar:
            for start in range(0, len(order), chunk):
                indices = order[start : start + chunk]
                completions = generate(
                    model,
                    tokenizer,
                    [conversations[i] for i in indices],
                    max_new_tokens=settings.max_new_tokens,
                    do_sample=settings.do_sample,
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    batch_size=self.batch_size,
                    seed=settings.seed if settings.do_sample else None,
                    progress=False,
                    tools=[tools[i] for i in indices],
                    template_kwargs=template_kwargs,
                )
                for i, [completion] in zip(indices, completions):
                    text = (
                        completion.text if fmt.style == "none" else decode_reply(tokenizer, completion.token_ids, fmt)
                    )
                    outputs[i] = Output(text, completion.finished, completion.num_tokens)
                    if on_result:
                        on_result(i, outputs[i])
                bar.update(len(indices))
        return outputs

    def close(self) -> None:
        self._model = self._tokenizer = self._template_only = None
        import gc

        gc.collect()


# ---------------------------------------------------------------------------------------------------- GGUF files


class GGUFBackend:
    """A GGUF file run by llama.cpp (``llama-cpp-python``), one prompt at a time, with the chat template stored in
    the GGUF."""

    def __init__(self, path: str, *, n_ctx: int = 4096, label: str = ""):

        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ModelNotFoundError(f"GGUF file {self.path} does not exist")

        check_gguf(self.path)
        self.n_ctx = n_ctx
        self.label = label or self.path.name
        self._llm = self._handler = None
        self._formats: dict[str, ReasoningFormat] = {}

    def fingerprint(self) -> str:
        return f"gguf:{folder_fingerprint(self.path)}"

    def template_source(self) -> str:
        """The GGUF's ``tokenizer.chat_template`` ("" when it has none), read from the header without llama.cpp."""
        from gguf import GGUFReader

        field = GGUFReader(str(self.path)).fields.get("tokenizer.chat_template")
        if field is None:
            return ""
        value = field.contents()
        return value if isinstance(value, str) else ""

    def reasoning_format(self, template_kwargs: Mapping | None = None) -> ReasoningFormat:
        key = _format_key(template_kwargs)
        if key not in self._formats:
            source = self.template_source()
            if not source:
                self._formats[key] = PLAIN
            else:
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                def render(messages, add_generation_prompt: bool) -> str:
                    formatter = Jinja2ChatFormatter(source, "", "", add_generation_prompt=add_generation_prompt)
                    return formatter(messages=messages, **dict(template_kwargs or {})).prompt

                self._formats[key] = detect_reasoning_format(render, source)
        return self._formats[key]

    def _load(self):
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise BackendError(
                    f"evaluating the GGUF file {self.path} needs llama.cpp's Python bindings: "
                    "pip install llama-cpp-python"
                ) from None
            try:
                self._llm = Llama(
                    model_path=str(self.path), n_ctx=self.n_ctx, verbose=False, n_threads=max(1, os.cpu_count() or 1)
                )
            except ValueError as err:  # llama.cpp could not load it
                raise BackendError(f"llama.cpp could not load {self.path}: {err}") from None
        return self._llm

    def _template_handler(self):
        """A chat handler rendering the GGUF's own template with extra variables: ``create_chat_completion`` passes
        no template variables on, and may use a built-in format llama-cpp-python guessed instead of the template."""
        if self._handler is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            llm = self._load()
            template = llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise BackendError(
                    f"{self.path} has no chat template (GGUF key tokenizer.chat_template), so tools and "
                    "chat_template_kwargs cannot reach one; export the GGUF from a model whose tokenizer has a template"
                )

            def text(token_id: int) -> str:
                return llm._model.token_get_text(token_id) if token_id != -1 else ""

            self._handler = Jinja2ChatFormatter(
                template=template,
                eos_token=text(llm.token_eos()),
                bos_token=text(llm.token_bos()),
                stop_token_ids=[llm.token_eos()],
            ).to_chat_handler()
        return self._handler

    def generate(self, conversations, settings, *, progress=True, on_result=None, tools=None, template_kwargs=None):
        llm = self._load()
        tools = _tools_per_conversation(tools, conversations)
        template_kwargs = dict(template_kwargs or {})
        outputs = []
        with _progress(len(conversations), f"Generating ({self.label}, llama.cpp)", progress) as bar:
            for i, conversation in enumerate(conversations):
                sampling = (
                    dict(temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
                    if settings.do_sample
                    else dict(temperature=0.0, top_k=1)
                )
                try:
                    if tools[i] or template_kwargs:
                        reply = self._template_handler()(
                            llama=llm,
                            messages=list(conversation),
                            tools=tools[i],
                            max_tokens=settings.max_new_tokens,
                            repeat_penalty=1.0,  # as create_chat_completion
                            **sampling,
                            **template_kwargs,
                        )
                    else:
                        reply = llm.create_chat_completion(
                            messages=list(conversation), max_tokens=settings.max_new_tokens, **sampling
                        )
                except ValueError as err:  # a prompt longer than n_ctx, or the template's raise_exception
                    raise BackendError(
                        f"llama.cpp could not answer conversation {i + 1} with {self.path} (n_ctx {self.n_ctx}): {err}"
                    ) from None
                choice = reply["choices"][0]
                output = Output(
                    text=(choice["message"].get("content") or "").strip(),
                    finished=choice.get("finish_reason") == "stop",
                    num_tokens=int(reply.get("usage", {}).get("completion_tokens", 0)),
                )
                outputs.append(output)
                if on_result:
                    on_result(i, output)
                bar.update(1)
        return outputs

    def close(self) -> None:
        self._llm = self._handler = None


# ------------------------------------------------------------------------------------------- OpenAI-compatible


def _is_retried_status(status: int) -> bool:
    """The statuses the ``openai`` SDK retries (connection errors and timeouts are retried too)."""
    return status in (408, 409, 429) or status >= 500


class OpenAIBackend:
    """``POST {base_url}/chat/completions`` through the official ``openai`` SDK, which retries connection errors,
    timeouts, 408/409/429 and 5xx (honouring ``Retry-After``); after the last retry :class:`EndpointError` names
    the URL.

    ``max_retries`` and ``timeout`` (seconds, for connecting and for each read) go to the SDK. The wait between
    retries is ``backoff * 2**n`` seconds (n = 0, 1, ...) unless the server sends ``Retry-After``, and is spent in
    ``sleep``: posttrain keeps its own schedule instead of the SDK's (0.5 s doubling, capped at 8 s, with jitter).

    The API key is read from the environment variable ``api_key_env`` (if any) when the first request is sent and
    is handed only to the SDK client; it is never stored in results or fingerprints. Without ``api_key_env`` no
    ``Authorization`` header is sent, and ``OPENAI_API_KEY``/``OPENAI_ORG_ID``/``OPENAI_PROJECT_ID`` from the
    environment are not sent either: the endpoint gets only what the config names.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str = "default",
        *,
        api_key_env: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        concurrency: int = 4,
        label: str = "",
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        if api_key_env and not os.environ.get(api_key_env):
            raise ConfigError(f"the API key variable {api_key_env} (for {self.url}) is not set")
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.backoff = backoff
        self.concurrency = max(1, concurrency)
        self.label = label or f"{model}@{self.base_url}"
        self._sleep = sleep
        self._client = None  # the SDK client, made at the first request
        self._client_lock = threading.Lock()
        self._attempts = threading.local()  # retries taken by the request running in this thread

    def fingerprint(self) -> str:
        return f"openai:{self.base_url}:{self.model}"

    def template_source(self) -> None:
        return None  # served elsewhere: unknown

    def reasoning_format(self, template_kwargs: Mapping | None = None) -> ReasoningFormat:
        """The server's template is not visible: replies that start with ``<think>`` are split; servers with a
        reasoning parser send the reasoning apart (:attr:`Output.reasoning`)."""
        return ENDPOINT_DEFAULT

    def _sdk_client(self):
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self):
        try:
            import openai
        except ImportError:
            raise BackendError(
                "endpoint models and judges need the openai package: pip install 'openai==3.57.*'"
            ) from None
        backend = self

        class Client(openai.OpenAI):
            def _calculate_retry_timeout(self, remaining_retries, options, response_headers=None):
                # called by the SDK before each retry: wait here (through `sleep`) and have the SDK wait no more
                taken = getattr(backend._attempts, "retries", 0)
                backend._attempts.retries = taken + 1
                try:
                    retry_after = self._parse_retry_after_header(response_headers)
                except Exception:
                    retry_after = None
                if retry_after is not None and 0 < retry_after <= 120:
                    delay = float(retry_after)
                else:
                    delay = backend.backoff * 2**taken
                logger.debug(
                    "retrying %s in %.2f s (retry %d of %d)", backend.url, delay, taken + 1, backend.max_retries
                )
                backend._sleep(delay)
                return 0.0

        api_key = os.environ[self.api_key_env] if self.api_key_env else "unused"  # placeholder: never sent
        return Client(base_url=self.base_url, api_key=api_key, timeout=self.timeout, max_retries=self.max_retries)

    def _extra_headers(self) -> dict[str, Any]:
        from openai import Omit

        headers: dict[str, Any] = {"OpenAI-Organization": Omit(), "OpenAI-Project": Omit()}
        if not self.api_key_env:
            headers["Authorization"] = Omit()
        return headers

    def _request(self, payload: dict) -> dict:
        client = self._sdk_client()  # BackendError first if the SDK is missing
        import openai

        self._attempts.retries = 0
        try:
            raw = client.chat.completions.with_raw_response.create(**payload, extra_headers=self._extra_headers())
            body = raw.http_response.content
        except openai.APIStatusError as err:
            attempts = self._attempts.retries + 1
            response = err.response
            detail = " ".join(response.text[:300].split()) if response is not None else ""  # one line
            last = f"HTTP {err.status_code} {getattr(response, 'reason_phrase', '')}: {detail}".strip()
            if attempts > 1 or _is_retried_status(err.status_code):
                raise EndpointError(f"{self.url} failed after {attempts} attempts: {last}") from None
            raise EndpointError(f"{self.url} answered {last}") from None
        except openai.APITimeoutError:
            raise EndpointError(f"{self.url} failed after {self._attempts.retries + 1} attempts: timed out") from None
        except openai.APIConnectionError as err:
            cause = err.__cause__ or err
            reason = " ".join(str(cause).split()) or type(cause).__name__
            raise EndpointError(f"{self.url} failed after {self._attempts.retries + 1} attempts: {reason}") from None
        except openai.OpenAIError as err:
            raise EndpointError(f"{self.url} failed: {' '.join(str(err).split())}") from None
        try:
            reply = json.loads(body)
            reply["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EndpointError(
                f"{self.url} answered something that is not a chat completion: {body[:200]!r}"
            ) from None
        return reply

    def complete(
        self,
        conversation: list[dict],
        settings: GenerationSettings,
        *,
        tools: list[dict] | None = None,
        template_kwargs: Mapping | None = None,
    ) -> Output:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": list(conversation),
            "max_tokens": settings.max_new_tokens,
            "stream": False,
        }
        if tools:
            payload["tools"] = list(tools)
        if template_kwargs:  # vLLM and llama.cpp's server pass these to the chat template
            payload["extra_body"] = {"chat_template_kwargs": dict(template_kwargs)}
        if settings.do_sample:
            payload.update(temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
        else:
            payload.update(temperature=0.0, seed=settings.seed)
        reply = self._request(payload)
        choice = reply["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        # vLLM and llama.cpp's server: reasoning_content; Ollama and newer vLLM: reasoning
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        tokens = (reply.get("usage") or {}).get("completion_tokens")
        return Output(
            text=text.strip(),
            finished=choice.get("finish_reason") == "stop",
            num_tokens=int(tokens) if tokens is not None else len(text.split()),
            reasoning=reasoning.strip() if isinstance(reasoning, str) and reasoning.strip() else None,
        )

    def generate(self, conversations, settings, *, progress=True, on_result=None, tools=None, template_kwargs=None):
        tools = _tools_per_conversation(tools, conversations)
        outputs: list[Output | None] = [None] * len(conversations)
        with (
            _progress(len(conversations), f"Requesting ({self.label})", progress) as bar,
            ThreadPoolExecutor(self.concurrency) as pool,
        ):
            futures = {
                pool.submit(self.complete, c, settings, tools=t, template_kwargs=template_kwargs): i
                for i, (c, t) in enumerate(zip(conversations, tools))
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.exception() is not None:
                        for other in pending:
                            other.cancel()
                        # keep every reply that did arrive before giving up
                        wait(pending)
                        for other in pending:
                            if not other.cancelled() and other.exception() is None:
                                self._deliver(futures[other], other.result(), outputs, on_result)
                        for other in done:
                            if other.exception() is None:
                                self._deliver(futures[other], other.result(), outputs, on_result)
                        raise future.exception()
                    self._deliver(futures[future], future.result(), outputs, on_result)
                    bar.update(1)
        return outputs

    @staticmethod
    def _deliver(index: int, output: Output, outputs: list, on_result: OnResult | None) -> None:
        if outputs[index] is None:
            outputs[index] = output
            if on_result:
                on_result(index, output)

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
