"""Settings of ``channels-fleet worker``, from ``CHANNELS_FLEET_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import ServiceSettings, SettingsError, split_csv

#: Longest resume window: a detached app instance holds its consumer's groups and memory.
MAX_RESUME_WINDOW = 3600.0


@dataclass(frozen=True)
class WorkerSettings(ServiceSettings):
    """Settings of ``channels-fleet worker``."""

    #: The project's ASGI application, ``module:attribute``.
    app: str = ""
    #: Most connections owned at once; a full worker takes no new ones.
    concurrency: int = 1000
    #: Most relayed events waiting for one connection's app (then the connection is closed).
    inbound_limit: int = 1000
    #: A draining worker hands back at most this many WebSockets at once ...
    rehome_batch: int = 50
    #: ... and waits this many seconds between two batches (no stampede on the other workers).
    rehome_pause: float = 0.05
    #: Seconds an app instance may run on after it was handed its disconnect (client gone,
    #: connection ended); then it is cancelled, as Daphne's ``application_close_timeout``.
    app_close_timeout: float = 10.0
    #: Named background channels served through the app's ChannelNameRouter.
    channels: tuple[str, ...] = ()
    #: Serve the project's channels_redis / in-memory CHANNEL_LAYERS with our layer (adopt.py).
    adopt_layers: bool = True
    #: Seconds a resumable session's app instance lives on, detached, after its socket is
    #: lost without a close (docs/resume-protocol.md); then it gets websocket.disconnect
    #: (1006) and a client that comes back gets a new session. 0: it ends at once.
    resume_window: float = 60.0
    #: Most frames, and payload bytes, a detached session keeps for its client; beyond, the
    #: session ends at once (nothing left to resume). The clients' own bounds, by default.
    resume_frames: int = 1000
    resume_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        self._positive("rehome_batch", "app_close_timeout")
        if self.rehome_pause < 0:
            raise SettingsError("CHANNELS_FLEET_REHOME_PAUSE must be >= 0")
        if ":" not in self.app:
            raise SettingsError(
                "CHANNELS_FLEET_APP (or the APP argument) must be module:attribute, "
                f"for example chat_project.asgi:application; got {self.app!r}"
            )
        if isinstance(self.channels, str):
            object.__setattr__(self, "channels", split_csv(self.channels))
        self._positive("concurrency", "inbound_limit", "resume_frames", "resume_bytes")
        if not 0 <= self.resume_window <= MAX_RESUME_WINDOW:
            raise SettingsError(
                f"CHANNELS_FLEET_RESUME_WINDOW must be 0..{MAX_RESUME_WINDOW:g} seconds "
                "(0: a lost socket's session ends at once)")
