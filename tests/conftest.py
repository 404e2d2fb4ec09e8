"""Real parts for tests: an HTTP feed server and an SMTP server on 127.0.0.1, SQLite files and
PostgreSQL schemas. Every server a test starts stops at the end of that test."""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

FIXTURES = Path(__file__).parent / "fixtures"
LESSWRONG = FIXTURES / "lesswrong"
PG_URL = os.environ.get("DIGEST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


# ---- clocks ----------------------------------------------------------------------------------


def utc(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


class FixedClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# ---- HTTP ----------------------------------------------------------------------------------


@dataclass
class FeedServer:
    """Serves `routes` (path -> bytes) with ETag support; counts requests per path."""

    routes: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    conditional_hits: dict[str, int] = field(default_factory=dict)
    # path -> answers given in turn (the last one repeats): (status, headers, body). Checked
    # before `routes`, for redirects, errors and servers that change their mind.
    scripted: dict[str, list[tuple[int, dict[str, str], bytes]]] = field(default_factory=dict)
    # (path, request headers) of every request, in order.
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve_file(self, path: str, file: Path) -> str:
        self.routes[path] = file.read_bytes()
        return self.url(path)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    state = FeedServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path
            state.hits[path] = state.hits.get(path, 0) + 1
            state.requests.append((path, {k.lower(): v for k, v in self.headers.items()}))
            script = state.scripted.get(path)
            if script:
                status, headers, payload = script.pop(0) if len(script) > 1 else script[0]
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            body = state.routes.get(path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                state.conditional_hits[path] = state.conditional_hits.get(path, 0) + 1
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            self.send_response(200)
            extra = state.headers.get(path, {})
            self.send_header("Content-Type", extra.get("Content-Type", "application/rss+xml"))
            self.send_header("ETag", etag)
            for key, value in extra.items():
                if key != "Content-Type":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---- SMTP ----------------------------------------------------------------------------------


class Inbox:
    """Collects what an aiosmtpd server accepted."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(
                (envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
            )
        return "250 OK"

    def parsed(self) -> list[EmailMessage]:
        with self.lock:
            return [
                email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[misc]
                for _, _, raw in self.messages
            ]

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.parsed() if m["To"] == address]


@dataclass
class SmtpServer:
    inbox: Inbox
    port: int
    controller: Controller | None

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def start(self) -> None:
        if self.controller is None:
            self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
            self.controller.start()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer(Inbox(), _free_port(), None)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---- databases -----------------------------------------------------------------------------


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3
        ):
            return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a private schema in the local PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'digest.db'}"
        return
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI")
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# ---- configs -------------------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    database: str,
    feeds: list[tuple[str, str]],
    subscribers: list[dict[str, Any]],
    smtp_port: int | None = None,
    folder: str | None = None,
    extra: str = "",
    collect: str = "",
) -> Path:
    lines = [
        "[digest]",
        f'database = "{database}"',
        'timezone = "UTC"',
        'from = "Digest <digest@example.org>"',
        'name = "Test digest"',
        extra,
        "[delivery]",
        f'mode = "{"folder" if folder else "smtp"}"',
    ]
    if folder:
        lines.append(f'folder = "{folder}"')
    lines += ["[smtp]", 'host = "127.0.0.1"', f"port = {smtp_port or 25}", 'security = "none"']
    lines += ["[collect]", "timeout = 10", collect]
    for name, url in feeds:
        lines += ["[[feeds]]", f'name = "{name}"', f'url = "{url}"']
    for sub in subscribers:
        lines.append("[[subscribers]]")
        for key, value in sub.items():
            if isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, list):
                lines.append(
                    f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]"
                )
            else:
                lines.append(f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
