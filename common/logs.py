"""One logging set-up for every zingest process: one line per event, with the role and pid."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str, role: str) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)-7s {role}[%(process)d] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return logging.getLogger(f"zingest.{role}")
