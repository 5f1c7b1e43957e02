"""Adopting a dead interface's homed channels (docs/design/resume-server.md §6.1).

A resumable session's consumer channel lives in its HOME interface's LIST (interface/inbox.py),
popped by the home alone. While the home lives it forwards to the session wherever it runs;
once it is gone (killed, its node lost, or drained and exited in a rollout) nobody pops that
LIST and every message to those sessions would be lost. So the workers adopt it:

- each worker that finds a home dead (liveness) records its live sessions homed there in the
  hash ``<prefix>:home:{<home>}`` (field: the homed channel name, value: ``"<worker channel>
  <home claim>"``), and deletes a field when its session ends, whatever ends it;
- they compete for ``<prefix>:adopt:{<home>}`` (``SET NX PX``); the holder keeps it alive each
  third of its TTL and pops the home's LIST on each layer prefix its sessions use, in order,
  posting each message to the sessions it names: its own directly, other workers' as a
  ``MESSAGE`` item under the home claim (routed by alias there), kept until that worker ACKs
  them handled and replayed to the session's next worker should that one die (forwards.py).
  What comes for a name not in the hash waits until the name shows up (its worker has not
  written yet, or died first and the session's next worker writes it) or a re-home's time
  has passed, then is dropped, counted (unrouted.py);
- the holder lets go when the hash stays empty for ``IDLE_STOP`` (every session homed there
  has ended, whatever still comes for other names), or at its drain or stop
  (another worker takes over); a killed holder's lock lapses after its TTL.

Sessions whose home lives, and plain sockets, are never touched.

    adopter = HomeAdopter(side, settings, sessions=lambda: keeper.sessions.values())
    peers = lambda: instances.ifaces() | adopter.watched()
    adopter.homes_dead(dead)      # the liveness callback
    adopter.workers_dead(dead)    # ... the workers it forwards to, too
    side.handle({wire.ACK: adopter.on_ack})   # their ACKs of what it forwarded
    adopter.forget(instance)      # its session ended
    await adopter.stop()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from ..observability.metrics import METRICS
from ..relay import wire
from ..relay.side import RelaySide
from .adopt_store import REFRESH, RELEASE, adopt_key, home_key, pairs, text
from .forwards import Forwards
from .instance import AppInstance
from .owned import NOT_OURS
from .session import UNCOUNTED
from .settings import WorkerSettings
from .unrouted import Unrouted

logger = logging.getLogger(__name__)

#: The adopter lock's TTL (seconds): the longest a killed holder leaves a home unadopted.
ADOPT_TTL = 6.0
#: Between reads of the hash (a new name, or every so often: sessions move and end).
REREAD = 0.25
#: The hash read empty this long (and HLEN 0): every session homed there has ended; the
#: holder lets go.
IDLE_STOP = 3.0
#: Between pops of an empty LIST.
POLL = 0.05
#: The hash's TTL (seconds), set at each write and kept by the holder: a hash whose workers
#: all died goes by itself.
HOME_TTL = 3600
#: Most messages kept per session forwarded to another worker and not yet handled there (the
#: interfaces' CHANNELS_FLEET_REPLAY_LIMIT default: the live home keeps as many).
FORWARD_LIMIT = 500
#: The interfaces' claim timeout (their default): a dead owner's socket is re-homed within a
#: few of those, and the next owner records itself in the hash a heartbeat TTL later.
CLAIM_TIMEOUT = 5.0

class _Home:
    """One dead home, as this worker sees it."""

    __slots__ = ("channel", "inbox", "layers", "mine", "routes", "given_up", "holding", "task",
                 "write", "read_at", "forwards", "unrouted")

    def __init__(self, channel: str, inbox: str, forwards: Forwards, unrouted: Unrouted) -> None:
        self.channel = channel
        self.inbox = inbox  # specific.fleet<token>!: the part every homed name there shares
        self.layers: dict[str, Any] = {}  # key prefix -> the app's layer whose LIST to pop
        self.mine: dict[str, AppInstance] = {}  # homed name -> this worker's live session
        self.routes: dict[str, tuple[str, str]] = {}  # homed name -> (worker, claim): the hash
        self.given_up: set[str] = set()  # names whose messages were dropped (unrouted)
        self.holding = False  # this worker holds the lock
        self.task: asyncio.Task[None] | None = None
        self.write: asyncio.Task[None] | None = None  # the last hash write (in order)
        self.read_at = 0.0  # monotonic time of the last hash read
        self.forwards = forwards  # what went to other workers, not yet handled there
        self.unrouted = unrouted  # what came for names not in the hash yet


class HomeAdopter:
    """This worker's part in adopting the LISTs of dead homes."""

    def __init__(self, side: RelaySide, settings: WorkerSettings,
                 sessions: Callable[[], Iterable[AppInstance]]) -> None:
        self.side = side
        self.layer = side.layer  # the relay's: the hash and the lock
        self.prefix = settings.key_prefix
        self.sessions = sessions  # the live resumable sessions' instances
        self.homes: dict[str, _Home] = {}  # dead homes with sessions of ours (or adopted)
        # A dead owner's socket is re-homed within 2 claim timeouts (twice, at worst), its
        # next owner finds the home dead a heartbeat TTL later.
        self.reroute_wait = 2 * CLAIM_TIMEOUT * 2 + settings.heartbeat_ttl

    def watched(self) -> set[str]:
        """The homes of live sessions not known dead: liveness watches them too (a resumed
        session's socket is elsewhere, its channel still there)."""
        homes = {i.session.home for i in self.sessions() if i.session is not None}
        workers = {w for h in self.homes.values() for w in h.forwards.workers()}
        return (homes - self.homes.keys()) | workers

    def workers_dead(self, dead: set[str]) -> None:
        """Liveness: workers we forward to died; their sessions' messages wait for the next."""
        for home in self.homes.values():
            home.forwards.workers_dead(dead)

    async def on_ack(self, owner: str, entries: list[Any], sender: str) -> None:
        """The ``wire.ACK`` handler: ``owner``'s sessions handled what we forwarded (passed
        on by the interface their output went to: Connections.on_ack)."""
        try:
            wire.parse_acks(entries)
        except wire.WireError as exc:
            logger.warning("ignored an ack from %s: %s", sender, exc)
            return
        for home in self.homes.values():
            home.forwards.on_ack(entries, owner or sender)

    def homes_dead(self, dead: set[str]) -> None:
        """Liveness found ``dead`` gone: record our sessions homed there, compete to adopt.
        Not while draining: its sessions end or move, another worker adopts."""
        if self.side.draining:
            return
        for instance in list(self.sessions()):
            session, homed = instance.session, instance.homed
            if (session is None or session.home not in dead or session.ended is not None
                    or instance.state in NOT_OURS or homed is None or homed.layer is None):
                continue  # no channel of the app's there: nothing to adopt
            home = self.homes.get(session.home)
            if home is None:
                home = self.homes[session.home] = _Home(
                    session.home, homed.name.rpartition("!")[0] + "!",
                    Forwards(self.side.relay, self.side.channel, FORWARD_LIMIT,
                             self.reroute_wait, partial(self._deliver, session.home)),
                    Unrouted(self.reroute_wait, FORWARD_LIMIT))
            if homed.name in home.mine:
                continue
            home.mine[homed.name] = instance
            home.forwards.moved_here(session.home_claim)  # what we forwarded elsewhere first
            home.layers.setdefault(homed.layer.prefix, homed.layer)
            self._write(home, "HSET", homed.name, f"{self.side.channel} {session.home_claim}")
        for home in self.homes.values():
            if home.task is None and home.mine:
                home.task = self.side.tasks.spawn(self._adopt(home), f"adopt {home.channel}")

    def opened(self, instance: AppInstance) -> None:
        """A session's app took its homed channel here (re-homed from a dead owner) and its
        home is known dead already (liveness reports a death once): recorded at once, its
        adopter forwards here from then."""
        session = instance.session
        if session is not None and session.home in self.homes:
            self.homes_dead({session.home})

    def forget(self, instance: AppInstance) -> None:
        """Its session ended (or moved to another worker): no message is for it here."""
        session, homed = instance.session, instance.homed
        home = self.homes.get(session.home) if session is not None else None
        if home is None or homed is None or home.mine.get(homed.name) is not instance:
            return
        del home.mine[homed.name]
        self._write(home, "HDEL", homed.name)

    async def stop(self) -> None:
        """Drain or stop: let go of every lock held (another worker takes over)."""
        homes = list(self.homes.values())
        tasks = [h.task for h in homes if h.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for home in homes:
            if home.holding:
                await self._release(home)

    # -- the holder ------------------------------------------------------------------------

    async def _adopt(self, home: _Home) -> None:
        """Compete for the lock while sessions of ours are homed there; serve while held."""
        lock = adopt_key(home.channel, self.prefix)
        me, ttl_ms = self.side.channel, int(ADOPT_TTL * 1000)
        while home.mine:
            try:
                if not await self.layer.command(lock, "SET", lock, me, "NX", "PX", ttl_ms):
                    await asyncio.sleep(ADOPT_TTL / 3)
                    continue
                home.holding = True
                logger.info("adopting the homed channels of dead interface %s", home.channel)
                await self._serve(home, lock, me, ttl_ms)
                await self._release(home)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: compete again (the lock lapses meanwhile)
                logger.warning("adopting %s: %r; trying again", home.channel, exc)
                home.holding = False
                await asyncio.sleep(ADOPT_TTL / 3)
        if not home.mine and self.homes.get(home.channel) is home:
            del self.homes[home.channel]
        home.task = None

    async def _serve(self, home: _Home, lock: str, me: str, ttl_ms: int) -> None:
        """Pop the home's LIST and forward until the hash stays empty (messages may still
        come, to names nobody serves) or the lock is lost."""
        key = home_key(home.channel, self.prefix)
        await self._read(home)
        refreshed = time.monotonic()
        empty_since: float | None = None
        while True:
            now = time.monotonic()
            if now - refreshed > ADOPT_TTL / 3:
                if not await self.layer.command(lock, "EVAL", REFRESH, 1, lock, me, ttl_ms):
                    logger.warning("adopting %s: lost the lock", home.channel)
                    home.holding = False
                    return
                await self.layer.command(key, "PEXPIRE", key, HOME_TTL * 1000)
                refreshed = now
            waiting = home.forwards.holding or bool(home.unrouted)
            if now - home.read_at > (REREAD if waiting else REREAD * 4):
                await self._read(home)  # sessions moved or ended meanwhile
                self._unpark(home)
            if home.routes or home.unrouted:
                empty_since = None
            elif empty_since is None:
                empty_since = now
            elif now - empty_since > IDLE_STOP:
                if not await self.layer.command(key, "HLEN", key):
                    return
                empty_since = None
            taken = False
            for layer in list(home.layers.values()):
                for names, body in await layer.receive_all(home.inbox, True):
                    taken = True
                    await self._forward(home, names, body)
            if not taken:
                await asyncio.sleep(POLL)

    async def _forward(self, home: _Home, names: list[str], body: bytes) -> None:
        """One message popped from the home's LIST, to the sessions it names, in order."""
        others: dict[str, list[str]] = {}
        delivered = sum(self._route(home, name, body, others) for name in names)
        METRICS.adopted_messages.inc(delivered + self._post(body, others))

    def _route(self, home: _Home, name: str, body: bytes, others: dict[str, list[str]]) -> int:
        """``body`` to the session of ``name``: delivered here (1), added to ``others`` (to
        post: worker -> claims), held for its next worker, parked or dropped (0)."""
        if name in home.unrouted:
            home.unrouted.park(name, body)  # behind what waits already
            return 0
        instance = home.mine.get(name)
        if instance is not None:
            # As the home's forwarded ones: not in the current interface's Unacked.
            instance.deliver({"type": wire.CHANNEL_MESSAGE, "body": body, UNCOUNTED: True})
            return 1
        route = home.routes.get(name)
        if route is None and name not in home.given_up:
            home.unrouted.park(name, body)  # its worker has not written it yet
            return 0
        if route is None or route[0] == self.side.channel:  # ours, ended: as Channels does
            METRICS.messages_dropped.labels("other").inc()
            return 0
        if home.forwards.send(route[0], route[1], body):  # else held for its next worker
            others.setdefault(route[0], []).append(route[1])
        return 0

    def _post(self, body: bytes, others: dict[str, list[str]]) -> int:
        """``body`` to other workers' sessions (worker -> claims); how many."""
        for worker, claims in others.items():
            self.side.relay.post(worker, [wire.MESSAGE, "", [body, claims]])
        return sum(len(claims) for claims in others.values())

    def _unpark(self, home: _Home) -> None:
        """Names now in the hash (or ours) get what waited for them, in order; those past
        their wait drop it."""
        routable = home.routes.keys() | home.mine.keys()
        for name, bodies in home.unrouted.found(routable):
            for body in bodies:
                others: dict[str, list[str]] = {}
                delivered = self._route(home, name, body, others)
                METRICS.adopted_messages.inc(delivered + self._post(body, others))
        for name, dropped in home.unrouted.expired():
            home.given_up.add(name)
            logger.warning("adopting %s: no session took channel %s in %.0fs; %d messages "
                           "for it dropped", home.channel, name, self.reroute_wait, dropped)

    def _deliver(self, channel: str, claim: str, event: dict[str, Any]) -> None:
        """What was forwarded for ``claim`` elsewhere, to our own session of it now."""
        home = self.homes.get(channel)
        for instance in home.mine.values() if home is not None else ():
            if instance.session is not None and instance.session.home_claim == claim:
                event[UNCOUNTED] = True  # as our own: no ACK counts
                instance.deliver(event)
                return

    async def _read(self, home: _Home) -> None:
        key = home_key(home.channel, self.prefix)
        raw = await self.layer.command(key, "HGETALL", key)
        routes: dict[str, tuple[str, str]] = {}
        for field, value in (raw.items() if isinstance(raw, dict) else pairs(raw)):
            worker, _, claim = text(value).partition(" ")
            routes[text(field)] = (worker, claim)
        home.routes = routes
        home.given_up.difference_update(routes)
        home.forwards.rerouted({claim: worker for worker, claim in routes.values()})
        home.read_at = time.monotonic()

    async def _release(self, home: _Home) -> None:
        home.holding = False
        lock = adopt_key(home.channel, self.prefix)
        try:
            await self.layer.command(lock, "EVAL", RELEASE, 1, lock, self.side.channel)
        except Exception as exc:  # it lapses after its TTL
            logger.warning("adopting %s: could not let go of the lock (%r)", home.channel, exc)

    # -- the hash --------------------------------------------------------------------------

    def _write(self, home: _Home, *command: str) -> None:
        """HSET/HDEL one field of the home's hash, after the earlier writes."""
        home.write = self.side.tasks.spawn(self._written(home, command, home.write),
                                           f"home {home.channel} hash")

    async def _written(self, home: _Home, command: tuple[str, ...],
                       after: asyncio.Task[None] | None) -> None:
        if after is not None and not after.done():
            await asyncio.wait({after})
        key = home_key(home.channel, self.prefix)
        try:
            await self.layer.command(key, command[0], key, *command[1:])
            if command[0] == "HSET":
                await self.layer.command(key, "PEXPIRE", key, HOME_TTL * 1000)
        except Exception as exc:
            logger.warning("adopting %s: %s failed (%r)", home.channel, command[0], exc)
