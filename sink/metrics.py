"""A sink's Prometheus metrics, in a registry of its own (served on sink.metrics_listen)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_ROW_BUCKETS = (1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000)
_TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class SinkMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rows_committed = Counter("zingest_sink_rows_committed", "rows written by COPY and committed",
                                      registry=r)
        self.jobs = Counter("zingest_sink_jobs", "jobs handled, by final state", ["state"], registry=r)
        self.redeliveries = Counter("zingest_sink_redeliveries", "jobs received again that the ledger already held",
                                    registry=r)
        self.db_retries = Counter("zingest_sink_db_retries", "batches retried after a transient database error",
                                  registry=r)
        self.bad_frames = Counter("zingest_sink_bad_frames", "frames dropped because they were not jobs",
                                  registry=r)
        self.batch_rows = Histogram("zingest_sink_batch_rows", "rows per batch", buckets=_ROW_BUCKETS, registry=r)
        self.copy_seconds = Histogram("zingest_sink_batch_seconds", "seconds to write and commit one batch",
                                      buckets=_TIME_BUCKETS, registry=r)
