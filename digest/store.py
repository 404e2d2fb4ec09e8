"""Storage: SQLAlchemy 2 Core over SQLite (default) or PostgreSQL. The only module that imports
SQLAlchemy. Times are stored as naive UTC and handed out as aware UTC."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    inspect,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.types import TypeDecorator

from digest.errors import LockHeld, StoreError
from digest.models import ParsedEntry, content_hash

SCHEMA_VERSION = 3


def _lock_key(schema: str) -> int:
    """PostgreSQL scopes advisory locks to the database; the schema tells two stores that share
    one database apart."""
    digest = hashlib.sha256(f"digest-run-lock:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

feeds = Table(
    "feeds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("title", Text, nullable=False, default=""),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("last_fetch_at", UTCDateTime),
    Column("last_ok_at", UTCDateTime),
    Column("last_error", Text),
    Column("failures", Integer, nullable=False, default=0),
    # Schema 2: where the feed is fetched from when that is not the configured URL (after a
    # permanent redirect or discovery) and why; 410 Gone; backoff; a body hash for servers
    # that ignore conditional requests.
    Column("fetch_url", Text),
    Column("fetch_url_reason", String(32)),
    Column("gone_at", UTCDateTime),
    Column("next_fetch_at", UTCDateTime),
    Column("failing_since", UTCDateTime),
    Column("last_error_kind", String(32)),
    Column("body_hash", String(64)),
    # Schema 3: a hash per item of the last body parsed (space-separated), so a changed feed's
    # unchanged items are not read again.
    Column("item_hashes", Text),
)

entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("feed_id", Integer, ForeignKey("feeds.id"), nullable=False),
    Column("key", String(1000), nullable=False),
    Column("url", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("author", Text, nullable=False, default=""),
    Column("published", UTCDateTime),
    Column("content", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("summary", Text),
    Column("summary_key", String(100)),
    Column("reading_minutes", Integer, nullable=False, default=0),
    # Schema 2: the post's ranking features (rank.post_features), made with its summary, and
    # what they were made for (summary key + features version).
    Column("rank_features", LargeBinary),
    Column("features_key", String(160)),
    UniqueConstraint("feed_id", "key", name="uq_entries_feed_key"),
)
Index("ix_entries_feed_seen", entries.c.feed_id, entries.c.first_seen)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("suspended", Boolean, nullable=False, default=False),
    Column("hard_bounces", Integer, nullable=False, default=0),
)

# The outbox: one row per subscriber per schedule slot, written with its entries before any
# send. States: pending -> sending -> sent | failed; superseded when a later digest took over
# its entries.
digests = Table(
    "digests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id"), nullable=False),
    Column("period", String(32), nullable=False),
    Column("slot_at", UTCDateTime, nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("state", String(16), nullable=False, default="pending"),
    Column("message_id", String(300), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("next_attempt_at", UTCDateTime),
    Column("sent_at", UTCDateTime),
    # The finished message, kept until the server accepts it: a retry sends the same bytes.
    Column("message", LargeBinary),
    UniqueConstraint("subscriber_id", "period", name="uq_digests_subscriber_period"),
)
Index("ix_digests_state", digests.c.state, digests.c.next_attempt_at)

digest_entries = Table(
    "digest_entries",
    metadata,
    Column("digest_id", Integer, ForeignKey("digests.id"), primary_key=True),
    Column("entry_id", Integer, ForeignKey("entries.id"), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("section", String(16), nullable=False),  # featured, more, merged
    Column("score", Float, nullable=False, default=0.0),
    Column("reasons", Text, nullable=False, default=""),
    Column("also_in", Text, nullable=False, default=""),
)
Index("ix_digest_entries_entry", digest_entries.c.entry_id)


@dataclass(frozen=True, slots=True)
class FeedState:
    id: int
    name: str
    etag: str | None
    last_modified: str | None
    title: str
    url: str = ""
    fetch_url: str | None = None
    fetch_url_reason: str | None = None
    gone_at: datetime | None = None
    next_fetch_at: datetime | None = None
    failing_since: datetime | None = None
    failures: int = 0
    body_hash: str | None = None
    item_hashes: str | None = None

    @property
    def location(self) -> str:
        """Where to fetch: the configured URL unless the feed moved or was discovered."""
        return self.fetch_url or self.url


@dataclass(frozen=True, slots=True)
class FetchRecord:
    """What one collect learned about a feed, to be stored."""

    error: str | None = None
    error_kind: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    keep_validators: bool = False
    title: str | None = None
    body_hash: str | None = None
    # After a parse: the items' hashes, space-separated ("" when none could be made).
    item_hashes: str | None = None
    fetch_url: str | None = None
    fetch_url_reason: str | None = None
    gone: bool = False
    next_fetch_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SubscriberRow:
    id: int
    email: str
    first_seen: datetime
    suspended: bool


@dataclass(frozen=True, slots=True)
class DigestRow:
    id: int
    subscriber_id: int
    email: str
    period: str
    slot_at: datetime
    window_start: datetime
    window_end: datetime
    created_at: datetime
    state: str
    message_id: str
    attempts: int
    last_error: str | None
    message: bytes | None = None


@dataclass(frozen=True, slots=True)
class EntryRow:
    id: int
    feed: str
    feed_title: str
    url: str
    title: str
    author: str
    published: datetime | None
    first_seen: datetime
    content: str
    content_hash: str
    summary: str | None
    summary_key: str | None
    reading_minutes: int


@dataclass(frozen=True, slots=True)
class DigestItemRow:
    entry: EntryRow
    position: int
    section: str
    reasons: str
    also_in: str


@dataclass(frozen=True, slots=True)
class NewDigest:
    subscriber_id: int
    period: str
    slot_at: datetime
    window_start: datetime
    window_end: datetime
    created_at: datetime
    message_id: str
    # (entry_id, section, score, reasons, also_in) in digest order
    items: Sequence[tuple[int, str, float, str, str]]


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url, future=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open database {_redact(url)}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._pg_lock_conn: Connection | None = None
        self._pg_lock_key = 0
        self._file_lock: FileLock | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.unlock()
        self.engine.dispose()

    # ---- schema -------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create missing tables; record the schema version (future versions migrate here)."""
        try:
            metadata.create_all(self.engine)
            self._add_missing_columns()
            with self.engine.begin() as conn:
                current = conn.execute(
                    select(meta.c.value).where(meta.c.key == "schema_version")
                ).scalar()
                if current is None:
                    conn.execute(
                        meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
                    )
                elif int(current) > SCHEMA_VERSION:
                    raise StoreError(
                        f"database schema {current} is newer than this digest ({SCHEMA_VERSION})"
                    )
                elif int(current) < SCHEMA_VERSION:
                    conn.execute(
                        update(meta)
                        .where(meta.c.key == "schema_version")
                        .values(value=str(SCHEMA_VERSION))
                    )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot prepare database {_redact(self.url)}: {exc}") from None

    def _add_missing_columns(self) -> None:
        """Columns added since a table was created, added in place (all are nullable)."""
        found = inspect(self.engine)
        with self.engine.begin() as conn:
            for table in metadata.sorted_tables:
                have = {c["name"] for c in found.get_columns(table.name, schema=table.schema)}
                for column in table.columns:
                    if column.name not in have:
                        kind = column.type.compile(dialect=self.engine.dialect)
                        conn.execute(
                            text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                        )

    # ---- one run at a time --------------------------------------------------------------

    def lock(self) -> None:
        """Take this store's run lock or raise LockHeld at once."""
        if self.dialect == "postgresql":
            conn = self.engine.connect()
            schema = conn.execute(text("SELECT current_schema()")).scalar()
            self._pg_lock_key = _lock_key(str(schema))
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": self._pg_lock_key}
            ).scalar()
            conn.commit()
            if not got:
                conn.close()
                raise LockHeld("another digest run holds this database's lock")
            self._pg_lock_conn = conn
        elif self.dialect == "sqlite":
            path = self.engine.url.database
            if path and path != ":memory:":
                lock = FileLock(str(Path(path).with_name(Path(path).name + ".lock")), timeout=0)
                try:
                    lock.acquire()
                except Timeout:
                    raise LockHeld(f"another digest run holds {lock.lock_file}") from None
                self._file_lock = lock

    def unlock(self) -> None:
        if self._pg_lock_conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._pg_lock_conn.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": self._pg_lock_key}
                )
                self._pg_lock_conn.commit()
            self._pg_lock_conn.close()
            self._pg_lock_conn = None
        if self._file_lock is not None:
            self._file_lock.release()
            self._file_lock = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.lock()
        try:
            yield
        finally:
            self.unlock()

    # ---- feeds --------------------------------------------------------------------------

    def sync_feeds(self, wanted: Sequence[tuple[str, str]]) -> dict[str, FeedState]:
        """Make sure a row exists for each (name, url). A changed URL is a new start: validators,
        a moved or discovered location, 'gone' and backoff are forgotten."""
        with self.engine.begin() as conn:
            rows = {r.name: r for r in conn.execute(select(feeds))}
            for name, url in wanted:
                row = rows.get(name)
                if row is None:
                    conn.execute(feeds.insert().values(name=name, url=url, title="", failures=0))
                elif row.url != url:
                    conn.execute(
                        update(feeds)
                        .where(feeds.c.id == row.id)
                        .values(
                            url=url,
                            etag=None,
                            last_modified=None,
                            fetch_url=None,
                            fetch_url_reason=None,
                            gone_at=None,
                            next_fetch_at=None,
                            failing_since=None,
                            failures=0,
                            body_hash=None,
                            item_hashes=None,
                        )
                    )
            names = [name for name, _ in wanted]
            return {
                r.name: _feed_state(r)
                for r in conn.execute(select(feeds).where(feeds.c.name.in_(names)))
            }

    def add_entries(self, feed_id: int, parsed: Sequence[ParsedEntry], now: datetime) -> int:
        """Store entries not seen before (first_seen = now); refresh changed ones. Returns how
        many entries were new."""
        with self.engine.begin() as conn:
            return _add_entries(conn, self.dialect, feed_id, parsed, now)

    def save_collected(
        self, now: datetime, collected: Sequence[tuple[int, FetchRecord, Sequence[ParsedEntry]]]
    ) -> list[int]:
        """Feeds' collects in one transaction: for each (feed id, what the fetch learned, its
        entries), the entries and the feed's state together, so a crash never keeps entries
        without the validators that would fetch them again, or the reverse. Returns how many
        entries were new, per feed. A database failure is a StoreError (nothing of the batch
        is kept)."""
        try:
            return self._save_collected(now, collected)
        except SQLAlchemyError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise StoreError(
                f"cannot save collected feeds to {_redact(self.url)}: {reason}"
            ) from None

    def _save_collected(
        self, now: datetime, collected: Sequence[tuple[int, FetchRecord, Sequence[ParsedEntry]]]
    ) -> list[int]:
        with self.engine.begin() as conn:
            counts = []
            # Feeds whose rows change the same columns (every 304, say) are updated by one
            # executemany: a statement per feed costs more than the update itself.
            # Likewise the batch's new entries go in by one executemany.
            updates: dict[Any, list[dict[str, Any]]] = {}
            fresh: list[dict[str, Any]] = []
            changed: list[dict[str, Any]] = []
            for feed_id, record, parsed in collected:
                new, edited = _entry_rows(conn, feed_id, parsed, now)
                counts.append(len(new))
                fresh += new
                changed += edited
                statement, params = _feed_update(feed_id, _fetch_values(now, record), now)
                updates.setdefault(statement, []).append(params)
            _write_entries(conn, self.dialect, fresh, changed)
            for statement, rows in updates.items():
                conn.execute(statement, rows)
        return counts

    def unsummarized(
        self, since: datetime, key_suffix: str, after_id: int = 0, limit: int = 1000
    ) -> list[tuple[int, str, str, str, datetime | None, str]]:
        """(id, url, title, content, published, content_hash) of entries first seen after
        `since` whose summary or ranking features were not made for their current content
        (`features_key` = content hash + `key_suffix`); a page of them by id."""
        current = entries.c.content_hash + literal(key_suffix)
        query = (
            select(
                entries.c.id,
                entries.c.url,
                entries.c.title,
                entries.c.content,
                entries.c.published,
                entries.c.content_hash,
            )
            .where(entries.c.first_seen > since)
            .where((entries.c.features_key.is_(None)) | (entries.c.features_key != current))
            .where(entries.c.id > after_id)
            .order_by(entries.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                (r.id, r.url, r.title, r.content, r.published, r.content_hash)
                for r in conn.execute(query)
            ]

    def rank_features(
        self, entry_ids: Sequence[int], features_keys: Mapping[int, str]
    ) -> dict[int, bytes]:
        """Stored ranking features of these entries, where made for the given key."""
        if not entry_ids:
            return {}
        query = select(entries.c.id, entries.c.rank_features, entries.c.features_key).where(
            entries.c.id.in_(list(entry_ids))
        )
        with self.engine.connect() as conn:
            return {
                r.id: bytes(r.rank_features)
                for r in conn.execute(query)
                if r.rank_features is not None and r.features_key == features_keys.get(r.id)
            }

    def sync_subscribers(self, emails: Sequence[str], now: datetime) -> dict[str, SubscriberRow]:
        keyed = {e.lower(): e for e in emails}
        with self.engine.begin() as conn:
            known = {r.email for r in conn.execute(select(subscribers.c.email))}
            missing = [
                {"email": k, "first_seen": now, "suspended": False, "hard_bounces": 0}
                for k in keyed
                if k not in known
            ]
            if missing:
                conn.execute(_insert_ignore(self.dialect, subscribers, ("email",)), missing)
            rows = conn.execute(select(subscribers).where(subscribers.c.email.in_(list(keyed))))
            return {
                keyed[r.email]: SubscriberRow(r.id, r.email, r.first_seen, r.suspended)
                for r in rows
            }

    # ---- digests ------------------------------------------------------------------------

    def digest(self, digest_id: int) -> DigestRow:
        with self.engine.connect() as conn:
            return _digest_row(
                conn.execute(_digest_select().where(digests.c.id == digest_id)).one()
            )

    def last_digest(self, subscriber_id: int) -> DigestRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                _digest_select()
                .where(digests.c.subscriber_id == subscriber_id)
                .order_by(digests.c.slot_at.desc(), digests.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else _digest_row(row)

    def candidates(
        self,
        subscriber_id: int,
        feed_ids: Sequence[int],
        since: datetime,
        until: datetime,
        *,
        opening_chars: int | None = None,
    ) -> list[EntryRow]:
        """Entries first seen in (since, until] on these feeds, plus entries of this
        subscriber's digests that never went out, minus anything already in a live digest."""
        carried = (
            select(digest_entries.c.entry_id)
            .join(digests, digests.c.id == digest_entries.c.digest_id)
            .where(digests.c.subscriber_id == subscriber_id)
            .where(digests.c.state.in_(("pending", "failed")))
        )
        taken = (
            select(digest_entries.c.entry_id)
            .join(digests, digests.c.id == digest_entries.c.digest_id)
            .where(digests.c.subscriber_id == subscriber_id)
            .where(digests.c.state.in_(("sent", "sending")))
        )
        window = and_(
            entries.c.feed_id.in_(list(feed_ids)),
            entries.c.first_seen > since,
            entries.c.first_seen <= until,
        )
        query = (
            _entry_select(opening_chars=opening_chars)
            .where(window | entries.c.id.in_(carried))
            .where(entries.c.id.not_in(taken))
            .order_by(entries.c.first_seen, entries.c.id)
        )
        with self.engine.connect() as conn:
            return [_entry_row(r) for r in conn.execute(query)]

    def contents(self, entry_ids: Sequence[int]) -> dict[int, str]:
        """Full HTML of these entries."""
        if not entry_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(entries.c.id, entries.c.content).where(entries.c.id.in_(list(entry_ids)))
            )
            return {r.id: r.content for r in rows}

    def save_summaries(
        self, values: Sequence[tuple[int, str, str, int, bytes | None, str | None]]
    ) -> None:
        """(entry_id, summary, summary_key, reading_minutes, rank_features, features_key) for
        each entry; features None where they were not made with the summary."""
        if not values:
            return
        rows = [
            {
                "b_id": entry_id,
                "b_summary": summary,
                "b_key": key,
                "b_minutes": minutes,
                "b_features": features,
                "b_features_key": features_key,
            }
            for entry_id, summary, key, minutes, features, features_key in values
        ]
        with self.engine.begin() as conn:
            conn.execute(_SAVE_SUMMARY, rows)

    def create_digest(self, new: NewDigest) -> int | None:
        """Write a digest and its entries in one transaction.

        Older undelivered digests of this subscriber, whose entries it carries, become
        'superseded'. A digest with no entries is written as 'empty': its slot is handled and
        nothing is sent. Returns None if this slot already has a digest."""
        try:
            with self.engine.begin() as conn:
                digest_id = conn.execute(
                    digests.insert()
                    .values(
                        subscriber_id=new.subscriber_id,
                        period=new.period,
                        slot_at=new.slot_at,
                        window_start=new.window_start,
                        window_end=new.window_end,
                        created_at=new.created_at,
                        state="pending" if new.items else "empty",
                        message_id=new.message_id,
                        attempts=0,
                        next_attempt_at=new.created_at if new.items else None,
                    )
                    .returning(digests.c.id)
                ).scalar_one()
                if new.items:
                    conn.execute(
                        digest_entries.insert(),
                        [
                            {
                                "digest_id": digest_id,
                                "entry_id": entry_id,
                                "position": position,
                                "section": section,
                                "score": score,
                                "reasons": reasons,
                                "also_in": also_in,
                            }
                            for position, (entry_id, section, score, reasons, also_in) in enumerate(
                                new.items
                            )
                        ],
                    )
                conn.execute(
                    update(digests)
                    .where(digests.c.subscriber_id == new.subscriber_id)
                    .where(digests.c.id != digest_id)
                    .where(digests.c.state.in_(("pending", "failed")))
                    .values(state="superseded", next_attempt_at=None)
                )
                return int(digest_id)
        except IntegrityError:
            return None

    def due_deliveries(
        self, now: datetime, *, after_id: int = 0, limit: int | None = None
    ) -> list[DigestRow]:
        """Pending digests whose next attempt is due, by id, one page at a time."""
        query = (
            _digest_select()
            .where(digests.c.state == "pending")
            .where(digests.c.next_attempt_at <= now)
            .where(digests.c.id > after_id)
            .where(subscribers.c.suspended.is_(False))
            .order_by(digests.c.id)
        )
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_digest_row(r) for r in conn.execute(query)]

    def digest_items(self, digest_id: int, *, with_content: bool = False) -> list[DigestItemRow]:
        query = (
            _entry_select(with_content=with_content)
            .add_columns(
                digest_entries.c.position,
                digest_entries.c.section,
                digest_entries.c.reasons,
                digest_entries.c.also_in,
            )
            .join(digest_entries, digest_entries.c.entry_id == entries.c.id)
            .where(digest_entries.c.digest_id == digest_id)
            .order_by(digest_entries.c.position)
        )
        with self.engine.connect() as conn:
            return [
                DigestItemRow(_entry_row(r), r.position, r.section, r.reasons, r.also_in)
                for r in conn.execute(query)
            ]

    def mark_sending(self, digest_id: int, now: datetime) -> bool:
        """Claim a pending digest; False if someone else changed it first."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(digests)
                .where(digests.c.id == digest_id)
                .where(digests.c.state == "pending")
                .values(state="sending", attempts=digests.c.attempts + 1)
            )
            return bool(result.rowcount)

    def mark_sent(self, digest_id: int, now: datetime) -> None:
        with self.engine.begin() as conn:
            subscriber_id = conn.execute(
                update(digests)
                .where(digests.c.id == digest_id)
                .values(
                    state="sent", sent_at=now, last_error=None, next_attempt_at=None, message=None
                )
                .returning(digests.c.subscriber_id)
            ).scalar_one()
            # Bounces count only while consecutive: a delivered digest clears them.
            conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id)
                .where(subscribers.c.hard_bounces > 0)
                .values(hard_bounces=0)
            )

    def mark_failed(
        self,
        digest_id: int,
        error: str,
        *,
        retry_at: datetime | None,
        count_attempt: bool = True,
    ) -> None:
        """retry_at set: back to pending for a later attempt; None: failed for good.
        count_attempt=False: nothing reached the server, so the claim's attempt is undone."""
        values: dict[str, Any] = {"last_error": error[:2000], "next_attempt_at": retry_at}
        values["state"] = "pending" if retry_at is not None else "failed"
        if not count_attempt:
            values["attempts"] = digests.c.attempts - 1
        with self.engine.begin() as conn:
            conn.execute(update(digests).where(digests.c.id == digest_id).values(**values))

    def save_message(self, digest_id: int, data: bytes) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(digests).where(digests.c.id == digest_id).values(message=data))

    def record_bounce(self, subscriber_id: int, limit: int) -> bool:
        """Count a hard bounce; True when this one suspends the subscriber."""
        with self.engine.begin() as conn:
            bounces = conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id)
                .values(hard_bounces=subscribers.c.hard_bounces + 1)
                .returning(subscribers.c.hard_bounces, subscribers.c.suspended)
            ).one()
            if bounces.hard_bounces >= limit and not bounces.suspended:
                conn.execute(
                    update(subscribers)
                    .where(subscribers.c.id == subscriber_id)
                    .values(suspended=True)
                )
                return True
        return False

    def retry_failed(self, now: datetime, email: str | None = None) -> int:
        """Failed digests (of one subscriber, or all) go back to pending, and their subscribers
        are resumed. Returns how many digests were re-queued."""
        with self.engine.begin() as conn:
            who = select(subscribers.c.id)
            if email is not None:
                who = who.where(subscribers.c.email == email.lower())
            ids = [r.id for r in conn.execute(who)]
            conn.execute(
                update(subscribers)
                .where(subscribers.c.id.in_(ids))
                .values(suspended=False, hard_bounces=0)
            )
            result = conn.execute(
                update(digests)
                .where(digests.c.subscriber_id.in_(ids))
                .where(digests.c.state == "failed")
                .values(state="pending", next_attempt_at=now)
            )
            return int(result.rowcount)

    def requeue_interrupted(self, now: datetime) -> int:
        """Digests left 'sending' by a run that died go back to pending (same Message-ID)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(digests)
                .where(digests.c.state == "sending")
                .values(state="pending", next_attempt_at=now)
            )
            return int(result.rowcount)

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                str(state): int(n)
                for state, n in conn.execute(
                    select(digests.c.state, func.count()).group_by(digests.c.state)
                )
            }

    # ---- status and health (serve) ------------------------------------------------------
    # Read-only, lock-free queries for `digest status` and `digest schedule` (safe beside a
    # running `digest serve`), and for when the daemon should next look at the outbox. Rows are
    # plain tuples so this block needs no new types; digest.status names their fields.

    def feed_fetch_states(self) -> list[tuple[Any, ...]]:
        """(name, url, last_fetch_at, last_ok_at, last_error, failures, failing_since,
        next_fetch_at, gone_at, fetch_url, fetch_url_reason) of every known feed."""
        query = select(
            feeds.c.name,
            feeds.c.url,
            feeds.c.last_fetch_at,
            feeds.c.last_ok_at,
            feeds.c.last_error,
            feeds.c.failures,
            feeds.c.failing_since,
            feeds.c.next_fetch_at,
            feeds.c.gone_at,
            feeds.c.fetch_url,
            feeds.c.fetch_url_reason,
        ).order_by(feeds.c.name)
        with self.engine.connect() as conn:
            return [(*r[:5], int(r.failures), *r[6:]) for r in conn.execute(query)]

    def last_sent_at(self) -> datetime | None:
        with self.engine.connect() as conn:
            value: datetime | None = conn.execute(select(func.max(digests.c.sent_at))).scalar()
        return value

    def undelivered_digests(
        self,
    ) -> list[tuple[str, str, str, int, str | None, datetime, datetime | None]]:
        """(email, period, state, attempts, last_error, created_at, next_attempt_at) of every
        digest that is pending, being sent, or failed for good; oldest first."""
        query = (
            select(
                subscribers.c.email,
                digests.c.period,
                digests.c.state,
                digests.c.attempts,
                digests.c.last_error,
                digests.c.created_at,
                digests.c.next_attempt_at,
            )
            .join(subscribers, subscribers.c.id == digests.c.subscriber_id)
            .where(digests.c.state.in_(("pending", "sending", "failed")))
            .order_by(digests.c.created_at, digests.c.id)
        )
        with self.engine.connect() as conn:
            return [
                (
                    r.email,
                    r.period,
                    r.state,
                    int(r.attempts),
                    r.last_error,
                    r.created_at,
                    r.next_attempt_at,
                )
                for r in conn.execute(query)
            ]

    def next_pending_attempt(self, emails: Sequence[str]) -> datetime | None:
        """When the earliest pending digest of these subscribers may be tried; digests of
        subscribers no longer in the config are left out, as delivery leaves them alone."""
        if not emails:
            return None
        query = (
            select(func.min(digests.c.next_attempt_at))
            .join(subscribers, subscribers.c.id == digests.c.subscriber_id)
            .where(digests.c.state == "pending")
            .where(subscribers.c.email.in_([e.lower() for e in emails]))
        )
        with self.engine.connect() as conn:
            value: datetime | None = conn.execute(query).scalar()
        return value

    def subscriber_states(self) -> list[tuple[str, datetime, bool, int, datetime | None]]:
        """(email, first_seen, suspended, hard_bounces, slot_at of the latest digest in any
        state) of every known subscriber; the slot is what due-ness is measured from."""
        latest = (
            select(digests.c.subscriber_id, func.max(digests.c.slot_at).label("slot_at"))
            .group_by(digests.c.subscriber_id)
            .subquery()
        )
        query = (
            select(
                subscribers.c.email,
                subscribers.c.first_seen,
                subscribers.c.suspended,
                subscribers.c.hard_bounces,
                latest.c.slot_at,
            )
            .outerjoin(latest, latest.c.subscriber_id == subscribers.c.id)
            .order_by(subscribers.c.email)
        )
        with self.engine.connect() as conn:
            return [
                (
                    r.email,
                    r.first_seen,
                    bool(r.suspended),
                    int(r.hard_bounces),
                    r.slot_at,
                )
                for r in conn.execute(query)
            ]

    def last_sent_digests(self) -> dict[str, tuple[str, datetime]]:
        """email -> (period, sent_at) of each subscriber's most recently sent digest."""
        latest = (
            select(digests.c.subscriber_id, func.max(digests.c.sent_at).label("sent_at"))
            .where(digests.c.state == "sent")
            .group_by(digests.c.subscriber_id)
            .subquery()
        )
        query = (
            select(subscribers.c.email, digests.c.period, digests.c.sent_at)
            .join(latest, latest.c.subscriber_id == subscribers.c.id)
            .join(
                digests,
                and_(
                    digests.c.subscriber_id == latest.c.subscriber_id,
                    digests.c.sent_at == latest.c.sent_at,
                ),
            )
            .where(digests.c.state == "sent")
        )
        with self.engine.connect() as conn:
            return {r.email: (r.period, r.sent_at) for r in conn.execute(query)}


