"""The fetcher alone: N conditional GETs answered 304 by a minimal asyncio server in its own
process, with a per-request latency. Prints wall time, this process's CPU time and CPU per
request, for a few concurrency levels. It isolates the HTTP client's cost from parsing and
storage (bench/collect.py measures the whole collect).

    python bench/fetch.py [--requests 1000] [--latency 0.1] [--concurrency 8 32 64 128]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ANSWER = b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 0\r\n\r\n'


def serve(port: int, latency: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if latency:
                    await asyncio.sleep(latency)
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    asyncio.run(main())


async def fetch_all(port: int, requests: int, concurrency: int) -> None:
    from digest.fetch import Fetcher

    limit = asyncio.Semaphore(concurrency)
    async with Fetcher(
        user_agent="bench",
        concurrency=concurrency,
        per_host=concurrency,
        timeout=30,
        max_bytes=1_000_000,
    ) as fetcher:

        async def one(n: int) -> None:
            async with limit:
                got = await fetcher.get(
                    f"http://127.0.0.1:{port}/{n}.xml", etag='"v1"', last_modified=None
                )
                assert got.status == 304

        await asyncio.gather(*(one(n) for n in range(requests)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 64, 128])
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = multiprocessing.Process(target=serve, args=(port, args.latency), daemon=True)
    server.start()
    try:
        time.sleep(0.5)
        print(
            f"{args.requests} conditional GETs answered 304, {args.latency * 1000:.0f} ms latency"
        )
        for concurrency in args.concurrency:
            wall, cpu = time.perf_counter(), time.process_time()
            asyncio.run(fetch_all(port, args.requests, concurrency))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            floor = args.requests * args.latency / concurrency
            print(
                f"  concurrency {concurrency:>3}: {wall:5.2f} s wall (latency floor {floor:.2f} s),"
                f" {cpu:5.2f} s CPU, {cpu / args.requests * 1000:.2f} ms CPU per request"
            )
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
