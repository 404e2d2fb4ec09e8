"""Where one `digest collect` spends its wall-clock time: a diagnostic, not a benchmark.

Run from the repository root against a config (for instance one `bench/collect.py` wrote, with
the bench's feed server still up, or the rig below):

    PYTHONPATH=. python bench/collect_timeline.py -c config.toml

It runs the collect in this process and prints, with wall-clock and process CPU seconds since
start: the CLI imported, the parser pool started, the first fetch begun, the 1st, 100th, half,
90% and last fetch done, the pool closed, the end. It also prints the wall-clock time the event
loop spent in `fetch._readable` (the idle-connection check httpcore asks for before each
request): the check releases the GIL, and getting it back from the process's other threads
(the store thread, the pool's manager and feeder threads) is what that time mostly is.

Rig used on 2026-11-21 (1000 feeds, 100 ms latency, second run: 300 changed, 700 answer 304):
`bench/feedserver.py build DIR --feeds 1000`, then `feedserver.py serve DIR --latency 0.1`
with its stdin a pipe (`gen 2` switches to the changed feeds), a config of the 1000 URLs with
`concurrency = 64` and `per_host = 64`, and a copy of the database after a first run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

START_WALL, START_CPU = time.perf_counter(), time.process_time()
MARKS: list[tuple[float, float, str]] = []


def mark(label: str) -> None:
    MARKS.append((time.perf_counter() - START_WALL, time.process_time() - START_CPU, label))


def instrument(total: int) -> list[float]:
    """Wrap the fetcher, the parser pool and the readable check; returns the check's counter
    ([wall seconds, calls])."""
    from digest import fetch, parse_pool

    done = [0]
    started = [False]
    wanted = {1, 100, total // 2, total * 9 // 10, total}
    readable_cost = [0.0, 0.0]

    original_get = fetch.Fetcher.get

    async def get(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not started[0]:
            started[0] = True
            mark("first fetch begun")
        try:
            return await original_get(self, *args, **kwargs)
        finally:
            done[0] += 1
            if done[0] in wanted:
                mark(f"fetch #{done[0]} done")

    original_readable = fetch._readable

    def readable(sock: Any) -> bool:
        t = time.perf_counter()
        try:
            return original_readable(sock)
        finally:
            readable_cost[0] += time.perf_counter() - t
            readable_cost[1] += 1

    original_init = parse_pool.Parsers.__init__
    original_close = parse_pool.Parsers.close

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        mark("parser pool started")

    def close(self: Any) -> None:
        original_close(self)
        mark("parser pool closed")

    fetch.Fetcher.get = get  # type: ignore[method-assign]
    fetch._readable = readable
    parse_pool.Parsers.__init__ = init  # type: ignore[method-assign]
    parse_pool.Parsers.close = close  # type: ignore[method-assign]
    return readable_cost


def main() -> int:
    from digest import cli

    mark("CLI imported")
    args = ["collect", *sys.argv[1:]]
    config = sys.argv[sys.argv.index("-c") + 1] if "-c" in sys.argv else ""
    total = Path(config).read_text().count("[[feeds]]") if config else 1000
    readable_cost = instrument(total)
    code = 0
    try:
        code = cli.main(args) or 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        mark("end")
        for wall, cpu, label in MARKS:
            print(f"{wall:8.3f} s wall {cpu:8.3f} s CPU  {label}", file=sys.stderr)
        print(
            f"fetch._readable: {int(readable_cost[1])} calls, {readable_cost[0] * 1000:.1f} ms"
            " wall-clock in the event loop",
            file=sys.stderr,
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
