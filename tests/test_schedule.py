"""When digests are due: schedule parsing, slots in each time zone, DST days, downtime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from digest.schedule import Slot, parse_schedule


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "kind", "local_wall"),
    [
        ("daily", "daily", "2026-11-21T07:00"),
        ("Daily at 18:30", "daily", "2026-11-20T18:30"),
        ("weekly", "weekly", "2026-11-16T07:00"),  # Monday
        ("weekly on FRIDAY at 09:15", "weekly", "2026-11-20T09:15"),
        ("weekly on sat at 06:00", "weekly", "2026-11-21T06:00"),
        ("30 6 * * 1-5", "cron", "2026-11-20T06:30"),  # Friday: standard cron, 1-5 = Mon-Fri
        ("0 7 * * 0", "cron", "2026-11-15T07:00"),  # 0 = Sunday in cron
        ("0 7 * * 7", "cron", "2026-11-15T07:00"),  # so is 7
    ],
)
def test_latest_slot_for_each_schedule_form(spec: str, kind: str, local_wall: str) -> None:
    schedule = parse_schedule(spec)
    assert schedule.kind == kind
    # Saturday 2026-11-21 08:00 UTC
    slot = schedule.latest(ZoneInfo("UTC"), utc("2026-11-21T08:00"))
    assert slot is not None and slot.key == local_wall


@pytest.mark.parametrize(
    "spec",
    ["hourly", "daily at 25:00", "daily at 7", "weekly on funday", "* * *", "61 * * * *", ""],
)
def test_unreadable_schedules_are_refused_with_a_reason(spec: str) -> None:
    with pytest.raises(ValueError, match=r"schedule|time of day|day|cron"):
        parse_schedule(spec)


@pytest.mark.parametrize(
    ("zone", "expected_utc"),
    [
        ("Europe/Berlin", "2026-01-15T06:00"),
        ("America/New_York", "2026-01-15T12:00"),
        ("Asia/Kolkata", "2026-01-15T01:30"),
        ("Australia/Lord_Howe", "2026-01-14T20:00"),  # +11:00 in southern summer
    ],
)
def test_daily_seven_oclock_is_local_time(zone: str, expected_utc: str) -> None:
    slot = parse_schedule("daily at 07:00").next(ZoneInfo(zone), utc("2026-01-14T13:00"))
    assert slot is not None and slot.at == utc(expected_utc)


def digests_over(spec: str, zone: str, start: str, days: int, step: timedelta) -> list[Slot]:
    """Simulate a runner waking every `step`: a digest when a slot newer than the last passed."""
    schedule = parse_schedule(spec)
    tz = ZoneInfo(zone)
    now = utc(start)
    last: Slot | None = None
    sent: list[Slot] = []
    while now < utc(start) + timedelta(days=days):
        slot = schedule.latest(tz, now)
        if (
            slot is not None
            and (last is None or slot.at > last.at)
            and slot.key not in {s.key for s in sent}
        ):
            sent.append(slot)
            last = slot
        now += step
    return sent


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("America/New_York", "2026-03-08"),  # spring forward
        ("America/New_York", "2026-11-01"),  # fall back
        ("Europe/Berlin", "2026-03-29"),
        ("Europe/Berlin", "2026-10-25"),
        ("Australia/Lord_Howe", "2026-04-05"),  # 30-minute fall back
        ("Australia/Lord_Howe", "2026-10-04"),  # 30-minute spring forward
    ],
)
@pytest.mark.parametrize("time_of_day", ["01:30", "02:30", "07:00"])
def test_every_dst_change_day_gets_exactly_one_digest(
    zone: str, day: str, time_of_day: str
) -> None:
    start = (datetime.fromisoformat(day) - timedelta(days=2)).strftime("%Y-%m-%dT00:00")
    sent = digests_over(f"daily at {time_of_day}", zone, start, 5, timedelta(minutes=10))
    local_days = [s.wall.date().isoformat() for s in sent]
    assert len(local_days) == len(set(local_days)), "never two digests for one local day"
    assert day in local_days, "the DST day still gets its digest"
    first = datetime.fromisoformat(start).date()
    every_day = {(first + timedelta(days=n)).isoformat() for n in range(5)}
    assert every_day <= set(local_days), "no day is missed"


def test_fall_back_0130_goes_out_at_the_first_0130() -> None:
    schedule = parse_schedule("daily at 01:30")
    tz = ZoneInfo("America/New_York")
    slot = schedule.latest(tz, utc("2026-11-01T07:00"))  # after both 01:30s
    assert slot is not None and slot.key == "2026-11-01T01:30"
    assert slot.at == utc("2026-11-01T05:30")  # 01:30 EDT, the first one


def test_spring_forward_0230_goes_out_one_gap_later() -> None:
    schedule = parse_schedule("daily at 02:30")
    tz = ZoneInfo("America/New_York")
    slot = schedule.next(tz, utc("2026-03-08T05:00"))
    assert slot is not None and slot.key == "2026-03-08T02:30"
    assert slot.at == utc("2026-03-08T07:30")  # 03:30 EDT: 02:30 does not exist that day


def test_every_2026_transition_in_us_and_eu_zones_gives_one_digest_per_local_day() -> None:
    for zone in ("America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Berlin"):
        sent = digests_over("daily at 01:30", zone, "2026-01-01T00:00", 365, timedelta(minutes=30))
        local_days = [s.wall.date() for s in sent]
        assert len(local_days) == len(set(local_days)), zone
        assert len(local_days) >= 364, zone


def test_clock_jump_of_three_days_is_one_slot_not_three() -> None:
    schedule = parse_schedule("daily")
    tz = ZoneInfo("Europe/Berlin")
    before = schedule.latest(tz, utc("2026-05-01T06:00"))
    after = schedule.latest(tz, utc("2026-05-04T06:00"))
    assert before is not None and after is not None
    assert after.key == "2026-05-04T07:00"
    # Due is "latest slot newer than the last digest": one decision, one digest.
    assert (after.at > before.at) is True


def test_weekly_on_monday_in_a_zone_east_of_utc() -> None:
    schedule = parse_schedule("weekly on Mon at 07:00")
    slot = schedule.latest(ZoneInfo("Asia/Kolkata"), utc("2026-11-23T02:00"))  # Mon 07:30 IST
    assert slot is not None and slot.key == "2026-11-23T07:00"
    assert slot.at == utc("2026-11-23T01:30")
