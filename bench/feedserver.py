"""The collect bench's feeds and the local HTTP server that answers for them.

`write_feeds` builds N RSS feeds of 20 items (~90 KB each) from the LessWrong fixtures, as two
generations on disk: `gen1/` holds every feed, `gen2/` only the ~30% that changed (two new
items on top, the two oldest dropped). `FeedServer` runs `python bench/feedserver.py serve DIR`
in its own process: an asyncio HTTP/1.1 server with keep-alive that sleeps `latency` seconds
before each answer, sends ETag and Last-Modified, and answers If-None-Match / If-Modified-Since
with 304 when the feed did not change. The bench switches it between generations and reads its
counters over the child's stdin/stdout; the server exits when its stdin closes (the bench ended,
however it ended) or after `--lifetime` seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import email.utils
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures/lesswrong"
ITEMS_PER_FEED = 20
# ~4.5 KB of post HTML per item: a ~90 KB, 20-item feed, the size FACTS.md measured.
ITEM_HTML = 5200
# The feeds' newest post; feed n's items are an hour apart going back from here.
EPOCH = datetime(2026, 6, 4, 12, 0, tzinfo=UTC)
# The fixtures' prefixes, kept when ElementTree writes the feeds back.
for _prefix, _uri in (
    ("dc", "http://purl.org/dc/elements/1.1/"),
    ("content", "http://purl.org/rss/1.0/modules/content/"),
    ("atom", "http://www.w3.org/2005/Atom"),
):
    ET.register_namespace(_prefix, _uri)


# --- Building the feeds ---------------------------------------------------------------------


def _fixture_items() -> list[ET.Element]:
    items: list[ET.Element] = []
    for name in ("feed-1.xml", "feed-2.xml"):
        items += list(ET.parse(FIXTURES / name).getroot().iter("item"))
    return items


def _cut_html(html: str, limit: int) -> str:
    """At most about `limit` characters of post HTML, cut after a closing block tag so what is
    left is still well-formed-ish HTML (as a feed that sends excerpts would)."""
    if len(html) <= limit:
        return html
    cut = max(html.rfind(tag, 0, limit) for tag in ("</p>", "</li>", "</blockquote>", "</ul>"))
    if cut <= 0:
        cut = html.rfind(">", 0, limit)
        return html[: cut + 1] if cut > 0 else html[:limit]
    return html[: html.index(">", cut) + 1]


def _item(source: ET.Element, feed: int, key: str, when: datetime) -> ET.Element:
    item = ET.fromstring(ET.tostring(source))
    values = {
        "guid": f"f{feed}-{key}",
        "link": f"https://example.org/{feed}/{key}",
        "pubDate": email.utils.format_datetime(when, usegmt=True),
    }
    for tag, value in values.items():
        element = item.find(tag)
        assert element is not None, tag
        element.text = value
    description = item.find("description")
    assert description is not None and description.text
    # A line of its own makes every feed's copy of a fixture post a distinct text (as real
    # feeds' posts are), so no cache keyed on content can skip work another feed paid for.
    mark = f"<p><em>Feed {feed}, post {key}: {when:%A %d %B %Y, %H:%M}.</em></p>"
    description.text = mark + _cut_html(description.text, ITEM_HTML)
    return item


def _feed_xml(
    template: ET.Element, items: list[ET.Element], title: str, *, escaped: bool = False
) -> bytes:
    """The feed's bytes. Post HTML goes in CDATA sections, as LessWrong (and the fixtures) send
    it; `escaped` writes it entity-escaped instead (&lt;p&gt;...), which many other feeds do
    and which costs feedparser about three times as much (a callback per entity)."""
    root = ET.fromstring(ET.tostring(template))
    channel = root.find("channel")
    assert channel is not None
    for old in list(channel.iter("item")):
        channel.remove(old)
    title_element = channel.find("title")
    assert title_element is not None
    title_element.text = title
    # Copies: the CDATA tokens below are written into the elements, and the second version of a
    # changed feed reuses most of the first version's items.
    channel.extend(copy.deepcopy(item) for item in items)
    bodies: dict[str, str] = {}
    if not escaped:
        for i, description in enumerate(channel.iter("description")):
            if description.text and "<" in description.text:
                token = f"@@cdata-{i}@@"
                bodies[token] = description.text
                description.text = token
    text = ET.tostring(root, encoding="unicode")
    for token, html in bodies.items():
        text = text.replace(token, "<![CDATA[" + html.replace("]]>", "]]]]><![CDATA[>") + "]]>", 1)
    return b'<?xml version="1.0" encoding="UTF-8"?>' + text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class FeedSet:
    folder: Path
    count: int
    changed: frozenset[int]
    total_bytes: int

    def path(self, n: int, generation: int = 1) -> Path:
        if generation == 2 and n in self.changed:
            return self.folder / "gen2" / f"{n}.xml"
        return self.folder / "gen1" / f"{n}.xml"


def write_feeds(
    folder: Path,
    count: int,
    changed_fraction: float = 0.3,
    seed: int = 1,
    *,
    escaped: bool = False,
) -> FeedSet:
    """Write `count` feeds (gen1) and the changed ones' second version (gen2) under `folder`."""
    template = ET.parse(FIXTURES / "feed-1.xml").getroot()
    pool = _fixture_items()
    changed = frozenset(random.Random(seed).sample(range(count), round(count * changed_fraction)))
    (folder / "gen1").mkdir(parents=True, exist_ok=True)
    (folder / "gen2").mkdir(exist_ok=True)
    total = 0
    for n in range(count):
        # Item 0 is the newest, as feeds list them; each feed starts at its own fixture post.
        items = [
            _item(pool[(n + i) % len(pool)], n, str(i), EPOCH - timedelta(hours=i))
            for i in range(ITEMS_PER_FEED)
        ]
        body = _feed_xml(template, items, f"Feed {n}", escaped=escaped)
        (folder / "gen1" / f"{n}.xml").write_bytes(body)
        total += len(body)
        if n in changed:
            fresh = [
                _item(pool[(n + 7 + k) % len(pool)], n, f"new{k}", EPOCH + timedelta(hours=2 - k))
                for k in range(2)
            ]
            body = _feed_xml(template, fresh + items[:-2], f"Feed {n}", escaped=escaped)
            (folder / "gen2" / f"{n}.xml").write_bytes(body)
    return FeedSet(folder, count, changed, total)