def _fetch_values(now: datetime, record: FetchRecord) -> dict[str, Any]:
    values: dict[str, Any] = {"last_fetch_at": now, "last_error": record.error}
    if record.fetch_url:
        values |= {"fetch_url": record.fetch_url, "fetch_url_reason": record.fetch_url_reason}
    if record.gone:
        values["gone_at"] = now
    if record.error is None:
        values |= {
            "last_ok_at": now,
            "failures": 0,
            "failing_since": None,
            "last_error_kind": None,
            "next_fetch_at": None,
        }
        if not record.keep_validators:
            values |= {"etag": record.etag, "last_modified": record.last_modified}
        if record.body_hash:
            values["body_hash"] = record.body_hash
        if record.item_hashes is not None:
            values["item_hashes"] = record.item_hashes or None
        if record.title:
            values["title"] = record.title
    else:
        values |= {
            "failures": feeds.c.failures + 1,
            # A bound parameter, not `now` itself: the statement is built once and reused.
            "failing_since": func.coalesce(
                feeds.c.failing_since, bindparam("b_now", type_=UTCDateTime())
            ),
            "last_error_kind": record.error_kind,
            "next_fetch_at": record.next_fetch_at,
        }
    return values


_FEED_UPDATES: dict[tuple[str, ...], Any] = {}


