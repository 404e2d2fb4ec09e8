"""Command line: thin commands over run, config and render.

Exit codes: 0 all went well; 1 some feed or delivery failed (the rest went on); 2 bad config
or usage; 75 another run holds the lock (EX_TEMPFAIL, so cron wrappers may simply retry).
`digest status`: 0 healthy, 1 unhealthy. `digest serve`: 0 after a clean stop on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from digest import __version__
from digest.config import Settings, config_path, load_config
from digest.errors import ConfigError, DigestError, LockHeld, StoreError, TemplateError
from digest.logs import FORMATS, setup_logging

if TYPE_CHECKING:
    from digest.store import Store

EXIT_OK, EXIT_FAILURES, EXIT_CONFIG, EXIT_LOCKED = 0, 1, 2, 75

log = logging.getLogger("digest")


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digest",
        description="Email digests of RSS/Atom feeds, ranked and summarized per subscriber.",
    )
    parser.add_argument("--version", action="version", version=f"digest {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        help="config file (default: $DIGEST_CONFIG, else ./config.toml)",
    )
    common.add_argument(
        "--now",
        type=_when,
        help="run as if it were this ISO-8601 time (UTC if no offset); for tests and backfills",
    )
    common.add_argument("-v", "--verbose", action="count", default=0, help="say what happens")
    common.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="log lines on stderr: readable text (default) or one JSON object a line",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "run",
        parents=[common],
        help="collect feeds, then write and send the digests that are due (for cron)",
    )
    sub.add_parser(
        "collect",
        parents=[common],
        help="collect feeds only, sending nothing (for a frequent cron line beside `digest run`)",
    )
    sub.add_parser("check-config", parents=[common], help="validate the config; exit 2 if bad")
    preview = sub.add_parser(
        "preview",
        parents=[common],
        help="write the HTML digest EMAIL would get now, from what is stored (sends nothing)",
    )
    preview.add_argument("email")
    preview.add_argument("--out", "-o", type=Path, help="output file (default: preview-EMAIL.html)")
    preview.add_argument(
        "--open", action="store_true", help="also open the HTML in the default web browser"
    )
    preview.add_argument(
        "--text", action="store_true", help="print the plain-text part instead of writing HTML"
    )
    _add_templates_command(sub)
    retry = sub.add_parser(
        "retry",
        parents=[common],
        help="re-queue failed digests and resume suspended subscribers (all, or EMAIL's)",
    )
    retry.add_argument("email", nargs="?")
    # ---- serve, schedule, status -------------------------------------------------------------
    sub.add_parser(
        "serve",
        parents=[common],
        help="run as a service: collect on an interval, send each digest when it is due;"
        " SIGHUP reloads the config, SIGTERM stops",
    )
    schedule = sub.add_parser(
        "schedule",
        parents=[common],
        help="each subscriber's next send time (their zone and UTC) and last digest sent",
    )
    schedule.add_argument("--json", action="store_true", help="print JSON")
    status = sub.add_parser(
        "status",
        parents=[common],
        help="last collect and send, failures, undelivered digests; exit 0 healthy, 1 not",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    # ---- end serve, schedule, status ---------------------------------------------------------
    demo = sub.add_parser(
        "demo", help="run once on the bundled example feeds; digests land in a local folder"
    )
    demo.add_argument("--dir", type=Path, default=Path("digest-demo"), help="where (./digest-demo)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    verbosity = getattr(args, "verbose", 0)
    # A daemon reports as it goes; whoever asks for JSON lines reads every summary by machine.
    reports = args.command == "serve" or getattr(args, "log_format", "text") == "json"
    quiet = logging.INFO if reports else logging.WARNING
    setup_logging(
        getattr(args, "log_format", "text"),
        logging.DEBUG if verbosity > 1 else logging.INFO if verbosity else quiet,
    )
    try:
        if args.command == "demo":
            return _demo(args.dir)
        if args.command == "templates":
            return _templates(args)
        settings = load_config(config_path(args.config))
        if args.command == "check-config":
            return _check_config(settings, args)
        if args.command == "serve":
            return _serve(settings, args)
        now = args.now or datetime.now(UTC)
        if args.command in ("run", "collect"):
            return _run(settings, now, args.verbose, args.log_format, args.command)
        if args.command in ("schedule", "status"):
            return _report(settings, args.command, now, args.json)
        if args.command == "preview":
            return _preview(settings, args.email, now, args.out, show=args.open, text=args.text)
        if args.command == "retry":
            return _retry(settings, args.email, now)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"digest: config: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except LockHeld as exc:
        print(f"digest: {exc}; not running twice", file=sys.stderr)
        return EXIT_LOCKED
    except (StoreError, TemplateError) as exc:
        print(f"digest: {exc}", file=sys.stderr)
        return EXIT_FAILURES
    except DigestError as exc:
        print(f"digest: {exc}", file=sys.stderr)
        return EXIT_FAILURES
    parser.error(f"unknown command {args.command}")
    return EXIT_CONFIG


def _check_config(settings: Settings, args: argparse.Namespace) -> int:
    if args.verbose:
        print(
            f"config OK: {len(settings.feeds)} feeds, {len(settings.subscribers)} subscribers,"
            f" delivery by {settings.delivery.mode}"
        )
    return EXIT_OK


def _run(
    settings: Settings, now: datetime, verbose: int, log_format: str = "text", command: str = "run"
) -> int:
    from digest.progress import feed_progress
    from digest.run import collect_only, run

    with feed_progress(len(settings.feeds), enabled=log_format == "text") as progress:
        report = asyncio.run(
            run(settings, now, progress=progress)
            if command == "run"
            else collect_only(settings, now, progress)
        )
    if log_format == "json":
        for note in report.notes:
            log.warning("%s", note, extra={"fields": {"event": command, "note": note}})
        for problem in report.problems:
            log.warning("%s", problem, extra={"fields": {"event": command, "problem": problem}})
        log.info(
            "%s done: %s",
            command,
            report.summary_line(),
            extra={"fields": {"event": command, "summary": True, "exit_code": report.exit_code}},
        )
        return report.exit_code
    for line in (*report.notes, *report.problems):
        print(f"digest: {line}", file=sys.stderr)
    if verbose:
        print(report.summary_line(), file=sys.stderr)
    return report.exit_code


# ---- serve, schedule, status ---------------------------------------------------------------


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from digest.serve import serve

    if args.now is not None:
        print(
            "digest: serve runs on the real clock; --now is for run and the reports",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    return asyncio.run(serve(config_path(args.config), settings))


def _report(settings: Settings, command: str, now: datetime, as_json: bool) -> int:
    import json

    from digest import status

    store = _existing_store(settings)
    try:
        if command == "schedule":
            states = (
                [status.SubscriberState(*row) for row in store.subscriber_states()] if store else []
            )
            last = store.last_sent_digests() if store else {}
            rows = status.next_sends(settings, states, last, now)
            if as_json:
                print(json.dumps([r.to_json() for r in rows], indent=2))
            else:
                print("\n".join(status.render_schedule(rows)))
            return EXIT_OK
        result = status.gather(settings, store, now)
    finally:
        if store is not None:
            store.close()
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print("\n".join(status.render_status(result)))
    return result.exit_code


def _existing_store(settings: Settings) -> Store | None:
    """The store if it exists. Reports must not create a database (perhaps as the wrong user)
    where the service has not run yet."""
    from digest.store import Store

    url = settings.database_url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not Path(url[len(prefix) :]).exists():
        return None
    store = Store(url)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store


# ---- end serve, schedule, status -----------------------------------------------------------


def _preview(
    settings: Settings,
    email: str,
    now: datetime,
    out: Path | None,
    *,
    show: bool = False,
    text: bool = False,
) -> int:
    from digest.plan import preview_bodies

    html, plain = preview_bodies(settings, email, now)
    if text and not show and out is None:
        sys.stdout.write(plain)
        return EXIT_OK
    target = out or Path(f"preview-{email}.html")
    target.write_text(html, encoding="utf-8")
    if text:
        sys.stdout.write(plain)
    else:
        print(target)
    if show:
        import webbrowser

        if not webbrowser.open(target.resolve().as_uri()):
            print(f"digest: no browser to open; the preview is at {target}", file=sys.stderr)
    return EXIT_OK


def _add_templates_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    templates = sub.add_parser("templates", help="work with the email templates")
    actions = templates.add_subparsers(dest="templates_command", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="copy the bundled templates to DIR; point digest.templates_dir at it and edit",
    )
    export.add_argument("dir", type=Path)
    export.add_argument("--force", action="store_true", help="overwrite files already in DIR")


def _templates(args: argparse.Namespace) -> int:
    from digest.templates_cli import export_templates

    for path in export_templates(args.dir, force=args.force):
        print(path)
    print(f"now set templates_dir = {str(args.dir)!r} in the [digest] section", file=sys.stderr)
    return EXIT_OK


def _retry(settings: Settings, email: str | None, now: datetime) -> int:
    from digest.store import Store

    if email and email.lower() not in {s.email.lower() for s in settings.subscribers}:
        raise ConfigError([f"subscribers: no subscriber {email} in the config"])
    store = Store(settings.database_url)
    try:
        store.migrate()
        count = store.retry_failed(now, email)
    finally:
        store.close()
    print(f"{count} failed digest(s) re-queued; the next `digest run` sends them")
    return EXIT_OK


def _demo(folder: Path) -> int:
    from digest.demo import run_demo

    for line in run_demo(folder, datetime.now(UTC), timedelta(days=1)):
        print(line)
    return EXIT_OK


def entry() -> None:
    """The `digest` command: `main()`, then an exit that skips tearing down every imported
    module one by one, which takes a sixth of a second with SQLAlchemy, pydantic and httpx
    loaded, at the end of every cron run. By then the store is closed, the lock released and
    the worker processes joined; output and logs are flushed here."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more to say anyway
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
