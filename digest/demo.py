"""`digest demo`: the whole path on bundled example feeds, SQLite and folder delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from digest.config import load_config
from digest.run import run


def examples_dir() -> Path:
    here = Path(__file__).resolve().parent
    installed = here / "examples"  # inside a wheel
    return installed if installed.is_dir() else here.parent / "tests" / "fixtures" / "lesswrong"


CONFIG = """\
# Written by `digest demo`. Copy config.example.toml for a real setup.
[digest]
database = "sqlite:///digest.db"
timezone = "UTC"
from = "Digest demo <digest@example.org>"
name = "LessWrong digest (demo)"

[delivery]
mode = "folder"
folder = "outbox"

[[feeds]]
name = "lesswrong-earlier"
title = "LessWrong (earlier snapshot)"
url = "{examples}/feed-1.xml"

[[feeds]]
name = "lesswrong"
title = "LessWrong"
url = "{examples}/feed-2.xml"

[[subscribers]]
email = "reader@example.org"
schedule = "daily at 07:00"
interests = ["AI alignment", "interpretability", "forecasting"]
explain = true
"""


def run_demo(folder: Path, now: datetime, lead: timedelta) -> Iterator[str]:
    """Collect once `lead` before `now` (the subscriber joins), then run at `now`: one daily
    slot has passed in between, so exactly one digest is due and lands in the outbox folder."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.toml"
    config.write_text(CONFIG.format(examples=examples_dir().as_posix()), encoding="utf-8")
    settings = load_config(config)
    first = asyncio.run(run(settings, now - lead))
    second = asyncio.run(run(settings, now))
    for problem in first.problems + second.problems:
        yield f"problem: {problem}"
    outbox = settings.resolve(settings.delivery.folder)
    yield f"config:   {config.resolve()}"
    yield f"database: {settings.database_url}"
    for path in sorted(outbox.glob("*.html")):
        yield f"digest:   {path.resolve()}  (open in a browser)"
    for path in sorted(outbox.glob("*.eml")):
        yield f"email:    {path.resolve()}"