def _feed_update(feed_id: int, values: dict[str, Any], now: datetime) -> tuple[Any, dict[str, Any]]:
    """An UPDATE of one feed's row setting `values` (plain values or SQL expressions), built
    once per set of columns and reused with bound parameters."""
    plain = {k: v for k, v in values.items() if not isinstance(v, ColumnElement)}
    shape = tuple(sorted(values)) + tuple(sorted(plain))
    statement = _FEED_UPDATES.get(shape)
    if statement is None:
        statement = _FEED_UPDATES[shape] = (
            update(feeds)
            .where(feeds.c.id == bindparam("b_feed_id"))
            .values({k: bindparam(f"b_{k}") if k in plain else v for k, v in values.items()})
        )
    params = {"b_feed_id": feed_id, **{f"b_{k}": v for k, v in plain.items()}}
    if "failing_since" in values and "failing_since" not in plain:
        params["b_now"] = now
    return statement, params


# Built once: a collect stores a thousand feeds, and building a statement costs more than
# running it.
_EXISTING_ENTRIES = (
    select(entries.c.id, entries.c.key, entries.c.content_hash, entries.c.title)
    .where(entries.c.feed_id == bindparam("b_feed"))
    .where(entries.c.key.in_(bindparam("b_keys", expanding=True)))
)
_UPDATE_ENTRY = (
    update(entries)
    .where(entries.c.id == bindparam("b_id"))
    .values(
        title=bindparam("b_title"),
        content=bindparam("b_content"),
        content_hash=bindparam("b_hash"),
        url=bindparam("b_url"),
    )
)
_INSERTS: dict[str, Any] = {}
_SAVE_SUMMARY = (
    update(entries)
    .where(entries.c.id == bindparam("b_id"))
    .values(
        summary=bindparam("b_summary"),
        summary_key=bindparam("b_key"),
        reading_minutes=bindparam("b_minutes"),
        rank_features=bindparam("b_features"),
        features_key=bindparam("b_features_key"),
    )
)


