"""Rendering: escaped feed text, safe links, headers that cannot be injected, 7-bit lines."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from digest.render import (
    DigestView,
    Envelope,
    ItemView,
    build_message,
    make_environment,
    render_bodies,
    subject_for,
)


def view(**overrides: object) -> DigestView:
    item = ItemView(
        title='<script>alert("x")</script> Post & more',
        url="javascript:alert(1)",
        feed="Feed\r\nBcc: victim@example.org",
        author="",
        published="Thu 4 Jun 2026, 07:00",
        reading_minutes=3,
        summary="A summary with <b>tags</b> that must show as text. " * 3,
    )
    base: dict[str, object] = {
        "name": "Test",
        "period": "daily",
        "recipient": "ada@example.org",
        "window_start": "Wed 3 Jun 2026",
        "window_end": "Thu 4 Jun 2026",
        "items": [item],
        "more": [],
    }
    base.update(overrides)
    return DigestView(**base)  # type: ignore[arg-type]


def test_feed_text_is_escaped_and_unsafe_links_dropped() -> None:
    html, text = render_bodies(make_environment(), view())
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "javascript:" not in html and "javascript:" not in text
    assert "<b>tags</b>" not in html


def test_crlf_in_feed_text_cannot_inject_a_header() -> None:
    v = view()
    subject = subject_for("Your {period} digest: {count} new {posts} from {sources}", v)
    envelope = Envelope(
        sender="Digest <digest@example.org>",
        recipient="ada@example.org",
        subject=subject,
        message_id="<x@example.org>",
        date=datetime(2026, 6, 4, 7, tzinfo=UTC),
        list_id="Test <digest.example.org>",
    )
    html, text = render_bodies(make_environment(), v)
    raw = build_message(envelope, html, text)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Bcc"] is None
    assert "Bcc: victim" in parsed["Subject"]  # still there, as harmless text
    assert not parsed.defects
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]


def test_subject_counts_and_names_sources() -> None:
    one = view()
    assert subject_for("Your {period} digest: {count} new {posts} from {sources}", one) == (
        "Your daily digest: 1 new post from Feed Bcc: victim@example.org"
    )


def test_text_part_lines_fit_72_columns() -> None:
    _, text = render_bodies(make_environment(), view())
    long_lines = [line for line in text.splitlines() if len(line) > 72 and "://" not in line]
    assert long_lines == []


def test_message_is_byte_identical_when_built_again_and_bodies_round_trip() -> None:
    v = view()
    html, text = render_bodies(make_environment(), v)
    envelope = Envelope(
        sender="Digest <digest@example.org>",
        recipient="ada@example.org",
        subject="Ünïcode — subject",
        message_id="<retry@example.org>",
        date=datetime(2026, 6, 4, 7, tzinfo=UTC),
        list_id="Test <digest.example.org>",
    )
    first, again = build_message(envelope, html, text), build_message(envelope, html, text)
    assert first == again, "a retry sends the very same bytes"
    parsed = email.message_from_bytes(first, policy=email.policy.default)
    assert parsed["Subject"] == "Ünïcode — subject"
    plain = parsed.get_body(("plain",))
    rich = parsed.get_body(("html",))
    assert plain is not None and rich is not None
    assert plain.get_content().replace("\r\n", "\n") == text.replace("\r\n", "\n")
    assert rich.get_content().replace("\r\n", "\n") == html.replace("\r\n", "\n")
    assert first.isascii()
