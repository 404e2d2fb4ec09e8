"""Collecting: 1,000 feeds of 20 items each (~90 KB), served on 127.0.0.1 with 100 ms of
latency per request (the setting FACTS.md measured rss2email and reader in). Prints the first
run (all new: fetch, parse, summarize, store) and the second run (conditional GET, 304s), with
CPU time.

    python bench/collect.py [--feeds 1000] [--latency 0.1] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_feed(n: int, items: list[ET.Element]) -> bytes:
    root = ET.parse(ROOT / "tests/fixtures/lesswrong/feed-1.xml").getroot()
    channel = root.find("channel")
    assert channel is not None
    for old in list(channel.iter("item")):
        channel.remove(old)
    for i in range(20):
        item = ET.fromstring(ET.tostring(items[(n + i) % len(items)]))
        for tag, value in (("guid", f"f{n}-{i}"), ("link", f"https://example.org/{n}/{i}")):
            element = item.find(tag)
            assert element is not None
            element.text = value
        # ~4.5 KB of post HTML per item: a ~90 KB, 20-item feed, the size FACTS.md measured.
        description = item.find("description")
        assert description is not None and description.text
        description.text = description.text[:4500]
        channel.append(item)
    return ET.tostring(root)


def serve(feeds: dict[str, bytes], latency: float) -> tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            time.sleep(latency)
            body = feeds[self.path]
            etag = '"' + hashlib.md5(body).hexdigest() + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def main() -> None:
    from digest.collect import collect
    from digest.config import load_config
    from digest.store import Store

    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    items: list[ET.Element] = []
    for name in ("feed-1.xml", "feed-2.xml"):
        items += list(ET.parse(ROOT / "tests/fixtures/lesswrong" / name).getroot().iter("item"))
    feeds = {f"/{n}.xml": make_feed(n, items) for n in range(args.feeds)}
    server, port = serve(feeds, args.latency)
    folder = Path(tempfile.mkdtemp(prefix="digest-collect-"))
    lines = [
        "[digest]",
        f'database = "sqlite:///{folder / "c.db"}"',
        "[collect]",
        f"concurrency = {args.concurrency}",
    ]
    for n in range(args.feeds):
        lines += ["[[feeds]]", f'name = "f{n}"', f'url = "http://127.0.0.1:{port}/{n}.xml"']
    (folder / "config.toml").write_text("\n".join(lines) + "\n")
    settings = load_config(folder / "config.toml")
    store = Store(settings.database_url)
    store.migrate()
    rows = store.sync_feeds([(f.name, settings.feed_location(f)) for f in settings.feeds])
    avg_kb = sum(len(b) for b in feeds.values()) / len(feeds) / 1024
    print(
        f"{args.feeds} feeds x 20 items (~{avg_kb:.0f} KB each), {args.latency * 1000:.0f} ms"
        f" latency, concurrency {args.concurrency}"
    )
    for label in ("first run", "second run"):
        cpu, wall = time.process_time(), time.perf_counter()
        outcomes = asyncio.run(collect(settings, store, rows, datetime.now(UTC)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows = store.sync_feeds([(f.name, settings.feed_location(f)) for f in settings.feeds])
        errors = sum(1 for o in outcomes if o.error)
        new = sum(o.new for o in outcomes)
        unchanged = sum(1 for o in outcomes if o.not_modified)
        print(
            f"{label:>10}: {wall:6.1f} s wall, {cpu:6.1f} s CPU (main process), {new} new entries,"
            f" {unchanged} not modified, {errors} errors"
        )
    server.shutdown()
    store.close()


if __name__ == "__main__":
    main()
