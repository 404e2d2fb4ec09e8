"""One run: sync the config into the store, collect feeds, write due digests to the outbox,
deliver the outbox. Outcomes are values, so one bad feed or subscriber never stops the rest."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import jinja2

from digest import rank, summarize
from digest.config import FeedSettings, Settings, SubscriberSettings
from digest.errors import (
    ConfigError,
    DeliveryError,
    FatalDeliveryError,
    FeedError,
    ServerUnavailable,
    TemplateError,
)
from digest.fetch import FetchResult, fetch_url, make_client, read_file
from digest.mailer import FolderMailer, Mailer, SmtpMailer
from digest.models import Candidate, Profile, Selection
from digest.parse import parse_feed
from digest.render import (
    DigestView,
    Envelope,
    ItemView,
    build_message,
    make_environment,
    message_bytes,
    render_bodies,
    subject_for,
)
from digest.store import (
    DigestRow,
    EntryRow,
    FeedState,
    NewDigest,
    Store,
    SubscriberRow,
)

log = logging.getLogger("digest")
RETRY_BASE = timedelta(minutes=5)
RETRY_MAX = timedelta(hours=6)


@dataclass(frozen=True, slots=True)
class FeedOutcome:
    name: str
    new: int = 0
    error: str | None = None
    not_modified: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    email: str
    period: str
    posts: int
    error: str | None = None
    temporary: bool = False
    unavailable: bool = False


@dataclass(slots=True)
class RunReport:
    feeds: list[FeedOutcome] = field(default_factory=list)
    created: int = 0
    deliveries: list[DeliveryOutcome] = field(default_factory=list)
    fatal: str | None = None

    @property
    def problems(self) -> list[str]:
        out = [f"feed {f.name}: {f.error}" for f in self.feeds if f.error]
        out += [
            f"digest for {d.email} ({d.period}): {d.error}"
            + (" (will retry)" if d.temporary else "")
            for d in self.deliveries
            if d.error
        ]
        if self.fatal:
            out.append(self.fatal)
        return out

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def summary_line(self) -> str:
        fetched = sum(1 for f in self.feeds if not f.error)
        sent = sum(1 for d in self.deliveries if not d.error)
        failed = sum(1 for d in self.deliveries if d.error) + sum(1 for f in self.feeds if f.error)
        new = sum(f.new for f in self.feeds)
        return (
            f"feeds fetched {fetched}/{len(self.feeds)}, new entries {new},"
            f" digests created {self.created}, sent {sent}, failures {failed}"
        )


def open_store(settings: Settings) -> Store:
    store = Store(settings.database_url)
    return store


async def run(
    settings: Settings, now: datetime, *, mailer: Mailer | None = None, store: Store | None = None
) -> RunReport:
    """The whole job of `digest run`. Raises LockHeld if another run holds the store."""
    own_store = store is None
    store = store or open_store(settings)
    try:
        store.migrate()
        with store.locked():
            report = RunReport()
            store.requeue_interrupted(now)
            feed_rows = store.sync_feeds(
                [(f.name, settings.feed_location(f)) for f in settings.feeds]
            )
            subscriber_rows = store.sync_subscribers([s.email for s in settings.subscribers], now)
            report.feeds = await collect(settings, store, feed_rows, now)
            report.created = write_due_digests(settings, store, feed_rows, subscriber_rows, now)
            await deliver(settings, store, now, report, mailer)
            return report
    finally:
        if own_store:
            store.close()


# ---- collect ------------------------------------------------------------------------------


async def collect(
    settings: Settings, store: Store, feed_rows: dict[str, FeedState], now: datetime
) -> list[FeedOutcome]:
    limit = asyncio.Semaphore(settings.collect.concurrency)
    async with make_client(settings.collect.user_agent, settings.collect.concurrency) as client:

        async def one(feed: FeedSettings) -> FeedOutcome:
            state = feed_rows[feed.name]
            async with limit:
                try:
                    fetched = await _fetch(settings, feed, state, client)
                    if fetched.data is None:
                        store.record_fetch(state.id, now, error=None, keep_validators=True)
                        return FeedOutcome(feed.name, not_modified=True)
                    location = settings.feed_location(feed)
                    parsed = await asyncio.to_thread(
                        parse_feed, fetched.data, location, fetched.content_type
                    )
                except FeedError as exc:
                    store.record_fetch(state.id, now, error=str(exc))
                    return FeedOutcome(feed.name, error=f"{settings.feed_location(feed)}: {exc}")
            new = store.add_entries(state.id, parsed.entries, now)
            store.record_fetch(
                state.id,
                now,
                error=None,
                etag=fetched.etag,
                last_modified=fetched.last_modified,
                title=feed.title or parsed.title or feed.name,
            )
            return FeedOutcome(feed.name, new=new)

        return list(await asyncio.gather(*(one(f) for f in settings.feeds)))


async def _fetch(
    settings: Settings, feed: FeedSettings, state: FeedState, client: object
) -> FetchResult:
    location = settings.feed_location(feed)
    if feed.is_local or feed.url.startswith("file://"):
        return await asyncio.to_thread(read_file, location, settings.collect.max_bytes)
    return await fetch_url(
        client,  # type: ignore[arg-type]
        location,
        etag=state.etag,
        last_modified=state.last_modified,
        timeout=settings.collect.timeout,
        max_bytes=settings.collect.max_bytes,
    )


# ---- build digests -------------------------------------------------------------------------


def write_due_digests(
    settings: Settings,
    store: Store,
    feed_rows: dict[str, FeedState],
    subscriber_rows: dict[str, SubscriberRow],
    now: datetime,
) -> int:
    created = 0
    for sub in settings.subscribers:
        row = subscriber_rows[sub.email]
        if row.suspended:
            continue
        plan = plan_digest(settings, store, sub, row, feed_rows, now)
        if plan is not None and store.create_digest(plan) is not None:
            created += 1
    return created


def plan_digest(
    settings: Settings,
    store: Store,
    sub: SubscriberSettings,
    row: SubscriberRow,
    feed_rows: dict[str, FeedState],
    now: datetime,
) -> NewDigest | None:
    """The digest this subscriber is due now, ranked and ready for the outbox, or None."""
    schedule = settings.subscriber_schedule(sub)
    tz = settings.subscriber_timezone(sub)
    slot = schedule.latest(tz, now)
    if slot is None:
        return None
    last = store.last_digest(row.id)
    anchor = last.slot_at if last is not None else row.first_seen
    if slot.at <= anchor:
        return None
    since = _window_start(settings, sub, last, slot.at)
    selection = _select(settings, store, sub, row, feed_rows, since, now)
    return NewDigest(
        subscriber_id=row.id,
        period=slot.key,
        slot_at=slot.at,
        window_start=since,
        window_end=now,
        created_at=now,
        message_id=_message_id(slot.key, row.id, settings.digest.from_domain),
        items=_items(selection),
    )


def _window_start(
    settings: Settings, sub: SubscriberSettings, last: DigestRow | None, slot_at: datetime
) -> datetime:
    if last is not None:
        return last.window_end
    # A new subscriber gets at most one period of posts, not the back catalogue.
    schedule = settings.subscriber_schedule(sub)
    tz = settings.subscriber_timezone(sub)
    previous = schedule.latest(tz, slot_at - timedelta(microseconds=1))
    return previous.at if previous is not None else slot_at - timedelta(days=7)


def _select(
    settings: Settings,
    store: Store,
    sub: SubscriberSettings,
    row: SubscriberRow,
    feed_rows: dict[str, FeedState],
    since: datetime,
    now: datetime,
) -> Selection:
    feeds = settings.subscriber_feeds(sub)
    rows = store.candidates(row.id, [feed_rows[f.name].id for f in feeds], since, now)
    candidates = _with_summaries(store, rows, {f.name: f.weight for f in settings.feeds})
    return rank.select(_profile(sub, feeds), candidates, now)


def preview_html(settings: Settings, email: str, now: datetime) -> str:
    """The HTML `email` would get if a digest went out now. Records nothing but cached summaries."""
    sub = next((s for s in settings.subscribers if s.email.lower() == email.lower()), None)
    if sub is None:
        raise ConfigError([f"subscribers: no subscriber {email} in the config"])
    store = open_store(settings)
    try:
        store.migrate()
        feed_rows = store.sync_feeds([(f.name, settings.feed_location(f)) for f in settings.feeds])
        row = store.sync_subscribers([sub.email], now)[sub.email]
        last = store.last_digest(row.id)
        tz = settings.subscriber_timezone(sub)
        slot = settings.subscriber_schedule(sub).latest(tz, now)
        since = _window_start(settings, sub, last, slot.at if slot else now)
        selection = _select(settings, store, sub, row, feed_rows, since, now)
    finally:
        store.close()
    lines = [
        (r.candidate, "featured", "\n".join(r.reasons), "\n".join(r.also_in))
        for r in selection.featured
    ]
    lines += [(r.candidate, "more", "", "") for r in selection.more]
    view = digest_view(settings, sub, since, now, lines)
    templates = settings.digest.templates_dir
    env = make_environment(settings.resolve(templates) if templates else None)
    return render_bodies(env, view)[0]


def _profile(sub: SubscriberSettings, feeds: Sequence[FeedSettings]) -> Profile:
    caps = [f.cap for f in feeds if f.cap is not None]
    return Profile(
        interests=tuple(sub.interests),
        mute=tuple(sub.mute),
        feed_weights=dict(sub.feed_weights),
        max_items=sub.max_items,
        per_feed_cap=min([sub.per_feed_cap, *caps]),
        explain=sub.explain,
    )


def _items(selection: Selection) -> list[tuple[int, str, float, str, str]]:
    out = []
    for section, group in (("featured", selection.featured), ("more", selection.more)):
        for item in group:
            out.append(
                (
                    item.candidate.entry_id,
                    section,
                    item.score,
                    "\n".join(item.reasons),
                    "\n".join(item.also_in),
                )
            )
    out += [(entry_id, "merged", 0.0, "", "") for entry_id in selection.merged]
    return out


def _message_id(period: str, subscriber_id: int, domain: str) -> str:
    stamp = period.replace("-", "").replace(":", "").replace("T", ".")
    return f"<digest.{stamp}.{subscriber_id}.{secrets.token_hex(6)}@{domain}>"


def _summary_key(row: EntryRow) -> str:
    return f"{row.content_hash}:{summarize.SUMMARIZER_VERSION}"


def _with_summaries(
    store: Store, rows: Sequence[EntryRow], weights: dict[str, float]
) -> list[Candidate]:
    """Summaries are cached per entry and content hash: an unchanged post is summarized once."""
    fresh: list[tuple[int, str, str]] = []
    out = []
    for row in rows:
        key = _summary_key(row)
        if row.summary is not None and row.summary_key == key:
            text = row.summary
        else:
            text = summarize.summarize(row.title, row.content)
            fresh.append((row.id, text, key))
        out.append(
            Candidate(
                entry_id=row.id,
                feed=row.feed,
                feed_title=row.feed_title or row.feed,
                url=row.url,
                title=row.title,
                author=row.author,
                published=row.published,
                first_seen=row.first_seen,
                content=row.content,
                summary=text,
                feed_weight=weights.get(row.feed, 1.0),
            )
        )
    store.save_summaries(fresh)
    return out


# ---- deliver ------------------------------------------------------------------------------


def make_mailer(settings: Settings) -> Mailer:
    if settings.delivery.mode == "folder":
        return FolderMailer(settings.resolve(settings.delivery.folder))
    smtp = settings.smtp
    return SmtpMailer(
        smtp.host,
        smtp.port,
        security=smtp.security,
        username=smtp.username,
        password=smtp.password.get_secret_value() if smtp.password else None,
        timeout=smtp.timeout,
    )


async def deliver(
    settings: Settings, store: Store, now: datetime, report: RunReport, mailer: Mailer | None
) -> None:
    pending = store.due_deliveries(now)
    if not pending:
        return
    by_email = {s.email.lower(): s for s in settings.subscribers}
    templates = settings.digest.templates_dir
    env = make_environment(settings.resolve(templates) if templates else None)
    try:
        async with mailer or make_mailer(settings) as channel:
            unavailable: str | None = None
            for digest in pending:
                sub = by_email.get(digest.email)
                if sub is None:
                    continue  # removed from the config: keep it in the outbox, send nothing
                if unavailable:
                    # No point knocking 10,000 times on a closed door; these stay pending.
                    report.deliveries.append(
                        DeliveryOutcome(sub.email, digest.period, 0, unavailable, temporary=True)
                    )
                    continue
                outcome = await _deliver_one(settings, store, env, channel, digest, sub, now)
                report.deliveries.append(outcome)
                if outcome.unavailable:
                    unavailable = f"not attempted: {outcome.error}"
    except FatalDeliveryError as exc:
        report.fatal = f"delivery stopped: {exc}"


async def _deliver_one(
    settings: Settings,
    store: Store,
    env: jinja2.Environment,
    channel: Mailer,
    digest: DigestRow,
    sub: SubscriberSettings,
    now: datetime,
) -> DeliveryOutcome:
    items = store.digest_items(digest.id)
    lines = [(i.entry, i.section, i.reasons, i.also_in) for i in items]
    try:
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
        data = message_bytes(build_message(envelope, html, text))
    except TemplateError as exc:
        store.mark_failed(digest.id, str(exc), retry_at=now + RETRY_BASE)
        return DeliveryOutcome(sub.email, digest.period, len(items), str(exc), temporary=True)
    if not store.mark_sending(digest.id, now):
        return DeliveryOutcome(sub.email, digest.period, len(items), "claimed by another run")
    try:
        await channel.send(
            data,
            settings.digest.from_address,
            sub.email,
            name=f"{digest.period.replace(':', '')}-{sub.email}",
            html=html,
        )
    except FatalDeliveryError as exc:
        store.mark_failed(digest.id, str(exc), retry_at=now)
        raise
    except DeliveryError as exc:
        retry_at = _backoff(now, digest.attempts + 1) if exc.temporary else None
        store.mark_failed(digest.id, str(exc), retry_at=retry_at)
        return DeliveryOutcome(
            sub.email,
            digest.period,
            len(items),
            str(exc),
            exc.temporary,
            unavailable=isinstance(exc, ServerUnavailable),
        )
    store.mark_sent(digest.id, now)
    return DeliveryOutcome(sub.email, digest.period, len(items))


def _backoff(now: datetime, attempt: int) -> datetime:
    """Exponential, with up to 25% jitter so retries from many digests spread out."""
    delay: timedelta = min(RETRY_MAX, RETRY_BASE * (2 ** max(0, attempt - 1)))
    return now + delay + delay * (secrets.randbelow(1000) / 4000)


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
            reading_minutes=summarize.reading_minutes(entry.content),
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


def utcnow() -> datetime:
    return datetime.now(UTC)
