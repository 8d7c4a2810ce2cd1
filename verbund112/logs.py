"""Logging: stdlib loggers everywhere, rendered by structlog as JSON lines (or console).

Context bound with structlog.contextvars (call_id, site) appears on every line
logged while it is bound. Caller positions are logged at DEBUG only.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict


class LogSettings(BaseModel):
    """Settings section `log`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"


def configure(settings: LogSettings) -> None:
    # No line shows the process, thread or multiprocessing name: every record (and the copy
    # structlog's formatter makes of it) would look them up (getpid is a system call), for nothing.
    logging.logProcesses = False
    logging.logThreads = False
    logging.logMultiprocessing = False
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    # panoramisk logs every parsed message at DEBUG
    logging.getLogger("panoramisk").setLevel(max(logging.INFO, logging.getLevelName(settings.level)))
