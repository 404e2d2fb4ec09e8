"""Collecting, measured: `digest collect` against N local feeds (20 items, ~90 KB of realistic
HTML each, built from the LessWrong fixtures), with a per-request latency, then a second run in
which ~30% of the feeds changed and the rest answer 304; the same for rss2email and reader
(16 workers), installed in a virtualenv of their own. Prints wall time, CPU time, peak RSS and
feeds/s of each tool's process tree, first and second run; the parse floor (CPU of parsing
every feed with digest's parser, divided by the cores); and the issue's targets, PASS or MISS.

    python bench/collect.py [--feeds 1000] [--latency 0.1] [--concurrency 64] [--no-peers]

Run it with PYTHONPATH at the checkout to measure (`--root` names another checkout's digest;
the feeds, the server and this script stay these). The feed server and the SMTP sink run in
processes of their own, so they take no CPU from the measured process tree (they do share the
machine's cores with it, as a real feed host would not: their CPU is printed too).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peers
import psutil
from feedserver import FeedServer, FeedSet, write_feeds

BENCH = Path(__file__).resolve().parent
MB = 1_000_000
# What the targets are stated for.
TARGET_FEEDS, TARGET_LATENCY, TARGET_CORES = 1000, 0.1, 2
# The summarizing reference times every this-many-th feed's entries and scales up.
SUMMARY_SAMPLE = 10
HAVE_PROC_CHILDREN = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()


# --- Measuring a process tree ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measured:
    wall: float
    # user+sys of the process and of every descendant it waited for (os.wait4's rusage): the
    # pool workers that a clean shutdown joins are in it.
    cpu: float
    # The peak, over samples, of the summed RSS of the live tree (shared pages count once per
    # process, as RSS does).
    peak_rss: int
    # Sampled: the top process's own user+sys, and the most processes alive at once.
    main_cpu: float
    processes: int
    # CPU time used on the whole machine during the run (all processes, all cores).
    machine_cpu: float
    exit_code: int
    timed_out: bool
    output: str


class TreeSampler(threading.Thread):
    """Every `interval` seconds: RSS of the process and all its descendants, summed."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.most = 0
        self.cpu: dict[int, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        known: dict[int, psutil.Process] = {}
        while True:
            self._sample(known)
            if self._halt.wait(self.interval):
                return

    def _sample(self, known: dict[int, psutil.Process]) -> None:
        total = alive = 0
        for pid in tree_pids(self.pid):
            try:
                proc = known.get(pid) or known.setdefault(pid, psutil.Process(pid))
                rss = proc.memory_info().rss
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += rss
            alive += 1
            self.cpu[pid] = times.user + times.system
        self.peak = max(self.peak, total)
        self.most = max(self.most, alive)

    def finish(self) -> None:
        self._halt.set()
        self.join()


def tree_pids(root: int) -> list[int]:
    """The process and its descendants, from /proc/PID/task/TID/children: a few small reads,
    where psutil's children(recursive=True) reads every process's stat (~5 ms a call here,
    a fifth of a core at 40 samples a second, taken from the measured tool)."""
    if not HAVE_PROC_CHILDREN:
        try:
            return [root, *(p.pid for p in psutil.Process(root).children(recursive=True))]
        except psutil.Error:
            return [root]
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    todo += [int(child) for child in children.read().split()]
            except OSError:
                continue
    return pids


def machine_busy() -> float:
    """Seconds of CPU the whole machine has spent busy, all cores."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


def kill_tree(pid: int) -> None:
    try:
        root = psutil.Process(pid)
        tree = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for proc in tree:
        with suppress(psutil.Error):
            proc.kill()


def measure(
    cmd: list[str], env: dict[str, str], cwd: Path, log: Path, interval: float, timeout: float
) -> Measured:
    with log.open("w") as out:
        busy = machine_busy()
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        timer = threading.Timer(timeout, kill_tree, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            kill_tree(proc.pid)
            proc.wait()
            raise
        finally:
            timer.cancel()
            sampler.finish()
        wall = time.perf_counter() - start
        busy = machine_busy() - busy
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = log.read_text(errors="replace").strip().splitlines()
    return Measured(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss=sampler.peak,
        main_cpu=sampler.cpu.get(proc.pid, 0.0),
        processes=sampler.most,
        machine_cpu=busy,
        exit_code=proc.returncode,
        timed_out=wall >= timeout,
        output="\n".join(lines[-3:]),
    )


# --- The parse floor (run as a child: `collect.py --parse-floor DIR N URL_PREFIX`) ----------


def parse_floor_child(folder: Path, count: int, url_prefix: str) -> None:
    import feedparser

    bodies = [(folder / "gen1" / f"{n}.xml").read_bytes() for n in range(count)]
    # feedparser as shipped first: importing digest.parse gives feedparser faster equivalents
    # of some of its internals (see the README's feedparser row), which would count here too.
    feedparser.parse(io.BytesIO(bodies[0]))  # imports, caches
    start = time.process_time()
    for body in bodies:
        feedparser.parse(io.BytesIO(body))
    feedparser_cpu = time.process_time() - start

    from digest.parse import parse_feed

    parse_feed(bodies[0], f"{url_prefix}0.xml", "application/rss+xml")  # imports, caches
    entries = 0
    sample: list[Any] = []
    start = time.process_time()
    for n, body in enumerate(bodies):
        parsed = parse_feed(body, f"{url_prefix}{n}.xml", "application/rss+xml").entries
        entries += len(parsed)
        if n % SUMMARY_SAMPLE == 0:
            sample += parsed
    parse_cpu = time.process_time() - start
    result: dict[str, Any] = {
        "parse_feed": parse_cpu,
        "feedparser": feedparser_cpu,
        "entries": entries,
    }
    try:
        from digest.summarize import summarize

        start = time.process_time()
        for entry in sample:
            summarize(entry.title, entry.content)
        result["summarize"] = (time.process_time() - start) * entries / max(1, len(sample))
    except Exception as exc:  # a reference only: a changed API must not stop the bench
        result["summarize_error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(result))


def parse_floor(folder: Path, feeds: FeedSet, url_prefix: str, env: dict[str, str]) -> Any:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--parse-floor", str(folder)]
    cmd += [str(feeds.count), url_prefix]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"parse floor failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- The runs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    tool: str
    run: str
    measured: Measured
    server: dict[str, Any]
    note: str


@dataclass(frozen=True, slots=True)
class Context:
    args: argparse.Namespace
    folder: Path
    feeds: FeedSet
    server: FeedServer


def first_and_second(
    ctx: Context,
    tool: str,
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    note: Callable[[Measured], str],
) -> list[Row]:
    rows = []
    for generation, run in ((1, "first"), (2, "second")):
        ctx.server.generation(generation)
        ctx.server.stats()
        log = cwd / f"{run}.log"
        measured = measure(cmd, env, cwd, log, ctx.args.sample_ms / 1000, ctx.args.timeout)
        row = Row(tool, run, measured, ctx.server.stats(), note(measured))
        rows.append(row)
        print(f"  {format_row(row, ctx.feeds.count)}", flush=True)
        if measured.exit_code != 0 or measured.timed_out:
            kept = "" if ctx.args.keep else " (--keep keeps it)"
            print(f"  ({tool} {run} run's output ends, in {log}{kept}:", flush=True)
            print("    " + measured.output.replace("\n", "\n    ") + ")", flush=True)
    return rows


def last_line(measured: Measured) -> str:
    lines = measured.output.splitlines()
    return lines[-1].strip() if lines else ""


def stored(database: Path) -> str:
    """What digest's database holds after a run (read after it, not timed)."""
    try:
        with closing(sqlite3.connect(database)) as db:
            count, summarized = db.execute(
                "SELECT count(*), count(summary) FROM entries"
            ).fetchone()
    except sqlite3.Error as exc:
        return f"database not readable: {exc}"
    return f"db: {count} entries, {summarized} summarized"


def per_host_supported(env: dict[str, str]) -> bool:
    probe = "from digest.config import CollectSettings as C; print('per_host' in C.model_fields)"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cannot import digest:\n{done.stderr[-2000:]}")
    return done.stdout.strip() == "True"


def digest_runs(ctx: Context, env: dict[str, str], per_host: int | None, round_: int) -> list[Row]:
    args = ctx.args
    folder = ctx.folder / f"digest-{round_}"
    folder.mkdir()
    database = folder / "collect.db"
    lines = [
        "[digest]",
        f'database = "sqlite:///{database}"',
        "[collect]",
        f"concurrency = {args.concurrency}",
    ]
    if per_host is not None:
        lines.append(f"per_host = {per_host}")
    for n in range(ctx.feeds.count):
        lines += ["[[feeds]]", f'name = "f{n}"', f'url = "{ctx.server.url(n)}"']
    config = folder / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "digest.cli", "collect", "-c", str(config)]

    def note(m: Measured) -> str:
        workers = m.cpu - m.main_cpu
        parts = [
            f"main process {m.main_cpu:.1f} s CPU, {m.processes - 1} workers {workers:.1f} s",
            stored(database),
        ]
        if m.exit_code != 0:
            parts.append(last_line(m))
        return "; ".join(parts)

    tool = "digest" if args.rounds == 1 else f"digest #{round_ + 1}"
    return first_and_second(ctx, tool, cmd, env, folder, note)