def _add_entries(
    conn: Connection, dialect: str, feed_id: int, parsed: Sequence[ParsedEntry], now: datetime
) -> int:
    fresh, changed = _entry_rows(conn, feed_id, parsed, now)
    _write_entries(conn, dialect, fresh, changed)
    return len(fresh)


def _entry_rows(
    conn: Connection, feed_id: int, parsed: Sequence[ParsedEntry], now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows to insert (entries not seen before) and updates (entries whose content or title
    changed) for one feed's parsed entries."""
    unique = {p.key: p for p in parsed}
    if not unique:
        return [], []
    existing = {
        r.key: r
        for r in conn.execute(_EXISTING_ENTRIES, {"b_feed": feed_id, "b_keys": list(unique)})
    }
    fresh = []
    changed = []
    for key, p in unique.items():
        digest_of = p.content_hash or content_hash(p.content)
        row = existing.get(key)
        if row is None:
            fresh.append(
                {
                    "feed_id": feed_id,
                    "key": key,
                    "url": p.url,
                    "title": p.title,
                    "author": p.author,
                    "published": p.published,
                    "content": p.content,
                    "content_hash": digest_of,
                    "first_seen": now,
                    "summary": None,
                    "summary_key": None,
                    "reading_minutes": 0,
                }
            )
        elif row.content_hash != digest_of or row.title != p.title:
            changed.append(
                {
                    "b_id": row.id,
                    "b_title": p.title,
                    "b_content": p.content,
                    "b_hash": digest_of,
                    "b_url": p.url,
                }
            )
    return fresh, changed


def _write_entries(
    conn: Connection, dialect: str, fresh: list[dict[str, Any]], changed: list[dict[str, Any]]
) -> None:
    if changed:
        conn.execute(_UPDATE_ENTRY, changed)
    if fresh:
        insert = _INSERTS.get(dialect)
        if insert is None:
            insert = _INSERTS[dialect] = _insert_ignore(dialect, entries, ("feed_id", "key"))
        conn.execute(insert, fresh)


def _feed_state(r: Any) -> FeedState:
    return FeedState(
        id=r.id,
        name=r.name,
        etag=r.etag,
        last_modified=r.last_modified,
        title=r.title,
        url=r.url,
        fetch_url=r.fetch_url,
        fetch_url_reason=r.fetch_url_reason,
        gone_at=r.gone_at,
        next_fetch_at=r.next_fetch_at,
        failing_since=r.failing_since,
        failures=int(r.failures or 0),
        body_hash=r.body_hash,
        item_hashes=r.item_hashes,
    )


def _digest_select() -> Any:
    return select(digests, subscribers.c.email).join(
        subscribers, subscribers.c.id == digests.c.subscriber_id
    )


def _digest_row(r: Any) -> DigestRow:
    return DigestRow(
        id=r.id,
        subscriber_id=r.subscriber_id,
        email=r.email,
        period=r.period,
        slot_at=r.slot_at,
        window_start=r.window_start,
        window_end=r.window_end,
        created_at=r.created_at,
        state=r.state,
        message_id=r.message_id,
        attempts=r.attempts,
        last_error=r.last_error,
        message=r.message,
    )


def _entry_select(*, with_content: bool = True, opening_chars: int | None = None) -> Any:
    # Rendering a stored digest needs summaries, not the posts, and ranking needs only a post's
    # opening: reading less keeps each query to a few KB instead of the full HTML of every post.
    if not with_content:
        content: Any = literal("").label("content")
    elif opening_chars:
        content = func.substr(entries.c.content, 1, opening_chars).label("content")
    else:
        content = entries.c.content
    return select(
        entries.c.id,
        feeds.c.name.label("feed"),
        feeds.c.title.label("feed_title"),
        entries.c.url,
        entries.c.title,
        entries.c.author,
        entries.c.published,
        entries.c.first_seen,
        content,
        entries.c.content_hash,
        entries.c.summary,
        entries.c.summary_key,
        entries.c.reading_minutes,
    ).join(feeds, feeds.c.id == entries.c.feed_id)


def _entry_row(r: Any) -> EntryRow:
    return EntryRow(
        id=r.id,
        feed=r.feed,
        feed_title=r.feed_title,
        url=r.url,
        title=r.title,
        author=r.author,
        published=r.published,
        first_seen=r.first_seen,
        content=r.content,
        content_hash=r.content_hash,
        summary=r.summary,
        summary_key=r.summary_key,
        reading_minutes=r.reading_minutes or 0,
    )


def _insert_ignore(dialect: str, table: Table, keys: tuple[str, ...]) -> Any:
    if dialect == "postgresql":
        # Imported for PostgreSQL only: ~20 ms of every command's start-up otherwise.
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    return table.insert()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
