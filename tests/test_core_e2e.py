"""The whole path, for real: feeds served over HTTP on 127.0.0.1, mail received by aiosmtpd,
state in a SQLite file or PostgreSQL. Runs go through the CLI entry point with --now."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html import unescape
from pathlib import Path

import pytest

from digest.cli import main
from digest.config import load_config
from digest.store import Store
from tests.conftest import LESSWRONG, FeedServer, SmtpServer, write_config

ADA = "ada@example.org"


def fixture_links(name: str) -> list[str]:
    root = ET.parse(LESSWRONG / name).getroot()
    return [item.findtext("link") or "" for item in root.iter("item")]


def post_links(message) -> set[str]:  # type: ignore[no-untyped-def]
    html = message.get_body(("html",)).get_content()
    return {unescape(h) for h in re.findall(r'href="([^"]+/posts/[^"]+)"', html)}


def digest_run(config: Path, when: str) -> int:
    return main(["run", "--config", str(config), "--now", when])


@pytest.fixture
def setup(tmp_path: Path, feed_server: FeedServer, smtp_server: SmtpServer, database_url: str):  # type: ignore[no-untyped-def]
    feed_url = feed_server.serve_file("/feed.xml", LESSWRONG / "feed-1.xml")
    config = write_config(
        tmp_path / "config.toml",
        database=database_url,
        feeds=[("lesswrong", feed_url)],
        subscribers=[{"email": ADA, "schedule": "daily at 07:00"}],
        smtp_port=smtp_server.port,
    )
    return config, feed_server, smtp_server


def test_daily_digest_holds_each_post_once_across_days(setup) -> None:  # type: ignore[no-untyped-def]
    config, feeds, smtp = setup
    day1, day2 = set(fixture_links("feed-1.xml")), set(fixture_links("feed-2.xml"))
    assert len(day1) == 10 and len(day2 - day1) == 9

    assert digest_run(config, "2026-06-04T06:00:00+00:00") == 0
    assert smtp.inbox.messages == [], "nothing is due before 07:00"

    assert digest_run(config, "2026-06-04T07:05:00+00:00") == 0
    first = smtp.inbox.to(ADA)
    assert len(first) == 1
    assert post_links(first[0]) == day1

    feeds.serve_file("/feed.xml", LESSWRONG / "feed-2.xml")
    assert digest_run(config, "2026-06-05T07:05:00+00:00") == 0
    second = smtp.inbox.to(ADA)[1:]
    assert len(second) == 1
    assert post_links(second[0]) == day2 - day1

    assert digest_run(config, "2026-06-05T08:05:00+00:00") == 0
    assert len(smtp.inbox.messages) == 2, "a run later the same day sends nothing"


def test_hourly_runs_in_between_change_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    config, feeds, smtp = setup
    day1, day2 = set(fixture_links("feed-1.xml")), set(fixture_links("feed-2.xml"))
    for hour in range(6, 24):
        assert digest_run(config, f"2026-06-04T{hour:02d}:05:00+00:00") == 0
    feeds.serve_file("/feed.xml", LESSWRONG / "feed-2.xml")
    for hour in range(0, 9):
        assert digest_run(config, f"2026-06-05T{hour:02d}:05:00+00:00") == 0
    messages = smtp.inbox.to(ADA)
    assert len(messages) == 2
    assert post_links(messages[0]) == day1
    assert post_links(messages[1]) == day2 - day1
    ids = [m["Message-ID"] for m in messages]
    assert len(set(ids)) == 2


def test_smtp_down_keeps_the_digest_pending_and_the_next_run_delivers_it(setup) -> None:  # type: ignore[no-untyped-def]
    config, _, smtp = setup
    assert digest_run(config, "2026-06-04T06:00:00+00:00") == 0
    smtp.stop()
    assert digest_run(config, "2026-06-04T07:05:00+00:00") == 1
    settings = load_config(config)
    store = Store(settings.database_url)
    try:
        assert store.counts() == {"pending": 1}
        pending = store.due_deliveries(
            __import__("datetime").datetime.fromisoformat("2026-06-05T00:00:00+00:00")
        )
        message_id = pending[0].message_id
        assert len(store.digest_items(pending[0].id)) == 10
    finally:
        store.close()

    smtp.start()
    assert digest_run(config, "2026-06-04T08:05:00+00:00") == 0
    delivered = smtp.inbox.to(ADA)
    assert len(delivered) == 1
    assert delivered[0]["Message-ID"] == message_id
    assert post_links(delivered[0]) == set(fixture_links("feed-1.xml"))
    assert digest_run(config, "2026-06-04T09:05:00+00:00") == 0
    assert len(smtp.inbox.messages) == 1


def test_cron_with_a_short_feed_loses_no_posts(
    tmp_path: Path, feed_server: FeedServer, smtp_server: SmtpServer
) -> None:
    """A feed showing only its newest 3 items, polled hourly, feeds a complete daily digest."""
    root = ET.parse(LESSWRONG / "feed-1.xml").getroot()
    channel = root.find("channel")
    assert channel is not None
    items = list(channel.iter("item"))
    for item in items:
        channel.remove(item)
    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'd.db'}",
        feeds=[("short", feed_server.url("/short.xml"))],
        subscribers=[{"email": ADA, "schedule": "daily"}],
        smtp_port=smtp_server.port,
    )
    shown: list[ET.Element] = []
    for hour, item in enumerate(reversed(items)):  # oldest first, one new item an hour
        shown = [item, *shown][:3]
        for old in list(channel.iter("item")):
            channel.remove(old)
        channel.extend(shown)
        feed_server.routes["/short.xml"] = ET.tostring(root)
        assert digest_run(tmp_path / "config.toml", f"2026-06-04T{8 + hour:02d}:00:00+00:00") == 0
    assert digest_run(config, "2026-06-05T07:00:00+00:00") == 0
    (message,) = smtp_server.inbox.to(ADA)
    assert post_links(message) == set(fixture_links("feed-1.xml"))


def test_invalid_config_exits_2_names_the_field_and_sends_nothing(
    tmp_path: Path,
    feed_server: FeedServer,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'd.db'}",
        feeds=[("lesswrong", feed_server.serve_file("/f.xml", LESSWRONG / "feed-1.xml"))],
        subscribers=[
            {"email": ADA, "schedule": "daily"},
            {"email": "bob@example.org", "timezone": "Mars/Olympus_Mons"},
        ],
        smtp_port=smtp_server.port,
    )
    for when in ("2026-06-04T06:00:00+00:00", "2026-06-04T07:05:00+00:00"):
        assert digest_run(config, when) == 2
    err = capsys.readouterr().err
    assert "subscribers[1] (bob@example.org) -> timezone" in err
    assert "Mars/Olympus_Mons" in err
    assert smtp_server.inbox.messages == []
    assert feed_server.hits == {}, "an invalid config does not even collect"
    assert not (tmp_path / "d.db").exists()


def test_a_second_run_while_one_holds_the_lock_exits_75_and_changes_nothing(
    setup,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    config, feeds, smtp = setup
    settings = load_config(config)
    holder = Store(settings.database_url)
    holder.migrate()
    holder.lock()
    try:
        assert digest_run(config, "2026-06-04T07:05:00+00:00") == 75
    finally:
        holder.close()
    assert "another digest run" in capsys.readouterr().err
    assert feeds.hits == {}
    assert smtp.inbox.messages == []


def test_broken_feed_is_named_the_rest_goes_on_and_exit_is_1(
    tmp_path: Path,
    feed_server: FeedServer,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed_server.routes["/broken.xml"] = b"<html><body>this is not a feed</body></html>"
    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'd.db'}",
        feeds=[
            ("good", feed_server.serve_file("/good.xml", LESSWRONG / "feed-1.xml")),
            ("broken", feed_server.url("/broken.xml")),
            ("missing", feed_server.url("/missing.xml")),
        ],
        subscribers=[{"email": ADA}],
        smtp_port=smtp_server.port,
    )
    assert digest_run(config, "2026-06-04T06:00:00+00:00") == 1
    err = capsys.readouterr().err.splitlines()
    # Each failing feed is named with its URL and why.
    assert any(line.startswith("digest: feed broken (http://127.0.0.1") for line in err)
    assert any("feed missing (" in line and "HTTP 404" in line for line in err)
    assert digest_run(config, "2026-06-04T07:05:00+00:00") == 1
    (message,) = smtp_server.inbox.to(ADA)
    assert post_links(message) == set(fixture_links("feed-1.xml"))


def test_conditional_get_is_used_on_the_next_fetch(setup) -> None:  # type: ignore[no-untyped-def]
    config, feeds, _ = setup
    assert digest_run(config, "2026-06-04T05:00:00+00:00") == 0
    assert digest_run(config, "2026-06-04T06:00:00+00:00") == 0
    assert feeds.hits["/feed.xml"] == 2
    assert feeds.conditional_hits.get("/feed.xml") == 1


def test_new_subscriber_gets_one_period_not_the_back_catalogue(
    tmp_path: Path, feed_server: FeedServer, smtp_server: SmtpServer, database_url: str
) -> None:
    feed_url = feed_server.serve_file("/feed.xml", LESSWRONG / "feed-1.xml")
    subscribers = [{"email": ADA, "schedule": "daily at 07:00"}]
    path = tmp_path / "config.toml"
    write_config(
        path,
        database=database_url,
        feeds=[("lw", feed_url)],
        subscribers=subscribers,
        smtp_port=smtp_server.port,
    )
    assert digest_run(path, "2026-06-01T06:00:00+00:00") == 0  # feed-1 collected long ago
    feed_server.serve_file("/feed.xml", LESSWRONG / "feed-2.xml")
    assert digest_run(path, "2026-06-04T12:00:00+00:00") == 0  # feed-2 collected; ada got digests
    bob = "bob@example.org"
    subscribers.append({"email": bob, "schedule": "daily at 07:00"})
    write_config(
        path,
        database=database_url,
        feeds=[("lw", feed_url)],
        subscribers=subscribers,
        smtp_port=smtp_server.port,
    )
    assert digest_run(path, "2026-06-04T13:00:00+00:00") == 0
    assert smtp_server.inbox.to(bob) == [], "a new subscriber waits for their first slot"
    assert digest_run(path, "2026-06-05T07:01:00+00:00") == 0
    (message,) = smtp_server.inbox.to(bob)
    # Only posts first seen within one period before bob's first slot (feed-2's new ones).
    assert post_links(message) == set(fixture_links("feed-2.xml")) - set(
        fixture_links("feed-1.xml")
    )


def test_no_summary_shows_css_markup_or_feed_furniture(setup) -> None:  # type: ignore[no-untyped-def]
    config, feeds, _ = setup
    assert digest_run(config, "2026-06-04T06:00:00+00:00") == 0
    feeds.serve_file("/feed.xml", LESSWRONG / "feed-2.xml")
    assert digest_run(config, "2026-06-04T07:05:00+00:00") == 0
    settings = load_config(config)
    store = Store(settings.database_url)
    try:
        with store.engine.connect() as conn:
            from sqlalchemy import text

            summaries = [r[0] for r in conn.execute(text("SELECT summary FROM entries"))]
    finally:
        store.close()
    assert len(summaries) == 19 and all(s is not None for s in summaries)
    assert sum(1 for s in summaries if s) >= 15
    for summary in summaries:
        assert "mjx-" not in summary
        assert "{" not in summary and "<" not in summary
        assert "Published on" not in summary
        assert not summary.rstrip(". ").endswith("Discuss")


def test_message_is_multipart_text_then_html_with_required_headers(setup) -> None:  # type: ignore[no-untyped-def]
    config, _, smtp = setup
    assert digest_run(config, "2026-06-04T06:00:00+00:00") == 0
    assert digest_run(config, "2026-06-04T07:05:00+00:00") == 0
    (message,) = smtp.inbox.to(ADA)
    assert message.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    for header in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "Auto-Submitted"):
        assert message[header], header
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Subject"] == "Your daily digest: 10 new posts from LessWrong"
    assert message["Message-ID"].endswith("@example.org>")
    assert not message.defects
    raw = smtp.inbox.messages[0][2]
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_folder_delivery_writes_eml_and_html(tmp_path: Path, feed_server: FeedServer) -> None:
    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'd.db'}",
        feeds=[("lw", feed_server.serve_file("/f.xml", LESSWRONG / "feed-1.xml"))],
        subscribers=[{"email": ADA}],
        folder="out",
    )
    assert digest_run(config, "2026-06-04T06:00:00+00:00") == 0
    assert digest_run(config, "2026-06-04T07:05:00+00:00") == 0
    emls = list((tmp_path / "out").glob("*.eml"))
    htmls = list((tmp_path / "out").glob("*.html"))
    assert len(emls) == 1 and len(htmls) == 1
    assert b"Message-ID:" in emls[0].read_bytes()
    assert "Running An Air Purifier on Batteries" in htmls[0].read_text()


def test_preview_writes_html_and_records_nothing(
    setup,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    config, _, smtp = setup
    assert digest_run(config, "2026-06-04T06:00:00+00:00") == 0
    out = tmp_path / "preview.html"
    assert (
        main(
            [
                "preview",
                ADA,
                "--config",
                str(config),
                "--now",
                "2026-06-04T06:30:00+00:00",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert "Running An Air Purifier on Batteries" in out.read_text()
    assert smtp.inbox.messages == []
    assert digest_run(config, "2026-06-04T07:05:00+00:00") == 0
    (message,) = smtp.inbox.to(ADA)
    assert len(post_links(message)) == 10, "the preview took nothing away from the real digest"


def test_a_period_with_nothing_new_sends_no_email_and_loses_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    config, feeds, smtp = setup
    day1, day2 = set(fixture_links("feed-1.xml")), set(fixture_links("feed-2.xml"))
    assert digest_run(config, "2026-06-04T06:00:00+00:00") == 0
    assert digest_run(config, "2026-06-04T07:05:00+00:00") == 0
    assert digest_run(config, "2026-06-05T07:05:00+00:00") == 0  # the feed did not change
    assert len(smtp.inbox.messages) == 1, "no '0 new posts' email"
    feeds.serve_file("/feed.xml", LESSWRONG / "feed-2.xml")
    assert digest_run(config, "2026-06-05T12:00:00+00:00") == 0
    assert len(smtp.inbox.messages) == 1, "the empty day's slot was handled: no off-schedule email"
    assert digest_run(config, "2026-06-06T07:05:00+00:00") == 0
    (_, second) = smtp.inbox.to(ADA)
    assert post_links(second) == day2 - day1
