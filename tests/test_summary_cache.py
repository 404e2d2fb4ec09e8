"""Summaries are made once per post and content: re-fetching an unchanged feed, or sending the
post to many subscribers, never summarizes it again; an edit does."""

from __future__ import annotations

from pathlib import Path

import pytest

import digest.plan
import digest.summaries
from digest.cli import main
from tests.conftest import LESSWRONG, FeedServer, write_config


def test_each_post_is_summarized_once_until_its_content_changes(
    tmp_path: Path, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = digest.summaries.summarize

    def counting(title: str, content: str) -> str:
        calls.append(title)
        return real(title, content)

    monkeypatch.setattr(digest.summaries, "summarize", counting)
    monkeypatch.setattr(digest.plan.summarize, "summarize", counting)
    feed = LESSWRONG / "feed-1.xml"
    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'd.db'}",
        feeds=[("lw", feed_server.serve_file("/f.xml", feed))],
        subscribers=[{"email": f"r{n}@example.org"} for n in range(5)],
        folder="out",
    )
    assert main(["run", "--config", str(config), "--now", "2026-06-04T06:00:00+00:00"]) == 0
    assert len(calls) == 10
    assert main(["run", "--config", str(config), "--now", "2026-06-04T07:05:00+00:00"]) == 0
    assert len(calls) == 10, "five digests, no new summaries"
    assert len(list((tmp_path / "out").glob("*.eml"))) == 5

    edited = feed.read_bytes().replace(b"Running an air purifier on a battery", b"Running it", 1)
    assert edited != feed.read_bytes()
    feed_server.routes["/f.xml"] = edited
    assert main(["run", "--config", str(config), "--now", "2026-06-04T08:05:00+00:00"]) == 0
    assert calls[10:] == ["Running An Air Purifier on Batteries"]


def test_ranking_features_are_made_with_the_summary_and_used_by_the_planner(
    tmp_path: Path, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from digest import rank
    from digest.summaries import features_key

    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'd.db'}",
        feeds=[("lw", feed_server.serve_file("/f.xml", LESSWRONG / "feed-1.xml"))],
        subscribers=[{"email": "r@example.org"}],
        folder="out",
    )
    # Collect (and summarize) before the first slot: nothing is due yet.
    assert main(["run", "--config", str(config), "--now", "2026-06-04T06:00:00+00:00"]) == 0
    with sqlite3.connect(tmp_path / "d.db") as db:
        rows = db.execute(
            "SELECT content_hash, features_key, rank_features FROM entries"
        ).fetchall()
    assert len(rows) == 10
    assert all(key == features_key(h) and blob for h, key, blob in rows)

    # A new process knows nothing; the planner must rank from the stored features alone.
    rank.clear_post_cache()
    digest.plan._PRELOADED.clear()

    def no_recomputing(*args: object) -> None:
        raise AssertionError("a post's features were computed again")

    monkeypatch.setattr(rank, "_analyse", no_recomputing)
    assert main(["run", "--config", str(config), "--now", "2026-06-04T07:05:00+00:00"]) == 0
    assert len(list((tmp_path / "out").glob("*.eml"))) == 1
