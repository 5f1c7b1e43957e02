"""Every Prometheus metric of channels-fleet, declared once under the ``channels_fleet`` namespace.

Services use the module-level default instance, registered on prometheus-client's default
registry; tests build their own on a fresh ``CollectorRegistry``:

    from channels_fleet.observability.metrics import METRICS, close_code_label
    METRICS.closes.labels(close_code_label(1001)).inc()
    with METRICS.handler_latency.labels(consumer_label(consumer)).time():
        ...

    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)          # isolated, for a test

Names follow Prometheus's rules: the unit in the name (``_seconds``), counters end in
``_total``, and every label has a bounded set of values, listed below and set up front where
known so that ``rate()`` has a zero to start from. Gauges carry a multiprocess mode so that
the same declarations work under gunicorn's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

NAMESPACE = "channels_fleet"

# Bounded label values. Anything else is folded into "other" by the helpers below.
LAYER_REASONS = ("moved", "ask", "failover", "timeout", "connection")
LAYER_ERROR_REASONS = (*LAYER_REASONS, "other")
CHANNEL_FULL_OPERATIONS = ("send", "group_send")
PROTOCOLS = ("websocket", "http")
CLOSE_CODES = ("1000", "1001", "1006", "1011", "1012", "1013", "other")
DIRECTIONS = ("in", "out")
DROP_REASONS = (
    "expired", "channel_full", "dead_owner", "unclaimed", "workers_full", "buffer_full",
    "rehome_dead", "rehome_gap", "rehome_hold", "undeliverable", "other",
)
REHOME_CAUSES = ("drain", "dead")
SESSION_END_REASONS = ("client", "app", "window", "overflow", "drain", "protocol", "unreplayable")
#: Why an interface started a new session instead of resuming the one offered ("draining": the
#: session's worker drains).
RESUME_REFUSALS = ("forged", "unknown", "ended", "origin", "unreplayable", "timeout", "draining")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other")

# Sub-millisecond (a local Redis round trip) to seconds (a stalled worker, a slow view).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class FleetMetrics:
    """All channels-fleet metrics, registered on one registry.

    Attribute names are the metric names without namespace and suffix; ``ALL_NAMES`` lists
    the full exposition names (used by the dashboard and alert tests).
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.registry = registry
        #: What the heartbeat's status reports, kept as it is counted (observability/status.py).
        self.status = StatusCounts()
        ns: dict[str, Any] = {"namespace": NAMESPACE, "registry": registry}

        # Channel layer.
        self.layer_retries = Counter(
            "layer_retries", "Layer commands retried, by cause (MOVED, ASK, failover, "
            "timeout, connection).", ["reason"], **ns)
        self.layer_errors = Counter(
            "layer_errors", "Layer operations that failed after retries, by cause.",
            ["reason"], **ns)
        self.channel_full = Counter(
            "channel_full", "Messages refused because the target channel was at capacity "
            "(ChannelFull).", ["operation"], **ns)
        self.messages_expired = Counter(
            "messages_expired", "Messages dropped unread because they outlived the layer "
            "expiry.", **ns)
        self.messages_dropped = Counter(
            "messages_dropped", "Messages or connections dropped by the relay, by reason.",
            ["reason"], **ns)
        # Set by the layer (a connect or command failing, a connection opening) and by the
        # queue collector's PINGs at each scrape (observability/queues.py).
        self.redis_node_up = Gauge(
            "redis_node_up", "1 when the Redis node answered PING at the last check, else 0.",
            ["node"], multiprocess_mode="livemin", **ns)

        # Interface (gateway).
        self.open_connections = Gauge(
            "open_connections", "Client connections held open by this interface, by protocol.",
            ["protocol"], multiprocess_mode="livesum", **ns)
        self.closes = Counter(
            "closes", "Client WebSocket connections closed, by close code.", ["code"], **ns)
        self.relay_roundtrip = Histogram(
            "relay_roundtrip", "Time from sending a connect envelope to the work queue until "
            "a worker's claim arrives.", unit="seconds", buckets=LATENCY_BUCKETS, **ns)
        self.messages = Counter(
            "messages", "Messages relayed, by direction (in = from clients, out = to "
            "clients).", ["direction"], **ns)
        self.rehomes = Counter(
            "rehomes", "WebSockets handed to a new worker without closing the client's socket, "
            "by cause (drain = the owner was stopped, dead = its heartbeat expired).",
            ["cause"], **ns)
        self.rehome_gap = Histogram(
            "rehome_gap", "Time a re-homed WebSocket waited from the start of its hand-over "
            "until the new owner's app accepted it.", unit="seconds",
            buckets=LATENCY_BUCKETS, **ns)
        self.replayed_frames = Counter(
            "replayed_frames", "Client frames a lost owner had not acknowledged, replayed to a "
            "re-homed WebSocket's new owner (marked fleet_replayed), by cause (dead, or drain "
            "when the drained owner never returned its events).", ["cause"], **ns)
        self.replay_duplicates = Counter(
            "replay_duplicates_possible", "Replayed frames the lost owner's app had already "
            "taken: the new one may act on them a second time, by cause.", ["cause"], **ns)
        self.replay_overflows = Counter(
            "replay_overflows", "WebSockets closed 1012 instead of re-homed because their "
            "buffer of unacknowledged frames had overflowed (a replay would have a hole), by "
            "cause.", ["cause"], **ns)
        # Interface: resumable sessions (docs/resume-protocol.md).
        self.sessions_started = Counter(
            "sessions_started", "Resumable sessions this interface started (a new session's "
            "token issued).", **ns)
        self.sessions_resumed = Counter(
            "sessions_resumed", "Resumable sessions taken over by a new socket on this "
            "interface (the app saw no disconnect).", **ns)
        self.resume_refused = Counter(
            "resume_refused", "Resume offers answered with a new session, by reason (forged "
            "token, unknown or ended session, origin, unreplayable, timeout, draining).",
            ["reason"], **ns)
        self.draining = Gauge(
            "draining", "1 while this process drains (after SIGTERM), else 0.",
            multiprocess_mode="livemax", **ns)

        # Worker (host).
        self.owned_connections = Gauge(
            "owned_connections", "Connections this worker owns (runs a consumer for).",
            multiprocess_mode="livesum", **ns)
        self.queue_wait = Histogram(
            "queue_wait", "Time a connect envelope waited in the work queue before a worker "
            "took it.", unit="seconds", buckets=LATENCY_BUCKETS, **ns)
        self.handler_latency = Histogram(
            "handler_latency", "Time a consumer took to handle one event, by consumer class.",
            ["consumer"], unit="seconds", buckets=LATENCY_BUCKETS, **ns)
        self.owned_connections_limit = Gauge(
            "owned_connections_limit", "Most connections this worker owns at once "
            "(CHANNELS_FLEET_CONCURRENCY); owned_connections / owned_connections_limit is its "
            "saturation.", multiprocess_mode="livesum", **ns)
        self.worker_heartbeat_age = Gauge(
            "worker_heartbeat_age", "Seconds since this worker last refreshed its heartbeat.",
            unit="seconds", multiprocess_mode="livemax", **ns)

        # Worker: resumable sessions (worker/keeper.py).
        self.sessions_detached = Gauge(
            "sessions_detached", "Resumable sessions whose app instance runs on this worker "
            "with no socket, waiting for a resume.", multiprocess_mode="livesum", **ns)
        self.sessions_ended = Counter(
            "sessions_ended", "Resumable sessions ended, by cause (client, app, window, "
            "overflow, drain, protocol, unreplayable).", ["reason"], **ns)
        _touch(self.sessions_ended, SESSION_END_REASONS)
        self.session_frames_replayed = Counter(
            "session_frames_replayed", "Server frames a worker sent again to a resumed "
            "session's client.", **ns)
        self.adopted_messages = Counter(
            "adopted_messages", "Channel messages a worker popped from a dead interface's "
            "homed channels and forwarded to the sessions homed there (worker/adopter.py), "
            "one per session reached.", **ns)

        # Shared work queues: read from Redis at each scrape by QueueCollector
        # (observability/queues.py), which declares channels_fleet_work_queue_depth and
        # channels_fleet_work_queue_oldest_age_seconds itself.

        # Interfaces and workers: how late their event loop runs a scheduled callback
        # (observability/looplag.py); a busy one-threaded process shows it first.
        self.event_loop_lag = Histogram(
            "event_loop_lag", "How late the process's event loop ran a callback scheduled "
            "for a given time (measured every 0.25 s), by component.", ["component"],
            unit="seconds", buckets=LATENCY_BUCKETS, **ns)

        # Every process: readiness as last evaluated (by /readyz or a scrape).
        self.ready = Gauge(
            "ready", "1 when this process was ready at its last readiness check, else 0.",
            ["component"], multiprocess_mode="livemax", **ns)

        # Web tier (gunicorn, multiprocess mode).
        self.web_requests = Counter(
            "web_requests", "HTTP requests served by the web tier, by method and status "
            "class.", ["method", "status"], **ns)
        self.web_request_duration = Histogram(
            "web_request_duration", "Time the web tier took to answer a request, by method.",
            ["method"], unit="seconds", buckets=LATENCY_BUCKETS, **ns)

        self._preset()

    def _preset(self) -> None:
        """Create the known label combinations at zero so rates and dashboards start at 0."""
        _touch(self.layer_retries, LAYER_REASONS)
        _touch(self.layer_errors, LAYER_ERROR_REASONS)
        _touch(self.channel_full, CHANNEL_FULL_OPERATIONS)
        _touch(self.messages_dropped, DROP_REASONS)
        _touch(self.open_connections, PROTOCOLS)
        _touch(self.closes, CLOSE_CODES)
        for replay_metric in (self.rehomes, self.replayed_frames, self.replay_duplicates,
                              self.replay_overflows):
            _touch(replay_metric, REHOME_CAUSES)
        _touch(self.messages, DIRECTIONS)
        _touch(self.resume_refused, RESUME_REFUSALS)
        # The web tier's method x status series are created on first use: presetting them
        # would add ~200 idle series to every interface and worker.

    # Updates that the heartbeat's status also reports: each sets the metric and its count.

    def connection_opened(self, protocol: str) -> None:
        """An interface took a client connection (``protocol``: websocket or http)."""
        self.open_connections.labels(protocol).inc()
        self.status.open[protocol] += 1

    def connection_ended(self, protocol: str) -> None:
        """An interface's client connection is over."""
        self.open_connections.labels(protocol).dec()
        self.status.open[protocol] -= 1

    def websocket_closed(self, code: int | None) -> None:
        """A client WebSocket was closed with ``code`` (None: no close frame, 1006)."""
        label = close_code_label(code)
        self.closes.labels(label).inc()
        self.status.closes[label] += 1

    def rehomed(self, cause: str) -> None:
        """A WebSocket was handed to a new worker (``cause``: drain or dead)."""
        self.rehomes.labels(cause).inc()
        self.status.rehomes[cause] += 1

    def owned(self, count: int) -> None:
        """A worker now owns ``count`` connections."""
        self.owned_connections.set(count)
        self.status.owned = count

    def drain_started(self) -> None:
        """This process began draining (after SIGTERM)."""
        self.draining.set(1)
        self.status.draining = True


