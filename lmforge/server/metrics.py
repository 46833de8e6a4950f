"""Server metrics in the Prometheus text format (prometheus_client): counters, gauges read at scrape time, histograms.

Each server has its own registry. Label values come from the code, never from the client: HTTP requests are
labelled by the matched route template (or "unmatched") and the status, so unique paths cannot grow /metrics, and
prometheus_client escapes every value, so no request can forge a sample line.
"""

import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # no `*_created` timestamp series: half the text, nothing a dashboard reads


class Metrics:
    def __init__(self, prefix: str = "lmforge"):
        self.prefix = prefix
        self.registry = CollectorRegistry(auto_describe=True)
        self.lock = threading.Lock()
        self.metrics: dict[str, object] = {}

    def _get(self, kind, name: str, help: str, labelnames=(), **kwargs):
        with self.lock:
            metric = self.metrics.get(name)
            if metric is None:
                metric = kind(f"{self.prefix}_{name}", help or name, labelnames=tuple(labelnames),
                              registry=self.registry, **kwargs)
                self.metrics[name] = metric
            return metric

    def inc(self, name: str, value: float = 1.0, help: str = "", **labels) -> None:
        """Add to a counter; `labels` must be values chosen by the server (a route template, a status code)."""
        counter = self._get(Counter, name, help, sorted(labels))
        (counter.labels(**{k: str(v) for k, v in labels.items()}) if labels else counter).inc(value)

    def observe(self, name: str, value: float, help: str = "") -> None:
        self._get(Histogram, name, help, buckets=LATENCY_BUCKETS).observe(value)

    def gauge(self, name: str, read: Callable[[], float], help: str = "") -> None:
        self._get(Gauge, name, help).set_function(read)

    def render(self) -> str:
        return generate_latest(self.registry).decode()
