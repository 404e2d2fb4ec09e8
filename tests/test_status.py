"""`digest status` (health for supervisors) and `digest schedule` (next sends), through the CLI
on real stores made by real runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text

from digest.cli import main
from digest.config import load_config
from digest.status import FeedStatus, OutboxItem, assess
from digest.store import Store
from tests.conftest import LESSWRONG, FeedServer, Inbox, SmtpServer, _free_port, write_config

ADA, BOB = "ada@example.org", "bob@example.org"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def status_json(capsys: pytest.CaptureFixture[str], config: Path, now: str) -> tuple[int, Any]:
    code, out = cli(capsys, "status", "--json", "--config", str(config), "--now", now)
    return code, json.loads(out)


def test_status_before_anything_ran_is_unhealthy_and_creates_no_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'd.db'}",
        feeds=[("lw", str(LESSWRONG / "feed-1.xml"))],
        subscribers=[{"email": ADA}],
        folder="out",
    )
    code, data = status_json(capsys, config, "2026-06-04T12:00:00")
    assert code == 1 and data["healthy"] is False
    assert "does not exist yet" in data["problems"][0]
    assert not (tmp_path / "d.db").exists()


@pytest.fixture
def healthy_setup(tmp_path: Path, feed_server: FeedServer, smtp_server: SmtpServer) -> Path:
    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'd.db'}",
        feeds=[("lw", feed_server.serve_file("/feed.xml", LESSWRONG / "feed-1.xml"))],
        subscribers=[{"email": ADA, "schedule": "daily at 07:00"}],
        smtp_port=smtp_server.port,
    )
    assert main(["run", "--config", str(config), "--now", "2026-06-04T06:00:00"]) == 0
    assert main(["run", "--config", str(config), "--now", "2026-06-04T07:05:00"]) == 0
    return config


def test_status_after_good_runs_is_healthy_with_last_collect_and_send(
    healthy_setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = status_json(capsys, healthy_setup, "2026-06-04T07:30:00")
    assert code == 0 and data["healthy"] is True and data["problems"] == []
    assert data["last_collect_ok"] == "2026-06-04T07:05:00+00:00"
    assert data["last_send"] == "2026-06-04T07:05:00+00:00"
    assert data["failures"] == {"feeds": 0, "digests_retrying": 0, "digests_failed": 0}
    assert data["outbox"] == {"sent": 1}


def test_status_turns_unhealthy_when_collecting_stopped(
    healthy_setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = status_json(capsys, healthy_setup, "2026-06-04T09:06:00")  # 2 h 1 min later
    assert code == 1
    assert data["problems"] == ["last successful collect was 121 min ago (more than 120 min)"]
    code, out = cli(capsys, "status", "--config", str(healthy_setup), "--now", "2026-06-04T09:06")
    assert code == 1 and "UNHEALTHY" in out and "last successful collect was 121 min ago" in out


class RefusingBob(Inbox):
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address == BOB:
            return "550 5.1.1 <bob@example.org>: no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def refusing_smtp() -> Iterator[int]:
    port = _free_port()
    controller = Controller(RefusingBob(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def test_status_lists_failed_pending_and_suspended_with_their_errors(
    tmp_path: Path,
    feed_server: FeedServer,
    refusing_smtp: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    carl = "carl@example.org"
    subscribers = [{"email": e, "schedule": "daily at 07:00"} for e in (ADA, BOB, carl)]
    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'd.db'}",
        feeds=[("lw", feed_server.serve_file("/feed.xml", LESSWRONG / "feed-1.xml"))],
        subscribers=subscribers,
        smtp_port=refusing_smtp,
    )
    assert main(["run", "--config", str(config), "--now", "2026-06-04T06:00:00"]) == 0
    settings = load_config(config)
    store = Store(settings.database_url)
    try:
        with store.engine.begin() as conn:
            conn.execute(
                text("UPDATE subscribers SET suspended = :t, hard_bounces = 3 WHERE email = :e"),
                {"t": True, "e": carl},
            )
    finally:
        store.close()
    assert main(["run", "--config", str(config), "--now", "2026-06-04T07:05:00"]) == 1

    code, data = status_json(capsys, config, "2026-06-04T07:10:00")
    # A refused address is reported, not a reason to restart the service.
    assert code == 0 and data["healthy"] is True
    assert data["failures"]["digests_failed"] == 1
    (failed,) = data["undelivered"]
    assert failed["email"] == BOB and failed["state"] == "failed"
    assert "550" in failed["last_error"] and "no such user" in failed["last_error"]
    assert data["suspended"] == [{"email": carl, "hard_bounces": 3}]

    code, out = cli(capsys, "status", "--config", str(config), "--now", "2026-06-04T07:10")
    assert code == 0
    assert "failed bob@example.org 2026-06-04T07:00 (1 attempt(s)): " in out
    assert "no such user" in out
    assert "suspended subscribers:\n  carl@example.org (3 hard bounce(s))" in out


def test_status_reports_a_digest_stuck_pending_as_unhealthy(
    healthy_setup: Path,
    feed_server: FeedServer,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed_server.serve_file("/feed.xml", LESSWRONG / "feed-2.xml")  # new posts for day 2
    smtp_server.stop()
    assert main(["run", "--config", str(healthy_setup), "--now", "2026-06-05T07:05:00"]) == 1
    code, data = status_json(capsys, healthy_setup, "2026-06-05T07:10:00")
    assert code == 0, "a retry in progress is not yet a problem"
    (pending,) = data["undelivered"]
    assert pending["state"] == "pending" and pending["next_attempt_at"] > "2026-06-05T07:05"
    assert "Connect call failed" in pending["last_error"]
    assert data["failures"]["digests_retrying"] == 1
    # Collecting goes on; the outbox does not empty.
    assert main(["run", "--config", str(healthy_setup), "--now", "2026-06-05T09:30:00"]) == 1
    code, data = status_json(capsys, healthy_setup, "2026-06-05T09:31:00")
    assert code == 1
    assert data["problems"] == ["1 digest(s) undelivered for more than 120 min (oldest 146 min)"]


def test_assess_ignores_feeds_when_none_are_configured() -> None:
    now = datetime(2026, 6, 4, tzinfo=UTC)
    assert assess([], [], now, timedelta(hours=2)) == []
    never = FeedStatus("lw", "u", None, None, "HTTP 500", 3)
    assert assess([never], [], now, timedelta(hours=2)) == [
        "no feed has been collected successfully yet"
    ]
    failed_for_good = OutboxItem(ADA, "p", "failed", 1, "550", now - timedelta(days=9), None)
    assert assess([], [failed_for_good], now, timedelta(hours=2)) == []


# ---- digest schedule ---------------------------------------------------------------------


def test_schedule_prints_next_send_in_each_zone_and_utc_and_the_last_sent(
    healthy_setup: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text_ = healthy_setup.read_text()
    more = [
        ("berlin@example.org", "daily at 07:00", "Europe/Berlin"),
        ("newyork@example.org", "daily at 07:00", "America/New_York"),
        ("kolkata@example.org", "daily at 07:00", "Asia/Kolkata"),
        ("lordhowe@example.org", "daily at 07:00", "Australia/Lord_Howe"),
        ("weekly@example.org", "weekly", "Europe/Berlin"),
        ("cron@example.org", "30 6 * * 1-5", "America/New_York"),
    ]
    for email, schedule, zone in more:
        text_ += (
            f'[[subscribers]]\nemail = "{email}"\nschedule = "{schedule}"\ntimezone = "{zone}"\n'
        )
    healthy_setup.write_text(text_)
    # Thursday 2026-06-04 08:00 UTC.
    code, out = cli(
        capsys, "schedule", "--json", "--config", str(healthy_setup), "--now", "2026-06-04T08:00"
    )
    assert code == 0
    rows = {r["email"]: r for r in json.loads(out)}
    expected = {
        ADA: ("2026-06-05T07:00:00+00:00", "2026-06-05T07:00:00+00:00"),
        "berlin@example.org": ("2026-06-05T07:00:00+02:00", "2026-06-05T05:00:00+00:00"),
        "newyork@example.org": ("2026-06-04T07:00:00-04:00", "2026-06-04T11:00:00+00:00"),
        "kolkata@example.org": ("2026-06-05T07:00:00+05:30", "2026-06-05T01:30:00+00:00"),
        "lordhowe@example.org": ("2026-06-05T07:00:00+10:30", "2026-06-04T20:30:00+00:00"),
        "weekly@example.org": ("2026-06-08T07:00:00+02:00", "2026-06-08T05:00:00+00:00"),
        "cron@example.org": ("2026-06-04T06:30:00-04:00", "2026-06-04T10:30:00+00:00"),
    }
    for email, (local, utc_) in expected.items():
        assert (rows[email]["next_local"], rows[email]["next_utc"]) == (local, utc_), email
        assert rows[email]["due_now"] is False
    assert rows[ADA]["last_period"] == "2026-06-04T07:00"
    assert rows[ADA]["last_sent_utc"] == "2026-06-04T07:05:00+00:00"
    assert rows["berlin@example.org"]["last_sent_utc"] is None

    code, out = cli(capsys, "schedule", "--config", str(healthy_setup), "--now", "2026-06-04T08:00")
    assert code == 0
    assert "lordhowe@example.org  [daily at 07:00, Australia/Lord_Howe]" in out
    assert "next: 2026-06-05 07:00 +1030 (2026-06-04 20:30 UTC)" in out


def test_schedule_says_due_now_when_a_slot_passed_without_a_digest(
    healthy_setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = cli(
        capsys, "schedule", "--json", "--config", str(healthy_setup), "--now", "2026-06-07T12:00"
    )
    assert code == 0
    (row,) = json.loads(out)
    assert row["due_now"] is True and row["next_utc"] == "2026-06-07T12:00:00+00:00"
    assert main(["run", "--config", str(healthy_setup), "--now", "2026-06-07T12:00:00"]) == 0
    code, out = cli(
        capsys, "schedule", "--json", "--config", str(healthy_setup), "--now", "2026-06-07T12:01"
    )
    assert code == 0
    (row,) = json.loads(out)
    assert row["due_now"] is False and row["next_utc"] == "2026-06-08T07:00:00+00:00"
    # Nothing new since the 4th: the slot is handled without an email, so the last digest
    # *sent* is still the 4th's.
    assert row["last_period"] == "2026-06-04T07:00"


def test_status_and_schedule_read_sqlite_and_postgresql_alike(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "config.toml",
        database=database_url,
        feeds=[("lw", str(LESSWRONG / "feed-1.xml"))],
        subscribers=[{"email": ADA, "schedule": "daily at 07:00"}, {"email": BOB}],
        folder="out",
    )
    assert main(["run", "--config", str(config), "--now", "2026-06-04T06:00:00"]) == 0
    assert main(["run", "--config", str(config), "--now", "2026-06-04T07:05:00"]) == 0
    code, data = status_json(capsys, config, "2026-06-04T07:06:00")
    assert code == 0 and data["outbox"] == {"sent": 2}
    assert data["last_send"] == data["last_collect_ok"] == "2026-06-04T07:05:00+00:00"
    code, out = cli(
        capsys, "schedule", "--json", "--config", str(config), "--now", "2026-06-04T07:06"
    )
    rows = json.loads(out)
    assert [r["last_sent_utc"] for r in rows] == ["2026-06-04T07:05:00+00:00"] * 2
