"""`digest collect`: collects and sends nothing; silent under cron unless a feed failed; a
progress bar only on a terminal. And an older database gains the collector's new columns."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from digest.cli import main
from digest.store import SCHEMA_VERSION, Store
from tests.conftest import LESSWRONG, FeedServer, write_config


def config_for(tmp_path: Path, feeds: list[tuple[str, str]]) -> Path:
    return write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'd.db'}",
        feeds=feeds,
        subscribers=[{"email": "ada@example.org"}],
        folder="out",
    )


def test_collect_stores_posts_and_sends_nothing_silently(
    tmp_path: Path, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(
        tmp_path, [("lw", feed_server.serve_file("/f.xml", LESSWRONG / "feed-1.xml"))]
    )
    assert main(["collect", "-c", str(config), "--now", "2026-06-04T06:00:00+00:00"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "", "cron mails any output: none on success"
    with sqlite3.connect(tmp_path / "d.db") as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (10,)
        assert db.execute("SELECT count(*) FROM digests").fetchone() == (0,)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    # The digest that is due goes out with the next `digest run`, with what collect stored.
    assert main(["run", "-c", str(config), "--now", "2026-06-04T07:05:00+00:00"]) == 0
    assert len(list((tmp_path / "out").glob("*.eml"))) == 1


def test_collect_names_a_failing_feed_and_exits_1(
    tmp_path: Path, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    good = feed_server.serve_file("/f.xml", LESSWRONG / "feed-1.xml")
    config = config_for(tmp_path, [("lw", good), ("dead", feed_server.url("/dead.xml"))])
    assert main(["collect", "-c", str(config), "--now", "2026-06-04T06:00:00+00:00"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"digest: feed dead ({feed_server.url('/dead.xml')}): HTTP 404")


def test_the_command_exits_with_mains_code_and_its_output_flushed(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    # `python -m digest` (and the `digest` script) end with a fast exit: the code and every
    # line written before it must still come out.
    import subprocess

    good = feed_server.serve_file("/f.xml", LESSWRONG / "feed-1.xml")
    dead = feed_server.url("/dead.xml")
    config = config_for(tmp_path, [("lw", good), ("dead", dead)])
    done = subprocess.run(
        [sys.executable, "-m", "digest", "collect", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"digest: feed dead ({dead}): HTTP 404")
    config = config_for(tmp_path, [("lw", good)])
    done = subprocess.run(
        [sys.executable, "-m", "digest", "collect", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_a_progress_bar_is_drawn_on_a_terminal_only(
    tmp_path: Path,
    feed_server: FeedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feeds = [
        (f"f{n}", feed_server.serve_file(f"/{n}.xml", LESSWRONG / "feed-1.xml")) for n in range(25)
    ]
    config = config_for(tmp_path, feeds)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["collect", "-c", str(config), "--now", "2026-06-04T06:00:00+00:00"]) == 0
    err = capsys.readouterr().err
    assert "collecting" in err and "/25 [" in err


def test_an_older_database_gains_the_new_feed_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE feeds (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL UNIQUE,
                url TEXT NOT NULL, title TEXT NOT NULL, etag TEXT, last_modified TEXT,
                last_fetch_at DATETIME, last_ok_at DATETIME, last_error TEXT,
                failures INTEGER NOT NULL);
            INSERT INTO feeds (name, url, title, failures) VALUES ('lw', 'http://x/f', 'LW', 0);
            """
        )
    store = Store(f"sqlite:///{path}")
    try:
        store.migrate()
        state = store.sync_feeds([("lw", "http://x/f")])["lw"]
    finally:
        store.close()
    assert state.title == "LW" and state.gone_at is None and state.fetch_url is None
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(feeds)")}
        added = {"fetch_url", "gone_at", "next_fetch_at", "failing_since", "body_hash"}
        assert added | {"item_hashes"} <= columns
        assert db.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)


def test_collect_loads_neither_the_parser_nor_the_postgresql_dialect_itself() -> None:
    # What `digest collect` imports is its start-up time, paid by every cron run: feedparser
    # is imported by the parse workers (or, for a handful of feeds, on the first parse), the
    # PostgreSQL dialect only for a PostgreSQL database.
    import subprocess

    probe = (
        "import sys, digest.cli, digest.progress, digest.run;"
        "print([m for m in ('feedparser', 'sqlalchemy.dialects.postgresql') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"
