"""Turning a stored digest into what the reader sees: the view handed to templates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import jinja2

from digest.config import Settings, SubscriberSettings
from digest.render import (
    DigestView,
    Envelope,
    ItemView,
    build_message,
    message_bytes,
    render_bodies,
    subject_for,
)
from digest.store import DigestItemRow, DigestRow


class _Shown(Protocol):
    """What a digest line needs of an entry (stored rows and fresh candidates both have it)."""

    @property
    def title(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def feed(self) -> str: ...
    @property
    def feed_title(self) -> str: ...
    @property
    def author(self) -> str: ...
    @property
    def published(self) -> datetime | None: ...
    @property
    def first_seen(self) -> datetime: ...
    @property
    def content(self) -> str: ...
    @property
    def summary(self) -> str | None: ...
    @property
    def reading_minutes(self) -> int: ...


def digest_view(
    settings: Settings,
    sub: SubscriberSettings,
    window_start: datetime,
    window_end: datetime,
    lines: Sequence[tuple[_Shown, str, str, str]],
) -> DigestView:
    """Lines are (entry, section, reasons, also_in), in digest order."""
    tz = settings.subscriber_timezone(sub)
    featured: list[ItemView] = []
    more: list[ItemView] = []
    for entry, section, reasons, also_in in lines:
        if section == "merged":
            continue
        view = ItemView(
            title=entry.title,
            url=entry.url,
            feed=entry.feed_title or entry.feed,
            author=entry.author,
            published=_local(entry.published or entry.first_seen, tz),
            reading_minutes=entry.reading_minutes,
            summary=entry.summary or "",
            reasons=tuple(r for r in reasons.split("\n") if r),
            also_in=tuple(a for a in also_in.split("\n") if a),
        )
        (featured if section == "featured" else more).append(view)
    kind = settings.subscriber_schedule(sub).kind
    return DigestView(
        name=settings.digest.name,
        period="" if kind == "cron" else kind,
        recipient=sub.email,
        window_start=_local(window_start, tz, with_time=False),
        window_end=_local(window_end, tz, with_time=False),
        items=featured,
        more=more,
        explain=sub.explain,
    )


def _local(when: datetime, tz: ZoneInfo, *, with_time: bool = True) -> str:
    local = when.astimezone(tz)
    day = f"{local:%a} {local.day} {local:%b %Y}"
    return f"{day}, {local:%H:%M}" if with_time else day


@dataclass(frozen=True, slots=True)
class Composed:
    data: bytes  # the whole message, as it goes on the wire
    html: str  # the HTML part, for previews


def compose(
    settings: Settings,
    sub: SubscriberSettings,
    digest: DigestRow,
    items: Sequence[DigestItemRow],
    env: jinja2.Environment,
) -> Composed:
    """A stored digest as a finished message. Raises TemplateError naming file and line."""
    lines = [(i.entry, i.section, i.reasons, i.also_in) for i in items]
    view = digest_view(settings, sub, digest.window_start, digest.window_end, lines)
    html, text = render_bodies(env, view)
    envelope = Envelope(
        sender=settings.digest.from_,
        recipient=sub.email,
        subject=subject_for(settings.digest.subject, view),
        message_id=digest.message_id,
        date=digest.created_at,
        list_id=f"{settings.digest.name} <digest.{settings.digest.from_domain}>",
        reply_to=settings.digest.reply_to,
        unsubscribe_url=settings.digest.unsubscribe_url,
    )
    return Composed(message_bytes(build_message(envelope, html, text)), html)
