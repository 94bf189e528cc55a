"""Logging set-up: text for people, one JSON object per line for log collectors."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from service.settings import Settings


class JsonFormatter(logging.Formatter):
    """One JSON object per line: level, time, shard, logger, message."""

    def __init__(self, shard: str) -> None:
        super().__init__()
        self._shard = shard

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "shard": self._shard,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def configure_logging(settings: Settings) -> None:
    shard = f"{settings.shard_index}/{settings.shard_count}"
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(shard))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s [shard {shard}] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
