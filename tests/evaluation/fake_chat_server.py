"""A local OpenAI-compatible chat server (127.0.0.1 only) whose replies a test scripts, so endpoint models and
judges run without a real LLM."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Headers(dict):
    """Request headers, looked up case-insensitively as HTTP means them (the ``openai`` SDK sends lower case)."""

    def __init__(self, items):
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)


class FakeChatServer:
    """``POST /v1/chat/completions`` answered by ``self.reply(messages) -> str | (status, body)``.

    Every request is recorded (``self.requests``: path, headers, payload). ``self.fail_first`` makes the first N
    requests answer HTTP ``self.fail_status`` (503), with ``self.fail_headers`` (e.g. ``Retry-After``);
    ``self.delay`` sleeps before answering (for timeouts).
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.reply = lambda messages: "ok"
        self.fail_first = 0
        self.fail_status = 503
        self.fail_headers: dict[str, str] = {}
        self.delay = 0.0
        self.finish_reason = "stop"
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                import time

                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length))
                with server._lock:
                    server.requests.append(
                        {"path": self.path, "headers": Headers(self.headers.items()), "payload": payload}
                    )
                    failing = len(server.requests) <= server.fail_first
                if server.delay:
                    time.sleep(server.delay)
                if failing:
                    return self._send(server.fail_status, {"error": "busy"}, server.fail_headers)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                reply = server.reply(payload["messages"])
                if isinstance(reply, tuple):
                    return self._send(*reply)
                self._send(
                    200,
                    {
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply},
                                "finish_reason": server.finish_reason,
                            }
                        ],
                        "usage": {"completion_tokens": len(reply.split())},
                    },
                )

            def _send(self, status, body, headers=None):
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
