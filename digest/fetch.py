"""Fetching feed bytes: HTTP(S) with conditional GET, redirects followed one hop at a time (so
permanent moves are seen and every hop is checked), a whole-request deadline, a size cap counted
while inflating, per-host politeness, and an optional guard against private addresses; or a
local file. The only module that imports httpx."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import select
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import brotli
import httpcore
import httpx

from digest.errors import FeedError, FeedGone

REDIRECTS = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECTS = frozenset({301, 308})
# A server asking for more than this is treated as asking for this.
MAX_RETRY_AFTER = 7 * 24 * 3600.0
# Connections per httpx client; more concurrency means more clients (see Fetcher).
SHARD_SIZE = 8


@dataclass(frozen=True, slots=True)
class FetchResult:
    """`data` is None when the server said 304 Not Modified. `moved_to` is set when the URL
    asked for answered with permanent redirects (301/308): where the feed lives now."""

    data: bytes | None
    etag: str | None
    last_modified: str | None
    content_type: str | None = None
    status: int = 200
    url: str = ""
    moved_to: str | None = None


class _Inflater:
    """Decodes gzip/deflate/brotli bodies chunk by chunk, never producing more than `limit`
    bytes.

    httpx decodes whole network chunks at once, so a compression bomb can blow far past a cap
    that is checked afterwards; we take raw bytes and inflate with a bound ourselves.
    """

    def __init__(self, encoding: str, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._z: zlib._Decompress | None = None
        self._br: brotli.Decompressor | None = None
        if encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj()
        elif encoding == "br":
            self._br = brotli.Decompressor()
        elif encoding not in ("", "identity"):
            raise FeedError(f"unsupported Content-Encoding {encoding!r}", kind="http")

    def feed(self, chunk: bytes) -> bytes:
        if self._z is not None:
            try:
                out = self._z.decompress(chunk, self.limit - self.size + 1)
            except zlib.error as exc:
                raise FeedError(f"corrupt compressed body: {exc}", kind="http") from None
            overflow = bool(self._z.unconsumed_tail)
        elif self._br is not None:
            out, overflow = self._brotli(chunk)
        else:
            out, overflow = chunk, False
        self.size += len(out)
        if self.size > self.limit or overflow:
            raise FeedError(f"response larger than {self.limit} bytes", kind="too-large")
        return out

    def _brotli(self, chunk: bytes) -> tuple[bytes, bool]:
        assert self._br is not None
        room = self.limit - self.size + 1
        try:
            out = self._br.process(chunk, output_buffer_limit=room)
            # Output held back at the limit means the body inflates past the cap.
            return out, len(out) >= room or not self._br.can_accept_more_data()
        except brotli.error as exc:
            raise FeedError(f"corrupt compressed body: {exc}", kind="http") from None


# ---- address guard --------------------------------------------------------------------------


def is_public(address: str) -> bool:
    """True for a globally routable address; false for private, loopback, link-local, shared,
    multicast, reserved and unspecified ones (IPv4-mapped IPv6 judged as the IPv4 inside)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _public_addresses(host: str, port: int) -> list[str]:
    """Resolve `host`; raise FeedError if any address it resolves to is not public."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except socket.gaierror as exc:
        raise FeedError(f"DNS: cannot resolve {host}: {exc.strerror}", kind="dns") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        if not is_public(address):
            raise FeedError(
                f"refused: {host} resolves to {address}, not a public address"
                " (collect.block_private_addresses is on)",
                kind="refused-address",
            )
    return addresses


def _readable(sock: socket.socket | None) -> bool:
    """Whether an idle connection's socket has something to read: the server closed it, or
    sent what it should not have. Either way the connection is not reused."""
    if sock is None or sock.fileno() < 0:
        return True
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    return bool(poll.poll(0))


class _Stream(httpcore.AsyncNetworkStream):
    """A connection on asyncio's own streams, for httpcore.

    httpcore's default streams (anyio's) put every read and write in a cancel scope and answer
    "is_readable", which the pool asks of every idle connection each time it places a request,
    by building a table of attributes: at a thousand requests that was a third of the
    fetcher's CPU. asyncio's streams do the same work with less around it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout(f"no data within {timeout}s") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout(f"could not send within {timeout}s") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        # Not waiting for the peer: a TLS close may never be answered, and nothing depends on it.
        self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            self._writer.close()
            raise httpcore.ConnectTimeout(f"TLS handshake not done within {timeout}s") from None
        except (OSError, ssl.SSLError) as exc:
            self._writer.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Between requests nothing should arrive: an end of stream, a closing transport or
            # unread bytes all mean the connection is not to be reused.
            return (
                self._reader.at_eof()
                or self._writer.transport.is_closing()
                or _readable(self._writer.get_extra_info("socket"))
            )
        names = {"client_addr": "sockname", "server_addr": "peername"}
        return self._writer.get_extra_info(names.get(info, info))


