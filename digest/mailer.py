"""Handing finished messages to an SMTP server or a folder. The only module that imports
aiosmtplib. Errors come out as DeliveryError (temporary or not) or FatalDeliveryError."""

from __future__ import annotations

import email
import email.policy
import os
import re
import ssl
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Protocol

import aiosmtplib

from digest.config import is_loopback
from digest.errors import DeliveryError, FatalDeliveryError, ServerUnavailable


class Mailer(Protocol):
    async def __aenter__(self) -> Mailer: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def send(self, data: bytes, sender: str, recipient: str, *, name: str) -> None:
        """Deliver one message or raise DeliveryError."""


class FolderMailer:
    """Writes each digest as `<name>.eml` plus an `<name>.html` preview, atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def __aenter__(self) -> FolderMailer:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FatalDeliveryError(f"cannot create folder {self.folder}: {exc}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(self, data: bytes, sender: str, recipient: str, *, name: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9@._+-]+", "_", name)
        try:
            _write_atomic(self.folder / f"{safe}.html", _html_part(data))
            # The .eml last: its presence means the digest is complete.
            _write_atomic(self.folder / f"{safe}.eml", data)
        except OSError as exc:
            raise DeliveryError(f"cannot write to {self.folder}: {exc}", temporary=True) from None


def _html_part(data: bytes) -> bytes:
    """The HTML body of a finished message, for the preview file beside the .eml."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    body = message.get_body(("html",))
    content = body.get_content() if isinstance(body, EmailMessage) else ""
    return str(content).encode("utf-8")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class SmtpMailer:
    """One connection reused for every message; reconnects after a failure."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: str,
        username: str | None,
        password: str | None,
        timeout: float,
        ca_file: str | None = None,
        allow_plaintext_auth: bool = False,
    ) -> None:
        if username and security == "none" and not (is_loopback(host) or allow_plaintext_auth):
            raise FatalDeliveryError(
                f"smtp: refusing to send the password for {username} unencrypted to {host};"
                " set smtp.security to 'starttls' or 'tls' (or allow_plaintext_auth = true)"
            )
        self.tls_context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.timeout = timeout
        self._smtp: aiosmtplib.SMTP | None = None

    async def __aenter__(self) -> SmtpMailer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._smtp is not None:
            try:
                if self._smtp.is_connected:
                    await self._smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        # start_tls is always set explicitly: left unset, aiosmtplib upgrades only when the
        # server offers STARTTLS, and a stripped offer would go unnoticed.
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.security == "tls",
            start_tls=self.security == "starttls",
            timeout=self.timeout,
            tls_context=self.tls_context,
        )
        where = f"{self.host}:{self.port}"
        try:
            await smtp.connect()
            if self.username:
                await smtp.login(self.username, self.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise FatalDeliveryError(
                f"smtp {where}: login as {self.username} refused: {exc.code} {exc.message}",
                exc.code,
            ) from None
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError) as exc:
            smtp.close()
            raise ServerUnavailable(f"smtp {where}: cannot connect: {exc}") from None
        except aiosmtplib.SMTPException as exc:
            smtp.close()
            message = str(exc)
            if "STARTTLS" in message or "TLS" in message:
                raise FatalDeliveryError(
                    f"smtp {where}: TLS required but failed: {message}"
                ) from None
            raise ServerUnavailable(f"smtp {where}: {message}") from None
        except OSError as exc:
            smtp.close()
            raise ServerUnavailable(
                f"smtp {where}: cannot connect: {exc.strerror or exc}"
            ) from None
        self._smtp = smtp
        return smtp

    async def send(self, data: bytes, sender: str, recipient: str, *, name: str) -> None:
        smtp = await self._connection()
        try:
            errors, _ = await smtp.sendmail(sender, [recipient], data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0] if exc.recipients else None
            code = refusal.code if refusal else 550
            text = refusal.message if refusal else str(exc)
            await self._reset()
            raise DeliveryError(
                f"{recipient} refused: {code} {text}", temporary=code < 500, code=code
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            # 421 means the server is closing the channel; anything else leaves it usable.
            await (self._drop() if exc.code == 421 else self._reset())
            raise DeliveryError(
                f"server said {exc.code} {exc.message}", temporary=exc.code < 500, code=exc.code
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Dropped or timed out, maybe after the data went out: retry later with the same
            # Message-ID, so the worst case is one duplicate, never a loss.
            await self._drop()
            detail = str(exc) or type(exc).__name__
            raise DeliveryError(f"smtp {self.host}:{self.port}: {detail}", temporary=True) from None
        if recipient in errors:
            code, text = errors[recipient]
            raise DeliveryError(
                f"{recipient} refused: {code} {text}", temporary=400 <= code < 500, code=code
            )

    async def _reset(self) -> None:
        if self._smtp is None:
            return
        try:
            await self._smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            await self._drop()

    async def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None
