"""The config: a TOML file read into pydantic-settings models, environment on top.

This is the only module that reads the config file or the environment. Every problem is
reported with the field, the feed or subscriber it belongs to, and the line in the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from digest.errors import ConfigError
from digest.schedule import Schedule, parse_schedule

DEFAULT_CONFIG = "config.toml"
_EMAIL = re.compile(
    r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)
_FEED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_email(value: str) -> str:
    value = value.strip()
    if not _EMAIL.match(value):
        raise ValueError(f"not an email address: {value!r}")
    return value


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name like 'Europe/London')"
        ) from None
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DigestSettings(_Section):
    database: str = "sqlite:///digest.db"
    timezone: str = "UTC"
    from_: str = Field(default="Digest <digest@example.org>", alias="from")
    name: str = "Digest"
    reply_to: str | None = None
    subject: str = "Your {period} digest: {count} new {posts} from {sources}"
    templates_dir: Path | None = None
    unsubscribe_url: str | None = None
    group_by: Literal["rank", "feed"] = "rank"
    images: bool = Field(
        default=False,
        description="show each post's first https image that has a size and alt text",
    )
    html_budget_kb: int = Field(
        default=90, ge=20, le=100, description="HTML part size cap; Gmail clips at ~102 KB"
    )

    _tz = field_validator("timezone")(_check_timezone)

    @field_validator("from_")
    @classmethod
    def _from_address(cls, value: str) -> str:
        address = parseaddr(value)[1]
        if not address or not _EMAIL.match(address) or "\n" in value or "\r" in value:
            raise ValueError(f"not an address like 'Digest <digest@example.org>': {value!r}")
        return value

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        return None if value is None else _check_email(value)

    @property
    def from_address(self) -> str:
        return parseaddr(self.from_)[1]

    @property
    def from_domain(self) -> str:
        return self.from_address.rsplit("@", 1)[1]


class DeliverySettings(_Section):
    mode: Literal["smtp", "folder"] = "smtp"
    folder: Path = Path("outbox")
    connections: int = Field(default=2, ge=1, le=64, description="parallel SMTP connections")
    rate_limit: float = Field(default=0.0, ge=0, description="messages per second; 0: no limit")
    max_hard_bounces: int = Field(
        default=3, ge=1, description="consecutive permanent failures before suspending"
    )


class SmtpSettings(_Section):
    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = Field(default=60.0, gt=0)
    ca_file: Path | None = None
    allow_plaintext_auth: bool = False


class CollectSettings(_Section):
    timeout: float = Field(
        default=30.0, gt=0, description="whole-request deadline per feed, seconds"
    )
    max_bytes: int = Field(
        default=10_000_000, gt=0, description="cap on a feed's decoded size, bytes"
    )
    concurrency: int = Field(default=32, ge=1, le=512, description="feeds fetched at once")
    per_host: int = Field(
        default=4, ge=1, le=512, description="requests to one host at once (politeness)"
    )
    max_redirects: int = Field(default=5, ge=0, le=20)
    block_private_addresses: bool = Field(
        default=False,
        description="refuse feeds (and redirects) that lead to private, loopback or link-local"
        " addresses, checked on the address connected to",
    )
    retry_base_minutes: float = Field(
        default=15.0, gt=0, description="a failing feed waits this long, doubling per failure"
    )
    retry_max_hours: float = Field(default=24.0, gt=0, description="the longest such wait")
    broken_after_hours: float = Field(
        default=24.0,
        gt=0,
        description="a feed failing this long (and 3+ times) is reported as persistently broken",
    )
    processes: int = Field(
        default=0, ge=0, le=64, description="worker processes for parsing; 0: one per core"
    )
    parse_timeout: float = Field(
        default=60.0,
        gt=0,
        description="a feed whose parsing takes longer fails, and its parser process is stopped;"
        " seconds",
    )
    interval_minutes: float = Field(default=30.0, gt=0)
    # Fractions of a minute are allowed (tests collect every few seconds).
    jitter: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="`digest serve` starts each collect up to this fraction of the interval late,"
        " so many installations do not hit the same feeds at the same second",
    )
    user_agent: str = "digest/0.1 (+self-hosted feed digest)"


class FeedSettings(_Section):
    name: str
    url: str
    title: str | None = None
    weight: float = Field(default=1.0, ge=0)
    cap: int | None = Field(default=None, ge=1, description="at most this many featured posts")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _FEED_NAME.match(value):
            raise ValueError(f"feed names use letters, digits, '.', '_' and '-': {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        if "://" in value or re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", value):
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https", "file") or (
                parts.scheme != "file" and not parts.hostname
            ):
                raise ValueError(f"not an http(s) URL or a file path: {value!r}")
            if parts.scheme != "file" and " " in value:
                raise ValueError(f"URL contains a space: {value!r}")
        elif not value:
            raise ValueError("empty URL")
        return value

    @property
    def is_local(self) -> bool:
        return not self.url.startswith(("http://", "https://"))


class SubscriberSettings(_Section):
    email: str
    name: str | None = None
    schedule: str = "daily"
    timezone: str | None = None
    feeds: list[str] | None = None
    max_items: int = Field(default=20, ge=1, le=500)
    per_feed_cap: int = Field(default=10, ge=1)
    interests: list[str] = []
    mute: list[str] = []
    feed_weights: dict[str, float] = {}
    explain: bool = False

    _email = field_validator("email")(_check_email)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else _check_timezone(value)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)  # raises ValueError with the reason
        return value


class DkimSettings(_Section):
    """DKIM signing of every digest, on when this section is present."""

    selector: str
    private_key: Path  # PEM file; relative to the config file
    domain: str | None = None  # default: the domain of digest.from

    @field_validator("selector", "domain")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", value):
            raise ValueError(f"not a DNS name: {value!r}")
        return value


class ServeSettings(_Section):
    """`digest serve` only; `digest run` under cron ignores these."""

    retry_seconds: float = Field(
        default=60.0,
        gt=0,
        description="wait this long before the next send check when another process held the"
        " store's lock or the mail server was unreachable",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM, wait this long for the message being sent to finish",
    )
    watch_config: bool = Field(
        default=True, description="reload when the config file changes, as on SIGHUP"
    )
    tick_seconds: float = Field(
        default=5.0,
        gt=0,
        description="how often to look at the config file and for jumps of the wall clock"
        " (a suspended machine, a corrected clock)",
    )
    stale_after_minutes: float = Field(
        default=120.0,
        gt=0,
        description="`digest status` is unhealthy when the last successful collect, or the oldest"
        " undelivered digest, is older than this",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DIGEST_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
    )

    digest: DigestSettings = DigestSettings()
    delivery: DeliverySettings = DeliverySettings()
    smtp: SmtpSettings = SmtpSettings()
    collect: CollectSettings = CollectSettings()
    dkim: DkimSettings | None = None
    serve: ServeSettings = ServeSettings()
    feeds: list[FeedSettings] = []
    subscribers: list[SubscriberSettings] = []

    # Set by load_config, not by the file: where relative paths start.
    _base_dir: Path = PrivateAttr(default=Path("."))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, so secrets and deploy-specific values stay out of it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        problems: list[str] = []
        names = [f.name for f in self.feeds]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"feeds: the name {name!r} is used twice")
        emails = [s.email.lower() for s in self.subscribers]
        for email in sorted({e for e in emails if emails.count(e) > 1}):
            problems.append(f"subscribers: {email} is listed twice")
        known = set(names)
        for index, sub in enumerate(self.subscribers):
            for feed in sub.feeds or []:
                if feed not in known:
                    problems.append(
                        f"subscribers[{index}] ({sub.email}) -> feeds: unknown feed {feed!r}"
                        f" (known: {', '.join(sorted(known)) or 'none'})"
                    )
            for feed in sub.feed_weights:
                if feed not in known:
                    problems.append(
                        f"subscribers[{index}] ({sub.email}) -> feed_weights: unknown feed {feed!r}"
                    )
        if self.delivery.mode == "smtp" and self.smtp.username and self.smtp.password is None:
            problems.append(
                "smtp -> password: smtp.username is set but DIGEST_SMTP__PASSWORD is not"
            )
        smtp = self.smtp
        if (
            self.delivery.mode == "smtp"
            and smtp.username
            and smtp.security == "none"
            and not smtp.allow_plaintext_auth
            and not is_loopback(smtp.host)
        ):
            problems.append(
                f"smtp -> security: a login to {smtp.host} needs 'starttls' or 'tls'"
                " (set allow_plaintext_auth = true to send the password in the clear)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # Paths in the file are relative to the file, not to wherever cron starts us.
    def resolve(self, path: Path | str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self._base_dir / p

    @property
    def database_url(self) -> str:
        url = self.digest.database
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
            return prefix + str(self.resolve(url[len(prefix) :]))
        return url

    def feed_location(self, feed: FeedSettings) -> str:
        if feed.url.startswith("file://"):
            return str(self.resolve(urlsplit(feed.url).path))
        return feed.url if not feed.is_local else str(self.resolve(feed.url))

    def subscriber_timezone(self, sub: SubscriberSettings) -> ZoneInfo:
        return ZoneInfo(sub.timezone or self.digest.timezone)

    def subscriber_feeds(self, sub: SubscriberSettings) -> list[FeedSettings]:
        wanted = set(sub.feeds) if sub.feeds is not None else None
        return [f for f in self.feeds if wanted is None or f.name in wanted]

    def subscriber_schedule(self, sub: SubscriberSettings) -> Schedule:
        return parse_schedule(sub.schedule)


def config_path(given: str | None) -> Path:
    return Path(given or os.environ.get("DIGEST_CONFIG") or DEFAULT_CONFIG)


def load_config(path: Path) -> Settings:
    """Read and validate; raise ConfigError listing every problem, each with its place."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such config file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    if isinstance(data.get("smtp"), dict) and "password" in data["smtp"]:
        raise ConfigError(
            [
                f"{path}:{_line_of(text, ('smtp', 'password')) or '?'}: smtp -> password: keep the "
                "password out of the file; set DIGEST_SMTP__PASSWORD in the environment"
            ]
        )
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, data, text, path)) from None
    settings._base_dir = path.resolve().parent
    return settings


