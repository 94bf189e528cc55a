"""Logging set-up: text for people, one JSON object per line for log collectors.

One handler on the root logger, so every library (aiohttp, deltalake, `warnings`) goes
through the same formatter and a JSON log stays one object per line. Secret settings are
masked in whatever is written, as a last guard behind code that never logs them.
"""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson
from pydantic import SecretStr

from workers.settings import Settings

MASK = "***"


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value in the settings, plus the Basic header token built from them."""
    found = [
        value.get_secret_value()
        for value in (getattr(settings, name) for name in type(settings).model_fields)
        if isinstance(value, SecretStr) and value.get_secret_value()
    ]
    if settings.pi_username and settings.pi_password:
        pair = f"{settings.pi_username}:{settings.pi_password.get_secret_value()}"
        found.append(base64.b64encode(pair.encode()).decode())
    return sorted(set(found), key=len, reverse=True)


class _Masking(logging.Formatter):
    """A formatter whose output has every known secret replaced by `***`."""

    def __init__(self, secrets: Iterable[str], fmt: str | None = None) -> None:
        super().__init__(fmt)
        self._secrets = tuple(secrets)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.mask(super().format(record))


class JsonFormatter(_Masking):
    """One JSON object per line: time, level, shard, logger, message (and exception)."""

    def __init__(self, shard: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(secrets)
        self._shard = shard

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "shard": self._shard,
            "logger": record.name,
            "message": self.mask(record.getMessage()),
        }
        if record.exc_info:
            doc["exception"] = self.mask(self.formatException(record.exc_info))
        return orjson.dumps(doc).decode()


def configure_logging(settings: Settings) -> None:
    shard = f"{settings.shard_index}/{settings.shard_count}"
    secrets = secrets_of(settings)
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(shard, secrets))
    else:
        handler.setFormatter(
            _Masking(secrets, f"%(asctime)s %(levelname)s [shard {shard}] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    logging.captureWarnings(True)
