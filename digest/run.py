"""One run: sync the config into the store, collect feeds, write due digests to the outbox,
deliver the outbox. Outcomes are values, so one bad feed or subscriber never stops the rest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from digest.collect import FeedOutcome, Progress, collect
from digest.config import Settings
from digest.models import DeliveryOutcome, DeliveryReport
from digest.store import FeedState, Store, SubscriberRow

if TYPE_CHECKING:
    from digest.mailer import Mailer


@dataclass(slots=True)
class RunReport:
    feeds: list[FeedOutcome] = field(default_factory=list)
    created: int = 0
    delivery: DeliveryReport = field(default_factory=DeliveryReport)

    @property
    def deliveries(self) -> list[DeliveryOutcome]:
        return self.delivery.outcomes

    @property
    def problems(self) -> list[str]:
        out = [line for f in self.feeds if (line := f.problem())]
        out += [
            f"digest for {d.email} ({d.period}): {d.error}"
            + (" (will retry)" if d.temporary else "")
            for d in self.deliveries
            if d.error
        ]
        out += [
            f"subscriber {d.email} suspended after repeated hard bounces;"
            f" `digest retry {d.email}` resumes"
            for d in self.deliveries
            if d.suspended
        ]
        if self.delivery.fatal:
            out.append(self.delivery.fatal)
        if self.delivery.deferred:
            out.append(f"{self.delivery.deferred} more digests stay pending for the next run")
        return out

    @property
    def notes(self) -> list[str]:
        """Things the operator should act on although nothing failed (a feed moved)."""
        return [f.note for f in self.feeds if f.note]

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def summary_line(self) -> str:
        fetched = sum(1 for f in self.feeds if f.fetched)
        unchanged = sum(1 for f in self.feeds if f.not_modified)
        skipped = sum(1 for f in self.feeds if f.skipped)
        sent = sum(1 for d in self.deliveries if not d.error)
        failed = sum(1 for d in self.deliveries if d.error) + sum(1 for f in self.feeds if f.error)
        new = sum(f.new for f in self.feeds)
        return (
            f"feeds fetched {fetched}/{len(self.feeds)} ({unchanged} unchanged, {skipped} skipped),"
            f" new entries {new}, digests created {self.created}, sent {sent},"
            f" failures {failed}"
        )


def open_store(settings: Settings) -> Store:
    return Store(settings.database_url)


async def run(
    settings: Settings,
    now: datetime,
    *,
    mailer_factory: Callable[[], Mailer] | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """The whole job of `digest run`. Raises LockHeld if another run holds the store."""
    own_store = store is None
    store = store or open_store(settings)
    try:
        store.migrate()
        with store.locked():
            report = RunReport()
            store.requeue_interrupted(now)
            feed_rows = _sync_feeds(settings, store)
            subscriber_rows = _sync_subscribers(settings, store, now)
            report.feeds = await collect(settings, store, feed_rows, now, progress)
            await _write_and_deliver(
                settings, store, feed_rows, subscriber_rows, now, mailer_factory, report
            )
            return report
    finally:
        if own_store:
            store.close()


async def collect_only(
    settings: Settings, now: datetime, progress: Progress | None = None
) -> RunReport:
    """The whole job of `digest collect`: collect, write and send nothing."""
    store = open_store(settings)
    try:
        store.migrate()
        return await collect_step(settings, store, now, progress=progress)
    finally:
        store.close()


# The steps below are `run()` cut where `digest serve` needs to call them on their own cadence.
# Each takes the store lock for itself (raising LockHeld), so cron and the daemon never overlap;
# the caller opens and migrates the store once.


def sync_step(settings: Settings, store: Store, now: datetime) -> None:
    """Make the store know the config's feeds and subscribers (a new subscriber's clock starts)."""
    with store.locked():
        _sync_feeds(settings, store)
        _sync_subscribers(settings, store, now)


async def collect_step(
    settings: Settings,
    store: Store,
    now: datetime,
    *,
    summaries: bool = False,
    progress: Progress | None = None,
) -> RunReport:
    """Collect; with `summaries`, also summarize what arrived (the daemon does it here, off the
    path of a digest that is due)."""
    with store.locked():
        report = RunReport()
        feed_rows = _sync_feeds(settings, store)
        _sync_subscribers(settings, store, now)
        report.feeds = await collect(settings, store, feed_rows, now, progress)
        if summaries:
            from digest.summaries import summarize_pending

            await summarize_pending(store, now, settings.collect.processes)
        return report


async def send_step(
    settings: Settings,
    store: Store,
    now: datetime,
    *,
    mailer_factory: Callable[[], Mailer] | None = None,
) -> RunReport:
    """Write the digests that are due and deliver the outbox, as `run()` does after collecting."""
    with store.locked():
        report = RunReport()
        # Under the lock nobody else can be mid-send: a 'sending' row is from a process that died.
        store.requeue_interrupted(now)
        feed_rows = _sync_feeds(settings, store)
        subscriber_rows = _sync_subscribers(settings, store, now)
        await _write_and_deliver(
            settings, store, feed_rows, subscriber_rows, now, mailer_factory, report
        )
        return report


def _sync_feeds(settings: Settings, store: Store) -> dict[str, FeedState]:
    return store.sync_feeds([(f.name, settings.feed_location(f)) for f in settings.feeds])


def _sync_subscribers(settings: Settings, store: Store, now: datetime) -> dict[str, SubscriberRow]:
    return store.sync_subscribers([s.email for s in settings.subscribers], now)


async def _write_and_deliver(
    settings: Settings,
    store: Store,
    feed_rows: dict[str, FeedState],
    subscriber_rows: dict[str, SubscriberRow],
    now: datetime,
    mailer_factory: Callable[[], Mailer] | None,
    report: RunReport,
) -> None:
    # Summarizing, planning (templates, CSS inlining, ranking) and delivery (SMTP): `digest
    # collect` never loads them.
    from digest.deliver import deliver
    from digest.plan import write_due_digests
    from digest.summaries import summarize_pending

    await summarize_pending(store, now, settings.collect.processes)

    report.created = write_due_digests(settings, store, feed_rows, subscriber_rows, now)
    report.delivery = await deliver(settings, store, now, mailer_factory)
