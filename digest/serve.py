"""`digest serve`: the same steps as `digest run`, on their own cadence, in one long process.

Two APScheduler jobs on an AsyncIOScheduler:

- **collect** on an interval (`collect.interval_minutes`, started up to `collect.jitter` of an
  interval late);
- **send check**, a one-off job re-armed after every check for the next moment anything can be
  due: the earliest next slot over all subscribers' schedules, or the earliest retry in the
  outbox. It sleeps until then instead of polling.

Trigger firings decide only *when to look*. Whether a digest is due, and that it is written
once, comes from `digest.plan` and the outbox's unique (subscriber, slot) key, so an extra
wake-up (APScheduler firing a 01:30 job twice on a fall-back day, a clock jump, a reload)
never sends twice, and a late one (a suspended laptop, a held lock) sends the one digest the
subscriber is owed, not one per missed period.

Every step takes the store's run lock as `digest run` does; a step that finds it held logs that
and tries again at its next wake-up. Steps never overlap inside the process either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from digest.config import Settings, load_config
from digest.deliver import make_mailer
from digest.errors import ConfigError, DigestError, FatalDeliveryError, LockHeld
from digest.mailer import Mailer
from digest.run import RunReport, collect_step, send_step
from digest.schedule import next_instant, parse_schedule
from digest.store import Store

log = logging.getLogger("digest.serve")

Clock = Callable[[], datetime]
MailerFactory = Callable[[Settings], Mailer]
Step = Callable[[Settings, datetime], Coroutine[Any, Any, RunReport]]

# Below this, a difference between wall-clock and monotonic time is scheduling noise; above it
# the machine was suspended or its clock was set, and timers armed before are wrong.
_CLOCK_JUMP = 10.0
STOPPING = "digest serve is stopping; this digest goes out at the next start"


def utcnow() -> datetime:
    return datetime.now(UTC)


class _StopGuard:
    """Wraps the real mailer so that once a stop is requested no new message is started.

    The message being sent when the stop comes finishes; the next one fails with a channel
    error, which `deliver` records as 'try again now' and which stops its loop, so every digest
    not sent stays pending with its Message-ID for the next start."""

    def __init__(self, make: Callable[[], Mailer], stopping: Callable[[], bool]) -> None:
        self._make = make
        self._stopping = stopping
        self._inner: Mailer | None = None

    async def __aenter__(self) -> _StopGuard:
        # Built here, inside deliver's error handling, so a refused channel is its outcome.
        self._inner = self._make()
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._inner is not None:
            await self._inner.__aexit__(exc_type, exc, tb)

    async def send(self, data: bytes, sender: str, recipient: str, *, name: str) -> None:
        if self._stopping() or self._inner is None:
            raise FatalDeliveryError(STOPPING)
        await self._inner.send(data, sender, recipient, name=name)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Service:
    """The daemon's state. `collect_once`, `send_once` and `next_wake` are usable without a
    scheduler, with any clock: tests drive them through DST days and clock jumps."""

    def __init__(
        self,
        config_path: Path,
        settings: Settings,
        store: Store,
        *,
        clock: Clock = utcnow,
        mailer_factory: MailerFactory = make_mailer,
    ) -> None:
        self.config_path = config_path
        self.settings = settings
        self.store = store
        self.clock = clock
        self._mailer_factory = mailer_factory
        self._busy = asyncio.Lock()
        self._stop = asyncio.Event()
        self._stopping = False
        self._inflight: tuple[str, asyncio.Task[RunReport]] | None = None
        self._jobs: set[asyncio.Task[Any]] = set()
        self._scheduler: AsyncIOScheduler | None = None
        self._config_signature = _signature(config_path)
        self._sending_started = False

    # ---- the steps -------------------------------------------------------------------------

    async def collect_once(self) -> RunReport | None:
        """Collect now. None if the step did not complete (lock held, error, stopping)."""
        return await self._step(
            "collect", lambda s, now: collect_step(s, self.store, now, summaries=True)
        )

    async def send_once(self) -> RunReport | None:
        """Write the digests due now and deliver the outbox. None if the step did not complete."""

        def mailer_for(settings: Settings) -> Mailer:
            return _StopGuard(lambda: self._mailer_factory(settings), lambda: self._stopping)

        return await self._step(
            "send",
            lambda s, now: send_step(s, self.store, now, mailer_factory=lambda: mailer_for(s)),
        )

    def next_wake(self, checked_at: datetime, now: datetime) -> datetime | None:
        """When the send check should next run, after a check that started at `checked_at`
        and ended at `now`.

        Slots are looked up after `checked_at`, not `now`: a slot that passed while the check
        ran is still ahead of the last look, and its wake-up comes at once."""
        settings = self.settings
        # Thousands of subscribers share a handful of (schedule, zone) pairs: look each up once.
        pairs = {(s.schedule, str(settings.subscriber_timezone(s))) for s in settings.subscribers}
        slot = next_instant(
            ((parse_schedule(spec), ZoneInfo(zone)) for spec, zone in sorted(pairs)), checked_at
        )
        retry = self.store.next_pending_attempt([s.email for s in settings.subscribers])
        if retry is not None and retry <= now:
            # Left pending although due: the server was unreachable or the channel refused.
            retry = now + timedelta(seconds=settings.serve.retry_seconds)
        return min((t for t in (slot, retry) if t is not None), default=None)

    async def _step(self, kind: str, body: Step) -> RunReport | None:
        async with self._busy:
            if self._stopping:
                return None
            settings, now = self.settings, self.clock()
            task = asyncio.create_task(body(settings, now))
            self._inflight = (kind, task)
            try:
                report = await task
            except asyncio.CancelledError:
                if task.cancelled() and self._stopping:
                    log.warning("%s abandoned: stopping", kind, extra=_fields(kind, abandoned=True))
                    return None
                raise
            except LockHeld as exc:
                log.warning(
                    "%s skipped: %s; trying again at the next wake-up",
                    kind,
                    exc,
                    extra=_fields(kind, skipped="locked"),
                )
                return None
            except DigestError as exc:
                log.error("%s failed: %s", kind, exc, extra=_fields(kind, error=str(exc)))
                return None
            except Exception:
                # A bug in one step must not end the daemon: the next wake-up may well work,
                # and the traceback in the log is what a maintainer needs.
                log.exception("%s failed unexpectedly", kind, extra=_fields(kind, error="bug"))
                return None
            finally:
                self._inflight = None
            _log_report(kind, report)
            return report

    # ---- the jobs APScheduler runs ----------------------------------------------------------

    async def _collect_job(self) -> None:
        self._track()
        await self.collect_once()
        if not self._sending_started:
            # The first send check follows the first collect, so digests owed after downtime
            # go out at once, coalesced, and carry what was just collected.
            self._sending_started = True
            self._arm_send(self.clock())

    async def send_check(self) -> datetime | None:
        """One send check; returns when the next one is armed for."""
        self._track()
        checked_at = self.clock()
        report = await self.send_once()
        if self._stopping:
            return None
        now = self.clock()
        if report is None:
            wake: datetime | None = now + timedelta(seconds=self.settings.serve.retry_seconds)
        else:
            wake = self.next_wake(checked_at, now)
        self._arm_send(wake)
        return wake

    def _track(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)

    def _arm_send(self, when: datetime | None) -> None:
        scheduler = self._scheduler
        if scheduler is None or self._stopping:
            return
        if when is None:
            with contextlib.suppress(Exception):
                scheduler.remove_job("send")
            log.info("no schedule fires again: no send check armed")
            return
        # One send-check job at a time: arming replaces whatever was armed. Two instances may
        # overlap for a moment (a wake-up due while the previous check is finishing); the step
        # lock runs them one after the other, and the second finds nothing new to do.
        scheduler.add_job(
            self.send_check,
            DateTrigger(run_date=when, timezone=UTC),
            id="send",
            name="send check",
            replace_existing=True,
            coalesce=True,
            max_instances=2,
            misfire_grace_time=None,
        )
        log.debug("next send check at %s", when.isoformat(timespec="seconds"))

    def _collect_trigger(self) -> IntervalTrigger:
        seconds = self.settings.collect.interval_minutes * 60
        return IntervalTrigger(
            seconds=seconds, jitter=seconds * self.settings.collect.jitter, timezone=UTC
        )

    # ---- reloading --------------------------------------------------------------------------

    def reload(self, reason: str) -> bool:
        """Read the config again; keep the old one if the new one is invalid."""
        self._config_signature = _signature(self.config_path)
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config reload rejected: %s", problem, extra=_fields("reload"))
            log.error(
                "config reload (%s) rejected; keeping the config in use",
                reason,
                extra=_fields("reload", rejected=True),
            )
            return False
        old = self.settings
        if new.database_url != old.database_url:
            log.error(
                "config reload (%s) rejected: digest.database changed; restart digest serve"
                " to move to another database",
                reason,
                extra=_fields("reload", rejected=True),
            )
            return False
        self.settings = new
        log.info(
            "config reloaded (%s): %d feeds, %d subscribers",
            reason,
            len(new.feeds),
            len(new.subscribers),
            extra=_fields(
                "reload", feeds=len(new.feeds), subscribers=len(new.subscribers), rejected=False
            ),
        )
        scheduler = self._scheduler
        if scheduler is None or self._stopping:
            return True
        if (old.collect.interval_minutes, old.collect.jitter) != (
            new.collect.interval_minutes,
            new.collect.jitter,
        ):
            scheduler.reschedule_job("collect", trigger=self._collect_trigger())
        if {(f.name, old.feed_location(f)) for f in old.feeds} != {
            (f.name, new.feed_location(f)) for f in new.feeds
        }:
            scheduler.modify_job("collect", next_run_time=self.clock())
        # A check now records new subscribers (their schedules start from this moment) and
        # re-arms the next wake-up from the new schedules.
        if self._sending_started:
            self._arm_send(self.clock())
        scheduler.wakeup()
        return True

    # ---- the loop ---------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        if self._stopping:
            log.warning("%s again: abandoning the step in flight", reason)
            if self._inflight is not None:
                self._inflight[1].cancel()
            return
        log.info("%s: stopping", reason, extra=_fields("stop"))
        self._stopping = True
        self._stop.set()

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        handlers = {
            signal.SIGTERM: lambda: self.request_stop("SIGTERM"),
            signal.SIGINT: lambda: self.request_stop("SIGINT"),
            signal.SIGHUP: lambda: self.reload("SIGHUP"),
        }
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler)
        scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler = scheduler
        scheduler.add_job(
            self._collect_job,
            self._collect_trigger(),
            id="collect",
            name="collect",
            next_run_time=self.clock(),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        scheduler.start()
        watcher = asyncio.create_task(self._watch())
        settings = self.settings
        log.info(
            "digest serve started (pid %d): %d feeds every %g min, %d subscribers",
            os.getpid(),
            len(settings.feeds),
            settings.collect.interval_minutes,
            len(settings.subscribers),
            extra=_fields("start", pid=os.getpid()),
        )
        try:
            await self._stop.wait()
        finally:
            scheduler.pause()  # no new steps; the one in flight is handled below
            await self._finish_inflight()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            scheduler.shutdown(wait=False)
            self._scheduler = None
            for signum in handlers:
                loop.remove_signal_handler(signum)
        log.info("stopped", extra=_fields("stopped"))
        return 0

    async def _finish_inflight(self) -> None:
        inflight = self._inflight
        if inflight is not None:
            kind, task = inflight
            if kind == "send":
                # The mailer guard lets the message in flight finish and starts no other.
                grace = self.settings.serve.shutdown_grace_seconds
                await asyncio.wait({task}, timeout=grace)
            if not task.done():
                # Collecting again later loses nothing; an SMTP transaction cut here leaves its
                # digest 'sending', requeued with the same Message-ID at the next start.
                task.cancel()
                await asyncio.wait({task})
        if self._jobs:
            await asyncio.wait(set(self._jobs))

    async def _watch(self) -> None:
        """Notice a changed config file and a wall clock that jumped (suspend, clock set):
        asyncio's timers run on the monotonic clock, which stands still while suspended."""
        wall, mono = time.time(), time.monotonic()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.serve.tick_seconds)
            if self._stopping:
                return
            now_wall, now_mono = time.time(), time.monotonic()
            jump = (now_wall - wall) - (now_mono - mono)
            wall, mono = now_wall, now_mono
            if abs(jump) > _CLOCK_JUMP:
                log.info(
                    "wall clock jumped %+.0f s (suspend or clock change): checking what is due",
                    jump,
                    extra=_fields("clock_jump", seconds=round(jump)),
                )
                if self._sending_started:
                    self._arm_send(self.clock())
                if self._scheduler is not None:
                    self._scheduler.wakeup()
            if self.settings.serve.watch_config:
                signature = _signature(self.config_path)
                if signature is not None and signature != self._config_signature:
                    self.reload("file changed")


