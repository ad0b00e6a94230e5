"""Fixtures for evaluation tests: the fake OpenAI-compatible server (fake_chat_server.py) and a refused port."""

from __future__ import annotations

import pytest

from fake_chat_server import FakeChatServer


@pytest.fixture
def chat_server():
    server = FakeChatServer()
    yield server
    server.close()


@pytest.fixture
def closed_port_url():
    """A localhost URL where nothing listens (connection refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
