"""Fixtures of the notification tests: shop data, a real SMTP server (aiosmtpd) and a real
HTTP server receiving webhooks. Helpers live in notify_support."""

from __future__ import annotations

import functools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from notify_support import Shop, SmtpServer, WebhookServer, make_config


@pytest.fixture(autouse=True)
def marks_flushed_by_count_only(monkeypatch):
    """Dispatch also flushes its marks after FLUSH_SECONDS of sending. A stall of that long on a
    loaded machine (a cold first render, an ANALYZE) would regroup the marks that tests count or
    kill a run between, so here they are flushed by count alone; test_notify_dispatch checks the
    time-based flush on its own."""
    from ordersys_pipelines.domain.notifications import dispatch

    monkeypatch.setattr(dispatch, "FLUSH_SECONDS", 3600.0)


@pytest.fixture
def shop(engine) -> Shop:
    return Shop(engine)


@pytest.fixture
def smtp_server():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_factory():
    """Start SMTP servers on demand (a given port, login required ...); all stopped at the end."""
    started: list[SmtpServer] = []

    def start(port: int | None = None, **options) -> SmtpServer:
        server = SmtpServer(port, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def webhook_server():
    """A real HTTP server in a thread that records every POST (headers, raw body)."""
    state = WebhookServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = {"path": self.path, "headers": dict(self.headers), "body": body}
            state.requests.append(request)
            if state.on_request:
                state.on_request(request)
            status, text = state.statuses.pop(0) if state.statuses else (200, json.dumps({"ok": True}))
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/ordersys"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def log_file(tmp_path) -> Path:
    """Where the log channel of `config` writes."""
    return tmp_path / "notifications.log"


@pytest.fixture
def config(log_file):
    """NotifierConfig(**overrides) with fast retries (no backoff, three attempts), the log
    channel writing to `log_file`."""
    return functools.partial(make_config, log_file=str(log_file))
