"""What `lmpipe run` shows in the terminal: Prefect's log lines, each on one line, and no tracebacks.

A failed flow makes Prefect log the same traceback several times (the task, its retries, the flow),
80 to 300 lines that bury the one line that says what went wrong. The traceback is still recorded
in full: in the Prefect log of the run (the UI and the API), and in the terminal with --verbose.
Only the console handlers' formatting changes, never the record the other handlers receive.
"""

from __future__ import annotations

import logging

HINT = "traceback in the Prefect log of the run; --verbose shows it here"


class OneLineFormatter(logging.Formatter):
    """Formats a copy of each record: its first line, and a note where lines or a traceback were left out."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        lines = message.splitlines() or [""]
        dropped = len(lines) > 1 or record.exc_info is not None or record.exc_text
        if not dropped:
            return self.inner.format(record)
        brief = logging.makeLogRecord(record.__dict__)  # the other handlers keep the full record
        brief.msg, brief.args = f"{lines[0]} ({HINT})", None
        brief.exc_info, brief.exc_text, brief.stack_info = None, None, None
        return self.inner.format(brief)


def console_handlers() -> list[logging.Handler]:
    """The handlers that write to the terminal: Prefect's console handlers, wherever logging.yml put them."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    found: list[logging.Handler] = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and handler not in found:
                found.append(handler)
    return found


def one_line_console_logs() -> None:
    """From here on, Prefect's console output is one line per record (run once Prefect is imported)."""
    from prefect.logging.configuration import setup_logging

    if not console_handlers():
        setup_logging()  # Prefect configures its logging on first use; it is needed now
    for handler in console_handlers():
        if not isinstance(handler.formatter, OneLineFormatter):
            handler.setFormatter(OneLineFormatter(handler.formatter))
