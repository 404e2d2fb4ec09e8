"""Digest data to an email: Jinja2 templates to HTML and text, then an EmailMessage.
Pure apart from reading template files."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path

import jinja2

from digest.errors import TemplateError
from digest.parse import clean_line, safe_url

# 7-bit clean: quoted-printable/base64 bodies, CRLF, no line over 78 octets in the parts.
SMTP_7BIT = SMTP.clone(cte_type="7bit")
HTML_TEMPLATE = "digest.html.j2"
TEXT_TEMPLATE = "digest.txt.j2"


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

    @property
    def count(self) -> int:
        return len(self.items) + len(self.more)

    @property
    def sources(self) -> list[str]:
        return sorted({i.feed for i in (*self.items, *self.more)})


def bundled_templates_dir() -> Path:
    here = Path(__file__).resolve().parent
    installed = here / "templates"  # inside a wheel
    return installed if installed.is_dir() else here.parent / "templates"


def make_environment(templates_dir: Path | None = None) -> jinja2.Environment:
    """User templates (if any) first, the bundled ones behind them."""
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
    loaders.append(jinja2.FileSystemLoader(str(bundled_templates_dir())))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"), default_for_string=True
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["wrap"] = _wrap
    env.filters["safe_url"] = safe_url
    return env


def _wrap(text: str, width: int = 72, indent: str = "") -> str:
    return "\n".join(
        textwrap.wrap(
            text,
            width=width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
    )


def render_bodies(env: jinja2.Environment, view: DigestView) -> tuple[str, str]:
    """(html, text); a template problem raises TemplateError naming the file and line."""
    return _render(env, HTML_TEMPLATE, view), _render(env, TEXT_TEMPLATE, view)


def _render(env: jinja2.Environment, name: str, view: DigestView) -> str:
    try:
        return env.get_template(name).render(digest=view)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename or name}:{exc.lineno}: {exc.message}") from None
    except jinja2.TemplateNotFound:
        raise TemplateError(f"template {name} not found") from None
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
    sources = view.sources
    if len(sources) == 1:
        source_text = sources[0]
    elif len(sources) == 2:
        source_text = f"{sources[0]} and {sources[1]}"
    else:
        source_text = f"{len(sources)} feeds"
    try:
        subject = template.format(
            period=view.period or "",
            count=view.count,
            posts="post" if view.count == 1 else "posts",
            sources=source_text,
            name=view.name,
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise TemplateError(f"digest.subject: cannot fill in {template!r}: {exc}") from None
    return clean_line(subject.replace("  ", " "))


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  # "Name <address>"
    recipient: str
    subject: str
    message_id: str
    date: datetime
    list_id: str
    reply_to: str | None = None
    unsubscribe_url: str | None = None


def build_message(envelope: Envelope, html: str, text: str) -> EmailMessage:
    """multipart/alternative, text first (RFC 2046: preferred part last)."""
    message = EmailMessage(policy=SMTP_7BIT)
    name, address = parseaddr(envelope.sender)
    message["From"] = formataddr((clean_line(name), address))
    message["To"] = envelope.recipient
    message["Subject"] = clean_line(envelope.subject)
    message["Date"] = format_datetime(envelope.date)
    message["Message-ID"] = envelope.message_id
    message["List-Id"] = envelope.list_id
    unsubscribe = [f"<mailto:{address}?subject=unsubscribe>"]
    if envelope.unsubscribe_url:
        unsubscribe.insert(0, f"<{envelope.unsubscribe_url}>")
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["List-Unsubscribe"] = ", ".join(unsubscribe)
    if envelope.reply_to:
        message["Reply-To"] = envelope.reply_to
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message


def message_bytes(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=SMTP_7BIT)
