"""One small exception tree; each edge translates its library's errors into these."""

from __future__ import annotations


class DigestError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(DigestError):
    """The config file or environment holds a value we cannot use."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class LockHeld(DigestError):
    """Another run holds this store's lock."""


class FeedError(DigestError):
    """One feed could not be fetched or parsed.

    `kind` is the short reason a run's summary groups by (dns, connect, timeout, tls, http,
    too-large, not-a-feed, xml, refused-address, file); `retry_after` is what a 429/503 asked
    for, in seconds."""

    def __init__(
        self, message: str, *, kind: str = "error", retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class FeedGone(FeedError):
    """The server said 410 Gone: the feed was removed on purpose; stop asking."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="gone")


class StoreError(DigestError):
    """The database refused or could not be reached."""


class DeliveryError(DigestError):
    """A digest could not be handed to the mail server or the folder."""

    def __init__(self, message: str, *, temporary: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.code = code


class ServerUnavailable(DeliveryError):
    """The mail server could not be reached at all; nothing was handed over."""

    def __init__(self, message: str) -> None:
        super().__init__(message, temporary=True)


class FatalDeliveryError(DeliveryError):
    """The whole delivery channel is unusable (bad credentials, TLS missing): stop sending."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message, temporary=True, code=code)


class TemplateError(DigestError):
    """A template failed to load or render; the message names file and line."""
