"""`digest serve`: wake-up computation, the store lock, reloads, stopping mid-delivery, log
lines, and the daemon for real as a subprocess against local HTTP and SMTP servers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from digest.cli import main
from digest.config import Settings, load_config
from digest.logs import JsonFormatter, setup_logging
from digest.serve import STOPPING, Service
from digest.store import Store
from tests.conftest import LESSWRONG, FeedServer, FixedClock, SmtpServer, utc, write_config

ROOT = Path(__file__).resolve().parent.parent
ADA, BOB = "ada@example.org", "bob@example.org"


def states(store: Store) -> list[tuple[str, str, str, int, str | None, str]]:
    """(email, period, state, attempts, last_error, message_id) of every digest."""
    with store.engine.connect() as conn:
        return [
            (r[0], r[1], r[2], r[3], r[4], r[5])
            for r in conn.execute(
                text(
                    "SELECT s.email, d.period, d.state, d.attempts, d.last_error, d.message_id"
                    " FROM digests d JOIN subscribers s ON s.id = d.subscriber_id ORDER BY d.id"
                )
            )
        ]


@pytest.fixture
def service_for(tmp_path: Path) -> Iterator[Callable[..., tuple[Service, Store, FixedClock]]]:
    stores: list[Store] = []

    def make(
        subscribers: list[dict[str, Any]],
        now: datetime,
        *,
        folder: str | None = "out",
        smtp_port: int | None = None,
        extra: str = "",
        mailer_factory: Any = None,
    ) -> tuple[Service, Store, FixedClock]:
        config = write_config(
            tmp_path / "config.toml",
            database=f"sqlite:///{tmp_path / 'd.db'}",
            feeds=[("lw", str(LESSWRONG / "feed-1.xml"))],
            subscribers=subscribers,
            folder=folder,
            smtp_port=smtp_port,
            extra=extra,
        )
        settings = load_config(config)
        store = Store(settings.database_url)
        store.migrate()
        stores.append(store)
        clock = FixedClock(now)
        kwargs = {"mailer_factory": mailer_factory} if mailer_factory else {}
        return Service(config, settings, store, clock=clock, **kwargs), store, clock

    yield make
    for store in stores:
        store.close()


# ---- when the send check wakes ---------------------------------------------------------------


def test_next_wake_is_the_earliest_next_slot_over_all_subscribers(service_for: Any) -> None:
    service, _, _ = service_for(
        [
            {"email": ADA, "schedule": "daily at 07:00", "timezone": "Europe/Berlin"},  # 05:00Z
            {"email": BOB, "schedule": "daily at 07:00", "timezone": "Asia/Kolkata"},  # 01:30Z
        ],
        utc("2026-06-04T02:00"),
    )
    now = utc("2026-06-04T02:00")
    assert service.next_wake(now, now) == utc("2026-06-04T05:00")
    earlier = utc("2026-06-04T01:00")
    assert service.next_wake(earlier, now) == utc("2026-06-04T01:30"), (
        "a slot that passed while the check ran is still ahead of where the check looked"
    )


def test_a_digest_the_channel_refused_wakes_the_check_after_retry_seconds_not_at_once(
    service_for: Any, tmp_path: Path
) -> None:
    (tmp_path / "blocked").write_text("a file where the outbox folder should be")
    service, store, clock = service_for(
        [{"email": ADA, "schedule": "daily"}],
        utc("2026-06-04T12:00"),
        folder="blocked",
        extra="[serve]\nretry_seconds = 90",
    )
    store.sync_subscribers([ADA], utc("2026-06-01T00:00"))
    asyncio.run(service.collect_once())  # posts to send (a digest with none sends nothing)
    wake = asyncio.run(service.send_check())
    assert [(s[0], s[2]) for s in states(store)] == [(ADA, "pending")]
    assert wake == clock.now + timedelta(seconds=90)


def test_a_held_store_lock_skips_the_check_and_retries_soon(
    service_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    service, store, clock = service_for(
        [{"email": ADA, "schedule": "daily"}], utc("2026-06-04T12:00")
    )
    store.sync_subscribers([ADA], utc("2026-06-01T00:00"))
    asyncio.run(service.collect_once())  # posts to send (a digest with none sends nothing)
    holder = Store(store.url)
    holder.lock()
    try:
        with caplog.at_level(logging.WARNING, logger="digest.serve"):
            wake = asyncio.run(service.send_check())
    finally:
        holder.close()
    assert states(store) == [], "nothing written while another process held the lock"
    assert wake == clock.now + timedelta(seconds=60)
    assert any(
        "send skipped" in r.getMessage() and "another digest run" in r.getMessage()
        for r in caplog.records
    )
    clock.now += timedelta(seconds=60)
    asyncio.run(service.send_check())
    assert [(s[0], s[2]) for s in states(store)] == [(ADA, "sent")], "the next wake-up sends it"


# ---- stopping --------------------------------------------------------------------------------


class BlockingMailer:
    """Records sends; the first one waits until `release` is set (an SMTP DATA in flight)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.sent: list[tuple[str, bytes]] = []

    async def __aenter__(self) -> BlockingMailer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(self, data: bytes, sender: str, recipient: str, *, name: str) -> None:
        if not self.started.is_set():
            self.started.set()
            await self.release.wait()
        self.sent.append((recipient, data))


