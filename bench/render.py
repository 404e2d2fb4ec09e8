"""Render cost and sizes of the digest email. Run from the repository root:

    PYTHONPATH=. python bench/render.py [ROUNDS]

Prints milliseconds per digest for rendering both bodies (Jinja2 + css-inline + size budget)
and for the whole message (plus MIME building and 7-bit serialization), and the HTML size of a
20-post digest and of an oversized one that the budget has to shrink."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from digest.render import (
    HTML_BUDGET,
    DigestView,
    Envelope,
    build_message,
    html_size,
    make_environment,
    render,
)
from tests.golden.sample import fixture_view

ENVELOPE = Envelope(
    sender="Digest <digest@example.org>",
    recipient="ada@example.org",
    subject="Your daily digest",
    message_id="<bench@example.org>",
    date=datetime(2026, 6, 4, 7, tzinfo=UTC),
    list_id='"Digest" <digest.example.org>',
    unsubscribe_url="https://digest.example.org/unsubscribe?email=ada@example.org",
)


def per_call_ms(action: Callable[[], object], rounds: int) -> float:
    action()  # compile templates, warm caches: the first digest of a run pays this once
    start = time.perf_counter()
    for _ in range(rounds):
        action()
    return (time.perf_counter() - start) * 1000 / rounds


def describe(label: str, view: DigestView, rounds: int) -> None:
    env = make_environment()
    rendered = render(env, view)
    bodies_ms = per_call_ms(lambda: render(env, view), rounds)

    def whole() -> bytes:
        r = render(env, view)
        return build_message(ENVELOPE, r.html, r.text)

    message_ms = per_call_ms(whole, rounds)
    fitted = rendered.view
    brief = sum(i.brief for i in fitted.items)
    print(
        f"{label}: HTML {html_size(rendered.html) / 1024:.1f} KB"
        f" (budget {HTML_BUDGET // 1024} KB), text {len(rendered.text) / 1024:.1f} KB,"
        f" message {len(whole()) / 1024:.1f} KB on the wire;"
        f" {len(fitted.items) - brief} full + {brief} title-only + {len(fitted.more)} more"
        f" ({fitted.more_unlisted} unlisted)"
    )
    print(f"    render {bodies_ms:.2f} ms/digest, whole message {message_ms:.2f} ms/digest")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    describe("20 posts", fixture_view(20, 0), rounds)
    describe("20 posts + 30 more", fixture_view(20, 30), rounds)
    describe("80 posts + 100 more (over budget)", fixture_view(80, 100), max(1, rounds // 10))


if __name__ == "__main__":
    main()
