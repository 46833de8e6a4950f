"""Server metrics in the Prometheus text format: counters, gauges read at scrape time, latency histograms.

Small and dependency-free: a scrape of `GET /metrics` renders them as `# TYPE` lines and samples.
"""

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(labels: tuple) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""


class Histogram:
    def __init__(self, buckets=LATENCY_BUCKETS):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def render(self, name: str) -> list[str]:
        lines, total = [], 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            total += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {total}')
        total += self.counts[-1]
        lines += [f'{name}_bucket{{le="+Inf"}} {total}', f"{name}_sum {self.sum:.6f}", f"{name}_count {total}"]
        return lines


class Metrics:
    def __init__(self, prefix: str = "lmforge"):
        self.prefix = prefix
        self.lock = threading.Lock()
        self.counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self.histograms: dict[str, Histogram] = {}
        self.gauges: dict[str, Callable[[], float]] = {}
        self.help: dict[str, str] = {}

    def inc(self, name: str, value: float = 1.0, help: str = "", **labels) -> None:
        with self.lock:
            self.counters[name][tuple(sorted(labels.items()))] += value
            self.help.setdefault(name, help)

    def observe(self, name: str, value: float, help: str = "") -> None:
        with self.lock:
            self.histograms.setdefault(name, Histogram()).observe(value)
            self.help.setdefault(name, help)

    def gauge(self, name: str, read: Callable[[], float], help: str = "") -> None:
        self.gauges[name] = read
        self.help[name] = help

    def render(self) -> str:
        lines = []
        with self.lock:
            for name, series in sorted(self.counters.items()):
                full = f"{self.prefix}_{name}"
                lines += [f"# HELP {full} {self.help.get(name, '')}", f"# TYPE {full} counter"]
                lines += [f"{full}{_labels(labels)} {value:g}" for labels, value in sorted(series.items())]
            for name, hist in sorted(self.histograms.items()):
                full = f"{self.prefix}_{name}"
                lines += [f"# HELP {full} {self.help.get(name, '')}", f"# TYPE {full} histogram"]
                lines += hist.render(full)
        for name, read in sorted(self.gauges.items()):
            full = f"{self.prefix}_{name}"
            lines += [f"# HELP {full} {self.help.get(name, '')}", f"# TYPE {full} gauge", f"{full} {read():g}"]
        return "\n".join(lines) + "\n"
