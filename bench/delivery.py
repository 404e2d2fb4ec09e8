"""Delivery throughput: N subscribers, each with a personalized digest of about 15 posts,
delivered to a local aiosmtpd sink (a separate process). Prints messages/s, CPU and peak RSS
of the delivering process, and in the same run the sink's own ceiling: a minimal client
sending same-size messages as fast as it can over the same number of connections.

Two phases are timed apart: "plan" writes every due digest to the outbox (select, rank,
render, store the finished message), "send" delivers the outbox. msg/s, cpu s and share are
the send phase's; the last column is the whole run (plan + send).

    python bench/delivery.py                 # 1,000 and 10,000 subscribers
    python bench/delivery.py --sizes 2000 --connections 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SINK = """
import asyncio, sys
from aiosmtpd.controller import Controller
class Sink:
    count = 0
    async def handle_DATA(self, server, session, envelope):
        Sink.count += 1
        return "250 OK"
c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"""

FEEDS = 40
ITEMS_PER_FEED = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_feeds(folder: Path) -> list[Path]:
    """40 feeds of 8 items each, made by re-keying the LessWrong fixture posts."""
    items = []
    for name in ("feed-1.xml", "feed-2.xml"):
        items += list(ET.parse(ROOT / "tests/fixtures/lesswrong" / name).getroot().iter("item"))
    paths = []
    for f in range(FEEDS):
        root = ET.parse(ROOT / "tests/fixtures/lesswrong/feed-1.xml").getroot()
        channel = root.find("channel")
        assert channel is not None
        for old in list(channel.iter("item")):
            channel.remove(old)
        for i in range(ITEMS_PER_FEED):
            item = ET.fromstring(ET.tostring(items[(f * 3 + i) % len(items)]))
            guid = item.find("guid")
            link = item.find("link")
            title = item.find("title")
            assert guid is not None and link is not None and title is not None
            guid.text = f"feed{f}-item{i}"
            link.text = f"https://example.org/feed{f}/post{i}"
            title.text = f"{title.text} ({f}.{i})"
            channel.append(item)
        path = folder / f"feed{f}.xml"
        path.write_bytes(ET.tostring(root))
        paths.append(path)
    return paths


def write_config(folder: Path, feeds: list[Path], subscribers: int, port: int, conns: int) -> Path:
    rng = random.Random(7)
    topics = ["interpretability", "AI control", "forecasting", "biosecurity", "policy", "training"]
    lines = [
        "[digest]",
        f'database = "sqlite:///{folder / "bench.db"}"',
        'from = "Digest <digest@example.org>"',
        "[delivery]",
        'mode = "smtp"',
        f"connections = {conns}",
        "[smtp]",
        'host = "127.0.0.1"',
        f"port = {port}",
        'security = "none"',
    ]
    for n, path in enumerate(feeds):
        lines += ["[[feeds]]", f'name = "f{n}"', f'url = "{path}"']
    for s in range(subscribers):
        chosen = rng.sample(range(len(feeds)), 2)
        interests = rng.sample(topics, 2)
        lines += [
            "[[subscribers]]",
            f'email = "reader{s}@example.org"',
            'schedule = "daily at 07:00"',
            f"feeds = {json.dumps([f'f{c}' for c in chosen])}",
            f"interests = {json.dumps(interests)}",
            "max_items = 12",
        ]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def one_size(subscribers: int, conns: int) -> dict[str, float]:
    """Runs in a fresh process so peak RSS is this size's own."""
    from digest.collect import collect
    from digest.config import load_config
    from digest.deliver import deliver
    from digest.plan import write_due_digests
    from digest.store import Store

    folder = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-c", SINK, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert sink.stdout is not None and sink.stdout.readline().startswith(b"ready")
    try:
        settings = load_config(write_config(folder, make_feeds(folder), subscribers, port, conns))
        store = Store(settings.database_url)
        store.migrate()
        t0 = datetime(2026, 6, 4, 6, 0, tzinfo=UTC)
        t1 = datetime(2026, 6, 4, 7, 5, tzinfo=UTC)
        feed_rows = store.sync_feeds([(f.name, settings.feed_location(f)) for f in settings.feeds])
        subs = store.sync_subscribers([s.email for s in settings.subscribers], t0)
        asyncio.run(collect(settings, store, feed_rows, t0))
        started = time.perf_counter()
        created = write_due_digests(settings, store, feed_rows, subs, t1)
        plan_s = time.perf_counter() - started
        cpu0 = time.process_time()
        started = time.perf_counter()
        report = asyncio.run(deliver(settings, store, t1))
        send_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu0
        assert report.sent == created == subscribers, (report.sent, created, report.fatal)
        # One real message, to size the ceiling run.
        from digest.compose import compose
        from digest.render import make_environment

        digest_row = store.due_deliveries(t1) or []
        del digest_row
        last = store.last_digest(subs[settings.subscribers[0].email].id)
        assert last is not None
        sample = compose(
            settings,
            settings.subscribers[0],
            last,
            store.digest_items(last.id),
            make_environment(),
        ).data
        store.close()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ceiling = asyncio.run(sink_ceiling(port, sample, min(subscribers, 3000), conns))
        return {
            "subscribers": subscribers,
            "plan_s": plan_s,
            "send_s": send_s,
            "msgs_per_s": subscribers / send_s,
            "cpu_s": cpu_s,
            "peak_rss_mb": peak_mb,
            "message_kb": len(sample) / 1024,
            "ceiling_msgs_per_s": ceiling,
        }
    finally:
        assert sink.stdin is not None
        sink.stdin.close()
        sink.wait(timeout=30)


async def sink_ceiling(port: int, data: bytes, count: int, conns: int) -> float:
    import aiosmtplib

    async def client(n: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for _ in range(n):
            await smtp.sendmail("digest@example.org", ["x@example.org"], data)
        await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(client(count // conns) for _ in range(conns)))
    return (count // conns * conns) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.connections)))
        return
    print(
        f"{os.cpu_count()} cores; sink: aiosmtpd in its own process; connections={args.connections}"
    )
    header = (
        f"{'subscribers':>11} {'plan s':>7} {'send s':>7} {'msg/s':>7} {'ceiling':>8} "
        f"{'share':>6} {'cpu s':>6} {'peak RSS MB':>11} {'msg KB':>7} {'plan+send msg/s':>16}"
    )
    print(header)
    for size in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(size), "--connections", str(args.connections)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        share = r["msgs_per_s"] / r["ceiling_msgs_per_s"]
        print(
            f"{r['subscribers']:>11} {r['plan_s']:>7.1f} {r['send_s']:>7.1f}"
            f" {r['msgs_per_s']:>7.0f}"
            f" {r['ceiling_msgs_per_s']:>8.0f} {share:>6.0%} {r['cpu_s']:>6.1f}"
            f" {r['peak_rss_mb']:>11.0f} {r['message_kb']:>7.1f}"
            f" {r['subscribers'] / (r['plan_s'] + r['send_s']):>16.0f}"
        )


if __name__ == "__main__":
    main()