def reader_runs(ctx: Context, venv: Path, env: dict[str, str]) -> list[Row]:
    folder = ctx.folder / "reader"
    urls = [ctx.server.url(n) for n in range(ctx.feeds.count)]
    cmd = [*peers.reader_setup(venv, folder, urls, env), str(ctx.args.reader_workers)]
    tool = f"reader ({ctx.args.reader_workers} workers)"
    return first_and_second(ctx, tool, cmd, env, folder, last_line)


def rss2email_runs(ctx: Context, venv: Path, env: dict[str, str], stack: ExitStack) -> list[Row]:
    folder = ctx.folder / "rss2email"
    sink = stack.enter_context(peers.SmtpSink())
    urls = [ctx.server.url(n) for n in range(ctx.feeds.count)]
    cmd = peers.rss2email_setup(venv, folder, urls, sink.port, env)

    def note(m: Measured) -> str:
        got = sink.stats()
        errors = [line for line in m.output.splitlines() if "error" in line.lower()]
        return f"{got['messages']} messages to the SMTP sink ({got['cpu']:.1f} s CPU)" + (
            f"; {errors[-1]}" if errors else ""
        )

    return first_and_second(ctx, "rss2email", cmd, env, folder, note)


# --- Output ---------------------------------------------------------------------------------

