"""What Easel counts, for `GET /metrics` (Prometheus text format, through prometheus-client).

Both processes count: the one that answers Slack (requests by source and outcome) and the worker
(generations, images posted, errors). `python -m bot` runs them in prometheus-client's multiprocess mode (one
folder of files both write, `PROMETHEUS_MULTIPROC_DIR`, set up by `bot.__main__` before either imports the
library), and `/metrics` in the serving process reads both. What the database knows for the whole deployment
(jobs by status, the queue's depth and its oldest wait) is read from it at each scrape.

No label takes an unbounded value: no user, channel or thread ids, no prompts. Models and qualities come from
the capability table; error kinds from Easel's own classification.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GENERATION_BUCKETS = (2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 240, 300, 600)
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The counters of one process. Built by the composition root and passed to what counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("easel_requests", "Slack requests turned into jobs, by source and outcome",
                                ["source", "outcome"], registry=r)
        self.generation_seconds = Histogram(
            "easel_generation_seconds", "Time from starting an OpenAI turn to its answer, by image model and "
            "quality", ["image_model", "quality"], buckets=GENERATION_BUCKETS, registry=r)
        self.images_posted = Counter("easel_images_posted", "Images posted, by image model", ["image_model"],
                                     registry=r)
        self.jobs_finished = Counter("easel_jobs_finished", "Jobs that ended, by kind and status",
                                     ["kind", "status"], registry=r)
        self.cost_dollars = Counter("easel_cost_dollars", "What OpenAI billed for the answers posted, by image "
                                    "model (a model without a price counts at a stand-in rate)", ["image_model"],
                                    registry=r)
        self.openai_errors = Counter("easel_openai_errors", "Turns OpenAI did not answer with an image or text, "
                                     "by kind (rate_limit is a 429)", ["kind"], registry=r)
        self.slack_rate_limited = Counter("easel_slack_rate_limited", "429s Slack answered despite the budgets, "
                                          "by method", ["method"], registry=r)


def render(metrics: Metrics, database: Mapping[str, object] | None = None) -> bytes:
    """The exposition text: this process's counters, or every process's in multiprocess mode, and the
    database's figures (`storage.Store.stats()`)."""
    path = os.environ.get(MULTIPROCESS_DIR)
    if path:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
    else:
        registry = metrics.registry
    text = generate_latest(registry)
    if database is not None:
        extra = CollectorRegistry()
        extra.register(_DatabaseFigures(database))
        text += generate_latest(extra)
    return text


class _DatabaseFigures:
    def __init__(self, figures: Mapping[str, object]):
        self._figures = figures

    def collect(self) -> Iterable[Metric]:
        by_status = GaugeMetricFamily("easel_jobs", "Jobs in the database, by status", labels=["status"])
        for status, count in sorted(dict(self._figures.get("jobs_by_status") or {}).items()):
            by_status.add_metric([str(status)], float(count))
        yield by_status
        yield GaugeMetricFamily("easel_queue_depth", "Generate jobs waiting for a generation slot",
                                value=float(self._figures.get("queue_depth") or 0))  # type: ignore[arg-type]
        yield GaugeMetricFamily("easel_queue_oldest_wait_seconds", "How long the oldest waiting job has waited",
                                value=float(self._figures.get("oldest_wait_seconds") or 0))  # type: ignore[arg-type]
