"""Server metrics in the Prometheus text format (prometheus_client): counters, gauges read at scrape time, histograms.

Each server has its own registry. Label values come from the code, never from the client: HTTP requests are
labelled by the matched route template (or "unmatched") and the status, so unique paths cannot grow /metrics, and
prometheus_client escapes every value, so no request can forge a sample line. The engine's figures come from one
`LLM.stats()` snapshot per scrape (`watch_engine`), so the queue, KV-block and token series of a scrape agree.
"""

import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from lmforge.engine.stats import EngineStats

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

    def watch_engine(self, stats: Callable[[], EngineStats]) -> None:
        """Export the engine's figures, read from one `stats()` snapshot at each scrape."""
        self.registry.register(EngineCollector(self.prefix, stats))

    def render(self) -> str:
        return generate_latest(self.registry).decode()


# (series name, EngineStats field, kind, help)
ENGINE_SERIES = (
    ("queue_length", "requests_waiting", "gauge", "requests waiting for admission"),
    ("running_requests", "requests_running", "gauge", "requests being decoded"),
    ("kv_blocks_total", "kv_blocks_total", "gauge", "KV cache blocks"),
    ("kv_blocks_in_use", "kv_blocks_in_use", "gauge", "KV cache blocks held by requests"),
    ("kv_blocks_cached", "kv_blocks_cached", "gauge", "free KV cache blocks that keep a reusable prefix"),
    ("preemptions_total", "preemptions_total", "counter", "sequences preempted for recompute"),
    ("engine_steps_total", "steps_total", "counter", "engine steps that ran the model"),
    ("engine_computed_tokens_total", "computed_tokens_total", "counter",
     "tokens run through the model (prefill and decode)"),
    ("engine_generated_tokens_total", "generated_tokens_total", "counter", "tokens sampled by the engine"),
)
FAMILIES = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily}


class EngineCollector:
    """A prometheus_client collector: each scrape takes one engine snapshot and reports every series from it."""

    def __init__(self, prefix: str, stats: Callable[[], EngineStats]):
        self.prefix, self.stats = prefix, stats

    def collect(self):
        snapshot = self.stats()
        for name, field, kind, help in ENGINE_SERIES:
            yield FAMILIES[kind](f"{self.prefix}_{name}", help, value=getattr(snapshot, field))
