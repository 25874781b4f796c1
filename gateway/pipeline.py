"""The gateway's ZeroMQ side: PUSH jobs out, SUB statuses in, send again what stays unanswered.

Binds (stable side): ``gateway.push_bind`` (PUSH, sinks PULL from it) and
``gateway.status_bind`` (SUB, sinks' XPUB connect to it).
Config section: ``[gateway]``.

Sends never block the event loop: a PUSH with no connected sink, or with every
sink's queue at its high-water mark, raises ``zmq.Again`` at once, and the
request is answered 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from common.config import GatewayConfig
from common.wire import WireError, decode_statuses
from common.zmqutil import configure
from gateway.store import JobRecord, JobStore

log = logging.getLogger(__name__)


@dataclass
class PipelineCounters:
    jobs_sent: int = 0
    jobs_redelivered: int = 0
    jobs_final: int = 0
    statuses_foreign: int = 0
    bad_frames: int = 0
    refused_full: int = 0


class Pipeline:
    def __init__(self, cfg: GatewayConfig, store: JobStore) -> None:
        self.cfg = cfg
        self.store = store
        self.counters = PipelineCounters()
        self._ctx = zmq.asyncio.Context()
        self._push = configure(self._ctx.socket(zmq.PUSH), sndhwm=cfg.send_hwm)
        self._sub = configure(self._ctx.socket(zmq.SUB), linger_ms=0)
        self._tasks: list[asyncio.Task[None]] = []
        # Sink connections to the PUSH socket, counted from its monitor events.
        self.sinks_connected = 0

    def start(self) -> None:
        monitor = self._push.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self._push.bind(self.cfg.push_bind)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.bind(self.cfg.status_bind)
        self._tasks = [
            asyncio.create_task(self._listen(), name="status-listener"),
            asyncio.create_task(self._redeliver(), name="redelivery"),
            asyncio.create_task(self._count_sinks(monitor), name="sink-monitor"),
        ]
        log.info("push bound at %s, status bound at %s", self.cfg.push_bind, self.cfg.status_bind)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._push.disable_monitor()
        self._push.close()
        self._sub.close()
        self._ctx.term()

    def submit(self, rec: JobRecord) -> bool:
        """Send a new job; False (and nothing tracked) when no sink can take it now."""
        assert rec.frame is not None
        store, cfg = self.store, self.cfg
        if store.pending_rows >= cfg.max_pending_rows or store.pending_bytes >= cfg.max_pending_bytes:
            self.counters.refused_full += 1
            return False
        if not self._send(rec.frame):
            self.counters.refused_full += 1
            return False
        rec.sent_at = time.monotonic()
        self.store.add(rec)
        self.counters.jobs_sent += 1
        return True

    def _send(self, frame: bytes) -> bool:
        try:
            # The asyncio socket's send returns a future; with NOBLOCK it is settled at once.
            self._push.send(frame, zmq.NOBLOCK, copy=False).result()
        except zmq.Again:
            return False
        return True

    async def _listen(self) -> None:
        while True:
            frame = await self._sub.recv()
            try:
                statuses = decode_statuses(frame)
            except WireError as exc:
                self.counters.bad_frames += 1
                log.error("dropped a status frame: %s", exc)
                continue
            for status in statuses:
                if self.store.resolve(status):
                    self.counters.jobs_final += 1
                else:
                    self.counters.statuses_foreign += 1

    async def _count_sinks(self, monitor: zmq.asyncio.Socket) -> None:
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())["event"]
                if event == zmq.EVENT_ACCEPTED:
                    self.sinks_connected += 1
                elif event == zmq.EVENT_DISCONNECTED:
                    self.sinks_connected = max(0, self.sinks_connected - 1)
        finally:
            monitor.close(linger=0)

    async def _redeliver(self) -> None:
        timeout = self.cfg.redelivery_timeout_s
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for rec in self.store.due(now - timeout):
                assert rec.frame is not None
                if not self._send(rec.frame):
                    break  # every sink is full or gone; try again next round
                rec.sent_at = now
                rec.attempts += 1
                self.counters.jobs_redelivered += 1
                log.info("job %s had no final status after %.1f s; sent again (attempt %d)",
                         rec.job_id, timeout, rec.attempts)
