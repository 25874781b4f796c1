"""Stop flags set by signal handlers: the first signal asks for a drain, the second for an exit now.

Handlers only set flags (never do work), and are installed by each process's
``main`` rather than at import or in a constructor.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlags:
    def __init__(self) -> None:
        self.should_exit = threading.Event()
        self.force_exit = threading.Event()

    def request(self) -> None:
        if self.should_exit.is_set():
            self.force_exit.set()
        self.should_exit.set()

    def install(self) -> None:
        """Route SIGINT and SIGTERM to :meth:`request` (main thread only)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self.request()

        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)