def _zeros(labels: Iterable[str]) -> dict[str, int]:
    return dict.fromkeys(labels, 0)


@dataclass
class StatusCounts:
    """The numbers of a process's heartbeat status, counted beside the metrics that export them.

    Read from the heartbeat's thread: every key exists from the start, so no dict changes size
    while it is copied. (Reading a metric back through ``collect()`` is for tests.)
    """

    open: dict[str, int] = field(default_factory=lambda: _zeros(PROTOCOLS))
    closes: dict[str, int] = field(default_factory=lambda: _zeros(CLOSE_CODES))
    rehomes: dict[str, int] = field(default_factory=lambda: _zeros(REHOME_CAUSES))
    owned: int = 0
    draining: bool = False


ALL_NAMES = frozenset({
    f"{NAMESPACE}_{name}" for name in (
        "layer_retries_total", "layer_errors_total", "channel_full_total",
        "messages_expired_total", "messages_dropped_total", "redis_node_up",
        "open_connections", "closes_total", "relay_roundtrip_seconds", "messages_total",
        "draining", "rehomes_total", "rehome_gap_seconds", "replayed_frames_total",
        "replay_duplicates_possible_total", "replay_overflows_total", "owned_connections",
        "owned_connections_limit", "event_loop_lag_seconds", "queue_wait_seconds",
        "handler_latency_seconds", "worker_heartbeat_age_seconds", "work_queue_depth",
        "work_queue_oldest_age_seconds", "ready", "web_requests_total",
        "web_request_duration_seconds",
        "sessions_detached", "sessions_ended_total", "session_frames_replayed_total",
        "adopted_messages_total",
        "sessions_started_total", "sessions_resumed_total", "resume_refused_total",
    )
})
"""Full exposition names of every metric family channels-fleet exports (the two work_queue
families come from ``QueueCollector``)."""