HEADER = (
    f"{'tool':<20} {'run':<6} {'wall s':>7} {'CPU s':>7} {'peak RSS MB':>11} {'feeds/s':>8}"
    f" {'200':>5} {'304':>5} {'conns':>5} {'server CPU':>10} {'other CPU':>9}  notes"
)


def format_row(row: Row, feeds: int) -> str:
    m, s = row.measured, row.server
    status = "" if m.exit_code == 0 else f"exit {m.exit_code}; "
    if m.timed_out:
        status = "TIMED OUT, killed; "
    return (
        f"{row.tool:<20} {row.run:<6} {m.wall:7.2f} {m.cpu:7.2f} {m.peak_rss / MB:11.0f}"
        f" {feeds / m.wall:8.1f} {s['ok']:5d} {s['not_modified']:5d} {s['connections']:5d}"
        f" {s['cpu']:10.2f} {max(0.0, m.machine_cpu - m.cpu - s['cpu']):9.2f}  {status}{row.note}"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(ctx: Context, rows: list[Row], floor: dict[str, Any], cores: int) -> None:
    args, n = ctx.args, ctx.feeds.count
    print()
    print(HEADER)
    for row in rows:
        print(format_row(row, n))
    legend = (
        f"(CPU: user+sys of the tool's process tree, from os.wait4; peak RSS: peak of the SUM of"
        f" RSS over the live process tree, sampled every {args.sample_ms:g} ms with psutil,"
        " MB = 10^6 bytes; 200/304/conns: the feed server's answers and TCP connections;"
        " server CPU s: the feed server process's, not counted in the tool's; other CPU s: the"
        " rest of the machine's busy CPU during the run (this script's sampler, the SMTP sink,"
        " anything else running: the runs share the cores with it, so a large value means a"
        " noisy run))"
    )
    print(textwrap.fill(legend, width=100))
    floor_s = floor["parse_feed"] / cores
    print()
    print(
        f"parse floor: digest.parse.parse_feed on all {n} feeds, one process:"
        f" {floor['parse_feed']:.2f} s CPU / {cores} cores = {floor_s:.2f} s"
        f" ({floor['entries']} entries)"
    )
    print(
        f"reference:   feedparser.parse(io.BytesIO(body)), its defaults (sanitizing,"
        f" relative URIs): {floor['feedparser']:.2f} s CPU, {floor['feedparser'] / cores:.2f} s"
        f" over {cores} cores"
    )

    if "summarize" in floor:
        print(
            f"reference:   digest.summarize.summarize on every {SUMMARY_SAMPLE}th feed's entries,"
            f" scaled to all {floor['entries']}: ~{floor['summarize']:.2f} s CPU"
            f" (~{floor['summarize'] / cores:.2f} s over {cores} cores; paid by `digest run`'s"
            " summarize step, not by `digest collect`; not part of the floor)"
        )
    else:
        print(f"reference:   summarize not measured: {floor.get('summarize_error')}")

    def median(tool_prefix: str, run: str, key: Callable[[Measured], float]) -> float | None:
        values = [key(r.measured) for r in rows if r.tool.startswith(tool_prefix) and r.run == run]
        return statistics.median(values) if values else None

    first = median("digest", "first", lambda m: m.wall)
    second = median("digest", "second", lambda m: m.wall)
    reader_first = median("reader", "first", lambda m: m.wall)
    peak = max(r.measured.peak_rss for r in rows if r.tool.startswith("digest"))
    assert first is not None and second is not None
    many = " (median of rounds)" if args.rounds > 1 else ""
    print(
        f"digest first run / parse floor: {first:.2f} s / {floor_s:.2f} s"
        f" = {first / floor_s:.2f}{many}"
    )
    at = (n, args.latency, cores)
    stated = (TARGET_FEEDS, TARGET_LATENCY, TARGET_CORES)
    print()
    print(
        "targets (stated for 1000 feeds, 100 ms latency, 2 cores"
        + (
            ""
            if at == stated
            else f"; this run: {n} feeds, {args.latency * 1000:g} ms, {cores} cores"
        )
        + "):"
    )
    if reader_first is None:
        print("  n/a   first run >= 4x faster than reader with 16 workers (peers not run)")
    else:
        print(
            f"  {verdict(reader_first >= 4 * first)}  first run >= 4x faster than reader"
            f" ({args.reader_workers} workers): {reader_first:.2f} s / {first:.2f} s"
            f" = {reader_first / first:.1f}x"
        )
    print(
        f"  {verdict(first <= 1.5 * floor_s)}  first run <= 1.5x parse floor:"
        f" {first:.2f} s vs {1.5 * floor_s:.2f} s ({first / floor_s:.2f}x)"
    )
    print(f"  {verdict(second < 3.0)}  second run < 3 s: {second:.2f} s")
    print(f"  {verdict(peak < 250 * MB)}  peak RSS < 250 MB: {peak / MB:.0f} MB")
    failed = [r for r in rows if r.measured.exit_code != 0 or r.measured.timed_out]
    for row in failed:
        print(f"note: {row.tool} {row.run} run exited {row.measured.exit_code}: {row.note}")


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="digest's [collect] concurrency"
    )
    parser.add_argument(
        "--per-host",
        type=int,
        default=None,
        help="digest's [collect] per_host (default: the concurrency, when digest has the setting)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="digest's runs, each on a new db")
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run rss2email and reader",
    )
    parser.add_argument("--reader-workers", type=int, default=16)
    parser.add_argument("--peers-venv", type=Path, default=peers.DEFAULT_VENV)
    parser.add_argument(
        "--root",
        type=Path,
        default=Path((os.environ.get("PYTHONPATH") or str(BENCH.parent)).split(os.pathsep)[0]),
        help="the digest checkout to measure (default: PYTHONPATH's first entry, else this repo)",
    )
    parser.add_argument("--sample-ms", type=float, default=25, help="RSS sampling interval")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run before kill")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--escaped",
        action="store_true",
        help="post HTML entity-escaped (&lt;p&gt;) instead of in CDATA as LessWrong sends it",
    )
    parser.add_argument("--parse-floor", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parse_floor:
        folder, count, url_prefix = args.parse_floor
        parse_floor_child(Path(folder), int(count), url_prefix)
        return

    cores = os.cpu_count() or 1
    root = args.root.resolve()
    env = {**os.environ, "PYTHONPATH": str(root)}
    per_host = args.per_host if args.per_host is not None else args.concurrency
    if not per_host_supported(env):
        if args.per_host is not None:
            print("note: this digest has no [collect] per_host; --per-host ignored")
        per_host_used: int | None = None
    else:
        per_host_used = per_host

    load = os.getloadavg()[0]
    print(
        f"load average at the start: {load:.2f}"
        + (" (the machine is busy: expect noisy numbers)" if load > 0.5 else ""),
        flush=True,
    )
    with ExitStack() as stack:
        folder = Path(tempfile.mkdtemp(prefix="digest-collectbench-"))
        if args.keep:
            print(f"files in {folder}")
        else:
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
        start = time.perf_counter()
        feeds = write_feeds(folder / "feeds", args.feeds, escaped=args.escaped)
        built = time.perf_counter() - start
        server = stack.enter_context(FeedServer(folder / "feeds", args.latency))
        ctx = Context(args, folder, feeds, server)
        print(
            f"{feeds.count} feeds x 20 items"
            f" (post HTML {'entity-escaped' if args.escaped else 'in CDATA, as LessWrong has it'}),"
            f" {feeds.total_bytes / feeds.count / 1000:.0f} kB"
            f" each ({feeds.total_bytes / MB:.0f} MB, built in {built:.1f} s), served on"
            f" 127.0.0.1:{server.port} with {args.latency * 1000:g} ms latency per request;"
            f" {len(feeds.changed)} changed for the second run, the rest answer 304"
        )
        print(
            f"digest from {root}: concurrency {args.concurrency}, per_host"
            f" {per_host_used if per_host_used is not None else '(not supported, left out)'};"
            f" {cores} cores"
        )
        floor = parse_floor(folder / "feeds", feeds, f"http://127.0.0.1:{server.port}/", env)
        print(
            f"parse floor measured: {floor['parse_feed']:.2f} s CPU for parse_feed,"
            f" {floor['feedparser']:.2f} s for plain feedparser,"
            f" ~{floor.get('summarize', float('nan')):.2f} s for summarize",
            flush=True,
        )
        print(f"  {HEADER}", flush=True)
        rows: list[Row] = []
        for round_ in range(args.rounds):
            rows += digest_runs(ctx, env, per_host_used, round_)
        if args.peers:
            venv = args.peers_venv.expanduser()
            venv.parent.mkdir(parents=True, exist_ok=True)
            versions = peers.ensure_venv(venv, venv.parent / "install.log")
            print("peers: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
            penv = peers.peer_env(dict(os.environ))
            rows += reader_runs(ctx, venv, penv)
            rows += rss2email_runs(ctx, venv, penv, stack)
        report(ctx, rows, floor, cores)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # The helpers and the measured tree are gone by now (context managers, kill_tree).
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
