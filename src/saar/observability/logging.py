"""structlog set-up: JSON lines on stderr, one event per line, ids bound once per request."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging", "logging_settings"]

_current: tuple[str, bool] = ("info", True)


def configure_logging(level: str = "info", *, json: bool = True) -> None:
    """Configure structlog (and the stdlib root logger it feeds) for the whole process."""
    global _current  # noqa: PLW0603 - the process-wide setting, like structlog's own
    _current = (level, json)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s")


def logging_settings() -> tuple[str, bool]:
    """``(level, json)`` of the last ``configure_logging`` call: helper processes log alike."""
    return _current
