"""The finished message: parsed back with the email package, headers, 7-bit lines, header
injection, hostile feed HTML, the size budget, DKIM, templates a user owns, and the preview."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from digest import summarize
from digest.cli import main
from digest.compose import compose
from digest.config import DigestSettings, DkimSettings, Settings, SubscriberSettings
from digest.dkim import SIGNED_HEADERS, DkimError, Signer, load_signer
from digest.errors import TemplateError
from digest.render import (
    HTML_BUDGET,
    html_size,
    make_environment,
    render,
    render_bodies,
)
from digest.store import DigestItemRow, DigestRow, EntryRow
from digest.templates_cli import ExportError, bundled_templates, export_templates
from tests.conftest import LESSWRONG, write_config
from tests.golden.sample import fixture_view, golden_view

NOW = datetime(2026, 6, 4, 7, 5, tzinfo=UTC)
ADA = "ada@example.org"
REQUIRED = (
    "Date",
    "From",
    "Reply-To",
    "To",
    "Subject",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "MIME-Version",
)


def settings(**digest: Any) -> Settings:
    base: dict[str, Any] = {
        "from": "Morning Reading <digest@example.org>",
        "name": "Morning Reading",
        "reply_to": "operator@example.org",
        "unsubscribe_url": "https://digest.example.org/unsubscribe?email={email}",
    }
    base.update(digest)
    return Settings(
        digest=DigestSettings(**base),
        subscribers=[SubscriberSettings(email=ADA, name="Ada Lovelace")],
    )


def entry(n: int, **fields: Any) -> EntryRow:
    values: dict[str, Any] = {
        "id": n,
        "feed": "lw",
        "feed_title": "LessWrong",
        "url": f"https://www.lesswrong.com/posts/{n}",
        "title": f"Post number {n}",
        "author": "Ada",
        "published": datetime(2026, 6, 4, 5, n % 60, tzinfo=UTC),
        "first_seen": datetime(2026, 6, 4, 6, tzinfo=UTC),
        "content": f"<p>Post {n} says something worth reading about topic {n}.</p>",
        "content_hash": str(n),
        "summary": None,
        "summary_key": None,
        "reading_minutes": 1,
    }
    values.update(fields)
    row = EntryRow(**values)
    # As the real pipeline does: the summary is made from the (hostile) content.
    return replace(row, summary=summarize.summarize(row.title, row.content))


def digest_row() -> DigestRow:
    return DigestRow(
        id=1,
        subscriber_id=1,
        email=ADA,
        period="2026-06-04T07:00",
        slot_at=NOW,
        window_start=datetime(2026, 6, 3, 7, tzinfo=UTC),
        window_end=NOW,
        created_at=NOW,
        state="pending",
        message_id="<digest.20260604.0700.1.abc123@example.org>",
        attempts=0,
        last_error=None,
    )


def composed_message(
    config: Settings, entries: list[EntryRow], more: int = 0, signer: Signer | None = None
) -> tuple[bytes, EmailMessage]:
    items = [
        DigestItemRow(e, n, "featured" if n < len(entries) - more else "more", "", "")
        for n, e in enumerate(entries)
    ]
    data = compose(
        config, config.subscribers[0], digest_row(), items, make_environment(), signer=signer
    ).data
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return data, parsed


def bodies(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    return text.get_content(), html.get_content()


# ---- structure and headers ------------------------------------------------------------------


def test_message_parses_back_without_defects_text_first_and_7bit() -> None:
    """Guards RFC 5322/2046 correctness: no parser defects, text then HTML, CRLF only, pure
    ASCII on the wire, no line over 78 octets (the hard limit is 998), quoted-printable."""
    data, message = composed_message(settings(), [entry(n) for n in range(1, 8)], more=2)
    assert not message.defects
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert not part.defects
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert part.get_content_charset() == "utf-8"
    data.decode("ascii")  # raises if a single 8-bit byte got through
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF"
    assert max(len(line) for line in data.split(b"\r\n")) <= 78


def test_all_required_headers_with_operator_sender_and_one_click_unsubscribe() -> None:
    """Guards the headers big mailbox providers check (RFC 2369, 2919, 3834, 8058)."""
    _, message = composed_message(settings(), [entry(1, author="evil@attacker.example")])
    for name in REQUIRED:
        assert message[name], f"{name} missing"
    assert message["From"] == "Morning Reading <digest@example.org>"
    assert message["To"] == "Ada Lovelace <ada@example.org>"
    assert message["Reply-To"] == "operator@example.org"
    assert message["Message-ID"] == "<digest.20260604.0700.1.abc123@example.org>"
    assert message["List-Id"] == '"Morning Reading" <digest.example.org>'
    assert message["List-Unsubscribe"].strip() == (
        "<https://digest.example.org/unsubscribe?email=ada@example.org>, "
        "<mailto:digest@example.org?subject=unsubscribe>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"].datetime == NOW
    assert "attacker" not in str(message["From"]) + str(message["Reply-To"])


def test_without_an_https_endpoint_there_is_no_one_click_header() -> None:
    """Guards RFC 8058: One-Click is promised only with an https URL to POST to."""
    for url in (None, "http://digest.example.org/unsubscribe"):
        _, message = composed_message(settings(unsubscribe_url=url), [entry(1)])
        assert message["List-Unsubscribe-Post"] is None
        assert "mailto:digest@example.org?subject=unsubscribe" in message["List-Unsubscribe"]
    _, message = composed_message(settings(reply_to=None), [entry(1)])
    assert message["Reply-To"] is None


def test_subject_template_is_a_setting() -> None:
    """Guards the subject setting and its placeholders, including the top post's title."""
    config = settings(subject="{name}: {top} (+{count} {posts})")
    _, message = composed_message(config, [entry(1, title="Best one"), entry(2)])
    assert message["Subject"] == "Morning Reading: Best one (+2 posts)"
    _, message = composed_message(settings(), [entry(1), entry(2)])
    assert message["Subject"] == "Your daily digest: 2 new posts from LessWrong"