def _touch(metric: Counter | Gauge, values: Iterable[str]) -> None:
    for value in values:
        metric.labels(value)


def close_code_label(code: int | None) -> str:
    """Map a WebSocket close code to the bounded ``code`` label (unknown codes -> "other")."""
    label = str(code) if code is not None else "1006"
    return label if label in CLOSE_CODES else "other"


def status_class(status: int) -> str:
    """Map an HTTP status to its class label: 404 -> "4xx"."""
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def method_label(method: str) -> str:
    """Map an HTTP method to the bounded ``method`` label."""
    method = method.upper()
    return method if method in HTTP_METHODS else "other"


def consumer_label(consumer: object) -> str:
    """Label for a consumer class or instance: ``module.QualName`` (bounded by the code base)."""
    cls = consumer if isinstance(consumer, type) else type(consumer)
    return f"{cls.__module__}.{cls.__qualname__}"


def layer_reason(exc: BaseException) -> str:
    """Map a redis-py exception to the bounded layer ``reason`` label.

    MOVED and ASK are redirections; a cluster that is down, a replica that refuses writes or
    a master that is gone are a failover in progress; then timeouts and connection errors.
    """
    from redis import exceptions as rx

    if isinstance(exc, rx.MovedError):  # subclass of AskError: test it first
        return "moved"
    if isinstance(exc, rx.AskError):
        return "ask"
    failover = (rx.ClusterDownError, rx.TryAgainError, rx.ReadOnlyError, rx.MasterDownError)
    if isinstance(exc, failover):
        return "failover"
    if isinstance(exc, rx.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, rx.ConnectionError | ConnectionError | OSError):
        return "connection"
    return "other"


METRICS = FleetMetrics()
"""The process-wide instance on prometheus-client's default registry."""
