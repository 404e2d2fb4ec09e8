"""Subscriber schedules and when a digest is due. Pure: the clock is passed in.

A schedule is a set of local wall-clock times ("slots"). We never rely on trigger firings for
once-only semantics (APScheduler 3.11 fires a 01:30 job twice on a fall-back day). Instead:

- slots are enumerated on a DST-free clock (APScheduler's cron fields evaluated in UTC, read as
  naive local wall times), so each local wall time occurs exactly once per day;
- a slot's instant is its wall time in the subscriber's zone with fold=0: on a fall-back day an
  ambiguous 01:30 means the first 01:30; on a spring-forward day a missing 02:30 maps to the
  instant one gap later (03:30 local);
- a slot is identified by its wall time (`Slot.key`), and the outbox is unique on
  (subscriber, key), so one local day never gets two digests, whatever the clock does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DAY_NAMES = {
    **{d: d for d in _DAYS},
    **{
        full: full[:3]
        for full in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    },
}
_CRON_DOW = {str(i): name for i, name in enumerate(["sun", *_DAYS[:6]])} | {"7": "sun"}
_AT = r"(?:\s+at\s+(?P<hour>\d{1,2}):(?P<minute>\d{2}))?"
_DAILY = re.compile(rf"^daily{_AT}$")
_WEEKLY = re.compile(rf"^weekly(?:\s+on\s+(?P<day>[a-z]+))?{_AT}$")
_MAX_LOOKBACK = timedelta(days=800)


@dataclass(frozen=True, slots=True)
class Slot:
    """One scheduled send time: its local wall time and the instant it maps to."""

    wall: datetime  # naive, local
    at: datetime  # aware, UTC

    @property
    def key(self) -> str:
        return self.wall.strftime("%Y-%m-%dT%H:%M")


@dataclass(frozen=True, slots=True)
class Schedule:
    spec: str
    kind: str  # "daily", "weekly" or "cron": names the period in subjects
    trigger: CronTrigger

    def _walls_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Wall times in [start, end), both naive."""
        out = []
        cursor = self.trigger.get_next_fire_time(None, start.replace(tzinfo=UTC))
        limit = end.replace(tzinfo=UTC)
        while cursor is not None and cursor < limit:
            out.append(cursor.replace(tzinfo=None))
            cursor = self.trigger.get_next_fire_time(cursor, cursor + timedelta(minutes=1))
        return out

    def latest(self, tz: ZoneInfo, now: datetime) -> Slot | None:
        """The last slot whose instant is at or before `now`."""
        local_now = now.astimezone(tz).replace(tzinfo=None)
        # Wall times up to a few hours past local now can map to instants before now around DST.
        end = local_now + timedelta(hours=3)
        window = timedelta(hours=6)
        while window <= _MAX_LOOKBACK * 2:
            slots = [_slot(w, tz) for w in self._walls_between(end - window, end)]
            past = [s for s in slots if s.at <= now]
            if past:
                return max(past, key=lambda s: (s.at, s.wall))
            window *= 4
        return None

    def before(self, tz: ZoneInfo, slot: Slot) -> Slot | None:
        """The slot preceding `slot`."""
        return self.latest(tz, slot.at - timedelta(microseconds=1))

    def next(self, tz: ZoneInfo, now: datetime) -> Slot | None:
        """The first slot whose instant is after `now`."""
        local_now = now.astimezone(tz).replace(tzinfo=None)
        start = local_now - timedelta(hours=3)
        window = timedelta(days=2)
        while window <= _MAX_LOOKBACK * 2:
            slots = [_slot(w, tz) for w in self._walls_between(start, start + window)]
            future = [s for s in slots if s.at > now]
            if future:
                return min(future, key=lambda s: (s.at, s.wall))
            window *= 4
        return None


def next_instant(schedules: Iterable[tuple[Schedule, ZoneInfo]], now: datetime) -> datetime | None:
    """The earliest instant after `now` at which any of these schedules has a slot: when a
    daemon should next look for due digests. None when no schedule ever fires again."""
    instants = [slot.at for schedule, tz in schedules if (slot := schedule.next(tz, now))]
    return min(instants, default=None)


def _slot(wall: datetime, tz: ZoneInfo) -> Slot:
    return Slot(wall=wall, at=wall.replace(tzinfo=tz, fold=0).astimezone(UTC))


def parse_schedule(spec: str) -> Schedule:
    """Parse 'daily', 'weekly', 'daily at HH:MM', 'weekly on DAY at HH:MM' or 5-field cron.

    Raises ValueError saying what is wrong.
    """
    text = " ".join(spec.strip().lower().split())
    if match := _DAILY.match(text):
        hour, minute = _time(match)
        return Schedule(spec, "daily", CronTrigger(hour=hour, minute=minute, timezone=UTC))
    if match := _WEEKLY.match(text):
        hour, minute = _time(match)
        day = match.group("day") or "mon"
        if day not in _DAY_NAMES:
            raise ValueError(f"unknown day {match.group('day')!r} in schedule {spec!r}")
        return Schedule(
            spec,
            "weekly",
            CronTrigger(day_of_week=_DAY_NAMES[day], hour=hour, minute=minute, timezone=UTC),
        )
    fields = text.split()
    if len(fields) == 5:
        c_minute, c_hour, c_day, c_month, c_dow = fields
        try:
            trigger = CronTrigger(
                minute=c_minute,
                hour=c_hour,
                day=c_day,
                month=c_month,
                day_of_week=_cron_dow(c_dow),
                timezone=UTC,
            )
        except ValueError as exc:
            raise ValueError(f"bad cron expression {spec!r}: {exc}") from None
        return Schedule(spec, "cron", trigger)
    raise ValueError(
        f"cannot read schedule {spec!r}: use 'daily', 'weekly', 'daily at 07:00',"
        " 'weekly on monday at 07:00' or a 5-field cron expression"
    )


def _time(match: re.Match[str]) -> tuple[int, int]:
    if match.group("hour") is None:
        return 7, 0
    hour, minute = int(match.group("hour")), int(match.group("minute"))
    if hour > 23 or minute > 59:
        raise ValueError(f"no such time of day: {hour:02d}:{minute:02d}")
    return hour, minute


def _cron_dow(field: str) -> str:
    """Standard cron counts Sunday as 0 (and 7); APScheduler 3 counts Monday as 0. Use names."""
    if field in ("*", "?"):
        return "*"

    def name(token: str) -> str:
        if token.isdigit():
            if token not in _CRON_DOW:
                raise ValueError(f"day of week {token} is not 0-7")
            return _CRON_DOW[token]
        return _DAY_NAMES.get(token, token)

    parts = []
    for part in field.split(","):
        base, _, step = part.partition("/")
        converted = "*" if base == "*" else "-".join(name(t) for t in base.split("-"))
        parts.append(f"{converted}/{step}" if step else converted)
    return ",".join(parts)
