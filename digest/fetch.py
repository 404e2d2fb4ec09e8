"""Fetching feed bytes: HTTP(S) with conditional GET, a whole-request deadline and a size cap
counted while streaming; or a local file. The only module that imports httpx."""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from pathlib import Path

import httpx

from digest.errors import FeedError

# What callers hold between fetches; they need not import httpx themselves.
Client = httpx.AsyncClient


@dataclass(frozen=True, slots=True)
class FetchResult:
    """`data` is None when the server said 304 Not Modified."""

    data: bytes | None
    etag: str | None
    last_modified: str | None
    content_type: str | None = None
    status: int = 200


class _Inflater:
    """Decodes gzip/deflate bodies chunk by chunk, never producing more than `limit` bytes.

    httpx decodes whole network chunks at once, so a gzip bomb can blow far past a cap that is
    checked afterwards; we ask only for identity/gzip/deflate and inflate with a bound ourselves.
    """

    def __init__(self, encoding: str, limit: int) -> None:
        self.limit = limit
        self.size = 0
        if encoding in ("gzip", "x-gzip"):
            self._z: zlib._Decompress | None = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj()
        elif encoding in ("", "identity"):
            self._z = None
        else:
            raise FeedError(f"unsupported Content-Encoding {encoding!r}")

    def feed(self, chunk: bytes) -> bytes:
        if self._z is None:
            out = chunk
        else:
            try:
                out = self._z.decompress(chunk, self.limit - self.size + 1)
            except zlib.error as exc:
                raise FeedError(f"corrupt compressed body: {exc}") from None
        self.size += len(out)
        if self.size > self.limit or (self._z is not None and self._z.unconsumed_tail):
            raise FeedError(f"response larger than {self.limit} bytes")
        return out


async def fetch_url(
    client: httpx.AsyncClient,
    url: str,
    *,
    etag: str | None,
    last_modified: str | None,
    timeout: float,
    max_bytes: int,
) -> FetchResult:
    """GET `url`; raise FeedError naming what went wrong."""
    headers = {"Accept-Encoding": "gzip, deflate"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        # httpx's read timeout is per read; a trickling server needs a deadline of its own.
        async with asyncio.timeout(timeout):
            return await _get(client, url, headers, max_bytes)
    except TimeoutError:
        raise FeedError(f"no complete answer within {timeout:g}s") from None
    except httpx.TooManyRedirects:
        raise FeedError("too many redirects") from None
    except httpx.HTTPError as exc:
        raise FeedError(
            f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        ) from None


async def _get(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], max_bytes: int
) -> FetchResult:
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 304:
            return FetchResult(None, response.headers.get("etag"), None, status=304)
        if response.status_code >= 400:
            raise FeedError(f"HTTP {response.status_code} {response.reason_phrase}")
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes * 4:
            raise FeedError(f"response larger than {max_bytes} bytes")
        inflater = _Inflater(
            response.headers.get("content-encoding", "").strip().lower(), max_bytes
        )
        chunks = [inflater.feed(chunk) async for chunk in response.aiter_raw()]
        return FetchResult(
            data=b"".join(chunks),
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            content_type=response.headers.get("content-type"),
            status=response.status_code,
        )


def read_file(path: str, max_bytes: int) -> FetchResult:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise FeedError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise FeedError(f"file larger than {max_bytes} bytes")
    return FetchResult(data=data, etag=None, last_modified=None)


def make_client(user_agent: str, concurrency: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=True,
        max_redirects=5,
        headers={"User-Agent": user_agent},
        timeout=httpx.Timeout(30.0, connect=10.0),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )
