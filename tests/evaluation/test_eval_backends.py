"""Backends: OpenAI-compatible endpoints (retries, backoff, timeouts, refusals, API key), GGUF and HF fingerprints."""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path

import pytest

from posttrain.evaluation.backends import (
    DEFAULT_BASE_URL,
    BackendError,
    EndpointError,
    GenerationSettings,
    GGUFBackend,
    HFBackend,
    OpenAIBackend,
    folder_fingerprint,
)

CONVERSATIONS = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]


def backend(url, **kwargs):
    kwargs.setdefault("sleep", lambda s: None)
    return OpenAIBackend(
        url, "tiny", timeout=kwargs.pop("timeout", 5), max_retries=kwargs.pop("max_retries", 3), **kwargs
    )


def test_replies_in_input_order_with_stop_and_settings(chat_server):
    chat_server.reply = lambda messages: f"answer to {messages[-1]['content']}"
    got = []
    outputs = backend(chat_server.url, concurrency=3).generate(
        CONVERSATIONS, GenerationSettings(max_new_tokens=7), progress=False, on_result=lambda i, o: got.append(i)
    )
    assert [o.text for o in outputs] == [f"answer to question {i}" for i in range(5)]
    assert all(o.finished and o.num_tokens == 4 for o in outputs) and sorted(got) == list(range(5))
    payload = chat_server.requests[0]["payload"]
    assert payload["model"] == "tiny" and payload["max_tokens"] == 7 and payload["temperature"] == 0.0
    chat_server.finish_reason = "length"
    [cut] = backend(chat_server.url).generate(CONVERSATIONS[:1], GenerationSettings(), progress=False)
    assert not cut.finished


def test_retries_with_exponential_backoff_then_succeeds(chat_server):
    chat_server.fail_first = 2
    sleeps = []
    [output] = backend(chat_server.url, backoff=0.5, sleep=sleeps.append).generate(
        CONVERSATIONS[:1], GenerationSettings(), progress=False
    )
    assert output.text == "ok" and sleeps == [0.5, 1.0] and len(chat_server.requests) == 3


def test_a_500_then_success_is_retried(chat_server):
    chat_server.fail_first, chat_server.fail_status = 1, 500
    [output] = backend(chat_server.url).generate(CONVERSATIONS[:1], GenerationSettings(), progress=False)
    assert output.text == "ok" and len(chat_server.requests) == 2


def test_retry_after_is_honoured(chat_server):
    chat_server.fail_first, chat_server.fail_status, chat_server.fail_headers = 1, 429, {"Retry-After": "3"}
    sleeps = []
    [output] = backend(chat_server.url, backoff=0.5, sleep=sleeps.append).generate(
        CONVERSATIONS[:1], GenerationSettings(), progress=False
    )
    assert output.text == "ok" and sleeps == [3.0]


def test_a_permanent_500_names_the_url_and_status(chat_server):
    chat_server.reply = lambda messages: (500, {"error": "boom"})
    with pytest.raises(EndpointError) as caught:
        backend(chat_server.url, max_retries=1).generate(CONVERSATIONS[:1], GenerationSettings(), progress=False)
    message = str(caught.value)
    assert "\n" not in message and len(chat_server.requests) == 2
    assert message.startswith(f"{chat_server.url}/chat/completions failed after 2 attempts: HTTP 500")
    assert "boom" in message


def test_gives_up_after_retries_naming_the_url(chat_server):
    chat_server.fail_first = 100
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1:\d+/v1/chat/completions failed after 3 attempts: HTTP 503"):
        backend(chat_server.url, max_retries=2).generate(CONVERSATIONS[:1], GenerationSettings(), progress=False)


def test_refused_connection(closed_port_url):
    with pytest.raises(EndpointError, match=r"failed after 2 attempts.*(refused|Errno)"):
        backend(closed_port_url, max_retries=1).generate(CONVERSATIONS[:1], GenerationSettings(), progress=False)


def test_timeout(chat_server):
    chat_server.delay = 1.0
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1:\d+/v1/chat/completions failed after 2 attempts: timed out"):
        backend(chat_server.url, timeout=0.2, max_retries=1).generate(
            CONVERSATIONS[:1], GenerationSettings(), progress=False
        )
    assert len(chat_server.requests) == 2  # the timeout was retried


def test_client_errors_are_not_retried(chat_server):
    chat_server.reply = lambda messages: (400, {"error": "model 'tiny' not found"})
    with pytest.raises(EndpointError, match="HTTP 400.*not found"):
        backend(chat_server.url).generate(CONVERSATIONS[:1], GenerationSettings(), progress=False)
    assert len(chat_server.requests) == 1


