"""Settings of ``channels-fleet interface``, from ``CHANNELS_FLEET_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..resume.token import MIN_KEY_BYTES
from ..settings import ServiceSettings, SettingsError, split_csv
from .proxy import TrustedProxies


@dataclass(frozen=True)
class InterfaceSettings(ServiceSettings):
    """Settings of ``channels-fleet interface``."""

    bind: str = "0.0.0.0"
    port: int = 8000
    #: Origins allowed to open WebSockets: empty = same host only, "*" = any.
    allowed_origins: tuple[str, ...] = ()
    #: Seconds a connect may wait for a worker to claim it (then 1013 / 503).
    claim_timeout: float = 5.0
    #: Seconds an app may take to accept a WebSocket once a worker has claimed it: a new
    #: connection is refused beyond (Daphne's --websocket_connect_timeout, counted from the
    #: connect: twice the claim deadline plus this), a re-homed socket closed with 1012, so
    #: that no socket stays open with no app serving it.
    accept_timeout: float = 15.0
    #: Most connect envelopes waiting in the work queue fleet.connect (then 1013 / 503).
    connect_capacity: int = 1000
    #: Listen backlog: connections the kernel completes before the interface accepts them.
    #: Twisted's default, 50, drops a reconnect storm's SYNs and its clients wait 1, 3, 7 s...
    #: to retry; the kernel caps it at net.core.somaxconn.
    backlog: int = 2048
    #: Most client events held per connection before a worker claims it.
    pending_limit: int = 64
    #: Most client frames, and payload bytes, kept per WebSocket until its owner acknowledges
    #: them, to replay if it dies. Beyond, the oldest go; should the owner die before it
    #: acknowledges past them, the socket is closed with 1012 instead of re-homed.
    replay_limit: int = 500
    replay_bytes: int = 512 * 1024
    #: Most unsent bytes buffered for one client before it is disconnected as not reading.
    send_buffer: int = 4 * 1024 * 1024
    #: Most open connections from one client address (0: no limit; behind a proxy keep 0
    #: unless the proxy is trusted below, so addresses are the clients').
    max_connections_per_client: int = 0
    #: Proxies (addresses, networks, "*") whose X-Forwarded-For / -Port / -Proto give the client's
    #: address, port and scheme. Empty: none, the TCP peer is the client.
    forwarded_allow_ips: tuple[str, ...] = ()
    #: Seconds between pings to a quiet WebSocket (Daphne's --ping-interval). Each socket's
    #: first ping falls at a random point of the interval, so sockets that connected together
    #: are not all pinged in the same instant, every interval.
    ping_interval: float = 20.0
    #: Seconds a ping waits for its pong before the socket is dropped (Daphne's --ping-timeout).
    ping_timeout: float = 30.0
    #: WebSockets a draining interface closes (1001) per second; it goes faster if that would
    #: not end within 60% of the drain timeout. Paced, the clients' reconnects reach the new
    #: pods' work queue as a stream instead of one burst past CONNECT_CAPACITY. 0: all at once.
    drain_close_rate: float = 500.0
    #: Seconds an HTTP request may take, from its arrival to the end of its response
    #: (Daphne's --http-timeout): then 503 if no response began, else the response is ended,
    #: and the app gets http.disconnect. Checked every 2 s, as Daphne does. 0: no limit.
    http_timeout: float = 0.0
    #: The fleet's key for resumable sessions' tokens (docs/resume-protocol.md), the same on
    #: every interface of a release (a Secret the chart creates once); at least 32 bytes.
    #: Empty: resume is off, a client offering it gets a plain WebSocket.
    resume_key: str = field(default="", repr=False)

    @property
    def public_port(self) -> int | None:
        return self.port

    @property
    def connect_timeout(self) -> float:
        """Seconds a new WebSocket may take from its connect to its accept: two claim
        deadlines (sent again once after a worker died), then the app's accept."""
        return 2 * self.claim_timeout + self.accept_timeout

    def __post_init__(self) -> None:
        super().__post_init__()
        self._positive("claim_timeout", "accept_timeout", "connect_capacity", "backlog",
                       "pending_limit", "send_buffer", "ping_interval", "ping_timeout",
                       "replay_limit", "replay_bytes")
        if self.drain_close_rate < 0:
            raise SettingsError("CHANNELS_FLEET_DRAIN_CLOSE_RATE must be >= 0")
        if self.http_timeout < 0:
            raise SettingsError("CHANNELS_FLEET_HTTP_TIMEOUT must be >= 0 (0: no limit)")
        if self.max_connections_per_client < 0:
            raise SettingsError("CHANNELS_FLEET_MAX_CONNECTIONS_PER_CLIENT must be >= 0")
        if isinstance(self.forwarded_allow_ips, str):
            object.__setattr__(self, "forwarded_allow_ips", split_csv(self.forwarded_allow_ips))
        try:
            TrustedProxies(self.forwarded_allow_ips)
        except ValueError as exc:
            raise SettingsError(f"CHANNELS_FLEET_FORWARDED_ALLOW_IPS: {exc}") from exc
        if not 0 < self.port < 65536:
            raise SettingsError("CHANNELS_FLEET_PORT must be 1..65535")
        self._check_resume_key()

    @property
    def resume(self) -> bool:
        """Whether this interface offers resumable sessions (a key is set)."""
        return bool(self.resume_key)

    def _check_resume_key(self) -> None:
        if not self.resume_key:
            return
        if len(self.resume_key.encode("utf-8")) < MIN_KEY_BYTES:
            raise SettingsError(
                f"CHANNELS_FLEET_RESUME_KEY must be at least {MIN_KEY_BYTES} bytes (a random "
                "secret, the same on every interface); leave it empty to turn resume off")
        if not self.rehome:
            raise SettingsError(
                "CHANNELS_FLEET_RESUME_KEY needs CHANNELS_FLEET_REHOME on: a resumable session "
                "rides its acknowledgements; unset the key or turn re-homing on")
