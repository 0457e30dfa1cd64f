"""Prometheus metrics.

Counters and histograms live in this process's default registry and are updated by the pipeline as it
works. Posts by state and the queue depth are read at scrape time (:func:`render`), from the database and
the daemon, so they are right even across replicas and restarts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from aiposter.core import states

# One series per counter, not a second "_created" timestamp series beside each.
disable_created_metrics()

T = TypeVar("T")

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)

POLLS = Counter("aiposter_polls", "Folder polls, by outcome.", ["result"])
FILES_DETECTED = Counter("aiposter_files_detected", "New files that became posts.")
ERRORS = Counter("aiposter_errors", "Failed attempts, by stage (poll, download, caption, publish), platform "
                 "(the source, captioner or destination) and error class.", ["stage", "platform", "error_class"])
LLM_LATENCY = Histogram("aiposter_llm_latency_seconds", "Time of one caption request, by captioner.",
                        ["captioner"], buckets=_LATENCY_BUCKETS)
PLATFORM_LATENCY = Histogram("aiposter_platform_latency_seconds", "Time of one publish call, by platform.",
                             ["platform"], buckets=_LATENCY_BUCKETS)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def timed(histogram, fn: Callable[..., T], *args) -> T:
    """Call ``fn(*args)`` and observe its duration, whether it returns or raises."""
    start = time.perf_counter()
    try:
        return fn(*args)
    finally:
        histogram.observe(time.perf_counter() - start)


def error_class(exc: Exception) -> str:
    return getattr(exc, "code", None) or exc.__class__.__name__


def count_error(stage: str, platform: str, exc: Exception) -> None:
    ERRORS.labels(stage=stage, platform=platform, error_class=error_class(exc)).inc()


class _StateCollector:
    """Gauges computed at scrape time from the database and the in-process work queue."""

    def __init__(self, engine: sa.Engine, daemon=None):
        self.engine, self.daemon = engine, daemon

    def collect(self):
        from aiposter.core.models import Post, utcnow

        with self.engine.connect() as conn:
            counts = dict(conn.execute(sa.select(Post.status, sa.func.count()).group_by(Post.status)).all())
            pending = conn.execute(sa.select(sa.func.count()).select_from(Post).where(
                Post.status.in_(states.POST_ACTIVE), Post.next_attempt_at <= utcnow())).scalar_one()
        posts = GaugeMetricFamily("aiposter_posts", "Posts by state.", labels=["state"])
        for state in states.POST_STATES:
            posts.add_metric([state], counts.get(state, 0))
        yield posts
        depth = GaugeMetricFamily("aiposter_queue_depth", "Work waiting: posts with a step due now, and "
                                  "tasks handed to this process's workers.", labels=["queue"])
        depth.add_metric(["posts"], pending)
        if self.daemon is not None:
            depth.add_metric(["workers"], self.daemon.tasks.qsize())
        yield depth


def render(engine: sa.Engine, daemon=None) -> bytes:
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_StateCollector(engine, daemon))
    return generate_latest(REGISTRY) + generate_latest(scrape)
