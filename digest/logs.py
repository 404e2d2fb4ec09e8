"""Log lines for people (the default) or for machines (`--log-format json`, one object a line).

Structured values travel in `extra={"fields": {...}}`: the readable format leaves them out
(the message already says it in words), the JSON format adds them as keys, so a log shipper
can count digests sent without parsing English.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_RESERVED = {"ts", "level", "logger", "msg", "exc"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                # A field must never overwrite the envelope a log shipper relies on.
                out[f"field_{key}" if key in _RESERVED else str(key)] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(fmt: LogFormat, level: int, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # APScheduler says "Running job ..." and httpx "HTTP Request ..." at INFO for every wake-up
    # and feed; our summary line is the one a reader wants, so theirs need -vv.
    for chatty in ("apscheduler", "httpx"):
        logging.getLogger(chatty).setLevel(
            logging.DEBUG if level <= logging.DEBUG else logging.WARNING
        )
