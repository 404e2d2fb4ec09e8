"""Delivery against a real SMTP server (aiosmtpd on 127.0.0.1) that injects faults: every
digest arrives once, temporary failures are retried, permanent ones reported, nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import text

from digest.cli import main
from digest.config import load_config
from digest.store import Store
from tests.conftest import LESSWRONG, FeedServer, Inbox, _free_port, write_config
from tests.test_core_e2e import fixture_links, post_links

PEOPLE = ["ada@example.org", "bob@example.org", "cy@example.org"]


@dataclass
class Faults:
    """What the server does wrong. Lists are consumed one reply at a time."""

    data_replies: list[str] = field(default_factory=list)
    refuse_rcpt: dict[str, str] = field(default_factory=dict)
    drop_after_data: int = 0
    stall_seconds: float = 0.0
    close_session_after: int = 0  # 421 on the MAIL after this many messages in one session


class FaultyHandler(Inbox):
    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        count = getattr(session, "digest_count", 0)
        if self.faults.close_session_after and count >= self.faults.close_session_after:
            return "421 4.3.2 Too many messages, closing connection"
        session.digest_count = count + 1
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.faults.refuse_rcpt:
            return self.faults.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.faults.data_replies:
            reply = self.faults.data_replies.pop(0)
            if not reply.startswith("2"):
                return reply
        if self.faults.stall_seconds:
            await asyncio.sleep(self.faults.stall_seconds)
        await super().handle_DATA(server, session, envelope)
        if self.faults.drop_after_data > 0:
            self.faults.drop_after_data -= 1
            server.transport.close()  # accepted and stored, but the client never hears 250
        return "250 OK"


@dataclass
class FaultySmtp:
    handler: FaultyHandler
    faults: Faults
    port: int
    controller: Controller


def _start(handler: FaultyHandler, port: int, **kwargs: Any) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller


@pytest.fixture
def faulty_smtp() -> Iterator[FaultySmtp]:
    faults = Faults()
    handler = FaultyHandler(faults)
    port = _free_port()
    server = FaultySmtp(handler, faults, port, _start(handler, port))
    try:
        yield server
    finally:
        with contextlib.suppress(AssertionError):  # a test may have stopped it already
            server.controller.stop()


def make_config(
    tmp_path: Path,
    feed_server: FeedServer,
    port: int,
    database: str | None = None,
    people: list[str] = PEOPLE,
    smtp_extra: str = "",
    delivery_extra: str = "",
) -> Path:
    url = feed_server.serve_file("/feed.xml", LESSWRONG / "feed-1.xml")
    path = write_config(
        tmp_path / "config.toml",
        database=database or f"sqlite:///{tmp_path / 'd.db'}",
        feeds=[("lesswrong", url)],
        subscribers=[{"email": p, "schedule": "daily at 07:00"} for p in people],
        smtp_port=port,
    )
    text_ = path.read_text()
    text_ = text_.replace('security = "none"', f'security = "none"\ntimeout = 2\n{smtp_extra}')
    text_ = text_.replace('mode = "smtp"', f'mode = "smtp"\nconnections = 1\n{delivery_extra}')
    path.write_text(text_)
    return path


def run_at(config: Path, when: str) -> int:
    return main(["run", "--config", str(config), "--now", when])


def states(config: Path) -> dict[str, str]:
    store = Store(load_config(config).database_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT s.email, d.state FROM digests d JOIN subscribers s"
                    " ON s.id = d.subscriber_id ORDER BY d.id"
                )
            )
            return {r[0]: r[1] for r in rows}
    finally:
        store.close()


def first_digest(config: Path) -> None:
    assert run_at(config, "2026-06-04T06:00:00+00:00") == 0


def test_greylisting_451_is_retried_and_then_delivered_once(
    tmp_path: Path, feed_server: FeedServer, faulty_smtp: FaultySmtp
) -> None:
    config = make_config(tmp_path, feed_server, faulty_smtp.port, people=["ada@example.org"])
    first_digest(config)
    faulty_smtp.faults.data_replies = ["451 4.7.1 Greylisted, try again later"]
    assert run_at(config, "2026-06-04T07:05:00+00:00") == 1
    assert states(config) == {"ada@example.org": "pending"}
    # Backoff: a run one minute later does not hammer the server...
    assert run_at(config, "2026-06-04T07:06:00+00:00") == 0
    assert faulty_smtp.handler.messages == []
    # ...a run after the backoff delivers.
    assert run_at(config, "2026-06-04T08:05:00+00:00") == 0
    (message,) = faulty_smtp.handler.parsed()
    assert post_links(message) == set(fixture_links("feed-1.xml"))
    assert states(config) == {"ada@example.org": "sent"}


def test_421_mid_session_reconnects_and_everyone_gets_one_copy(
    tmp_path: Path, feed_server: FeedServer, faulty_smtp: FaultySmtp
) -> None:
    config = make_config(tmp_path, feed_server, faulty_smtp.port)
    first_digest(config)
    faulty_smtp.faults.close_session_after = 1
    assert run_at(config, "2026-06-04T07:05:00+00:00") == 1
    got = {m["To"] for m in faulty_smtp.handler.parsed()}
    assert got == {"ada@example.org", "cy@example.org"}, "a new connection after the 421"
    assert run_at(config, "2026-06-04T08:05:00+00:00") == 0
    recipients = sorted(m["To"] for m in faulty_smtp.handler.parsed())
    assert recipients == sorted(PEOPLE)


def test_550_for_one_recipient_fails_that_digest_only_and_is_reported(
    tmp_path: Path,
    feed_server: FeedServer,
    faulty_smtp: FaultySmtp,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = make_config(
        tmp_path, feed_server, faulty_smtp.port, delivery_extra="max_hard_bounces = 2"
    )
    first_digest(config)
    faulty_smtp.faults.refuse_rcpt = {"bob@example.org": "550 5.1.1 No such mailbox"}
    assert run_at(config, "2026-06-04T07:05:00+00:00") == 1
    err = capsys.readouterr().err
    assert "bob@example.org" in err and "550" in err
    assert sorted(m["To"] for m in faulty_smtp.handler.parsed()) == [
        "ada@example.org",
        "cy@example.org",
    ]
    assert states(config)["bob@example.org"] == "failed"
    # Permanent: not retried by later runs of the same period.
    assert run_at(config, "2026-06-04T09:05:00+00:00") == 0
    assert len(faulty_smtp.handler.messages) == 2
    # The next period carries bob's undelivered posts; a second bounce suspends him.
    assert run_at(config, "2026-06-05T07:05:00+00:00") == 1
    err = capsys.readouterr().err
    assert "subscriber bob@example.org suspended" in err
    assert run_at(config, "2026-06-06T07:05:00+00:00") == 0
    assert "bob@example.org" not in capsys.readouterr().err, "suspended: no more attempts"
    # The operator fixes the mailbox and resumes bob: his posts were kept all along.
    faulty_smtp.faults.refuse_rcpt = {}
    assert main(["retry", "bob@example.org", "--config", str(config)]) == 0
    assert run_at(config, "2026-06-06T08:05:00+00:00") == 0
    (bobs,) = faulty_smtp.handler.to("bob@example.org")
    assert post_links(bobs) == set(fixture_links("feed-1.xml"))


def test_554_for_a_message_is_permanent_and_reported(
    tmp_path: Path,
    feed_server: FeedServer,
    faulty_smtp: FaultySmtp,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = make_config(tmp_path, feed_server, faulty_smtp.port, people=["ada@example.org"])
    first_digest(config)
    faulty_smtp.faults.data_replies = ["554 5.7.1 Message rejected"]
    assert run_at(config, "2026-06-04T07:05:00+00:00") == 1
    assert "554" in capsys.readouterr().err
    assert states(config) == {"ada@example.org": "failed"}
    assert run_at(config, "2026-06-04T10:05:00+00:00") == 0
    assert faulty_smtp.handler.messages == []


def test_connection_dropped_after_data_gives_at_most_one_duplicate_same_message_id(
    tmp_path: Path, feed_server: FeedServer, faulty_smtp: FaultySmtp
) -> None:
    config = make_config(tmp_path, feed_server, faulty_smtp.port, people=["ada@example.org"])
    first_digest(config)
    faulty_smtp.faults.drop_after_data = 1
    assert run_at(config, "2026-06-04T07:05:00+00:00") == 1
    assert states(config) == {"ada@example.org": "pending"}
    assert run_at(config, "2026-06-04T08:05:00+00:00") == 0
    copies = faulty_smtp.handler.parsed()
    assert len(copies) == 2
    assert copies[0]["Message-ID"] == copies[1]["Message-ID"]
    raw = [data for _, _, data in faulty_smtp.handler.messages]
    assert raw[0] == raw[1], "the retry resends the stored message, byte for byte"
    assert run_at(config, "2026-06-04T09:05:00+00:00") == 0
    assert len(faulty_smtp.handler.messages) == 2


def test_a_stalled_server_times_out_and_the_digest_stays_pending(
    tmp_path: Path, feed_server: FeedServer, faulty_smtp: FaultySmtp
) -> None:
    config = make_config(tmp_path, feed_server, faulty_smtp.port, people=["ada@example.org"])
    first_digest(config)
    faulty_smtp.faults.stall_seconds = 4  # the client's timeout is 2 s
    assert run_at(config, "2026-06-04T07:05:00+00:00") == 1
    assert states(config) == {"ada@example.org": "pending"}
    faulty_smtp.faults.stall_seconds = 0
    assert run_at(config, "2026-06-04T08:05:00+00:00") == 0
    copies = faulty_smtp.handler.parsed()
    assert 1 <= len(copies) <= 2, "delivered; a stalled server that stored it may hold one more"
    assert len({m["Message-ID"] for m in copies}) == 1


def test_server_down_for_a_whole_run_reports_once_and_then_delivers_all(
    tmp_path: Path,
    feed_server: FeedServer,
    faulty_smtp: FaultySmtp,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = make_config(tmp_path, feed_server, faulty_smtp.port)
    first_digest(config)
    faulty_smtp.controller.stop()
    assert run_at(config, "2026-06-04T07:05:00+00:00") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 3, err
    assert any("cannot connect" in line for line in err)
    assert set(states(config).values()) == {"pending"}
    faulty_smtp.controller = _start(faulty_smtp.handler, faulty_smtp.port)
    assert run_at(config, "2026-06-04T07:35:00+00:00") == 0
    assert sorted(m["To"] for m in faulty_smtp.handler.parsed()) == sorted(PEOPLE)


def test_undelivered_digest_is_carried_by_the_next_period_in_one_email(
    tmp_path: Path, feed_server: FeedServer, faulty_smtp: FaultySmtp
) -> None:
    config = make_config(tmp_path, feed_server, faulty_smtp.port, people=["ada@example.org"])
    first_digest(config)
    faulty_smtp.controller.stop()
    for hour in range(7, 24):
        assert run_at(config, f"2026-06-04T{hour:02d}:05:00+00:00") == 1
    feed_server.serve_file("/feed.xml", LESSWRONG / "feed-2.xml")
    faulty_smtp.controller = _start(faulty_smtp.handler, faulty_smtp.port)
    assert run_at(config, "2026-06-05T07:05:00+00:00") == 0
    (message,) = faulty_smtp.handler.parsed()
    assert post_links(message) == set(fixture_links("feed-1.xml")) | set(
        fixture_links("feed-2.xml")
    )
    assert run_at(config, "2026-06-05T09:05:00+00:00") == 0
    assert len(faulty_smtp.handler.messages) == 1


def test_starttls_required_but_not_offered_stops_without_sending(
    tmp_path: Path,
    feed_server: FeedServer,
    faulty_smtp: FaultySmtp,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = make_config(tmp_path, feed_server, faulty_smtp.port)
    config.write_text(config.read_text().replace('security = "none"', 'security = "starttls"'))
    first_digest(config)
    assert run_at(config, "2026-06-04T07:05:00+00:00") == 1
    err = capsys.readouterr().err
    assert "STARTTLS" in err
    assert faulty_smtp.handler.messages == []
    assert set(states(config).values()) == {"pending"}


@pytest.fixture
def tls_smtp(tmp_path: Path) -> Iterator[tuple[FaultySmtp, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    faults = Faults()
    handler = FaultyHandler(faults)
    port = _free_port()

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, auth: Any
    ) -> AuthResult:
        ok = isinstance(auth, LoginPassword) and auth.password == b"right"
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd replies 535

    controller = _start(
        handler,
        port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    try:
        yield FaultySmtp(handler, faults, port, controller), ca_file
    finally:
        controller.stop()


def test_starttls_with_login_delivers(
    tmp_path: Path,
    feed_server: FeedServer,
    tls_smtp: tuple[FaultySmtp, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, ca_file = tls_smtp
    config = make_config(tmp_path, feed_server, server.port, people=["ada@example.org"])
    config.write_text(
        config.read_text().replace(
            'security = "none"',
            f'security = "starttls"\nusername = "digest"\nca_file = "{ca_file}"',
        )
    )
    monkeypatch.setenv("DIGEST_SMTP__PASSWORD", "right")
    first_digest(config)
    assert run_at(config, "2026-06-04T07:05:00+00:00") == 0
    assert len(server.handler.messages) == 1


def test_bad_credentials_535_stop_the_run_with_a_clear_error(
    tmp_path: Path,
    feed_server: FeedServer,
    tls_smtp: tuple[FaultySmtp, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, ca_file = tls_smtp
    config = make_config(tmp_path, feed_server, server.port)
    config.write_text(
        config.read_text().replace(
            'security = "none"',
            f'security = "starttls"\nusername = "digest"\nca_file = "{ca_file}"',
        )
    )
    monkeypatch.setenv("DIGEST_SMTP__PASSWORD", "wrong")
    first_digest(config)
    assert run_at(config, "2026-06-04T07:05:00+00:00") == 1
    err = capsys.readouterr().err
    assert "login as digest refused: 535" in err
    assert "delivery stopped" in err
    assert server.handler.messages == []
    assert set(states(config).values()) == {"pending"}
    monkeypatch.setenv("DIGEST_SMTP__PASSWORD", "right")
    assert run_at(config, "2026-06-04T07:10:00+00:00") == 0
    assert sorted(m["To"] for m in server.handler.parsed()) == sorted(PEOPLE)


def test_password_is_never_sent_in_the_clear_to_a_remote_host(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[delivery]\nmode = "smtp"\n[smtp]\nhost = "mail.example.org"\nsecurity = "none"\n'
        'username = "digest"\n',
        encoding="utf-8",
    )
    assert main(["check-config", "--config", str(path)]) == 2


def test_parallel_connections_and_a_rate_limit_deliver_everyone_once(
    tmp_path: Path, feed_server: FeedServer, faulty_smtp: FaultySmtp
) -> None:
    people = [f"reader{n}@example.org" for n in range(12)]
    config = make_config(
        tmp_path, feed_server, faulty_smtp.port, people=people, delivery_extra="rate_limit = 200"
    )
    config.write_text(config.read_text().replace("connections = 1", "connections = 4"))
    first_digest(config)
    assert run_at(config, "2026-06-04T07:05:00+00:00") == 0
    assert sorted(m["To"] for m in faulty_smtp.handler.parsed()) == sorted(people)


def test_postgres_and_sqlite_outbox_rejects_a_second_digest_for_the_same_slot(
    tmp_path: Path, database_url: str
) -> None:
    from digest.store import NewDigest

    store = Store(database_url)
    try:
        store.migrate()
        (row,) = store.sync_subscribers(["ada@example.org"], datetime.now(UTC)).values()
        now = datetime(2026, 6, 4, 7, 5, tzinfo=UTC)
        new = NewDigest(row.id, "2026-06-04T07:00", now, now, now, now, "<a@example.org>", [])
        assert store.create_digest(new) is not None
        assert store.create_digest(new) is None
    finally:
        store.close()
