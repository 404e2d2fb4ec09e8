"""Delivering the outbox: compose each pending digest, hand it to SMTP or the folder, record
the result. Per-digest outcomes are values; a channel that is down or refuses us stops the
loop with one report, and everything not attempted stays pending for the next run.

Digests are read page by page and composed one at a time per connection, so memory stays flat
however many subscribers there are."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import jinja2

from digest.compose import compose
from digest.config import Settings, SubscriberSettings
from digest.dkim import DkimError, Signer, load_signer
from digest.errors import DeliveryError, FatalDeliveryError, ServerUnavailable, TemplateError
from digest.mailer import FolderMailer, Mailer, SmtpMailer
from digest.models import DeliveryOutcome, DeliveryReport
from digest.render import make_environment
from digest.store import DigestRow, Store

RETRY_BASE = timedelta(minutes=5)
RETRY_MAX = timedelta(hours=6)
PAGE = 200


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
        ca_file=str(settings.resolve(smtp.ca_file)) if smtp.ca_file else None,
        allow_plaintext_auth=smtp.allow_plaintext_auth,
    )


class _Pace:
    """At most `rate` sends per second across all connections (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            slot = max(now, self.next)
            self.next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


async def deliver(
    settings: Settings,
    store: Store,
    now: datetime,
    mailer_factory: Callable[[], Mailer] | None = None,
) -> DeliveryReport:
    """Send every pending digest whose next attempt is due."""
    report = DeliveryReport()
    by_email = {s.email.lower(): s for s in settings.subscribers}
    templates = settings.digest.templates_dir
    env = make_environment(settings.resolve(templates) if templates else None)
    try:
        signer = load_signer(settings)
    except DkimError as exc:
        report.fatal = f"delivery stopped: {exc}"
        return report
    factory = mailer_factory or (lambda: make_mailer(settings))
    connections = 1 if settings.delivery.mode == "folder" else settings.delivery.connections
    pace = _Pace(settings.delivery.rate_limit)
    queue: asyncio.Queue[DigestRow | None] = asyncio.Queue(maxsize=connections * 2)
    stop = asyncio.Event()

    async def produce() -> None:
        async for digest in _pending(store, now):
            if stop.is_set():
                report.deferred += 1
                continue
            if digest.email in by_email:  # removed from the config: stays in the outbox
                await queue.put(digest)
        for _ in range(connections):
            await queue.put(None)

    async def work() -> None:
        try:
            async with factory() as channel:
                while (digest := await queue.get()) is not None:
                    if stop.is_set():
                        report.deferred += 1
                        continue
                    await pace.wait()
                    sub = by_email[digest.email]
                    outcome = await _deliver_one(
                        settings, store, env, channel, digest, sub, now, signer
                    )
                    report.outcomes.append(outcome)
        except (FatalDeliveryError, ServerUnavailable) as exc:
            if not stop.is_set():
                report.fatal = f"delivery stopped: {exc}"
            stop.set()
            while (await queue.get()) is not None:
                report.deferred += 1

    await asyncio.gather(produce(), *(work() for _ in range(connections)))
    return report


async def _pending(store: Store, now: datetime) -> AsyncIterator[DigestRow]:
    after = 0
    while page := store.due_deliveries(now, after_id=after, limit=PAGE):
        for digest in page:
            yield digest
        after = page[-1].id


async def _deliver_one(
    settings: Settings,
    store: Store,
    env: jinja2.Environment,
    channel: Mailer,
    digest: DigestRow,
    sub: SubscriberSettings,
    now: datetime,
    signer: Signer | None = None,
) -> DeliveryOutcome:
    data = digest.message
    if data is None:  # not composed when it was written (or written by an older version)
        # Post HTML is read only when lead images are on: summaries are all a digest needs.
        items = store.digest_items(digest.id, with_content=settings.digest.images)
        try:
            data = compose(settings, sub, digest, items, env, signer=signer).data
        except (TemplateError, DkimError) as exc:
            store.mark_failed(digest.id, str(exc), retry_at=now + RETRY_BASE)
            return DeliveryOutcome(sub.email, digest.period, str(exc), temporary=True)
        store.save_message(digest.id, data)
    if not store.mark_sending(digest.id, now):
        return DeliveryOutcome(sub.email, digest.period, "claimed by another run")
    try:
        await channel.send(
            data,
            settings.digest.from_address,
            sub.email,
            name=f"{digest.period.replace(':', '')}-{sub.email}",
        )
    except ServerUnavailable as exc:
        # Nothing was handed over: not an attempt against this digest.
        store.mark_failed(digest.id, str(exc), retry_at=now, count_attempt=False)
        raise
    except FatalDeliveryError as exc:
        store.mark_failed(digest.id, str(exc), retry_at=now, count_attempt=False)
        raise
    except DeliveryError as exc:
        if exc.temporary:
            store.mark_failed(digest.id, str(exc), retry_at=_backoff(now, digest.attempts + 1))
            return DeliveryOutcome(sub.email, digest.period, str(exc), temporary=True)
        store.mark_failed(digest.id, str(exc), retry_at=None)
        suspended = store.record_bounce(digest.subscriber_id, settings.delivery.max_hard_bounces)
        return DeliveryOutcome(
            sub.email, digest.period, str(exc), temporary=False, suspended=suspended
        )
    store.mark_sent(digest.id, now)
    return DeliveryOutcome(sub.email, digest.period)


def _backoff(now: datetime, attempt: int) -> datetime:
    """Exponential, with up to 25% jitter so retries from many digests spread out."""
    delay: timedelta = min(RETRY_MAX, RETRY_BASE * (2 ** max(0, attempt - 1)))
    return now + delay + delay * (secrets.randbelow(1000) / 4000)
