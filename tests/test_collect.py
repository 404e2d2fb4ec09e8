"""Collecting: hostile or broken feeds are refused with a reason, never crash or hang a run."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from digest.errors import FeedError
from digest.fetch import Fetcher, read_file
from digest.parse import parse_feed
from tests.conftest import LESSWRONG, FeedServer


def fetch(url: str, *, timeout: float = 5.0, max_bytes: int = 1_000_000, etag: str | None = None):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        async with Fetcher(
            user_agent="test", concurrency=4, per_host=4, timeout=timeout, max_bytes=max_bytes
        ) as fetcher:
            return await fetcher.get(url, etag=etag, last_modified=None)

    return asyncio.run(go())


def test_plain_fetch_returns_bytes_and_validators(feed_server: FeedServer) -> None:
    url = feed_server.serve_file("/f.xml", LESSWRONG / "feed-1.xml")
    result = fetch(url)
    assert result.data == (LESSWRONG / "feed-1.xml").read_bytes()
    assert result.etag
    again = fetch(url, etag=result.etag)
    assert again.data is None and again.status == 304


def test_gzip_bomb_is_stopped_at_the_cap(feed_server: FeedServer) -> None:
    bomb = gzip.compress(b"<" * 50_000_000)  # 50 MB of '<' squeezes to ~50 KB
    feed_server.routes["/bomb.xml"] = bomb
    feed_server.headers["/bomb.xml"] = {"Content-Encoding": "gzip"}
    with pytest.raises(FeedError, match="larger than"):
        fetch(feed_server.url("/bomb.xml"), max_bytes=1_000_000)


def test_gzip_feed_within_the_cap_is_decoded(feed_server: FeedServer) -> None:
    raw = (LESSWRONG / "feed-1.xml").read_bytes()
    feed_server.routes["/z.xml"] = gzip.compress(raw)
    feed_server.headers["/z.xml"] = {"Content-Encoding": "gzip"}
    assert fetch(feed_server.url("/z.xml")).data == raw


def test_plain_body_over_the_cap_is_refused(feed_server: FeedServer) -> None:
    feed_server.routes["/big.xml"] = b"x" * 300_000
    with pytest.raises(FeedError, match="larger than"):
        fetch(feed_server.url("/big.xml"), max_bytes=100_000)


@pytest.fixture
def trickle_server() -> Iterator[int]:
    """Answers with headers, then one byte every 0.2 s: per-read timeouts never fire."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not stop.is_set():
                    try:
                        conn.sendall(b"<")
                    except OSError:
                        break
                    time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


def test_a_trickling_server_hits_the_whole_request_deadline(trickle_server: int) -> None:
    with pytest.raises(FeedError, match="within 1s"):
        fetch(f"http://127.0.0.1:{trickle_server}/slow.xml", timeout=1.0)


def test_http_errors_and_refused_connections_are_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FeedError, match="cannot connect"):
        fetch(f"http://127.0.0.1:{port}/feed.xml")


def test_404_is_a_feed_error(feed_server: FeedServer) -> None:
    with pytest.raises(FeedError, match="HTTP 404"):
        fetch(feed_server.url("/nope.xml"))


def test_local_file_reads_and_missing_file_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert read_file(str(LESSWRONG / "feed-1.xml"), 1_000_000).data
    with pytest.raises(FeedError, match="cannot read"):
        read_file(str(tmp_path / "missing.xml"), 1_000)


HOSTILE = b"""<?xml version="1.0"?>
<rss version="2.0"><channel><title>Evil\r\nBcc: victim@example.org</title>
<item><title>Hello\r\nBcc: victim@example.org</title>
<link>javascript:alert(1)</link><guid>a1</guid>
<description>&lt;p&gt;Hi&lt;/p&gt;</description></item>
<item><title>No guid or link</title><description>Body text.</description></item>
<item><title>Relative</title><link>/posts/x</link><guid>a3</guid><description>x</description></item>
</channel></rss>"""


def test_parser_cleans_titles_drops_javascript_links_and_keys_entries() -> None:
    feed = parse_feed(HOSTILE, "https://example.org/feed.xml")
    assert "\n" not in feed.title and "\r" not in feed.title
    first, second, third = feed.entries
    assert first.title == "Hello Bcc: victim@example.org"
    assert first.url == ""
    assert first.key.endswith("a1")  # feedparser resolves a permalink guid against the feed
    assert second.key.startswith("sha256:")
    assert third.url == "https://example.org/posts/x"


def test_parser_gives_bytes_to_feedparser_never_a_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "secret.xml"
    secret.write_bytes((LESSWRONG / "feed-1.xml").read_bytes())
    with pytest.raises(FeedError):
        parse_feed(str(secret).encode(), "https://example.org/feed.xml")


def test_lesswrong_fixture_parses_with_guids_dates_and_content() -> None:
    feed = parse_feed((LESSWRONG / "feed-1.xml").read_bytes(), "https://www.lesswrong.com/feed.xml")
    assert feed.title == "LessWrong"
    assert len(feed.entries) == 10
    for entry in feed.entries:
        assert entry.key and "/" not in entry.key  # guid is the post id
        assert entry.url.startswith("https://www.lesswrong.com/posts/")
        assert entry.published is not None and entry.published.tzinfo is not None
        assert entry.content.startswith("Published on")


# ---- HTTPS ------------------------------------------------------------------------------------


@pytest.fixture
def https_feed(tmp_path):  # type: ignore[no-untyped-def]
    """A feed over TLS on 127.0.0.1 (as "localhost"), its certificate from a throwaway CA;
    yields (url, the CA's PEM file, a list that gets an item per TCP connection accepted)."""
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    body = (LESSWRONG / "feed-1.xml").read_bytes()
    connections: list[object] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            connections.append(self.client_address)
            super().setup()

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}/feed.xml", ca_file, connections
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_https_feed_is_fetched_over_verified_tls_and_connections_are_reused(
    https_feed, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    url, ca_file, connections = https_feed
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))

    async def twice():  # type: ignore[no-untyped-def]
        async with Fetcher(
            user_agent="test", concurrency=1, per_host=1, timeout=5, max_bytes=1_000_000
        ) as fetcher:
            first = await fetcher.get(url, etag=None, last_modified=None)
            second = await fetcher.get(url, etag=None, last_modified=None)
            return first, second

    first, second = asyncio.run(twice())
    assert first.data == second.data == (LESSWRONG / "feed-1.xml").read_bytes()
    assert len(connections) == 1


def test_https_with_an_untrusted_certificate_is_a_tls_error(https_feed) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = https_feed  # the throwaway CA is not trusted here
    with pytest.raises(FeedError) as caught:
        fetch(url)
    assert caught.value.kind == "tls" and str(caught.value).startswith("TLS: ")
