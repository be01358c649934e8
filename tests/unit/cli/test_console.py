"""The terminal gets one line per log record; every other handler (the Prefect API log) gets the record whole."""

from __future__ import annotations

import io
import logging

from lmpipe.cli.console import HINT, OneLineFormatter


def test_a_traceback_stays_out_of_the_terminal_but_not_out_of_the_log():
    terminal, prefect_log = io.StringIO(), io.StringIO()
    console = logging.StreamHandler(terminal)
    console.setFormatter(OneLineFormatter(logging.Formatter("%(levelname)s | %(message)s")))
    full = logging.StreamHandler(prefect_log)  # stands in for Prefect's API log handler, after the console's
    logger = logging.getLogger("test-console")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers = [console, full]
    try:
        raise ValueError("data.path: no file matches 'x.jsonl'")
    except ValueError:
        logger.error("Task run failed with exception: %r\nsecond line", "the error", exc_info=True)
    logger.info("Finished in state Completed()")

    assert terminal.getvalue().splitlines() == [
        f"ERROR | Task run failed with exception: 'the error' ({HINT})",
        "INFO | Finished in state Completed()",
    ]
    assert "Traceback (most recent call last)" in prefect_log.getvalue()
    assert "second line" in prefect_log.getvalue()
