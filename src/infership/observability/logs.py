"""Log records as JSON lines, for log pipelines (Loki, Elasticsearch, Cloud Logging...)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from infership.observability.ids import REQUEST_ID

# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, the request id of
    the request being served (if any), every ``extra=`` field, and ``exception`` when there is
    one.

    >>> logging.getLogger("x").info("ready", extra={"port": 8000})  # doctest: +SKIP
    {"ts":"2026-11-01T10:00:00.123Z","level":"info","logger":"x","message":"ready","port":8000}
    """

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        doc: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            doc["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str).decode()
