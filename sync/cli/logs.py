"""Logging set-up: human text or one JSON object per line. Log records carry counts, target names and
platform ids; never identifiers, payloads or tokens, and every line goes through ``redact`` in case
one slips into a message."""

from __future__ import annotations

import json
import logging
import sys
import time

from audiencesync.sync.redact import redact

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is structured data.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = record.exc_info[0].__name__
        return redact(json.dumps(out, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        return redact(
            f"{stamp} {record.levelname.lower():7} {record.getMessage()}" + (f"  {extras}" if extras else "")
        )


def setup_logging(fmt: str = "text", verbose: bool = False) -> None:
    """Send the ``audiencesync`` logs to stderr in ``fmt`` (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("audiencesync")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
