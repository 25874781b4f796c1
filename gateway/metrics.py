"""The gateway's Prometheus metrics, in a registry of its own (served at GET /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("zingest_gateway_requests", "HTTP responses by route and status code",
                                ["route", "code"], registry=r)
        self.rows_accepted = Counter("zingest_gateway_rows_accepted", "rows answered 202", registry=r)
        self.jobs_accepted = Counter("zingest_gateway_jobs_accepted", "jobs answered 202", registry=r)
        self.rows_committed = Counter("zingest_gateway_rows_committed", "rows of jobs reported committed",
                                      registry=r)
        self.jobs_final = Counter("zingest_gateway_jobs_final", "jobs reported final, by state", ["state"],
                                  registry=r)
        self.jobs_redelivered = Counter("zingest_gateway_jobs_redelivered",
                                        "jobs sent again after no final status in time", registry=r)
        self.refused = Counter("zingest_gateway_refused", "requests answered 503, by reason", ["reason"],
                               registry=r)
        self.idempotent_replays = Counter("zingest_gateway_idempotent_replays",
                                          "POSTs answered with an earlier job for the same Idempotency-Key",
                                          registry=r)
        self.sinks_connected = Gauge("zingest_gateway_sinks_connected", "sinks connected to the PUSH socket",
                                     registry=r)
        self.pending_jobs = Gauge("zingest_gateway_pending_jobs", "accepted jobs not yet final", registry=r)
        self.pending_rows = Gauge("zingest_gateway_pending_rows", "rows of accepted jobs not yet final",
                                  registry=r)
        self.pending_bytes = Gauge("zingest_gateway_pending_bytes", "encoded bytes of jobs not yet final",
                                   registry=r)
        self.journal_bytes = Gauge("zingest_gateway_journal_bytes", "size of the journal on disk", registry=r)
