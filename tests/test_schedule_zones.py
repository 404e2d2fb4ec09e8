"""Schedules end to end through the store: the daemon's send check (`Service.send_once`, woken
where `Service.next_wake` says, plus the extra wake-ups a naive trigger or cron would add) and
the cron path (`run()`), with a fixed clock, a real SQLite store and folder delivery. Each test
counts the digests the outbox holds and the messages the folder got.

The pure slot logic is tested in test_schedule.py; these guard that the outbox, the due rule and
the wake-up computation together give one digest per period, at the documented time."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import text

from digest.config import Settings, load_config
from digest.models import ParsedEntry
from digest.run import run
from digest.serve import Service
from digest.store import Store
from tests.conftest import LESSWRONG, FixedClock, utc, write_config


@dataclass
class Rig:
    settings: Settings
    store: Store
    clock: FixedClock
    service: Service
    folder: Path
    posts: Iterator[int]

    def add_post(self) -> None:
        """A new post before each wake-up, so no digest is empty whatever the policy on those."""
        feed_id = self.store.sync_feeds([("news", str(LESSWRONG / "feed-1.xml"))])["news"].id
        n = next(self.posts)
        entry = ParsedEntry(f"p{n}", f"https://example.org/p{n}", f"Post {n}", "", None, "Text.")
        self.store.add_entries(feed_id, [entry], self.clock.now)

    def digests(self) -> list[tuple[str, str, datetime, datetime, str]]:
        """(email, period, slot_at, created_at, state) of every digest in the outbox."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT s.email, d.period, d.slot_at, d.created_at, d.state FROM digests d"
                    " JOIN subscribers s ON s.id = d.subscriber_id ORDER BY d.id"
                )
            )
            return [(r[0], r[1], _aware(r[2]), _aware(r[3]), r[4]) for r in rows]

    def messages(self) -> int:
        return len(list(self.folder.glob("*.eml")))


def _aware(value: Any) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Any]:
    stores: list[Store] = []

    def make(subscribers: list[dict[str, Any]], start: datetime) -> Rig:
        config = write_config(
            tmp_path / "config.toml",
            database=f"sqlite:///{tmp_path / 'd.db'}",
            feeds=[("news", str(LESSWRONG / "feed-1.xml"))],
            subscribers=subscribers,
            folder="out",
        )
        settings = load_config(config)
        store = Store(settings.database_url)
        store.migrate()
        stores.append(store)
        clock = FixedClock(start)
        service = Service(config, settings, store, clock=clock)
        return Rig(settings, store, clock, service, tmp_path / "out", itertools.count())

    yield make
    for store in stores:
        store.close()


async def simulate(
    rig: Rig, start: datetime, end: datetime, extra: Iterable[datetime] = ()
) -> list[datetime]:
    """Run the daemon's send check from `start` to `end` on the fixed clock: at each wake-up it
    arms itself (`next_wake`), plus at every instant in `extra`. Returns the chain's wake-ups."""
    pending_extra = sorted(t for t in set(extra) if start <= t <= end)
    chain_next: datetime | None = start
    chain: list[datetime] = []
    while True:
        candidates = [t for t in (chain_next, *pending_extra[:1]) if t is not None]
        if not candidates or min(candidates) > end:
            return chain
        at = min(candidates)
        if pending_extra and pending_extra[0] == at:
            pending_extra.pop(0)
        rig.clock.now = at
        rig.add_post()
        report = await rig.service.send_once()
        assert report is not None and not report.problems, report and report.problems
        if at == chain_next:
            chain.append(at)
            chain_next = rig.service.next_wake(at, at)


