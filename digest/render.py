"""Digest data to an email: Jinja2 templates to HTML (CSS inlined, within a size budget)
and text, then a 7-bit clean EmailMessage. Pure apart from loading templates once per run."""

from __future__ import annotations

import binascii
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from urllib.parse import quote

import css_inline
import jinja2

from digest.errors import TemplateError
from digest.parse import clean_line, safe_url
from digest.sanitize import Image

# 7-bit clean: quoted-printable/base64 bodies, CRLF, no line over 78 octets in the parts.
SMTP_7BIT = SMTP.clone(cte_type="7bit")
HTML_TEMPLATE = "digest.html.j2"
TEXT_TEMPLATE = "digest.txt.j2"
HTML_BUDGET = 90 * 1024  # Gmail clips HTML over ~102 KB, hiding the footer; keep a margin.

# Remote stylesheets stay off: rendering must never touch the network, and a template that
# links one would otherwise leak every open to that host. @media rules (narrow screens, dark
# mode) cannot be inlined, so they stay in the head.
_INLINER = css_inline.CSSInliner(
    load_remote_stylesheets=False,
    keep_link_tags=False,
    keep_at_rules=True,
    minify_css=True,
)


@dataclass(frozen=True, slots=True)
class ItemView:
    title: str
    url: str
    feed: str
    author: str
    published: str  # already formatted in the reader's zone
    reading_minutes: int
    summary: str
    reasons: tuple[str, ...] = ()
    also_in: tuple[str, ...] = ()
    image: Image | None = None  # only when the operator allows feed images
    brief: bool = False  # title and meta line only: the size budget took its summary


@dataclass(frozen=True, slots=True)
class Group:
    title: str  # the feed's name, or "" when the digest is ordered by rank
    start: int  # number of posts before this group, for numbering across groups
    items: list[ItemView]


@dataclass(frozen=True, slots=True)
class DigestView:
    name: str
    period: str  # daily, weekly, or "" for cron schedules
    recipient: str
    window_start: str
    window_end: str
    items: list[ItemView]
    more: list[ItemView] = field(default_factory=list)
    explain: bool = False
    group_by: str = "rank"  # or "feed"
    unsubscribe_url: str = ""  # https (or http) page or one-click endpoint, if the operator has one
    unsubscribe_mailto: str = ""
    more_limit: int | None = None  # set by the size budget: list only this many of `more`

    @property
    def count(self) -> int:
        return len(self.items) + len(self.more)

    @property
    def sources(self) -> list[str]:
        return sorted({i.feed for i in (*self.items, *self.more)})

    @property
    def overview(self) -> str:
        feeds = len(self.sources)
        return (
            f"{self.count} new {'post' if self.count == 1 else 'posts'}"
            f" from {feeds} {'feed' if feeds == 1 else 'feeds'}"
        )

    @property
    def groups(self) -> list[Group]:
        """Posts in rank order, or one group per feed, the feed of the best post first."""
        if self.group_by != "feed":
            return [Group("", 0, list(self.items))] if self.items else []
        by_feed: dict[str, list[ItemView]] = {}
        for item in self.items:
            by_feed.setdefault(item.feed, []).append(item)
        groups, start = [], 0
        for feed, items in by_feed.items():
            groups.append(Group(feed, start, items))
            start += len(items)
        return groups

    @property
    def more_listed(self) -> list[ItemView]:
        return self.more if self.more_limit is None else self.more[: self.more_limit]

    @property
    def more_unlisted(self) -> int:
        return len(self.more) - len(self.more_listed)

    @property
    def preheader(self) -> str:
        """The inbox preview line: the top titles, cut at a word near 140 characters."""
        text = " \u00b7 ".join(i.title for i in (*self.items, *self.more)[:5] if i.title)
        if len(text) <= 140:
            return text
        return text[:140].rsplit(" ", 1)[0].rstrip(" \u00b7") + " \u2026"


def bundled_templates_dir() -> Path:
    here = Path(__file__).resolve().parent
    installed = here / "templates"  # inside a wheel
    return installed if installed.is_dir() else here.parent / "templates"


def make_environment(templates_dir: Path | None = None) -> jinja2.Environment:
    """User templates (if any) first, the bundled ones behind them; `bundled/NAME` always
    reaches the bundled file, so an owned template can extend or include ours.

    Built once per run: templates are compiled once and, with auto_reload off, never
    looked up on disk again for the thousands of digests that follow."""
    bundled = jinja2.FileSystemLoader(str(bundled_templates_dir()))
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
    loaders += [bundled, jinja2.PrefixLoader({"bundled": bundled})]
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"), default_for_string=True
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters["wrap"] = _wrap
    env.filters["safe_url"] = safe_url
    return env


