"""kill -9 at random moments of a run, then a normal run: every subscriber gets every post,
and a duplicate (same Message-ID) happens at most once per kill."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import LESSWRONG, Inbox, _free_port, write_config
from tests.test_core_e2e import fixture_links, post_links

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = [f"reader{n:02d}@example.org" for n in range(40)]
KILLS = 12
MAX_ATTEMPTS = 60


class SlowInbox(Inbox):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.05)  # slow enough that kills land mid-send
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_smtp() -> Iterator[tuple[SlowInbox, int]]:
    inbox = SlowInbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def digest_cmd(config: Path, when: str) -> list[str]:
    return [sys.executable, "-m", "digest", "run", "--config", str(config), "--now", when]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_random_sigkills_then_a_clean_run_deliver_everything_once(
    tmp_path: Path, slow_smtp: tuple[SlowInbox, int]
) -> None:
    inbox, port = slow_smtp
    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'd.db'}",
        feeds=[("lesswrong", str(LESSWRONG / "feed-1.xml"))],
        subscribers=[{"email": p, "schedule": "daily at 07:00"} for p in PEOPLE],
        smtp_port=port,
    )
    config.write_text(config.read_text().replace('mode = "smtp"', 'mode = "smtp"\nconnections = 1'))
    subprocess.run(digest_cmd(config, "2026-06-04T06:00:00+00:00"), env=env(), check=True)

    rng = random.Random(20261121)
    killed = attempts = 0
    # A run that finishes before its kill is just a run; keep going until enough were killed.
    while killed < KILLS and attempts < MAX_ATTEMPTS:
        attempts += 1
        proc = subprocess.Popen(
            digest_cmd(config, "2026-06-04T07:05:00+00:00"),
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.2, 1.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=30)
    assert killed >= 10, f"only {killed} of {attempts} runs were still going when killed"

    final = subprocess.run(
        digest_cmd(config, "2026-06-04T07:06:00+00:00"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert final.returncode == 0, final.stderr

    messages = inbox.parsed()
    per_person = Counter(m["To"] for m in messages)
    assert set(per_person) == set(PEOPLE), "every subscriber got their digest"
    duplicates = sum(n - 1 for n in per_person.values())
    assert duplicates <= killed, "at most one duplicate per kill"
    expected = set(fixture_links("feed-1.xml"))
    for person in PEOPLE:
        copies = [m for m in messages if m["To"] == person]
        assert len({m["Message-ID"] for m in copies}) == 1, "a resend is the same message"
        assert all(post_links(m) == expected for m in copies), "never sent half-built"

    # And nothing more is owed: a later run the same day sends nothing.
    before = len(inbox.messages)
    subprocess.run(digest_cmd(config, "2026-06-04T09:00:00+00:00"), env=env(), check=True)
    assert len(inbox.messages) == before
