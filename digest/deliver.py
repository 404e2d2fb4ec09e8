"""Delivering the outbox: render each pending digest, hand it to SMTP or the folder,
record the result. Per-digest outcomes are values; only a fatal channel error stops the loop."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jinja2

from digest.compose import compose
from digest.config import Settings, SubscriberSettings
from digest.dkim import DkimError, Signer, load_signer
from digest.errors import (
    DeliveryError,
    FatalDeliveryError,
    ServerUnavailable,
    TemplateError,
)
from digest.mailer import FolderMailer, Mailer, SmtpMailer
from digest.render import make_environment
from digest.store import (
    DigestRow,
    Store,
)

RETRY_BASE = timedelta(minutes=5)
RETRY_MAX = timedelta(hours=6)


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    email: str
    period: str
    posts: int
    error: str | None = None
    temporary: bool = False
    unavailable: bool = False


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
    settings: Settings, store: Store, now: datetime, mailer: Mailer | None = None
) -> tuple[list[DeliveryOutcome], str | None]:
    """Send every pending digest that is due; returns the outcomes and a fatal error, if any."""
    outcomes: list[DeliveryOutcome] = []
    pending = store.due_deliveries(now)
    if not pending:
        return outcomes, None
    by_email = {s.email.lower(): s for s in settings.subscribers}
    templates = settings.digest.templates_dir
    env = make_environment(settings.resolve(templates) if templates else None)
    try:
        signer = load_signer(settings)
    except DkimError as exc:
        return outcomes, f"delivery stopped: {exc}"
    try:
        async with mailer or make_mailer(settings) as channel:
            unavailable: str | None = None
            for digest in pending:
                sub = by_email.get(digest.email)
                if sub is None:
                    continue  # removed from the config: keep it in the outbox, send nothing
                if unavailable:
                    # No point knocking 10,000 times on a closed door; these stay pending.
                    outcomes.append(
                        DeliveryOutcome(sub.email, digest.period, 0, unavailable, temporary=True)
                    )
                    continue
                outcome = await _deliver_one(
                    settings, store, env, channel, digest, sub, now, signer
                )
                outcomes.append(outcome)
                if outcome.unavailable:
                    unavailable = f"not attempted: {outcome.error}"
    except FatalDeliveryError as exc:
        return outcomes, f"delivery stopped: {exc}"
    return outcomes, None


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
    items = store.digest_items(digest.id)
    try:
        composed = compose(settings, sub, digest, items, env, signer=signer)
    except (TemplateError, DkimError) as exc:
        store.mark_failed(digest.id, str(exc), retry_at=now + RETRY_BASE)
        return DeliveryOutcome(sub.email, digest.period, len(items), str(exc), temporary=True)
    if not store.mark_sending(digest.id, now):
        return DeliveryOutcome(sub.email, digest.period, len(items), "claimed by another run")
    try:
        await channel.send(
            composed.data,
            settings.digest.from_address,
            sub.email,
            name=f"{digest.period.replace(':', '')}-{sub.email}",
            html=composed.html,
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
