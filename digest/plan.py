"""Deciding which digests are due and what goes in them: the window of posts,
summaries (cached), ranking; the result is an outbox row written with its entries."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

import jinja2

from digest import rank, summarize
from digest.compose import compose, digest_view
from digest.config import FeedSettings, Settings, SubscriberSettings
from digest.dkim import DkimError, load_signer
from digest.errors import ConfigError, TemplateError
from digest.models import Candidate, Profile, Selection
from digest.render import (
    make_environment,
    render_bodies,
)
from digest.store import (
    DigestRow,
    EntryRow,
    FeedState,
    NewDigest,
    Store,
    SubscriberRow,
)
from digest.summaries import OPENING_CHARS, features_key, summary_key


def write_due_digests(
    settings: Settings,
    store: Store,
    feed_rows: dict[str, FeedState],
    subscriber_rows: dict[str, SubscriberRow],
    now: datetime,
) -> int:
    """Write every due digest to the outbox, then its finished message beside it.

    Composing here, one digest at a time, keeps the send loop to reading bytes and talking
    SMTP, and makes every retry send exactly these bytes. A digest whose message could not be
    made (a template error, a DKIM key problem) is composed again, and reported, at delivery."""
    created = 0
    templates = settings.digest.templates_dir
    env: jinja2.Environment | None = make_environment(
        settings.resolve(templates) if templates else None
    )
    try:
        signer = load_signer(settings)
    except DkimError:
        signer, env = None, None  # delivery reports the key problem, once
    for sub in settings.subscribers:
        row = subscriber_rows[sub.email]
        if row.suspended:
            continue
        plan = plan_digest(settings, store, sub, row, feed_rows, now)
        if plan is None:
            continue
        digest_id = store.create_digest(plan)
        if digest_id is None or not plan.items:
            continue  # taken, or nothing new this period: no email, the slot is still done
        created += 1
        if env is not None:
            digest = store.digest(digest_id)
            items = store.digest_items(digest_id, with_content=settings.digest.images)
            try:
                composed = compose(settings, sub, digest, items, env, signer=signer)
            except (TemplateError, DkimError):
                continue
            store.save_message(digest_id, composed.data)
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
    rows = store.candidates(
        row.id, [feed_rows[f.name].id for f in feeds], since, now, opening_chars=OPENING_CHARS
    )
    candidates = _with_summaries(store, rows, {f.name: f.weight for f in settings.feeds})
    _preload_features(store, rows, candidates)
    return rank.select(_profile(sub, feeds), candidates, now)


# Entries whose stored ranking features this process has loaded (each once per process).
_PRELOADED: set[int] = set()


def _preload_features(
    store: Store, rows: Sequence[EntryRow], candidates: Sequence[Candidate]
) -> None:
    """Hand the ranker the features the summarize step stored, so the first subscriber of a
    run does not compute them for every post."""
    if len(_PRELOADED) > 100_000:
        _PRELOADED.clear()
    wanted = {
        r.id: features_key(r.content_hash) for r in rows if r.id not in _PRELOADED and r.summary
    }
    blobs = store.rank_features(list(wanted), wanted)
    rank.preload((c, blobs[c.entry_id]) for c in candidates if c.entry_id in blobs)
    _PRELOADED.update(blobs)


def preview_html(settings: Settings, email: str, now: datetime) -> str:
    """The HTML `email` would get if a digest went out now. Records nothing but cached summaries."""
    return preview_bodies(settings, email, now)[0]


def preview_bodies(settings: Settings, email: str, now: datetime) -> tuple[str, str]:
    """(html, text) `email` would get if a digest went out now. Records nothing but cached
    summaries."""
    sub = next((s for s in settings.subscribers if s.email.lower() == email.lower()), None)
    if sub is None:
        raise ConfigError([f"subscribers: no subscriber {email} in the config"])
    store = Store(settings.database_url)
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
    return render_bodies(env, view, budget=settings.digest.html_budget_kb * 1024)


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


def _with_summaries(
    store: Store, rows: Sequence[EntryRow], weights: dict[str, float]
) -> list[Candidate]:
    """Summaries (and reading times) are made when a post is collected and cached per entry and
    content hash; this fills in any that are missing (posts stored by an older summarizer)."""
    fresh: list[tuple[int, str, str, int, bytes | None, str | None]] = []
    out = []
    missing = [
        r.id for r in rows if r.summary is None or r.summary_key != summary_key(r.content_hash)
    ]
    full = store.contents(missing)  # rows carry only the opening; a summary wants it all
    for row in rows:
        if row.id not in full and row.summary is not None:
            text, minutes = row.summary, row.reading_minutes
        else:
            content = full.get(row.id, row.content)
            text = summarize.summarize(row.title, content)
            minutes = summarize.reading_minutes(content)
            # Features made with an older summary no longer match; the summarize step remakes them.
            fresh.append((row.id, text, summary_key(row.content_hash), minutes, None, None))
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
                reading_minutes=minutes,
            )
        )
    store.save_summaries(fresh)
    return out
