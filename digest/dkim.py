"""Optional DKIM signing (dkimpy) of the finished message bytes.

The key is read once per run (`load_signer`); signing itself is pure. dkimpy is an optional
extra (`pip install 'digest[dkim]'`), imported only when a [dkim] section is configured."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from digest.config import Settings
from digest.errors import DigestError

# Every header a receiver or a mail provider acts on. dkimpy's default list leaves out
# List-Unsubscribe-Post, and RFC 8058 wants one-click unsubscribe covered by the signature.
SIGNED_HEADERS = (
    "From",
    "Reply-To",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
)


class DkimError(DigestError):
    """The DKIM key cannot be read or used."""


@dataclass(frozen=True, slots=True)
class Signer:
    selector: str
    domain: str
    private_key: bytes

    def sign(self, message: bytes) -> bytes:
        """`message` with a DKIM-Signature header in front (relaxed/relaxed, rsa-sha256).
        Headers listed but absent (Reply-To when unset) are signed as absent, so nobody can
        add them later without breaking the signature."""
        dkim = _dkimpy()
        try:
            signature: bytes = dkim.sign(
                message,
                self.selector.encode("ascii"),
                self.domain.encode("ascii"),
                self.private_key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=[h.encode("ascii") for h in SIGNED_HEADERS],
                linesep=b"\r\n",
            )
        except dkim.DKIMException as exc:
            raise DkimError(f"dkim: cannot sign: {exc}") from None
        return signature + message


def load_signer(settings: Settings) -> Signer | None:
    """The signer for this run, or None when [dkim] is not configured. A key that cannot be
    read or used is reported now, once, instead of once per digest."""
    config = settings.dkim
    if config is None:
        return None
    path = settings.resolve(config.private_key)
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise DkimError(f"dkim -> private_key: cannot read {path}: {exc.strerror}") from None
    signer = Signer(config.selector, config.domain or settings.digest.from_domain, key)
    try:
        signer.sign(b"From: check@example.org\r\nSubject: key check\r\n\r\nbody\r\n")
    except DkimError as exc:
        raise DkimError(f"dkim -> private_key: {path} is not a usable key ({exc})") from None
    return signer


def _dkimpy() -> Any:
    try:
        import dkim
    except ImportError:
        raise DkimError(
            "dkim: signing is configured but dkimpy is not installed (pip install 'digest[dkim]')"
        ) from None
    return dkim