def _describe(exc: ValidationError, data: dict[str, Any], text: str, path: Path) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling; see config.example.toml)"
        where = _name_loc(loc, data)
        line = _line_of(text, loc)
        prefix = f"{path}:{line}" if line else str(path)
        problems.append(f"{prefix}: {where}: {message}" if where else f"{prefix}: {message}")
    return problems


def _name_loc(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """('subscribers', 1, 'timezone') -> 'subscribers[1] (bob@example.org) -> timezone'."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                entry = node[item]
                who = entry.get("email") or entry.get("name")
                if isinstance(who, str):
                    label += f" ({who})"
            if parts:
                parts[-1] += label
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return " -> ".join(parts)


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line number of a setting, for error messages."""
    keys = [k for k in loc if isinstance(k, str)]
    indexes = [k for k in loc if isinstance(k, int)]
    if not keys:
        return None
    table, rest = keys[0], keys[1:]
    lines = text.splitlines()
    header_single = re.compile(rf"^\s*\[\s*{re.escape(table)}\s*\]")
    header_array = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
    start = None
    seen = -1
    want = indexes[0] if indexes else 0
    for number, line in enumerate(lines):
        if header_single.match(line) or (header_array.match(line) and (seen := seen + 1) == want):
            start = number
            break
    if start is None:
        top = re.compile(rf"^\s*{re.escape(table)}\s*=")
        return next((n + 1 for n, line in enumerate(lines) if top.match(line)), None)
    if not rest:
        return start + 1
    key = re.compile(rf"^\s*\"?{re.escape(rest[0])}\"?\s*=")
    for number in range(start + 1, len(lines)):
        if re.match(r"^\s*\[", lines[number]):
            break
        if key.match(lines[number]):
            return number + 1
    return start + 1
