"""Turning a stored digest into what the reader sees: the view handed to templates."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2

from digest.config import Settings, SubscriberSettings
from digest.render import (
    DigestView,
    Envelope,
    ItemView,
    build_message,
    list_id_for,
    render,
    subject_for,
    unsubscribe_mailto,
)
from digest.sanitize import clean_paragraphs, clean_text, lead_image
from digest.store import DigestItemRow, DigestRow

if TYPE_CHECKING:
    from digest.dkim import Signer


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
    """Lines are (entry, section, reasons, also_in), in digest order. Every piece of feed text
    is cleaned here (no control characters or bidi tricks); templates escape it."""
    tz = settings.subscriber_timezone(sub)
    images = settings.digest.images
    featured: list[ItemView] = []
    more: list[ItemView] = []
    for entry, section, reasons, also_in in lines:
        if section == "merged":
            continue
        shown = section == "featured"
        view = ItemView(
            title=clean_text(entry.title),
            url=entry.url,
            feed=clean_text(entry.feed_title or entry.feed),
            author=clean_text(entry.author),
            published=_local(entry.published or entry.first_seen, tz),
            reading_minutes=entry.reading_minutes,
            summary=clean_paragraphs(entry.summary or ""),
            reasons=tuple(clean_text(r) for r in reasons.split("\n") if r.strip()),
            also_in=tuple(clean_text(a) for a in also_in.split("\n") if a.strip()),
            image=lead_image(entry.content) if images and shown else None,
        )
        (featured if shown else more).append(view)
    kind = settings.subscriber_schedule(sub).kind
    return DigestView(
        name=clean_text(settings.digest.name),
        period="" if kind == "cron" else kind,
        recipient=sub.email,
        window_start=_local(window_start, tz, with_time=False),
        window_end=_local(window_end, tz, with_time=False),
        items=featured,
        more=more,
        explain=sub.explain,
        group_by=settings.digest.group_by,
        unsubscribe_url=unsubscribe_url(settings, sub),
        unsubscribe_mailto=unsubscribe_mailto(settings.digest.from_),
    )


def unsubscribe_url(settings: Settings, sub: SubscriberSettings) -> str:
    """The operator's unsubscribe endpoint for this reader; `{email}` in the setting is
    replaced by the reader's address, so one-click requests say who wants out."""
    template = settings.digest.unsubscribe_url or ""
    return template.replace("{email}", quote(sub.email, safe="@"))


# Pure and called for the same posts in thousands of digests per run: memoized.
@functools.lru_cache(maxsize=8192)
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
    *,
    signer: Signer | None = None,
) -> Composed:
    """A stored digest as a finished message, DKIM-signed when a signer is given.
    Raises TemplateError naming file and line."""
    lines = [(i.entry, i.section, i.reasons, i.also_in) for i in items]
    view = digest_view(settings, sub, digest.window_start, digest.window_end, lines)
    rendered = render(env, view, budget=settings.digest.html_budget_kb * 1024)
    envelope = Envelope(
        sender=settings.digest.from_,
        recipient=sub.email,
        recipient_name=sub.name or "",
        subject=subject_for(settings.digest.subject, rendered.view),
        message_id=digest.message_id,
        date=digest.created_at,
        list_id=list_id_for(settings.digest.name, settings.digest.from_domain),
        reply_to=settings.digest.reply_to,
        unsubscribe_url=view.unsubscribe_url or None,
    )
    data = build_message(envelope, rendered.html, rendered.text)
    return Composed(signer.sign(data) if signer is not None else data, rendered.html)
