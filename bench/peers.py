"""The collect bench's peers, rss2email and reader, in a virtualenv of their own outside the
repo, and the local SMTP sink rss2email mails into.

- reader: `make_reader(db)`, `add_feed` per URL in a setup process (not measured), then each
  measured run is a process that calls `update_feeds_iter(workers=16, scheduled=False)`
  (`scheduled=False`: the second run comes minutes after the first, before reader's own
  schedule would update anything; this makes it fetch every feed, as the other tools do).
- rss2email: `r2e new` makes its config (setup), the bench adds a `[feed.fN]` section per feed
  and points its SMTP settings at the sink, then each measured run is `r2e run`. It really
  sends: one SMTP connection per new entry, to an aiosmtpd sink on 127.0.0.1 in its own
  process (`r2e run --no-send` would skip the SMTP sends and would not record the sent
  messages, which is not the work it does for its users).

    python bench/peers.py sink      # the SMTP sink on its own (the bench starts it itself)
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from feedserver import Child, ignore_interrupts, serve_commands

DEFAULT_VENV = Path.home() / ".cache/digest-bench/peers-venv"
PACKAGES = ("rss2email", "reader", "aiosmtpd")
# reader 3.26's vendored feedparser imports `sgmllib`, which feedparser 6.0.12+ no longer pulls
# in (it moved to feedparser-sgmllib): without sgmllib3k, reader cannot add a feed.
INSTALL = (*PACKAGES, "sgmllib3k")
RECIPIENT = "you@example.org"

# Run with the peer venv's python: `reader_bench.py DB add URLS_FILE` or `... DB update WORKERS`.
READER_SCRIPT = """\
import sys
from reader import make_reader

db, mode, arg = sys.argv[1:4]
reader = make_reader(db)
if mode == "add":
    with open(arg) as urls:
        for url in urls.read().split():
            reader.add_feed(url, exist_ok=True)
else:
    new = modified = unchanged = errors = 0
    for result in reader.update_feeds_iter(workers=int(arg), scheduled=False):
        if result.value is None:
            unchanged += 1
        elif isinstance(result.value, Exception):
            errors += 1
            if errors <= 3:
                print(f"{result.url}: {result.value}", file=sys.stderr)
        else:
            new += result.value.new
            modified += result.value.modified
    print(f"{new} new, {modified} modified entries; {unchanged} not modified; {errors} errors")
    if errors:
        sys.exit(1)
reader.close()
"""


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path, log: Path) -> dict[str, str]:
    """The peers' virtualenv, made with `python -m venv` and `pip install` of INSTALL if it
    cannot import them yet. Returns their versions. Raises RuntimeError with pip's last lines
    when the install fails."""
    python = venv_python(venv)
    check = [str(python), "-c", "import reader, rss2email, aiosmtpd, sgmllib"]
    if not python.exists() or subprocess.run(check, capture_output=True).returncode != 0:
        print(f"installing {', '.join(INSTALL)} into {venv} (once; log in {log}) ...", flush=True)
        with log.open("w") as out:
            steps = [
                [sys.executable, "-m", "venv", str(venv)],
                [str(python), "-m", "pip", "install", "--upgrade", *INSTALL],
            ]
            for step in steps:
                if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                    tail = log.read_text(errors="replace").strip().splitlines()[-8:]
                    raise RuntimeError(f"{' '.join(step)} failed:\n" + "\n".join(tail))
    versions = subprocess.run(
        [
            str(python),
            "-c",
            f"import importlib.metadata as m;print(' '.join(m.version(p) for p in {PACKAGES!r}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return dict(zip(PACKAGES, versions, strict=True))


def peer_env(base: dict[str, str]) -> dict[str, str]:
    """The peers' environment: no PYTHONPATH pointing into the project."""
    return {k: v for k, v in base.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


# --- reader ---------------------------------------------------------------------------------


def reader_setup(venv: Path, folder: Path, urls: list[str], env: dict[str, str]) -> list[str]:
    """Make reader's database with every feed added (not measured). Returns the measured run's
    command, less its last argument: the number of workers."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "reader_bench.py"
    script.write_text(READER_SCRIPT)
    (folder / "urls.txt").write_text("\n".join(urls) + "\n")
    db = folder / "reader.sqlite"
    base = [str(venv_python(venv)), str(script), str(db)]
    subprocess.run([*base, "add", str(folder / "urls.txt")], env=env, check=True, cwd=folder)
    return [*base, "update"]


# --- rss2email ------------------------------------------------------------------------------


def rss2email_setup(
    venv: Path, folder: Path, urls: list[str], smtp_port: int, env: dict[str, str]
) -> list[str]:
    """`r2e new`, then the feeds and the SMTP sink written into its config (1,000 `r2e add`
    calls would take minutes and end in the same file). Returns the measured run's command."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path, data = folder / "rss2email.cfg", folder / "rss2email.json"
    base = [str(venv / "bin" / "r2e"), "-c", str(config_path), "-d", str(data)]
    done = subprocess.run([*base, "new", RECIPIENT], env=env, cwd=folder, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"r2e new failed: {done.stderr.decode(errors='replace')[-2000:]}")
    config = configparser.ConfigParser(interpolation=None)
    config.read(config_path)
    config["DEFAULT"].update(
        {
            "email-protocol": "smtp",
            "smtp-server": "127.0.0.1",
            "smtp-port": str(smtp_port),
            "smtp-ssl": "False",
            "smtp-auth": "False",
            "to": RECIPIENT,
        }
    )
    for n, url in enumerate(urls):
        config[f"feed.f{n}"] = {"url": url}
    with config_path.open("w") as out:
        config.write(out)
    return [*base, "run"]


# --- The SMTP sink --------------------------------------------------------------------------


class SmtpSink(Child):
    """`with SmtpSink() as sink:` an aiosmtpd server on 127.0.0.1 in its own process, counting
    and dropping every message."""

    def __init__(self, lifetime: float = 4 * 3600) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "sink"]
        super().__init__([*cmd, "--lifetime", str(lifetime)])

    @property
    def port(self) -> int:
        return int(self.hello["port"])

    def stats(self) -> dict[str, Any]:
        """Messages accepted, and the sink's CPU seconds, since the last call."""
        return self.ask("stats")


async def _sink(lifetime: float) -> None:
    from aiosmtpd.smtp import SMTP, Envelope, Session

    class Handler:
        messages = 0

        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            self.messages += 1
            return "250 OK"

    handler = Handler()
    cpu_mark = time.process_time()

    def command(line: str) -> dict[str, Any]:
        nonlocal cpu_mark
        if line.split() == ["stats"]:
            count, handler.messages = handler.messages, 0
            cpu, cpu_mark = time.process_time() - cpu_mark, time.process_time()
            return {"messages": count, "cpu": cpu}
        return {"error": f"unknown command {line!r}"}

    loop = asyncio.get_running_loop()
    # A fixed hostname: aiosmtpd would otherwise look up our FQDN for every connection.
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.invalid", ident="bench sink"),
        "127.0.0.1",
        0,
        backlog=256,
    )
    print(f'{{"port": {server.sockets[0].getsockname()[1]}}}', flush=True)
    async with server:
        await serve_commands(command, lifetime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sink = sub.add_parser("sink", help="run the SMTP sink (JSON lines on stdin/stdout)")
    sink.add_argument("--lifetime", type=float, default=4 * 3600)
    args = parser.parse_args()
    ignore_interrupts()
    asyncio.run(_sink(args.lifetime))


if __name__ == "__main__":
    main()