def test_crlf_and_fake_bcc_in_feed_text_cannot_inject_a_header() -> None:
    """Guards against header injection: CR/LF in a feed's title or name becomes a space."""
    hostile = "Great post\r\nBcc: victim@example.org\r\n\r\n<b>body</b>"
    data, message = composed_message(
        settings(subject="{top} from {sources}"),
        [entry(1, title=hostile, feed_title="Feed\nBcc: other@example.org\u202e")],
    )
    assert message["Bcc"] is None and b"\r\nBcc:" not in data
    assert message["Subject"].startswith("Great post Bcc: victim@example.org")
    assert "\u202e" not in message["Subject"]
    assert not message.defects
    text, _ = bodies(message)
    assert "\nBcc:" not in text


# ---- untrusted HTML -------------------------------------------------------------------------

HOSTILE = """
<p>Opening line of a hostile post that still has something to say.</p>
<script>alert('xss')</script>
<p onclick="alert(1)" style="background:url(javascript:alert(2))">
Click <a href="javascript:alert(3)">here</a>
and <a href="data:text/html,<script>alert(4)</script>">there</a>.</p>
<form action="https://phish.example/steal"><input name="password"><button>Go</button></form>
<iframe src="https://evil.example/frame"></iframe>
<img src="https://tracker.example/pixel.gif" width="1" height="1" alt="">
<img src="http://insecure.example/photo.jpg" width="400" height="300" alt="insecure">
<img src="https://cdn.example/nosize.jpg" alt="no size">
<img src="https://cdn.example/photo.jpg" width="1200" height="600" alt="A real photo"
 onerror="alert(5)">
"""


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.mark.parametrize("images", [False, True], ids=["images-off", "images-on"])
def test_hostile_feed_html_never_reaches_the_email(images: bool) -> None:
    """Guards the untrusted-content rules: no script, event handler, javascript:/data: link,
    form or frame in the email, no tracking pixel, no http or unsized image, and no image at
    all unless the operator turned images on."""
    hostile = entry(
        1,
        title='<img src=x onerror="alert(6)">Title',
        url="javascript:alert(7)",
        author="<script>alert(8)</script>",
        content=HOSTILE,
    )
    _, message = composed_message(settings(images=images), [hostile, entry(2)], more=1)
    text, html = bodies(message)
    parser = Tags()
    parser.feed(html)
    names = {tag for tag, _ in parser.tags}
    assert not names & {"script", "form", "input", "button", "iframe", "object", "embed"}
    for tag, attrs in parser.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        for key in ("href", "src", "action", "background"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value or value.startswith(("https://", "http://", "mailto:")), (tag, value)
    images_shown = [attrs for tag, attrs in parser.tags if tag == "img"]
    if images:
        assert images_shown == [
            {
                "class": "lead",
                "src": "https://cdn.example/photo.jpg",
                "alt": "A real photo",
                "width": "592",
                "height": "296",
                "style": images_shown[0]["style"],
            }
        ]
    else:
        assert images_shown == []
    for body in (html, text):
        assert "tracker.example" not in body and "insecure.example" not in body
        assert "javascript:" not in body and "phish.example" not in body
    assert "&lt;img src=x" in html  # the hostile title is shown as text, harmlessly


# ---- size budget ----------------------------------------------------------------------------


def test_a_normal_digest_is_untouched_by_the_budget() -> None:
    """Guards against the budget degrading ordinary digests."""
    rendered = render(make_environment(), fixture_view(20))
    assert html_size(rendered.html) < HTML_BUDGET
    assert rendered.view == fixture_view(20)


def test_an_oversized_digest_drops_lowest_ranked_to_titles_then_more_never_the_footer() -> None:
    """Guards Gmail clipping: the HTML stays under 90 KB; the lowest-ranked posts lose their
    summaries first, in rank order; nothing disappears from the count; footer stays whole."""
    view = fixture_view(60, 40)
    rendered = render(make_environment(), view)
    fitted = rendered.view
    assert html_size(rendered.html) <= HTML_BUDGET
    brief = [i.brief for i in fitted.items]
    assert any(brief) and not all(brief)
    assert brief == sorted(brief), "only a tail of the lowest-ranked posts lose summaries"
    assert [i.title for i in fitted.items] == [i.title for i in view.items]
    assert fitted.count == view.count
    assert rendered.html.rstrip().endswith("</html>")
    assert "unsubscribe" in rendered.html[-2500:]
    # The text part says the same: a post is summarized there exactly when it is in the HTML.
    blocks = re.split(r"\n(?=\d+\. )", rendered.text)[1:]
    assert len(blocks) == len(fitted.items)
    for item, block in zip(fitted.items, blocks, strict=True):
        assert re.match(rf"{fitted.items.index(item) + 1}\. +{re.escape(item.title[:30])}", block)
        assert ("\n\n    " in block.strip("\n")) == (not item.brief), block
    assert rendered.html.count('class="summary"') >= len([i for i in brief if not i])


def test_a_huge_digest_moves_posts_into_more_and_then_counts_them() -> None:
    """Guards the last resorts: posts move into "N more", then the list is shortened to a
    count; the footer survives and the total is still told."""
    view = fixture_view(100, 1500)
    rendered = render(make_environment(), view)
    fitted = rendered.view
    assert html_size(rendered.html) <= HTML_BUDGET
    assert fitted.items == [] and fitted.more_unlisted > 0
    assert f"{view.count} more" in rendered.html
    assert f"and {fitted.more_unlisted} more posts not listed" in rendered.html
    assert "unsubscribe" in rendered.text[-400:]


# ---- plain text -----------------------------------------------------------------------------


def test_text_part_is_a_real_rendering_same_order_wrapped_with_links() -> None:
    """Guards the plain-text part: every title in HTML order, every link listed, 72 columns
    (a single word longer than that, like a URL, stands alone on its line)."""
    view = golden_view("feed")
    html, text = render_bodies(make_environment(), view)
    titles = [i.title for g in view.groups for i in g.items] + [i.title for i in view.more]
    positions = [text.index(t) for t in titles]
    assert positions == sorted(positions)
    body = html[html.index('class="card"') :]  # past the preheader, which repeats titles
    html_titles = [body.index(t.replace("&", "&amp;")) for t in titles]
    assert html_titles == sorted(html_titles)
    for link in re.findall(r'href="(https://[^"]+)"', html):
        assert link.replace("&amp;", "&") in text
    for line in text.splitlines():
        assert len(line) <= 72 or len(line.split()) <= 2, line
    assert "view in browser" not in text.lower()


def test_preheader_carries_the_top_titles_hidden_before_the_content() -> None:
    """Guards the inbox preview line: the first text in the body, hidden, with top titles."""
    view = golden_view()
    html, _ = render_bodies(make_environment(), view)
    match = re.search(r'<div class="preheader" style="([^"]*)">([^<]*)', html)
    assert match is not None
    assert "display:none" in match.group(1).replace(" ", "")
    assert match.group(2).startswith(view.items[0].title)
    assert view.items[1].title.replace("&", "&amp;") in match.group(2)
    assert match.start() < html.index('class="post-title"')


def test_css_is_inlined_media_rules_kept_and_nothing_remote() -> None:
    """Guards css-inline use: plain rules become style attributes, @media stays in the head,
    a <link> stylesheet in an owned template is dropped, not fetched."""
    html, _ = render_bodies(make_environment(), golden_view())
    assert 'class="post-title" style="' in html
    head = html[: html.index("</head>")]
    assert "@media only screen and (max-width: 480px)" in head
    assert "@media (prefers-color-scheme: dark)" in head
    assert ".summary { margin" not in head  # inlined, not left behind


# ---- DKIM -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    pytest.importorskip("dkim", reason="dkimpy not installed (pip install 'digest[dkim]')")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a throwaway test key")
    folder = tmp_path_factory.mktemp("dkim")
    key = folder / "private.pem"
    subprocess.run(
        ["openssl", "genrsa", "-traditional", "-out", str(key), "2048"],
        check=True,
        capture_output=True,
    )
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    import base64

    return key, base64.b64encode(public).decode()


def test_dkim_signature_verifies_and_covers_both_unsubscribe_headers(
    rsa_key: tuple[Path, str],
) -> None:
    """Guards DKIM: the final bytes verify against the public key, the signature covers
    List-Unsubscribe and List-Unsubscribe-Post (RFC 8058), and tampering breaks it."""
    import dkim

    key, public = rsa_key
    config = settings()
    config.dkim = DkimSettings(selector="mail", private_key=key)
    signer = load_signer(config)
    assert signer is not None and signer.domain == "example.org"
    data, message = composed_message(config, [entry(1), entry(2)], signer=signer)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail._domainkey.example.org."
        return f"v=DKIM1; k=rsa; p={public}".encode()

    assert dkim.verify(data, dnsfunc=dns)
    signed = re.search(r"\bh=([^;]+)", str(message["DKIM-Signature"]).replace(" ", ""))
    assert signed is not None
    covered = {h.lower() for h in signed.group(1).split(":")}
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject"} <= covered
    assert {h.lower() for h in SIGNED_HEADERS} >= covered
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    tampered = data.replace(b"List-Unsubscribe=One-Click", b"List-Unsubscribe=Two-Click")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_a_bad_dkim_key_is_reported_once_with_its_path(tmp_path: Path) -> None:
    """Guards the run: a missing or unusable key stops delivery with a clear message."""
    pytest.importorskip("dkim")
    config = settings()
    config.dkim = DkimSettings(selector="mail", private_key=tmp_path / "missing.pem")
    with pytest.raises(DkimError, match=r"missing\.pem"):
        load_signer(config)
    (tmp_path / "junk.pem").write_text("not a key")
    config.dkim = DkimSettings(selector="mail", private_key=tmp_path / "junk.pem")
    with pytest.raises(DkimError, match="not a usable key"):
        load_signer(config)


# ---- templates a user owns ------------------------------------------------------------------


def test_export_copies_the_bundled_templates_and_never_overwrites(tmp_path: Path) -> None:
    """Guards `digest templates export DIR`: a full, working copy; edits are safe."""
    target = tmp_path / "mine"
    assert main(["templates", "export", str(target)]) == 0
    names = sorted(p.name for p in target.iterdir())
    assert names == sorted(p.name for p in bundled_templates())
    assert {"digest.html.j2", "digest.txt.j2", "digest.css.j2"} <= set(names)
    exported = render_bodies(make_environment(target), golden_view())
    assert exported == render_bodies(make_environment(), golden_view())
    (target / "digest.txt.j2").write_text("mine\n")
    with pytest.raises(ExportError, match="already exist"):
        export_templates(target)
    assert (target / "digest.txt.j2").read_text() == "mine\n"
    export_templates(target, force=True)
    assert (target / "digest.txt.j2").read_text() != "mine\n"


def test_owned_templates_override_bundled_ones_file_by_file(tmp_path: Path) -> None:
    """Guards templates_dir: a file there wins; the rest (and bundled/NAME) stay available."""
    (tmp_path / "digest.txt.j2").write_text(
        "{{ digest.overview }}\n{% include 'bundled/digest.txt.j2' %}"
    )
    (tmp_path / "digest.css.j2").write_text(".post-title { color: #123456; }")
    html, text = render_bodies(make_environment(tmp_path), golden_view())
    assert text.startswith("9 new posts from 3 feeds\nMorning Reading\n")
    assert "color:#123456" in html.replace(" ", "")
    assert "prefers-color-scheme" not in html  # their CSS replaced ours entirely


@pytest.mark.parametrize(
    ("source", "line", "problem"),
    [
        ("line one\n{% for x in %}\n", 2, "Expected an expression"),
        ("line one\nline two\n{{ digest.no_such_field }}\n", 3, "no_such_field"),
    ],
    ids=["syntax", "runtime"],
)
def test_a_template_error_names_the_file_and_line(
    tmp_path: Path, source: str, line: int, problem: str
) -> None:
    """Guards error messages for owned templates: file and line, not a Jinja traceback."""
    (tmp_path / "digest.txt.j2").write_text(source)
    with pytest.raises(TemplateError) as caught:
        render_bodies(make_environment(tmp_path), golden_view())
    message = str(caught.value)
    assert f"{tmp_path / 'digest.txt.j2'}:{line}" in message
    assert problem in message


# ---- preview --------------------------------------------------------------------------------


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{tmp_path / 'digest.db'}",
        feeds=[("lesswrong", str(LESSWRONG / "feed-1.xml"))],
        subscribers=[{"email": ADA, "schedule": "daily at 07:00"}],
        folder=str(tmp_path / "outbox"),
    )
    assert main(["run", "--config", str(config), "--now", "2026-06-04T06:00:00+00:00"]) == 0
    return config


def test_preview_text_prints_the_plain_text_part(
    stored: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards `digest preview EMAIL --text`: the text part, as it would be sent."""
    assert (
        main(["preview", ADA, "--text", "--config", str(stored), "--now", "2026-06-04T07:05Z"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("Test digest\n") and "10 new posts from 1 feed" in out
    assert "https://www.lesswrong.com/posts/" in out and "<" not in out.split("--")[0]


def test_preview_open_writes_the_html_and_opens_it(
    stored: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards `digest preview EMAIL --open`: the HTML file is written and handed to a browser."""
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    out = tmp_path / "preview.html"
    code = main(
        [
            "preview",
            ADA,
            "--open",
            "-o",
            str(out),
            "--config",
            str(stored),
            "--now",
            "2026-06-04T07:05Z",
        ]
    )
    assert code == 0
    assert opened == [out.resolve().as_uri()]
    assert 'class="post-title"' in out.read_text()
