"""The payment webhook as it runs: `ordersys webhook serve` (uvicorn) in a process of its own on a
free 127.0.0.1 port, driven over raw sockets. Huge, chunked, lying and trickling bodies leave the
server's memory bounded (its resident set read from /proc), and a junk flood leaves the inbox
bounded by the rejected-delivery cap."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import payment_callbacks
from ordersys_pipelines.domain.payments.signing import sign

SECRET = "test-secret"
KEPT = 50
MB = 1024 * 1024
HUGE = 300 * MB
# Growth of the server's peak resident set a 300 MB POST may cause: a few 64 KB buffers, the
# database driver, allocator slack. Before the body was streamed one such POST cost about 1 GB.
ONE_POST_BOUND = 48 * MB
FOUR_POSTS_BOUND = 96 * MB


@dataclass
class Server:
    process: subprocess.Popen
    port: int

    def status_field(self, name: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"{name} not in /proc/{self.process.pid}/status")

    def reset_peak(self) -> None:
        """Restart the peak resident set (VmHWM) at the current one (Linux clear_refs)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(server: Server, log: Path) -> None:
    for _ in range(600):  # at most a minute: the command imports Dagster first
        if server.process.poll() is not None:
            raise AssertionError(f"webhook server exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"webhook server did not answer: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def serving(database_url: str, tmp_path: Path) -> Iterator[Server]:
    port = _free_port()
    env = {**os.environ, "ORDERSYS_DATABASE_URL": database_url, "ORDERSYS_GATEWAY_SECRET": SECRET,
           "ORDERSYS_REJECTED_DELIVERIES_KEPT": str(KEPT)}
    env.pop("DAGSTER_HOME", None)
    log = tmp_path / "webhook.log"
    command = [str(Path(sys.executable).parent / "ordersys"), "webhook", "serve", "--port", str(port),
               "--body-timeout", "1"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT)
    server = Server(process, port)
    try:
        _wait_until_up(server, log)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture
def pg_server(pg_url, tmp_path) -> Iterator[Server]:
    with serving(pg_url, tmp_path) as server:
        yield server


@pytest.fixture
def server(db_url, tmp_path) -> Iterator[Server]:
    with serving(db_url, tmp_path) as server:
        yield server


def _warm_up(server: Server) -> None:
    """One refused and one accepted delivery, so pools and threads exist before measuring."""
    body = b'{"event_id":"evt_warm","payment_ref":"pay_warm","status":"approved","amount_cents":1}'
    for headers in ({}, {"Ordersys-Signature": sign(body, SECRET)}):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("POST", "/payments/callback", body=body, headers=headers)
        connection.getresponse().read()
        connection.close()


def _post_stream(port: int, head: bytes, chunks: int, chunk: bytes = b"x" * MB, *, chunked: bool,
                 pause: float = 0.0) -> int | None:
    """Send `head` (request line and headers), then `chunks` pieces of body unless the server
    stops the upload; a reader thread takes the answer meanwhile. Returns the status or None."""
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        def read() -> None:
            with contextlib.suppress(OSError):
                while data := sock.recv(65536):
                    answer.extend(data)

        reader = threading.Thread(target=read)
        reader.start()
        with contextlib.suppress(OSError):  # the server closes the connection: that is the point
            sock.sendall(head)
            piece = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
            for _ in range(chunks):
                if answer:
                    break
                sock.sendall(piece)
                time.sleep(pause)
            if chunked and not answer:
                sock.sendall(b"0\r\n\r\n")
        reader.join(timeout=30)
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def _request_head(extra: str) -> bytes:
    return f"POST /payments/callback HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


def _records(url: str) -> list:
    with get_engine(url).connect() as conn:
        return conn.execute(select(payment_callbacks).where(payment_callbacks.c.payload_kept == "head")
                            .order_by(payment_callbacks.c.id)).all()


def _peak_growth(server: Server, send) -> int:
    _warm_up(server)
    server.reset_peak()
    before = server.status_field("VmRSS")
    send()
    return server.status_field("VmHWM") - before


def test_a_huge_chunked_body_is_not_read_past_the_limit_and_memory_stays_bounded(pg_server, pg_url):
    statuses = []
    growth = _peak_growth(pg_server, lambda: statuses.append(_post_stream(
        pg_server.port, _request_head("Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n"),
        HUGE // MB, chunked=True)))
    assert statuses == [413]
    assert growth < ONE_POST_BOUND, f"peak resident set grew {growth / MB:.1f} MB"
    record = _records(pg_url)[-1]
    assert record.reason == "body larger than 65536 bytes (stopped reading there)"
    assert 64 * 1024 < record.body_bytes < 2 * MB  # reading stopped at the limit, not at 300 MB
    assert record.payload.startswith("x" * 100) and len(record.payload) <= 1600


def test_a_huge_content_length_is_refused_before_the_body_is_read(pg_server, pg_url):
    statuses = []
    growth = _peak_growth(pg_server, lambda: statuses.append(_post_stream(
        pg_server.port, _request_head(f"Content-Length: {HUGE}\r\n"), HUGE // MB, chunked=False)))
    assert statuses == [413]
    assert growth < ONE_POST_BOUND, f"peak resident set grew {growth / MB:.1f} MB"
    record = _records(pg_url)[-1]
    assert (record.reason, record.body_bytes) == (f"Content-Length {HUGE} exceeds the 65536-byte limit", HUGE)


def test_a_body_longer_than_its_content_length_is_not_read_past_it(pg_server):
    statuses = []
    growth = _peak_growth(pg_server, lambda: statuses.append(_post_stream(
        pg_server.port, _request_head("Content-Length: 1000\r\n"), HUGE // MB, chunked=False)))
    # What follows the 1000 bytes is no HTTP request: uvicorn answers 400 and closes the connection.
    assert statuses == [400]
    assert growth < ONE_POST_BOUND, f"peak resident set grew {growth / MB:.1f} MB"


def test_four_concurrent_huge_posts_leave_memory_bounded(pg_server, pg_url):
    statuses: list[int | None] = []

    def four() -> None:
        heads = [_request_head("Transfer-Encoding: chunked\r\n")] * 2 + [_request_head(f"Content-Length: {HUGE}\r\n")] * 2
        threads = [threading.Thread(target=lambda h=h: statuses.append(
            _post_stream(pg_server.port, h, HUGE // MB, chunked=b"chunked" in h))) for h in heads]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    growth = _peak_growth(pg_server, four)
    assert statuses == [413] * 4
    assert growth < FOUR_POSTS_BOUND, f"peak resident set grew {growth / MB:.1f} MB"
    # Identical refusals are one record each, counted by deliveries.
    refused = [r for r in _records(pg_url) if r.reason.endswith("limit") or "larger than" in r.reason]
    assert sorted(r.deliveries for r in refused) == [2, 2]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_client_trickling_its_body_is_cut_off_at_the_body_timeout(pg_server, pg_url, chunked):
    head = _request_head("Transfer-Encoding: chunked\r\n" if chunked else "Content-Length: 60000\r\n")
    # 10 bytes every 0.1 s would take 60 s; the server gives up after its 1 s body timeout.
    status = _post_stream(pg_server.port, head, 600, b"y" * 10, chunked=chunked, pause=0.1)
    assert status == 408
    record = _records(pg_url)[-1]
    assert record.reason.startswith("body not received within 1 s") and 0 < record.body_bytes < 60000


def test_a_junk_flood_grows_the_inbox_only_to_the_cap(server, db_url):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    answers = []
    for i in range(300):
        connection.request("POST", "/payments/callback", body=b"%05d" % i + b"j" * 60_000,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        answers.append((response.status, response.read()))
    connection.close()
    assert {status for status, _ in answers} == {400}
    assert all(b"missing Ordersys-Signature header" in body for _, body in answers)
    with get_engine(db_url).connect() as conn:
        rows, stored = conn.execute(select(func.count(), func.sum(func.length(payment_callbacks.c.payload)))).one()
    # Before: 300 rows of 60 KB (19 MB). Now: the newest KEPT records of at most 1,600 characters.
    assert rows == KEPT and stored <= KEPT * 1600
    assert _records(db_url)[-1].payload.startswith("00299jjj")