def _message_id(data: bytes) -> str:
    match = re.search(rb"^Message-ID: (<[^>]+>)", data, re.MULTILINE | re.IGNORECASE)
    assert match
    return match.group(1).decode()


def test_stop_lets_the_message_in_flight_finish_and_starts_no_other(
    service_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One connection, so exactly one message is in flight when the stop comes.
    monkeypatch.setenv("DIGEST_DELIVERY__CONNECTIONS", "1")
    mailer = BlockingMailer()
    service, store, _ = service_for(
        [{"email": ADA, "schedule": "daily"}, {"email": BOB, "schedule": "daily"}],
        utc("2026-06-04T12:00"),
        folder=None,
        mailer_factory=lambda settings: mailer,
    )
    store.sync_subscribers([ADA, BOB], utc("2026-06-01T00:00"))

    async def scenario() -> int:
        serving = asyncio.create_task(service.serve())
        await asyncio.wait_for(mailer.started.wait(), 60)
        service.request_stop("SIGTERM")
        mailer.release.set()
        return await asyncio.wait_for(serving, 60)

    assert asyncio.run(scenario()) == 0
    rows = {s[0]: s for s in states(store)}
    assert [r for r, _ in mailer.sent] == [ADA]
    assert rows[ADA][2] == "sent"
    # BOB's digest was never handed over: pending, to go out at the next start.
    assert rows[BOB][2] == "pending" and rows[BOB][4] == STOPPING
    assert "sending" not in {s[2] for s in rows.values()}


def test_a_send_cut_off_after_the_grace_goes_out_once_more_with_the_same_message_id(
    service_for: Any,
) -> None:
    mailer = BlockingMailer()  # never released: a server that hangs in DATA
    service, store, _ = service_for(
        [{"email": ADA, "schedule": "daily"}],
        utc("2026-06-04T12:00"),
        folder=None,
        extra="[serve]\nshutdown_grace_seconds = 0",
        mailer_factory=lambda settings: mailer,
    )
    store.sync_subscribers([ADA], utc("2026-06-01T00:00"))

    async def scenario() -> int:
        serving = asyncio.create_task(service.serve())
        await asyncio.wait_for(mailer.started.wait(), 60)
        service.request_stop("SIGTERM")
        return await asyncio.wait_for(serving, 60)

    assert asyncio.run(scenario()) == 0
    ((_, _, state, _, _, message_id),) = states(store)
    assert state == "sending", "we cannot know whether the server took it"

    again = BlockingMailer()
    again.started.set()  # this one does not block
    restarted, store2, _ = service_for(
        [{"email": ADA, "schedule": "daily"}],
        utc("2026-06-04T12:05"),
        folder=None,
        mailer_factory=lambda settings: again,
    )
    assert asyncio.run(restarted.send_once()) is not None
    assert [(r, _message_id(d)) for r, d in again.sent] == [(ADA, message_id)]
    assert [s[2] for s in states(store2)] == ["sent"]


# ---- reloading -------------------------------------------------------------------------------


def test_reload_takes_a_valid_config_and_rejects_an_invalid_one_keeping_the_old(
    service_for: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service, _, _ = service_for([{"email": ADA}], utc("2026-06-04T12:00"))
    config = tmp_path / "config.toml"
    original = config.read_text()
    config.write_text(
        original.replace(
            'email = "ada@example.org"', 'email = "ada@example.org"\ntimezone = "Mars/Base"'
        )
    )
    with caplog.at_level(logging.ERROR, logger="digest.serve"):
        assert service.reload("SIGHUP") is False
    assert [s.email for s in service.settings.subscribers] == [ADA]
    assert service.settings.subscribers[0].timezone is None
    assert any(
        "subscribers[0] (ada@example.org) -> timezone" in r.getMessage() for r in caplog.records
    )

    config.write_text(original.replace("d.db", "elsewhere.db"))
    assert service.reload("SIGHUP") is False, "switching databases needs a restart"
    assert service.settings.database_url.endswith("d.db")

    config.write_text(original + '[[subscribers]]\nemail = "bob@example.org"\n')
    assert service.reload("SIGHUP") is True
    assert [s.email for s in service.settings.subscribers] == [ADA, BOB]


def test_a_changed_config_file_is_reloaded_without_a_signal(
    service_for: Any, tmp_path: Path
) -> None:
    service, _, _ = service_for(
        [{"email": ADA}], utc("2026-06-04T12:00"), extra="[serve]\ntick_seconds = 0.05"
    )
    config = tmp_path / "config.toml"

    async def scenario() -> int:
        serving = asyncio.create_task(service.serve())
        await asyncio.sleep(0)
        config.write_text(config.read_text() + '[[subscribers]]\nemail = "bob@example.org"\n')
        deadline = time.monotonic() + 30
        while len(service.settings.subscribers) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        service.request_stop("SIGTERM")
        return await asyncio.wait_for(serving, 60)

    assert asyncio.run(scenario()) == 0
    assert [s.email for s in service.settings.subscribers] == [ADA, BOB]


# ---- log lines ---------------------------------------------------------------------------------


def test_json_log_lines_are_one_object_each_with_the_structured_fields() -> None:
    record = logging.LogRecord(
        "digest.serve", logging.INFO, __file__, 1, "send done: %s", ("x",), None
    )
    record.fields = {"event": "send", "digests_sent": 3, "msg": "not the message"}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"] == "send done: x" and data["level"] == "info"
    assert data["event"] == "send" and data["digests_sent"] == 3
    assert data["field_msg"] == "not the message", "a field never replaces the envelope"


def test_readable_format_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    import sys as _sys

    setup_logging("text", logging.INFO, _sys.stderr)
    logging.getLogger("digest.serve").info(
        "collect done: x", extra={"fields": {"event": "collect"}}
    )
    err = capsys.readouterr().err.strip()
    assert err.endswith("INFO digest.serve: collect done: x")
    assert "{" not in err


def test_run_with_json_logs_ends_with_one_summary_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'd.db'}",
        feeds=[("lw", str(LESSWRONG / "feed-1.xml"))],
        subscribers=[{"email": ADA}],
        folder="out",
    )
    assert (
        main(["run", "-c", str(config), "--now", "2026-06-04T06:00", "--log-format", "json"]) == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["event"] for e in lines if e.get("summary")] == ["run"]
    assert lines[-1]["msg"].startswith("run done: feeds fetched 1/1 (0 unchanged, 0 skipped),")
    assert "new entries 10," in lines[-1]["msg"]