# --- The server (its own process) -----------------------------------------------------------


@dataclass(slots=True)
class _Doc:
    body: bytes
    etag: str
    last_modified: str
    modified_at: float


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    ok: int = 0
    not_modified: int = 0
    not_found: int = 0
    connections: int = 0
    bytes_sent: int = 0
    per_status: dict[int, int] = field(default_factory=dict)


class _Server:
    def __init__(self, folder: Path, latency: float) -> None:
        self.latency = latency
        self.generations: dict[int, dict[str, _Doc]] = {1: {}, 2: {}}
        first, second = EPOCH - timedelta(days=1), EPOCH
        for path in (folder / "gen1").glob("*.xml"):
            self.generations[1][f"/{path.name}"] = self._doc(path.read_bytes(), first)
        self.generations[2] = dict(self.generations[1])
        for path in (folder / "gen2").glob("*.xml"):
            self.generations[2][f"/{path.name}"] = self._doc(path.read_bytes(), second)
        self.docs = self.generations[1]
        self.counters = _Counters()
        self.cpu_mark = self._cpu()

    @staticmethod
    def _doc(body: bytes, modified: datetime) -> _Doc:
        etag = '"' + hashlib.sha1(body).hexdigest()[:20] + '"'
        return _Doc(
            body, etag, email.utils.format_datetime(modified, usegmt=True), modified.timestamp()
        )

    @staticmethod
    def _cpu() -> float:
        times = os.times()
        return times.user + times.system

    def command(self, line: str) -> dict[str, Any]:
        words = line.split()
        if words[:1] == ["gen"] and len(words) == 2 and int(words[1]) in self.generations:
            self.docs = self.generations[int(words[1])]
            return {"ok": True}
        if words == ["stats"]:
            c = self.counters
            cpu = self._cpu()
            answer = {
                "requests": c.requests,
                "ok": c.ok,
                "not_modified": c.not_modified,
                "not_found": c.not_found,
                "connections": c.connections,
                "bytes_sent": c.bytes_sent,
                "cpu": cpu - self.cpu_mark,
            }
            self.counters, self.cpu_mark = _Counters(), cpu
            return answer
        return {"error": f"unknown command {line!r}"}

    def _not_modified(self, doc: _Doc, headers: dict[str, str]) -> bool:
        # RFC 9110 13.1.3: If-None-Match, when present, decides; If-Modified-Since only without it.
        match = headers.get("if-none-match")
        if match is not None:
            tags = [t.strip().removeprefix("W/") for t in match.split(",")]
            return "*" in tags or doc.etag in tags
        since = headers.get("if-modified-since")
        if since:
            try:
                when = email.utils.parsedate_to_datetime(since)
            except (TypeError, ValueError):
                return False
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return doc.modified_at <= when.timestamp()
        return False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        try:
            while True:
                request_line = await reader.readline()
                if not request_line.strip():
                    break
                method, target, version = request_line.decode("latin-1").split()
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                connection = headers.get("connection", "").lower()
                keep = (
                    connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
                )
                if self.latency:
                    await asyncio.sleep(self.latency)
                writer.write(self._answer(method, target.partition("?")[0], headers, keep))
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, method: str, path: str, headers: dict[str, str], keep: bool) -> bytes:
        self.counters.requests += 1
        doc = self.docs.get(path)
        lines: list[str]
        body = b""
        if doc is None:
            self.counters.not_found += 1
            body = b"not found\n"
            lines = ["HTTP/1.1 404 Not Found", "Content-Type: text/plain"]
            lines.append(f"Content-Length: {len(body)}")
        elif self._not_modified(doc, headers):
            self.counters.not_modified += 1
            lines = ["HTTP/1.1 304 Not Modified"]
            lines += [f"ETag: {doc.etag}", f"Last-Modified: {doc.last_modified}"]
        else:
            self.counters.ok += 1
            body = doc.body
            lines = ["HTTP/1.1 200 OK", "Content-Type: application/rss+xml; charset=utf-8"]
            lines += [f"ETag: {doc.etag}", f"Last-Modified: {doc.last_modified}"]
            lines.append(f"Content-Length: {len(body)}")
        lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
        lines.append("Connection: keep-alive" if keep else "Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if method == "HEAD":
            body = b""
        self.counters.bytes_sent += len(head) + len(body)
        return head + body


async def _serve(folder: Path, latency: float, lifetime: float) -> None:
    server = _Server(folder, latency)
    tcp = await asyncio.start_server(server.handle, "127.0.0.1", 0, backlog=2048)
    port = tcp.sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "feeds": len(server.generations[1])}), flush=True)
    async with tcp:
        await serve_commands(server.command, lifetime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a folder written by write_feeds")
    serve.add_argument("folder", type=Path)
    serve.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    serve.add_argument("--lifetime", type=float, default=4 * 3600, help="exit after this long")
    build = sub.add_parser("build", help="write feeds to a folder")
    build.add_argument("folder", type=Path)
    build.add_argument("--feeds", type=int, default=1000)
    args = parser.parse_args()
    if args.command == "build":
        feeds = write_feeds(args.folder, args.feeds)
        print(f"{feeds.count} feeds, {feeds.total_bytes / feeds.count / 1000:.0f} kB each")
        return
    ignore_interrupts()
    asyncio.run(_serve(args.folder, args.latency, args.lifetime))


# --- Helper processes: the bench's handle and the helper's side -----------------------------


def ignore_interrupts() -> None:
    """A helper ignores the terminal's Ctrl-C (sent to the whole process group): the bench
    stops it by closing its stdin, after reporting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def serve_commands(command: Callable[[str], dict[str, Any]], lifetime: float) -> None:
    """A helper's side of `Child`: answer each stdin line with one JSON line (the command runs
    on the event loop's thread); return at EOF (the bench closed our stdin, or died) or after
    `lifetime` seconds, whichever comes first."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    async def apply(line: str) -> dict[str, Any]:
        return command(line)

    def read() -> None:
        while line := sys.stdin.readline():
            if line.strip():
                answer = asyncio.run_coroutine_threadsafe(apply(line), loop).result()
                print(json.dumps(answer), flush=True)
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=read, daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), lifetime)


