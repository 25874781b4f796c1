"""Sink role: PULL jobs from gateways, batch them, COPY them into PostgreSQL, PUB their fate.

Connects (never binds): ``sink.pull_connect`` with a PULL socket and
``sink.status_connect`` with an XPUB socket, one endpoint per gateway.
Config section: ``[sink]``.

The loop is single-threaded and synchronous: while a batch is being written,
new frames wait in ZeroMQ's queues (bounded by ``sink.recv_hwm`` here and the
gateway's send high-water mark), which is the back-pressure that reaches the
gateway. On a stop request the sink stops taking frames, writes what it holds,
reports it, and returns.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import zmq

from common.config import Config
from common.lifecycle import StopFlags
from common.wire import JobState, WireError, decode_job, encode_statuses
from common.zmqutil import configure
from sink.batcher import Batcher
from sink.metrics import SinkMetrics
from sink.writer import PgWriter, TransientError

log = logging.getLogger(__name__)

# Longest a poll waits while the batch is empty, so stop requests are seen promptly (seconds).
IDLE_POLL_S = 0.1
# Longest a new sink waits for a gateway's subscription before it starts pulling (seconds):
# statuses published before a subscriber is known are dropped by PUB sockets.
SUBSCRIBER_WAIT_S = 5.0
# Reconnect back-off to PostgreSQL, seconds.
DB_BACKOFF_FIRST_S = 0.1
DB_BACKOFF_MAX_S = 5.0
# Once asked to stop, how long a sink keeps retrying a batch the database will not take (seconds);
# after that it exits and the gateway sends the unwritten jobs again.
STOP_RETRY_S = 10.0


@dataclass
class SinkCounters:
    jobs: int = 0
    rows: int = 0
    batches: int = 0
    redeliveries: int = 0
    failed_jobs: int = 0
    bad_frames: int = 0
    db_retries: int = 0


class Sink:
    def __init__(self, cfg: Config, dsn: str, stop: StopFlags, ctx: zmq.Context | None = None) -> None:
        self.cfg = cfg
        self.stop = stop
        self.counters = SinkCounters()
        self.metrics = SinkMetrics()
        self._ctx = ctx or zmq.Context.instance()
        self._writer = PgWriter(dsn)
        self._batcher = Batcher(cfg.sink.batch_rows, cfg.sink.batch_linger_ms / 1000)
        self._pull: zmq.Socket | None = None
        self._pub: zmq.Socket | None = None

    def _open(self) -> None:
        s = self.cfg.sink
        self._pub = configure(self._ctx.socket(zmq.XPUB))
        for endpoint in s.status_connect:
            self._pub.connect(endpoint)
        self._wait_for_subscriber()
        # linger 0: frames still queued here when we stop are redelivered by the gateway.
        self._pull = configure(self._ctx.socket(zmq.PULL), rcvhwm=s.recv_hwm, linger_ms=0)
        for endpoint in s.pull_connect:
            self._pull.connect(endpoint)

    def _wait_for_subscriber(self) -> None:
        assert self._pub is not None
        deadline = time.monotonic() + SUBSCRIBER_WAIT_S
        while not self.stop.should_exit.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("no gateway subscribed to statuses yet; starting anyway")
                return
            if self._pub.poll(min(left, IDLE_POLL_S) * 1000, zmq.POLLIN):
                self._pub.recv()  # the subscription message itself
                return

    def _connect(self) -> bool:
        """Reach PostgreSQL before taking any work; False if asked to stop first."""
        backoff = DB_BACKOFF_FIRST_S
        while not self.stop.should_exit.is_set():
            try:
                self._writer.connect()
                return True
            except TransientError as exc:
                log.warning("cannot reach PostgreSQL (%s); retrying in %.1f s", exc, backoff)
                self.stop.should_exit.wait(backoff)
                backoff = min(backoff * 2, DB_BACKOFF_MAX_S)
        return False

    def run(self) -> SinkCounters:
        if not self._connect():
            return self.counters
        self._open()
        assert self._pull is not None
        log.info("sink started: pull %s, status %s", ",".join(self.cfg.sink.pull_connect),
                 ",".join(self.cfg.sink.status_connect))
        try:
            while not self.stop.should_exit.is_set():
                left = self._batcher.time_left()
                wait_s = IDLE_POLL_S if left is None else left
                if self._pull.poll(wait_s * 1000, zmq.POLLIN):
                    self._take_frames()
                if self._batcher.ready():
                    self._flush()
            # Stop intake first, then write and report what we hold.
            self._pull.close(linger=0)
            if len(self._batcher):
                self._flush()
        finally:
            self._writer.close()
            if self._pub is not None:
                self._pub.close()
        c = self.counters
        log.info("sink stopped: %d jobs, %d rows, %d batches, %d redeliveries, %d failed jobs, %d bad frames",
                 c.jobs, c.rows, c.batches, c.redeliveries, c.failed_jobs, c.bad_frames)
        return c

    def _take_frames(self) -> None:
        assert self._pull is not None
        while not self._batcher.full():
            try:
                frame = self._pull.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            try:
                self._batcher.add(decode_job(frame))
            except WireError as exc:
                self.counters.bad_frames += 1
                self.metrics.bad_frames.inc()
                log.error("dropped a frame that is not a job: %s", exc)

    def _flush(self) -> None:
        jobs = self._batcher.take()
        backoff = DB_BACKOFF_FIRST_S
        started = time.monotonic()
        stop_seen: float | None = None
        while True:
            try:
                result = self._writer.write(jobs)
                break
            except TransientError as exc:
                if self.stop.should_exit.is_set() and stop_seen is None:
                    stop_seen = time.monotonic()
                    log.warning("asked to stop while the database is unavailable: retrying for up to %.0f s more",
                                STOP_RETRY_S)
                gave_up = stop_seen is not None and time.monotonic() - stop_seen > STOP_RETRY_S
                if self.stop.force_exit.is_set() or gave_up:
                    log.error("exiting with %d jobs unwritten; the gateway will send them again", len(jobs))
                    return
                self.counters.db_retries += 1
                self.metrics.db_retries.inc()
                log.warning("database unavailable (%s); retrying the batch in %.1f s", exc, backoff)
                self.stop.force_exit.wait(backoff)
                backoff = min(backoff * 2, DB_BACKOFF_MAX_S)
        assert self._pub is not None
        self._pub.send(encode_statuses(result.statuses))
        failed = sum(1 for s in result.statuses if s.state is JobState.FAILED)
        c, m = self.counters, self.metrics
        c.batches += 1
        c.jobs += len(jobs)
        c.rows += result.rows_written
        c.redeliveries += result.duplicates
        c.failed_jobs += failed
        m.copy_seconds.observe(time.monotonic() - started)
        m.batch_rows.observe(result.rows_written)
        m.rows_committed.inc(result.rows_written)
        m.redeliveries.inc(result.duplicates)
        m.jobs.labels("committed").inc(len(result.statuses) - failed)
        m.jobs.labels("failed").inc(failed)