def test_not_a_chat_completion(chat_server):
    chat_server.reply = lambda messages: (200, {"hello": "world"})
    with pytest.raises(EndpointError, match="not a chat completion"):
        backend(chat_server.url).generate(CONVERSATIONS[:1], GenerationSettings(), progress=False)


def test_partial_results_are_delivered_before_the_error(chat_server):
    chat_server.reply = lambda m: (500, {"error": "boom"}) if m[-1]["content"] == "question 3" else "fine"
    delivered = {}
    with pytest.raises(EndpointError):
        backend(chat_server.url, max_retries=0, concurrency=1).generate(
            CONVERSATIONS, GenerationSettings(), progress=False, on_result=lambda i, o: delivered.update({i: o})
        )
    assert {0, 1, 2} <= set(delivered) and 3 not in delivered


def test_api_key_comes_from_the_environment_only(chat_server, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_TEST_KEY", "sk-secret-123")
    b = backend(chat_server.url, api_key_env="POSTTRAIN_TEST_KEY")
    b.generate(CONVERSATIONS[:1], GenerationSettings(), progress=False)
    assert chat_server.requests[0]["headers"]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in b.fingerprint() and "sk-secret" not in json.dumps(vars(b), default=str)


def test_without_api_key_env_no_credentials_are_sent(chat_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient-456")  # the SDK's own variables are not picked up
    monkeypatch.setenv("OPENAI_ORG_ID", "org-ambient")
    backend(chat_server.url).generate(CONVERSATIONS[:1], GenerationSettings(), progress=False)
    headers = chat_server.requests[0]["headers"]
    assert "Authorization" not in headers and "OpenAI-Organization" not in headers
    assert "ambient" not in json.dumps(headers)


def test_missing_openai_package_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_openai(name, *args, **kwargs):
        if name == "openai":
            raise ImportError("No module named 'openai'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openai)
    with pytest.raises(BackendError, match="pip install"):
        OpenAIBackend(None, "m").generate(CONVERSATIONS[:1], GenerationSettings(), progress=False)


def test_missing_api_key_variable_is_a_config_error(monkeypatch):
    from posttrain.errors import ConfigError

    monkeypatch.delenv("POSTTRAIN_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="POSTTRAIN_NO_SUCH_KEY"):
        OpenAIBackend(None, "m", api_key_env="POSTTRAIN_NO_SUCH_KEY")


def test_default_endpoint_is_local():
    assert OpenAIBackend(None, "m").url == f"{DEFAULT_BASE_URL}/chat/completions"
    assert DEFAULT_BASE_URL.startswith("http://localhost")


def test_gguf_without_llama_cpp_says_what_to_install(tmp_path, monkeypatch):
    import gguf as gguf_lib

    gguf = tmp_path / "model.gguf"
    writer = gguf_lib.GGUFWriter(str(gguf), "llama")  # a valid (empty) GGUF: it passes the file check
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    real_import = builtins.__import__

    def no_llama(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    with pytest.raises(BackendError, match="pip install llama-cpp-python"):
        GGUFBackend(str(gguf)).generate(CONVERSATIONS[:1], GenerationSettings(), progress=False)


def test_missing_gguf_file_is_named(tmp_path):
    from posttrain.models.registry import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="nope.gguf"):
        GGUFBackend(str(tmp_path / "nope.gguf"))


@pytest.mark.slow
def test_gguf_through_llama_cpp_on_the_embedded_model():
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install llama-cpp-python)")
    from posttrain.models.registry import EMBEDDED_MODELS

    path = EMBEDDED_MODELS["smollm2-135m-instruct"].gguf_path()
    outputs = GGUFBackend(str(path), n_ctx=512).generate(
        [[{"role": "user", "content": "What is 2 + 2?"}]], GenerationSettings(max_new_tokens=24), progress=False
    )
    assert outputs[0].text and outputs[0].num_tokens <= 24


def test_fingerprints_follow_content_and_adapters(tmp_path, tiny_chat_model):
    first = HFBackend(str(tiny_chat_model)).fingerprint()
    assert first == HFBackend(str(tiny_chat_model)).fingerprint()
    assert first != HFBackend(str(tiny_chat_model), chat_template="chatml").fingerprint()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_chat_model)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"v1")
    before = folder_fingerprint(adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"v2")  # retrained into the same folder
    assert folder_fingerprint(adapter) != before
    assert Path(os.fspath(tiny_chat_model)).is_dir()