class Child:
    """A helper process (feed server, SMTP sink) talked to in JSON lines over stdin/stdout. Its
    first line is a hello (with its port); closing its stdin stops it, so it cannot outlive the
    bench, however the bench ends."""

    def __init__(self, cmd: list[str]) -> None:
        self._cmd = cmd
        self._proc: subprocess.Popen[str] | None = None
        self.hello: dict[str, Any] = {}
        self.pid = 0

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(
            self._cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.pid = self._proc.pid
        try:
            self.hello = self._read()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _read(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{' '.join(self._cmd[1:3])} exited with {self._proc.wait()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{' '.join(self._cmd[1:3])}: {answer['error']}")
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self._read()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


class FeedServer(Child):
    """`with FeedServer(folder, latency) as server:` serves the feeds from a child process."""

    def __init__(self, folder: Path, latency: float, lifetime: float = 4 * 3600) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "serve", str(folder)]
        super().__init__([*cmd, "--latency", str(latency), "--lifetime", str(lifetime)])

    @property
    def port(self) -> int:
        return int(self.hello["port"])

    def generation(self, n: int) -> None:
        self.ask(f"gen {n}")

    def stats(self) -> dict[str, Any]:
        """Counters since the last call: requests, ok, not_modified, connections, cpu, ..."""
        return self.ask("stats")

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/{n}.xml"


if __name__ == "__main__":
    main()
