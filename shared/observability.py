"""Structured logs carrying correlation ids, and the Prometheus metrics every service exposes."""

import logging
import sys

import structlog
from prometheus_client import Counter, Gauge, Histogram

HTTP_LATENCY = Histogram(
    "rlhf_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_PUBLISHED = Counter("rlhf_events_published_total", "Events relayed to Kafka", ["service", "topic"])
EVENTS_CONSUMED = Counter(
    "rlhf_events_consumed_total", "Events consumed, by outcome", ["service", "topic", "outcome"]
)
EVENTS_FAILED = Counter(
    "rlhf_events_failed_total", "Event processing failures, by reason", ["service", "topic", "reason"]
)
OUTBOX_BACKLOG = Gauge("rlhf_outbox_backlog", "Outbox rows not yet published", ["service"])
FEEDBACK_INGESTED = Counter("rlhf_feedback_ingested_total", "Feedback items stored", ["service", "source"])


def configure_logging(service: str, *, fmt: str = "console", level: str = "INFO") -> None:
    """structlog over the standard library; correlation ids ride in contextvars."""
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            # plain tracebacks: rich's, with locals, take seconds to render on a busy machine
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
