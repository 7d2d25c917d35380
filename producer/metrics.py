"""The producer's Prometheus metrics (optional: ``--metrics-port``), so a replay shows up on the dashboard."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.sent = Counter("producer_records_sent_total", "Records handed to the Kafka client", ["topic"], registry=r)
        self.delivered = Counter("producer_records_delivered_total", "Records acknowledged by the broker", ["topic"],
                                 registry=r)
        self.failed = Counter("producer_records_failed_total", "Records whose delivery failed", ["topic", "reason"],
                              registry=r)
        self.malformed = Counter("producer_malformed_lines_total", "Input lines skipped as not KDD-format",
                                 registry=r)
        self.target_rate = Gauge("producer_target_rate_records_per_second", "Configured rate (0 = unlimited)",
                                 registry=r)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside
        start_http_server(port, addr=host, registry=self.registry)