def _fields(event: str, **values: Any) -> dict[str, Any]:
    return {"fields": {"event": event, **values}}


def _log_report(kind: str, report: RunReport) -> None:
    for note in report.notes:
        log.warning("%s: %s", kind, note, extra=_fields(kind, note=note))
    for problem in report.problems:
        log.warning("%s: %s", kind, problem, extra=_fields(kind, problem=problem))
    fetched = sum(1 for f in report.feeds if f.fetched)
    sent = sum(1 for d in report.deliveries if not d.error)
    failures = sum(1 for d in report.deliveries if d.error) + sum(
        1 for f in report.feeds if f.error
    )
    log.info(
        "%s done: %s",
        kind,
        report.summary_line(),
        extra=_fields(
            kind,
            summary=True,
            feeds=len(report.feeds),
            feeds_fetched=fetched,
            feeds_unchanged=sum(1 for f in report.feeds if f.not_modified),
            feeds_skipped=sum(1 for f in report.feeds if f.skipped),
            new_entries=sum(f.new for f in report.feeds),
            digests_created=report.created,
            digests_sent=sent,
            failures=failures,
        ),
    )


async def serve(config_path: Path, settings: Settings) -> int:
    """`digest serve`: run until SIGTERM or SIGINT; 0 after a clean stop."""
    store = Store(settings.database_url)
    try:
        store.migrate()
        return await Service(config_path, settings, store).serve()
    finally:
        store.close()