def trigger_firings(hhmm: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Where APScheduler's own CronTrigger, in the subscriber's zone, would fire."""
    hour, minute = hhmm.split(":")
    trigger = CronTrigger(hour=int(hour), minute=int(minute), timezone=ZoneInfo(zone))
    out: list[datetime] = []
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire <= end:
        out.append(fire.astimezone(UTC))
        # Step on the UTC clock: adding to a local time would land on fold=0 of a repeated hour.
        fire = trigger.get_next_fire_time(fire, fire.astimezone(UTC) + timedelta(seconds=1))
    return out


# ---- time zones ------------------------------------------------------------------------------

ZONE_SUBSCRIBERS = [
    {"email": "berlin@example.org", "schedule": "daily at 07:00", "timezone": "Europe/Berlin"},
    {"email": "newyork@example.org", "schedule": "daily at 07:00", "timezone": "America/New_York"},
    {"email": "kolkata@example.org", "schedule": "daily at 07:00", "timezone": "Asia/Kolkata"},
    {
        "email": "lordhowe@example.org",
        "schedule": "daily at 07:00",
        "timezone": "Australia/Lord_Howe",
    },
    # Lord Howe springs forward 30 minutes at 02:00 on 2026-10-04: 02:15 does not exist.
    {
        "email": "lh-gap@example.org",
        "schedule": "daily at 02:15",
        "timezone": "Australia/Lord_Howe",
    },
    {"email": "weekly@example.org", "schedule": "weekly", "timezone": "America/New_York"},
    {"email": "cron@example.org", "schedule": "30 6 * * 1-5", "timezone": "Europe/Berlin"},
]


def test_each_zone_gets_its_digest_at_local_time_and_the_daemon_wakes_only_then(rig: Any) -> None:
    start, end = utc("2026-09-30T12:00"), utc("2026-10-07T12:00")  # Wed to Wed
    r: Rig = rig(ZONE_SUBSCRIBERS, start)
    wakes = asyncio.run(simulate(r, start, end))

    by_email: dict[str, list[tuple[str, datetime, datetime]]] = {}
    for email, period, slot_at, created_at, state in r.digests():
        assert state == "sent"
        by_email.setdefault(email, []).append((period, slot_at, created_at))
    zones = {s["email"]: ZoneInfo(s["timezone"]) for s in ZONE_SUBSCRIBERS}
    for email in (
        "berlin@example.org",
        "newyork@example.org",
        "kolkata@example.org",
        "lordhowe@example.org",
    ):
        got = by_email[email]
        local_days = [slot_at.astimezone(zones[email]).date() for _, slot_at, _ in got]
        assert len(got) == 7 and len(set(local_days)) == 7, email
        for period, slot_at, created_at in got:
            assert slot_at.astimezone(zones[email]).strftime("%H:%M") == "07:00", email
            assert period.endswith("T07:00")
            assert created_at == slot_at, "written the moment it became due, not later"
    # Lord Howe is UTC+10:30 before 2026-10-04 02:00 and +11 after; 07:00 follows local time.
    lh = {p: s for p, s, _ in by_email["lordhowe@example.org"]}
    assert lh["2026-10-03T07:00"] == utc("2026-10-02T20:30")
    assert lh["2026-10-05T07:00"] == utc("2026-10-04T20:00")
    # The missing 02:15 goes out one gap (30 minutes) later: 02:45 LHDT.
    gap = {p: s for p, s, _ in by_email["lh-gap@example.org"]}
    assert gap["2026-10-04T02:15"] == utc("2026-10-03T15:45")
    assert (
        gap["2026-10-04T02:15"].astimezone(zones["lh-gap@example.org"]).strftime("%H:%M") == "02:45"
    )
    assert len(gap) == 7
    weekly = by_email["weekly@example.org"]
    assert [p for p, _, _ in weekly] == ["2026-10-05T07:00"]  # the one Monday in the week
    assert weekly[0][1] == utc("2026-10-05T11:00")  # 07:00 EDT
    cron = by_email["cron@example.org"]
    assert [p for p, _, _ in cron] == [
        "2026-10-01T06:30",
        "2026-10-02T06:30",
        "2026-10-05T06:30",
        "2026-10-06T06:30",
        "2026-10-07T06:30",
    ]
    assert r.messages() == sum(len(v) for v in by_email.values())
    # No polling: after the first look the daemon woke exactly at the slots, nowhere else.
    slots = {slot_at for v in by_email.values() for _, slot_at, _ in v}
    assert set(wakes[1:]) == {s for s in slots if s > start}


# ---- DST ---------------------------------------------------------------------------------------

DST_ZONES = ("America/New_York", "Europe/Berlin", "Europe/London")
DST_TIMES = ("01:30", "02:30", "07:00")
# Every 2026 transition of the US and EU zones: (local day, zones changing that day).
TRANSITIONS_2026 = [
    (date(2026, 3, 8), ("America/New_York",)),
    (date(2026, 3, 29), ("Europe/Berlin", "Europe/London")),
    (date(2026, 10, 25), ("Europe/Berlin", "Europe/London")),
    (date(2026, 11, 1), ("America/New_York",)),
]
# Where each ambiguous or missing slot goes (see schedule.py): fall-back = the first occurrence,
# spring-forward = one gap later.
DOCUMENTED = {
    ("America/New_York", "02:30", "2026-03-08"): utc("2026-03-08T07:30"),  # 03:30 EDT
    ("America/New_York", "01:30", "2026-11-01"): utc("2026-11-01T05:30"),  # first 01:30, EDT
    ("Europe/Berlin", "02:30", "2026-03-29"): utc("2026-03-29T01:30"),  # 03:30 CEST
    ("Europe/Berlin", "02:30", "2026-10-25"): utc("2026-10-25T00:30"),  # first 02:30, CEST
    ("Europe/London", "01:30", "2026-03-29"): utc("2026-03-29T01:30"),  # 02:30 BST
    ("Europe/London", "01:30", "2026-10-25"): utc("2026-10-25T00:30"),  # first 01:30, BST
}


def _dst_subscribers() -> list[dict[str, Any]]:
    return [
        {
            "email": f"{zone.split('/')[1].lower()}-{hhmm.replace(':', '')}@example.org",
            "schedule": f"daily at {hhmm}",
            "timezone": zone,
        }
        for zone in DST_ZONES
        for hhmm in DST_TIMES
    ]


def test_apscheduler_fires_a_0130_job_twice_on_the_fall_back_day() -> None:
    """The premise of not trusting trigger firings (FACTS.md); if a new APScheduler stops doing
    this, the next test still holds, it just proves less."""
    firings = trigger_firings(
        "01:30", "America/New_York", utc("2026-11-01T00:00"), utc("2026-11-02T00:00")
    )
    assert firings == [utc("2026-11-01T05:30"), utc("2026-11-01T06:30")]


def test_every_2026_dst_transition_gives_one_digest_per_local_day_through_the_daemon(
    rig: Any,
) -> None:
    subscribers = _dst_subscribers()
    r: Rig = rig(subscribers, utc("2026-03-05T00:00"))

    async def year() -> None:
        for day, _ in TRANSITIONS_2026:
            start = datetime.combine(day - timedelta(days=2), datetime.min.time(), UTC)
            end = start + timedelta(days=4)
            extra = [start + timedelta(hours=h) for h in range(0, 96, 4)]  # cron-like wakes
            for zone in DST_ZONES:
                for hhmm in DST_TIMES:
                    extra += trigger_firings(hhmm, zone, start, end)
            # The months between transitions pass as downtime: one catch-up digest each.
            await simulate(r, start, end, extra)

    asyncio.run(year())
    digests = r.digests()
    assert all(state == "sent" for *_, state in digests)
    assert r.messages() == len(digests)
    for sub in subscribers:
        zone, hhmm = sub["timezone"], sub["schedule"].split()[-1]
        mine = [(p, s, c) for e, p, s, c, _ in digests if e == sub["email"]]
        per_day = Counter(p[:10] for p, _, _ in mine)
        assert max(per_day.values()) == 1, f"{sub['email']}: two digests on one local day"
        for day, _ in TRANSITIONS_2026:
            for offset in (-1, 0, 1):
                local_day = (day + timedelta(days=offset)).isoformat()
                assert per_day[local_day] == 1, f"{sub['email']}: no digest on {local_day}"
        for (doc_zone, doc_time, doc_day), instant in DOCUMENTED.items():
            if (doc_zone, doc_time) == (zone, hhmm):
                ((_, slot_at, created_at),) = [x for x in mine if x[0] == f"{doc_day}T{doc_time}"]
                assert slot_at == instant and created_at == instant, sub["email"]


def test_cron_runs_across_the_dst_days_give_one_digest_per_local_day(rig: Any) -> None:
    """The same through `digest run`'s `run()`, woken every half hour around the changes and
    at every APScheduler firing: the path cron users take."""
    subscribers = [s for s in _dst_subscribers() if not s["schedule"].endswith("07:00")]
    r: Rig = rig(subscribers, utc("2026-03-01T00:00"))
    cases = [
        (date(2026, 3, 8), "America/New_York"),
        (date(2026, 11, 1), "America/New_York"),
        (date(2026, 3, 29), "Europe/Berlin"),
        (date(2026, 10, 25), "Europe/Berlin"),
    ]
    wakes: set[datetime] = set()
    for day, zone in cases:
        local_midnight = datetime.combine(day, datetime.min.time(), ZoneInfo(zone)).astimezone(UTC)
        wakes |= {local_midnight + timedelta(minutes=30 * n) for n in range(-2, 12)}
        for hhmm in ("01:30", "02:30"):
            wakes |= set(
                trigger_firings(hhmm, zone, local_midnight, local_midnight + timedelta(hours=6))
            )

    async def runs() -> None:
        for at in sorted(wakes):
            r.clock.now = at
            r.add_post()
            report = await run(r.settings, at, store=r.store)
            assert report.exit_code == 0, report.problems

    asyncio.run(runs())
    digests = r.digests()
    for sub in subscribers:
        mine = [p for e, p, *_ in digests if e == sub["email"]]
        assert len(mine) == len(set(mine))
        per_day = Counter(p[:10] for p in mine)
        assert max(per_day.values()) == 1, sub["email"]
        zone = sub["timezone"]
        for day, case_zone in cases:
            if case_zone == zone:
                assert per_day[day.isoformat()] == 1, f"{sub['email']} on {day}"
    for (zone, hhmm, day), instant in DOCUMENTED.items():
        email = f"{zone.split('/')[1].lower()}-{hhmm.replace(':', '')}@example.org"
        got = [s for e, p, s, *_ in digests if e == email and p == f"{day}T{hhmm}"]
        if any(c == (date.fromisoformat(day), zone) for c in cases):
            assert got == [instant], (zone, hhmm, day)
    assert r.messages() == len(digests)


# ---- clock jumps -------------------------------------------------------------------------------


def test_a_three_day_clock_jump_sends_one_digest_per_subscriber_not_three(rig: Any) -> None:
    subscribers = ZONE_SUBSCRIBERS
    start = utc("2026-05-01T00:00")
    r: Rig = rig(subscribers, start)

    async def scenario() -> tuple[int, int, datetime | None]:
        await simulate(r, start, start + timedelta(days=1))
        before = len(r.digests())
        jumped = start + timedelta(days=4, hours=1)
        r.clock.now = jumped
        r.add_post()
        # The wake-up after the jump, then the same again (APScheduler's coalesced late firing,
        # the clock-jump watchdog): both look, only the first finds anything due.
        for _ in range(2):
            report = await r.service.send_once()
            assert report is not None and not report.problems
        return before, len(r.digests()), r.service.next_wake(jumped, jumped)

    before, after, wake = asyncio.run(scenario())
    assert after - before == len(subscribers), "one digest per subscriber for the missed days"
    jumped = start + timedelta(days=4, hours=1)
    owed = [d for d in r.digests() if d[3] == jumped]
    assert sorted(e for e, *_ in owed) == sorted(s["email"] for s in subscribers)
    assert r.messages() == after
    assert wake is not None and wake > jumped, "then the normal cadence resumes"


def test_a_three_day_gap_between_cron_runs_sends_one_digest_per_subscriber(rig: Any) -> None:
    subscribers = ZONE_SUBSCRIBERS[:4]
    start = utc("2026-05-01T12:00")
    r: Rig = rig(subscribers, start)

    async def runs() -> None:
        for at in (start, start + timedelta(days=1), start + timedelta(days=4)):
            r.clock.now = at
            r.add_post()
            assert (await run(r.settings, at, store=r.store)).exit_code == 0

    asyncio.run(runs())
    per_email = Counter(e for e, *_ in r.digests())
    assert per_email == {s["email"]: 2 for s in subscribers}