class _Backend(httpcore.AsyncNetworkBackend):
    """Connections for httpcore on asyncio's streams (see `_Stream`)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                    happy_eyeballs_delay=0.25,
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection within {timeout}s") from None
        except OSError as exc:  # socket.gaierror included: the chain keeps it for `_http_error`
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _Stream(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise FeedError("refused: unix sockets are not fetched", kind="refused-address")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _GuardedBackend(_Backend):
    """Connects only to public addresses, checked on the address actually dialled, so a name
    that resolves differently on a second lookup (DNS rebinding) cannot slip through."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await _public_addresses(host, port)
        return await super().connect_tcp(addresses[0], port, timeout, local_address, socket_options)


# ---- the fetcher ----------------------------------------------------------------------------


class Fetcher:
    """One HTTP client for a collect: keep-alive connections, at most `per_host` requests to a
    host at once (and `concurrency` in all), every fetch under its own deadline."""

    def __init__(
        self,
        *,
        user_agent: str,
        concurrency: int,
        per_host: int,
        timeout: float,
        max_bytes: int,
        max_redirects: int = 5,
        block_private: bool = False,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.block_private = block_private
        self._per_host = per_host
        self._hosts: dict[str, asyncio.Semaphore] = {}
        # httpcore's pool scans every connection for each request it places, so one pool of
        # many connections costs quadratic CPU; several small pools (shards) do not.
        shards = max(1, -(-concurrency // SHARD_SIZE))
        # Loading the CA bundle takes tens of milliseconds: once, shared by the shards.
        tls = httpx.create_ssl_context()
        self._clients = [
            self._make_client(user_agent, -(-concurrency // shards), timeout, block_private, tls)
            for _ in range(shards)
        ]
        self._in_flight = [0] * shards

    @staticmethod
    def _make_client(
        user_agent: str, connections: int, timeout: float, block_private: bool, tls: ssl.SSLContext
    ) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(
            verify=tls,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        # httpx takes no network backend of its own; its pool (httpcore's) does.
        transport._pool._network_backend = _GuardedBackend() if block_private else _Backend()
        return httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": user_agent},
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        )

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self._clients:
            await client.aclose()

    async def get(self, url: str, *, etag: str | None, last_modified: str | None) -> FetchResult:
        """GET `url` following redirects; raise FeedError (FeedGone on 410) naming what went
        wrong."""
        headers = {"Accept-Encoding": "gzip, deflate, br"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        current, moved_to, permanent = url, None, True
        budget = self.timeout
        for _ in range(self.max_redirects + 1):
            host = (urlsplit(current).hostname or "").lower()
            if self.block_private:
                await _public_addresses(host, urlsplit(current).port or 443)
            async with self._host_slot(host):
                started = time.monotonic()
                try:
                    # httpx's read timeout is per read; a trickling server needs a deadline.
                    async with asyncio.timeout(budget):
                        answer = await self._one(current, headers)
                except TimeoutError:
                    raise FeedError(
                        f"timeout: no complete answer within {self.timeout:g}s", kind="timeout"
                    ) from None
                except httpx.HTTPError as exc:
                    raise _http_error(exc) from None
                budget -= time.monotonic() - started
            if isinstance(answer, FetchResult):
                return _with_location(answer, current, moved_to)
            status, location = answer
            target = urljoin(current, location)
            if urlsplit(target).scheme not in ("http", "https"):
                raise FeedError(f"HTTP {status} redirect to a non-HTTP URL {target!r}", kind="http")
            permanent = permanent and status in PERMANENT_REDIRECTS
            if permanent:
                moved_to = target
            current = target
        raise FeedError(f"more than {self.max_redirects} redirects", kind="http")

    @contextlib.asynccontextmanager
    async def _host_slot(self, host: str) -> AsyncIterator[None]:
        slot = self._hosts.get(host)
        if slot is None:
            slot = self._hosts[host] = asyncio.Semaphore(self._per_host)
        async with slot:
            yield

    async def _one(self, url: str, headers: dict[str, str]) -> FetchResult | tuple[int, str]:
        """One request: a result, or (status, Location) for a redirect to follow."""
        # The least busy shard: one that has a connection free, when any has.
        shard = min(range(len(self._clients)), key=self._in_flight.__getitem__)
        self._in_flight[shard] += 1
        try:
            return await self._request(self._clients[shard], url, headers)
        finally:
            self._in_flight[shard] -= 1

    async def _request(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str]
    ) -> FetchResult | tuple[int, str]:
        async with client.stream("GET", url, headers=headers) as response:
            status = response.status_code
            if status in REDIRECTS and response.headers.get("location"):
                await _drain(response)
                return status, response.headers["location"]
            if status == 304:
                await _drain(response)
                return FetchResult(None, response.headers.get("etag"), None, status=304)
            if status >= 400:
                await _drain(response)
            if status == 410:
                raise FeedGone(f"HTTP 410 {response.reason_phrase or 'Gone'}")
            if status >= 400:
                raise FeedError(
                    f"HTTP {status} {response.reason_phrase}".rstrip(),
                    kind="http",
                    retry_after=_retry_after(response.headers.get("retry-after"))
                    if status in (429, 503)
                    else None,
                )
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_bytes * 4:
                raise FeedError(f"response larger than {self.max_bytes} bytes", kind="too-large")
            inflater = _Inflater(
                response.headers.get("content-encoding", "").strip().lower(), self.max_bytes
            )
            chunks = [inflater.feed(chunk) async for chunk in response.aiter_raw()]
            return FetchResult(
                data=b"".join(chunks),
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
                content_type=response.headers.get("content-type"),
                status=status,
            )


async def _drain(response: httpx.Response, limit: int = 65_536) -> None:
    """Read a small unwanted body (a 304's, a redirect's, an error page) to its end, so the
    connection goes back to the pool instead of being closed; a large one is not worth it."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return
    seen = 0
    async for chunk in response.aiter_raw():
        seen += len(chunk)
        if seen > limit:
            return


def _with_location(result: FetchResult, url: str, moved_to: str | None) -> FetchResult:
    return FetchResult(
        result.data,
        result.etag,
        result.last_modified,
        result.content_type,
        result.status,
        url,
        moved_to,
    )


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER)


def _http_error(exc: httpx.HTTPError) -> FeedError:
    """httpx's exception as a plain reason, sorted into the kinds a run's summary names."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    detail = str(exc) or type(exc).__name__
    if any(isinstance(c, socket.gaierror) for c in chain) or any(
        marker in detail
        for marker in ("Name or service not known", "nodename nor servname", "name resolution")
    ):
        return FeedError(f"DNS: cannot resolve the host ({detail})", kind="dns")
    if isinstance(exc, httpx.TimeoutException):
        return FeedError(f"timeout: {type(exc).__name__}", kind="timeout")
    if "CERTIFICATE" in detail.upper() or "SSL" in detail.upper():
        return FeedError(f"TLS: {detail}", kind="tls")
    if isinstance(exc, httpx.ConnectError):
        return FeedError(f"cannot connect: {detail}", kind="connect")
    if isinstance(exc, httpx.RemoteProtocolError):
        return FeedError(f"broken HTTP answer: {detail}", kind="http")
    return FeedError(f"{type(exc).__name__}: {detail}", kind="http")


def read_file(path: str, max_bytes: int) -> FetchResult:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise FeedError(f"cannot read {path}: {exc.strerror or exc}", kind="file") from None
    if len(data) > max_bytes:
        raise FeedError(f"file larger than {max_bytes} bytes", kind="too-large")
    return FetchResult(data=data, etag=None, last_modified=None, url=path)