# Pure and called for the same posts in thousands of digests per run: memoized.
@functools.lru_cache(maxsize=8192)
def _wrap(text: str, width: int = 72, indent: str = "", first: str | None = None) -> str:
    """Paragraphs wrapped to `width`; `first` replaces the indent on the first line (a number).
    Words are never broken, so a URL longer than the line stays whole on a line of its own.
    (Greedy, like textwrap without its hyphen and long-word handling, and ten times faster:
    the text part is rendered for every digest.)"""
    out: list[str] = []
    lead = indent if first is None else first
    for paragraph in text.split("\n\n"):
        words = paragraph.split()
        if not words:
            continue
        lines: list[str] = []
        line = lead + words[0]
        for word in words[1:]:
            if len(line) + 1 + len(word) <= width:
                line += " " + word
            else:
                lines.append(line)
                line = indent + word
        lines.append(line)
        out.append("\n".join(lines))
        lead = indent
    return "\n\n".join(out)


@dataclass(frozen=True, slots=True)
class Rendered:
    html: str  # CSS inlined, within the size budget
    text: str
    view: DigestView  # what was rendered, after the size budget had its say


def render(env: jinja2.Environment, view: DigestView, *, budget: int = HTML_BUDGET) -> Rendered:
    """Both bodies from the same (budgeted) view, so text and HTML say the same things.
    A template problem raises TemplateError naming the file and line."""
    fitted, html = fit_budget(lambda v: inline_css(_render(env, HTML_TEMPLATE, v)), view, budget)
    return Rendered(html, _render(env, TEXT_TEMPLATE, fitted), fitted)


def render_bodies(
    env: jinja2.Environment, view: DigestView, *, budget: int = HTML_BUDGET
) -> tuple[str, str]:
    """(html, text); a template problem raises TemplateError naming the file and line."""
    rendered = render(env, view, budget=budget)
    return rendered.html, rendered.text


def inline_css(html: str) -> str:
    try:
        return _INLINER.inline(html)
    except css_inline.InlineError as exc:
        raise TemplateError(f"{HTML_TEMPLATE}: cannot inline its CSS: {exc}") from None


def html_size(html: str) -> int:
    return len(html.encode("utf-8"))


def fit_budget(
    render_html: Callable[[DigestView], str], view: DigestView, budget: int
) -> tuple[DigestView, str]:
    """The view shrunk until its HTML fits `budget` bytes. The lowest-ranked posts lose their
    summaries first, then move into "N more", and at last the "N more" list is shortened to a
    count. Header and footer (the unsubscribe link) are never cut. Each step is a binary
    search, so even a huge digest costs a handful of renders; one that fits costs one."""
    html = render_html(view)
    if html_size(html) <= budget:
        return view, html
    items = view.items

    def summaries_kept(k: int) -> DigestView:
        return replace(view, items=[replace(i, brief=n >= k) for n, i in enumerate(items)])

    def posts_kept(k: int) -> DigestView:
        brief = [replace(i, brief=True) for i in items]
        return replace(view, items=brief[:k], more=[*items[k:], *view.more])

    everything_more = [*items, *view.more]

    def titles_listed(k: int) -> DigestView:
        return replace(view, items=[], more=everything_more, more_limit=k)

    for make, top in (
        (summaries_kept, len(items) - 1),
        (posts_kept, len(items) - 1),
        (titles_listed, len(everything_more) - 1),
    ):
        found = _largest_fitting(render_html, make, top, budget)
        if found is not None:
            return found
    # Even an empty digest is too big (an owned template can be): send it whole rather than cut.
    smallest = titles_listed(0)
    return smallest, render_html(smallest)


def _largest_fitting(
    render_html: Callable[[DigestView], str],
    make: Callable[[int], DigestView],
    top: int,
    budget: int,
) -> tuple[DigestView, str] | None:
    """The largest k in 0..top whose view fits, assuming size grows with k."""
    best: tuple[DigestView, str] | None = None
    low, high = 0, top
    while low <= high:
        middle = (low + high) // 2
        candidate = make(middle)
        html = render_html(candidate)
        if html_size(html) <= budget:
            best, low = (candidate, html), middle + 1
        else:
            high = middle - 1
    return best


def _render(env: jinja2.Environment, name: str, view: DigestView) -> str:
    try:
        return env.get_template(name).render(digest=view)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename or name}:{exc.lineno}: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {exc.name} not found (needed by {name})") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{_template_place(exc, name)}: {exc}") from None


def _template_place(exc: BaseException, name: str) -> str:
    tb = exc.__traceback__
    place = name
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            place = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return place


def subject_for(template: str, view: DigestView) -> str:
    """The subject setting filled in. Placeholders: {name} {period} {count} {posts} {sources}
    {top} (the best post's title) {start} {end} (the dates the digest covers)."""
    sources = view.sources
    if len(sources) == 1:
        source_text = sources[0]
    elif len(sources) == 2:
        source_text = f"{sources[0]} and {sources[1]}"
    else:
        source_text = f"{len(sources)} feeds"
    top = next((i.title for i in (*view.items, *view.more) if i.title), "")
    try:
        subject = template.format(
            period=view.period or "",
            count=view.count,
            posts="post" if view.count == 1 else "posts",
            sources=source_text,
            name=view.name,
            top=top,
            start=view.window_start,
            end=view.window_end,
        )
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise TemplateError(f"digest.subject: cannot fill in {template!r}: {exc!r}") from None
    return clean_line(subject.replace("  ", " "))


def list_id_for(name: str, domain: str) -> str:
    """RFC 2919 List-Id: the digest's name as a quoted phrase, a label on the operator's domain."""
    label = clean_line(name).replace("\\", "").replace('"', "")
    return f'"{label}" <digest.{domain}>' if label else f"<digest.{domain}>"


def header_url(url: str) -> str:
    """A URL safe inside <...> in a header: characters that could end it are %-encoded."""
    return quote(clean_line(url), safe=":/?#[]@!$&'()*+,;=%~")


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  # "Name <address>": always the operator, never a feed's author
    recipient: str
    subject: str
    message_id: str  # fixed when the digest was planned, on the operator's domain
    date: datetime
    list_id: str
    reply_to: str | None = None
    unsubscribe_url: str | None = None
    recipient_name: str = ""


def unsubscribe_mailto(sender: str) -> str:
    return f"mailto:{parseaddr(sender)[1]}?subject=unsubscribe"


def _headers(envelope: Envelope) -> EmailMessage:
    """The message's headers, built and validated by the email package (no body)."""
    message = EmailMessage(policy=SMTP_7BIT)
    name, address = parseaddr(envelope.sender)
    message["Date"] = format_datetime(envelope.date)
    message["From"] = formataddr((clean_line(name), address))
    if envelope.reply_to:
        message["Reply-To"] = envelope.reply_to
    message["To"] = formataddr((clean_line(envelope.recipient_name), envelope.recipient))
    message["Subject"] = clean_line(envelope.subject)
    message["Message-ID"] = envelope.message_id
    message["List-Id"] = envelope.list_id
    unsubscribe = [f"<{unsubscribe_mailto(envelope.sender)}>"]
    url = header_url(envelope.unsubscribe_url or "")
    if url.startswith(("https://", "http://")):
        unsubscribe.insert(0, f"<{url}>")
    message["List-Unsubscribe"] = ", ".join(unsubscribe)
    # RFC 8058 one-click is defined for https only; a mail provider POSTs to it unattended.
    if url.startswith("https://"):
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message["Precedence"] = "bulk"
    return message


def build_message(envelope: Envelope, html: str, text: str) -> bytes:
    """The finished message: multipart/alternative, text first (RFC 2046: preferred part last),
    7-bit clean: CRLF, quoted-printable bodies, no line over 76 octets.

    Headers are encoded and folded by the email package's SMTP policy. The bodies are encoded
    with binascii's C quoted-printable codec and framed here: the email package's pure-Python
    encoder and generator took ~6 ms of a ~7.5 ms message, the whole per-digest budget when
    thousands go out in one run. The boundary contains "=_", which quoted-printable output can
    never contain, and comes from the Message-ID, so a retry is byte-identical."""
    headers = _headers(envelope)
    token = hashlib.sha256(envelope.message_id.encode("utf-8", "replace")).hexdigest()[:32]
    boundary = f"=_digest_{token}"
    headers["MIME-Version"] = "1.0"
    headers["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
    fold = SMTP_7BIT.fold_binary
    out = [b"".join(fold(name, value) for name, value in headers.items()), b"\r\n"]
    delimiter = f"--{boundary}\r\n".encode("ascii")
    for subtype, body in (("plain", text), ("html", html)):
        out += [
            delimiter,
            f'Content-Type: text/{subtype}; charset="utf-8"\r\n'.encode("ascii"),
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            _quoted_printable(body),
            b"\r\n",
        ]
    out.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(out)


def _quoted_printable(text: str) -> bytes:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(lines, istext=True).replace(b"\n", b"\r\n")
