"""A progress bar for long collections, on a terminal only: under cron (no terminal) a run is
silent unless something failed. The only module that imports tqdm."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from digest.collect import FeedOutcome, Progress

# Fewer feeds than this finish before a bar is worth drawing.
MIN_FEEDS = 20


@contextlib.contextmanager
def feed_progress(total: int, *, enabled: bool = True) -> Iterator[Progress | None]:
    """A callback that advances a bar per collected feed, or None when no bar is shown."""
    if not enabled or total < MIN_FEEDS or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm  # only when a bar is drawn: under cron it is never needed

    with tqdm(total=total, unit="feed", desc="collecting", file=sys.stderr, leave=False) as bar:
        failed = 0

        def advance(outcome: FeedOutcome) -> None:
            nonlocal failed
            failed += outcome.error is not None
            bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)

        yield advance