# ---- the daemon, for real ------------------------------------------------------------------------


def post_links(message: Any) -> set[str]:
    html = message.get_body(("html",)).get_content()
    return {unescape(h) for h in re.findall(r'href="([^"]+/posts/[^"]+)"', html)}


def fixture_links(name: str) -> set[str]:
    import xml.etree.ElementTree as ET

    root = ET.parse(LESSWRONG / name).getroot()
    return {item.findtext("link") or "" for item in root.iter("item")}


def wait_until(
    what: str, condition: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Poll for an event with a generous deadline; never asserts on how long it took."""
    deadline = time.monotonic() + 120
    while not condition():
        if proc.poll() is not None:
            pytest.fail(
                f"digest serve exited ({proc.returncode}) waiting for {what}:\n{log.read_text()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}:\n{log.read_text()}")
        time.sleep(0.2)


def log_events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_serve_delivers_reloads_on_sighup_and_stops_on_sigterm(
    tmp_path: Path, feed_server: FeedServer, smtp_server: SmtpServer
) -> None:
    """The issue's scenario: a fast collect interval, a per-minute schedule, a catch-up digest
    after downtime, an invalid reload refused, a subscriber and a feed added by SIGHUP, exit 0."""
    feed_url = feed_server.serve_file("/feed.xml", LESSWRONG / "feed-1.xml")
    config = tmp_path / "config.toml"
    database = f"sqlite:///{tmp_path / 'd.db'}"

    def write(subscribers: list[dict[str, Any]], feeds: list[tuple[str, str]]) -> None:
        write_config(
            config,
            database=database,
            feeds=feeds,
            subscribers=subscribers,
            smtp_port=smtp_server.port,
        )
        body = config.read_text().replace(
            "[collect]\ntimeout = 10", "[collect]\ntimeout = 10\ninterval_minutes = 0.05"
        )
        # Reloads come from SIGHUP alone here, so the test sees that path.
        config.write_text(body + "[serve]\nwatch_config = false\n")

    ada = {"email": ADA, "schedule": "* * * * *"}
    write([ada], [("lw", feed_url)])
    # A day ago the last run saw feed-1; then the machine was off for ~1,440 of ada's slots.
    assert (
        main(
            [
                "run",
                "--config",
                str(config),
                "--now",
                (datetime.now(UTC) - timedelta(days=1)).isoformat(),
            ]
        )
        == 0
    )
    feed_server.serve_file("/feed.xml", LESSWRONG / "feed-2.xml")

    log = tmp_path / "serve.log"
    started = datetime.now(UTC).replace(second=0, microsecond=0)
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "digest",
                "serve",
                "--config",
                str(config),
                "--log-format",
                "json",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        wait_until("ada's catch-up digest", lambda: len(smtp_server.inbox.to(ADA)) >= 1, proc, log)
        first = smtp_server.inbox.to(ADA)[0]
        assert post_links(first) == fixture_links("feed-2.xml") - fixture_links("feed-1.xml")

        write([ada, {"email": BOB, "timezone": "Mars/Base"}], [("lw", feed_url)])
        proc.send_signal(signal.SIGHUP)
        wait_until(
            "the invalid config to be refused",
            lambda: any(e.get("event") == "reload" and e.get("rejected") for e in log_events(log)),
            proc,
            log,
        )

        extra_url = feed_server.serve_file("/extra.xml", LESSWRONG / "feed-1.xml")
        write(
            [ada, {"email": BOB, "schedule": "* * * * *"}], [("lw", feed_url), ("extra", extra_url)]
        )
        proc.send_signal(signal.SIGHUP)
        wait_until("bob's first digest", lambda: len(smtp_server.inbox.to(BOB)) >= 1, proc, log)
        assert feed_server.hits.get("/extra.xml", 0) >= 1, (
            "the feed added by the reload is collected"
        )

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    events = log_events(log)  # every line is JSON, or this raises
    assert any(e.get("event") == "reload" and e.get("rejected") is False for e in events)
    assert any(e.get("event") == "stopped" for e in events)
    summaries = [e for e in events if e.get("summary")]
    assert {e["event"] for e in summaries} == {"collect", "send"}
    for e in summaries:
        assert {"feeds_fetched", "new_entries", "digests_sent", "failures"} <= set(e)
    assert sum(e["digests_sent"] for e in summaries) == len(smtp_server.inbox.messages)

    settings: Settings = load_config(config)
    store = Store(settings.database_url)
    try:
        rows = states(store)
    finally:
        store.close()
    ada_periods = [p for email, p, *_ in rows if email == ADA]
    # Downtime gave one digest, for the latest slot: none for the slots missed while off.
    assert min(ada_periods) >= started.strftime("%Y-%m-%dT%H:%M")
    ids = [m["Message-ID"] for m in smtp_server.inbox.parsed()]
    assert len(ids) == len(set(ids)) == len([r for r in rows if r[2] == "sent"])
