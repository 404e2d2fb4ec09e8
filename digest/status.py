"""What `digest status` and `digest schedule` report: pure functions over what the store says,
the config and a clock, so the health rules can be tested without a database.

Health is what a supervisor can act on: collecting has stopped, or digests sit undelivered.
A digest refused for good (a mistyped address) is reported and counted but does not make the
service unhealthy: restarting it would not help, and one bad address would keep it red.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from digest.config import Settings, SubscriberSettings
from digest.store import Store

EXIT_HEALTHY, EXIT_UNHEALTHY = 0, 1


@dataclass(frozen=True, slots=True)
class FeedStatus:
    name: str
    url: str
    last_fetch_at: datetime | None
    last_ok_at: datetime | None
    last_error: str | None
    failures: int  # in a row; 0 after a good fetch
    failing_since: datetime | None = None
    next_fetch_at: datetime | None = None
    gone_at: datetime | None = None
    fetch_url: str | None = None  # where it is fetched from, when not the configured URL
    fetch_url_reason: str | None = None  # moved (301/308) or discovered (from a web page)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    email: str
    period: str
    state: str  # pending, sending or failed
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class SubscriberState:
    email: str
    first_seen: datetime
    suspended: bool
    hard_bounces: int
    last_slot_at: datetime | None


@dataclass(frozen=True, slots=True)
class Status:
    now: datetime
    stale_after: timedelta
    feeds: list[FeedStatus]
    last_sent_at: datetime | None
    counts: dict[str, int]
    undelivered: list[OutboxItem]
    suspended: list[SubscriberState]
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_HEALTHY if self.healthy else EXIT_UNHEALTHY

    @property
    def last_collect_ok(self) -> datetime | None:
        return max((f.last_ok_at for f in self.feeds if f.last_ok_at), default=None)

    @property
    def failing_feeds(self) -> list[FeedStatus]:
        return [f for f in self.feeds if f.last_error]

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "problems": self.problems,
            "now": _iso(self.now),
            "last_collect_ok": _iso(self.last_collect_ok),
            "last_send": _iso(self.last_sent_at),
            "failures": {
                "feeds": len(self.failing_feeds),
                "digests_retrying": sum(
                    1 for d in self.undelivered if d.state != "failed" and d.last_error
                ),
                "digests_failed": sum(1 for d in self.undelivered if d.state == "failed"),
            },
            "outbox": dict(sorted(self.counts.items())),
            "feeds": [
                {
                    "name": f.name,
                    "url": f.url,
                    "last_fetch_at": _iso(f.last_fetch_at),
                    "last_ok_at": _iso(f.last_ok_at),
                    "last_error": f.last_error,
                    "failures": f.failures,
                    "failing_since": _iso(f.failing_since),
                    "next_fetch_at": _iso(f.next_fetch_at),
                    "gone_at": _iso(f.gone_at),
                    "fetched_from": f.fetch_url,
                    "fetched_from_because": f.fetch_url_reason,
                }
                for f in self.feeds
            ],
            "undelivered": [
                {
                    "email": d.email,
                    "period": d.period,
                    "state": d.state,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                    "created_at": _iso(d.created_at),
                    "next_attempt_at": _iso(d.next_attempt_at),
                }
                for d in self.undelivered
            ],
            "suspended": [
                {"email": s.email, "hard_bounces": s.hard_bounces} for s in self.suspended
            ],
        }


def assess(
    feeds: Sequence[FeedStatus],
    undelivered: Sequence[OutboxItem],
    now: datetime,
    stale_after: timedelta,
) -> list[str]:
    """Why the service is unhealthy; empty when it is not."""
    problems: list[str] = []
    if feeds:
        last_ok = max((f.last_ok_at for f in feeds if f.last_ok_at), default=None)
        if last_ok is None:
            problems.append("no feed has been collected successfully yet")
        elif now - last_ok > stale_after:
            problems.append(
                f"last successful collect was {_ago(now - last_ok)} ago"
                f" (more than {_ago(stale_after)})"
            )
    waiting = [d for d in undelivered if d.state != "failed" and now - d.created_at > stale_after]
    if waiting:
        oldest = min(d.created_at for d in waiting)
        problems.append(
            f"{len(waiting)} digest(s) undelivered for more than {_ago(stale_after)}"
            f" (oldest {_ago(now - oldest)})"
        )
    return problems


def gather(settings: Settings, store: Store | None, now: datetime) -> Status:
    """The status of the configured feeds and subscribers; `store` None means it does not exist
    yet (nothing has run)."""
    stale_after = timedelta(minutes=settings.serve.stale_after_minutes)
    feeds: list[FeedStatus] = []
    undelivered: list[OutboxItem] = []
    suspended: list[SubscriberState] = []
    counts: dict[str, int] = {}
    last_sent: datetime | None = None
    configured = {f.name: settings.feed_location(f) for f in settings.feeds}
    if store is not None:
        known = {row[0]: FeedStatus(*row) for row in store.feed_fetch_states()}
        emails = {s.email.lower() for s in settings.subscribers}
        feeds = [
            known.get(name) or FeedStatus(name, url, None, None, None, 0)
            for name, url in configured.items()
        ]
        undelivered = [OutboxItem(*row) for row in store.undelivered_digests()]
        suspended = [
            SubscriberState(*row)
            for row in store.subscriber_states()
            if row[2] and row[0] in emails
        ]
        counts = store.counts()
        last_sent = store.last_sent_at()
    else:
        feeds = [FeedStatus(name, url, None, None, None, 0) for name, url in configured.items()]
    problems = assess(feeds, undelivered, now, stale_after)
    if store is None:
        problems.insert(0, "the database does not exist yet: nothing has run")
    return Status(now, stale_after, feeds, last_sent, counts, undelivered, suspended, problems)


def render_status(status: Status) -> list[str]:
    now = status.now
    lines = [f"digest status at {_utc(now)}: {'healthy' if status.healthy else 'UNHEALTHY'}"]
    lines += [f"  ! {p}" for p in status.problems]
    last_ok = status.last_collect_ok
    lines.append(
        "last successful collect: "
        + (f"{_utc(last_ok)} ({_ago(now - last_ok)} ago)" if last_ok else "never")
        + f"; {len(status.failing_feeds)} of {len(status.feeds)} feeds failing"
    )
    for f in status.failing_feeds:
        if f.gone_at is not None:
            lines.append(
                f"  feed {f.name}: gone since {_utc(f.gone_at)} ({f.last_error});"
                " no longer fetched: remove it from the config"
            )
            continue
        since = f" since {_utc(f.failing_since)}" if f.failing_since else ""
        retry = f"; next try {_utc(f.next_fetch_at)}" if f.next_fetch_at else ""
        lines.append(
            f"  feed {f.name}: {f.last_error} ({f.failures} failure(s) in a row{since};"
            f" last good fetch {_utc(f.last_ok_at) if f.last_ok_at else 'never'}{retry})"
        )
    for f in status.feeds:
        if f.fetch_url and f.gone_at is None:
            why = "it moved permanently" if f.fetch_url_reason == "moved" else "found on the page"
            lines.append(
                f"  feed {f.name}: fetched from {f.fetch_url} ({why}); update its url in the config"
            )
    last_sent = status.last_sent_at
    lines.append(
        "last digest sent: "
        + (f"{_utc(last_sent)} ({_ago(now - last_sent)} ago)" if last_sent else "never")
    )
    order = {state: n for n, state in enumerate(("sent", "pending", "sending", "failed"))}
    counted = sorted(status.counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    lines.append(
        "outbox: " + (", ".join(f"{n} {state}" for state, n in counted) if counted else "empty")
    )
    for d in status.undelivered:
        when = (
            f", next try {_utc(d.next_attempt_at)}"
            if d.state == "pending" and d.next_attempt_at
            else ""
        )
        error = f": {d.last_error}" if d.last_error else ""
        lines.append(f"  {d.state} {d.email} {d.period} ({d.attempts} attempt(s){when}){error}")
    if status.suspended:
        lines.append("suspended subscribers:")
        lines += [f"  {s.email} ({s.hard_bounces} hard bounce(s))" for s in status.suspended]
    return lines


# ---- schedule ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NextSend:
    email: str
    schedule: str
    timezone: str
    next_at: datetime | None  # None: suspended, or the schedule never fires again
    due_now: bool  # a slot has passed that has no digest yet: it goes at the next run
    suspended: bool
    last_period: str | None
    last_sent_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        tz = ZoneInfo(self.timezone)
        return {
            "email": self.email,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "due_now": self.due_now,
            "suspended": self.suspended,
            "next_local": _iso(self.next_at.astimezone(tz)) if self.next_at else None,
            "next_utc": _iso(self.next_at),
            "last_period": self.last_period,
            "last_sent_local": _iso(self.last_sent_at.astimezone(tz))
            if self.last_sent_at
            else None,
            "last_sent_utc": _iso(self.last_sent_at),
        }


def next_sends(
    settings: Settings,
    states: Sequence[SubscriberState],
    last_sent: dict[str, tuple[str, datetime]],
    now: datetime,
) -> list[NextSend]:
    """When each configured subscriber's next digest goes out, by the same rule that decides
    whether one is due (see digest.plan): the latest slot newer than their last digest's slot,
    or than when they were first seen."""
    by_email = {s.email: s for s in states}
    return [
        _next_send(settings, sub, by_email.get(sub.email.lower()), last_sent, now)
        for sub in settings.subscribers
    ]


def _next_send(
    settings: Settings,
    sub: SubscriberSettings,
    state: SubscriberState | None,
    last_sent: dict[str, tuple[str, datetime]],
    now: datetime,
) -> NextSend:
    schedule = settings.subscriber_schedule(sub)
    tz = settings.subscriber_timezone(sub)
    suspended = state is not None and state.suspended
    # Someone not in the store yet starts their clock at the next run, which is about now.
    anchor = now if state is None else state.last_slot_at or state.first_seen
    latest = schedule.latest(tz, now)
    due = not suspended and latest is not None and latest.at > anchor
    upcoming = schedule.next(tz, now)
    next_at = None if suspended else now if due else upcoming.at if upcoming else None
    period, sent_at = last_sent.get(sub.email.lower(), (None, None))
    return NextSend(sub.email, sub.schedule, str(tz), next_at, due, suspended, period, sent_at)


def render_schedule(rows: Sequence[NextSend]) -> list[str]:
    lines = []
    for row in rows:
        tz = ZoneInfo(row.timezone)
        if row.suspended:
            nxt = "suspended (no digests)"
        elif row.next_at is None:
            nxt = "never (the schedule does not fire again)"
        else:
            local = row.next_at.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
            nxt = ("due now, at the next run: " if row.due_now else "") + (
                f"{local} ({_utc(row.next_at)})"
            )
        last = (
            f"{row.last_period} sent {row.last_sent_at.astimezone(tz):%Y-%m-%d %H:%M %Z}"
            f" ({_utc(row.last_sent_at)})"
            if row.last_sent_at
            else "none yet"
        )
        lines.append(f"{row.email}  [{row.schedule}, {row.timezone}]")
        lines.append(f"  next: {nxt}")
        lines.append(f"  last: {last}")
    return lines


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ago(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 6 * 3600:
        return f"{seconds // 60} min"
    if seconds < 3 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
