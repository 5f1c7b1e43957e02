"""The scale benchmark's load client: thousands of raw WebSockets per process, several processes.

A ``websockets`` client spends tens of microseconds of Python per frame; at 20,000 sockets one
such process would be the bottleneck the benchmark measures. Each swarm process holds bare
``asyncio.Protocol`` sockets (``idlews.IdleSocket``: handshake, pong, close; arrivals stamped in
``data_received``) and is driven by the benchmark over its stdin/stdout, one JSON command a
line, one JSON answer a line:

    {"op": "open", "urls": ["ws://127.0.0.1:8001/ws/bcast/"], "count": 5000} -> {"opened": ..}
    {"op": "connect", "url": ..., "count": 1250, "at": <perf_counter>,
     "backoff": {"first": 0.5, "factor": 2, "most": 8}, "back_to_back": true}  -> {"done": [...]}
    {"op": "echo", "url": ..., "clients": 50, "seconds": 5, "rate": 10}    -> {"ms": [...],
                                                    "client_stalls": N, "client_max_late_ms": X}
    {"op": "arrivals", "nth": 1, "timeout": 60}                            -> {"times": [...]}
    {"op": "close"}                                                        -> {"closed": N}

Times are ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux: one clock for every process of
the machine), so the benchmark compares them with its own. :class:`Swarm` starts the processes
(each dies with its parent, PR_SET_PDEATHSIG) and talks to them.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from idlews import IdleSocket, open_idle, watch_arrivals

PAYLOAD = "x" * 32


class Held:
    """The idle sockets this process keeps open between commands."""

    def __init__(self) -> None:
        self.by_url: dict[str, list[IdleSocket]] = {}

    @property
    def socks(self) -> list[IdleSocket]:
        return [sock for socks in self.by_url.values() for sock in socks]

    async def open(self, urls: list[str], count: int, parallel: int = 200) -> dict[str, Any]:
        """Open ``count`` more idle sockets, to ``urls`` in turn, ``parallel`` handshakes at a
        time."""
        sem = asyncio.Semaphore(parallel)
        failed: Counter[str] = Counter()
        started = time.perf_counter()

        async def one(url: str) -> None:
            async with sem:
                try:
                    self.by_url.setdefault(url, []).append(await open_idle(url))
                except Exception as exc:  # counted, not fatal: the bench reports it
                    failed[failure(exc)] += 1

        await asyncio.gather(*(one(urls[i % len(urls)]) for i in range(count)))
        return {"opened": count - sum(failed.values()), "failed": dict(failed),
                "held": self.alive(urls), "seconds": time.perf_counter() - started}

    async def connect(self, url: str, count: int, at: float, backoff: dict[str, float],
                      timeout: float = 120, back_to_back: bool = False, hold: bool = False
                      ) -> dict[str, Any]:
        """``count`` clients connect to ``url`` from ``at`` and echo once, each retrying after a
        refusal (``served``) until ``timeout``; all at once (a storm) or ``back_to_back`` (a
        burst). Their sockets are then kept (``hold``: idle sockets that a worker did accept)
        or closed.

        Returns when each one had its echo (``done``: perf_counter times), how many had none
        by the deadline, the failures on the way by cause, and the sockets held to ``url``.
        """
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        failures: Counter[str] = Counter()
        wait = Backoff(**backoff)
        results = await started(count, lambda: served(url, at + timeout, wait, failures),
                                back_to_back)
        socks = [sock for _, sock in filter(None, results)]
        if hold:
            self.by_url.setdefault(url, []).extend(socks)
        else:
            for sock in socks:
                sock.close()
            await asyncio.sleep(0.2)
        return {"started": at, "done": [t for t, _ in filter(None, results)],
                "unfinished": results.count(None), "failures": dict(failures),
                "held": self.alive([url])}

    def alive(self, urls: list[str]) -> int:
        """Sockets still open to ``urls`` (another side's, held too, are not counted)."""
        return sum(not s.closed for url in urls for s in self.by_url.get(url, []))

    async def arrivals(self, nth: int, timeout: float) -> dict[str, Any]:
        """Each held socket's ``nth`` data frame arrival time (None: never came), once every
        one has it, or is closed, or ``timeout`` passed."""
        socks = self.socks
        done = watch_arrivals(socks, nth)
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            pass
        for sock in socks:
            sock.on_frame = None
        return {"times": [s.arrivals[nth - 1] if len(s.arrivals) >= nth else None
                          for s in socks]}

    async def close(self) -> dict[str, Any]:
        closed = 0
        for sock in self.socks:
            if not sock.closed:
                sock.close()
                closed += 1
        self.by_url = {}
        await asyncio.sleep(0.2)
        return {"closed": closed}


def failure(exc: BaseException) -> str:
    """A short, bounded name for why a socket failed: ``HTTP 503``, ``close 1013``, ``reset``."""
    text = str(exc)
    if text.startswith("HTTP/"):
        return "HTTP " + text.split(" ", 2)[1]
    if text.startswith("close ") or text == "closed":
        return text
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


async def echo_once(sock: IdleSocket, timeout: float) -> None:
    """Send one text frame and wait for its echo; raises ConnectionError on a close."""
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    seen = len(sock.arrivals)

    def on_frame() -> None:
        if (len(sock.arrivals) > seen or sock.closed) and not got.done():
            got.set_result(None)

    if sock.closed:  # a refusal: its close frame came with the handshake's answer
        raise ConnectionError(f"close {sock.close_code}" if sock.close_code else "closed")
    sock.on_frame = on_frame
    sock.send_text(PAYLOAD)
    try:
        await asyncio.wait_for(got, timeout)
    finally:
        sock.on_frame = None
    if len(sock.arrivals) <= seen:
        raise ConnectionError(f"close {sock.close_code}" if sock.close_code else "closed")


class Backoff:
    """A refused client's waits: ``first`` s, times ``factor`` after each try, at most ``most``
    s; each drawn from 0.5-1.5x that, so the clients refused together do not return together."""

    def __init__(self, first: float, factor: float, most: float) -> None:
        self.first, self.factor, self.most = first, factor, most

    def wait(self, tries: int) -> float:
        return min(self.most, self.first * self.factor ** tries) * random.uniform(0.5, 1.5)


def left(deadline: float) -> float:
    return max(0.1, deadline - time.perf_counter())


async def served(url: str, deadline: float, backoff: Backoff, failures: Counter[str]
                 ) -> tuple[float, IdleSocket] | None:
    """One client, as a reconnecting client does: connect and echo once; a refused or cut try
    is counted in ``failures`` by cause and tried again after ``backoff``'s wait.

    Returns when its echo came (perf_counter) and its open socket, or None at ``deadline``.
    """
    tries = 0
    while time.perf_counter() < deadline:
        sock = None
        try:
            sock = await open_idle(url, timeout=left(deadline))
            await echo_once(sock, left(deadline))
            return time.perf_counter(), sock
        except Exception as exc:
            failures[failure(exc)] += 1
            if sock is not None:
                sock.close()  # a cut or silent socket: a real client drops it before retrying
        await asyncio.sleep(min(backoff.wait(tries), max(0.0, deadline - time.perf_counter())))
        tries += 1
    return None


async def started(clients: int, client: Callable[[], Awaitable[Any]], back_to_back: bool
                  ) -> list[Any]:
    """Run ``clients`` of ``client`` at once, or ``back_to_back``: each one started as soon as
    this process has started the one before (its connect is under way), not all in one tick."""
    if not back_to_back:
        return await asyncio.gather(*(client() for _ in range(clients)))
    tasks = []
    for _ in range(clients):
        tasks.append(asyncio.ensure_future(client()))
        await asyncio.sleep(0)  # the new client dials; answers already in are read meanwhile
    return await asyncio.gather(*tasks)


async def echo(url: str, clients: int, seconds: float, rate: float) -> dict[str, Any]:
    """``clients`` sockets, each sending one frame every 1/``rate`` s (spread evenly) and
    timing its echo; round trips in ms."""
    socks = [await open_idle(url) for _ in range(clients)]
    samples: list[float] = []
    errors: Counter[str] = Counter()
    until = time.perf_counter() + seconds

    async def paced(sock: IdleSocket, offset: float) -> None:
        await asyncio.sleep(offset)
        while time.perf_counter() < until and not sock.closed:
            start = time.perf_counter()
            try:
                await echo_once(sock, 10)
            except Exception as exc:
                errors[failure(exc)] += 1
                return
            samples.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - start)))

    # This process's own stalls in the window: an echo late because the client was late is
    # no server's doing (a tick every 10 ms; how late the longest ran, how many > 100 ms).
    lateness: list[float] = []

    async def ticks() -> None:
        while time.perf_counter() < until:
            due = time.perf_counter() + 0.01
            await asyncio.sleep(0.01)
            lateness.append(time.perf_counter() - due)

    await asyncio.gather(ticks(), *(paced(s, i / clients / rate) for i, s in enumerate(socks)))
    for sock in socks:
        sock.close()
    await asyncio.sleep(0.1)
    return {"ms": samples, "errors": dict(errors),
            "client_stalls": sum(late > 0.1 for late in lateness),
            "client_max_late_ms": round(max(lateness, default=0.0) * 1000, 1)}


async def serve() -> None:
    """Answer the benchmark's commands, one line each, until stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    held = Held()
    while line := await reader.readline():
        cmd = json.loads(line)
        op = cmd.pop("op")
        if op == "open":
            answer = await held.open(**cmd)
        elif op == "arrivals":
            answer = await held.arrivals(**cmd)
        elif op == "close":
            answer = await held.close()
        elif op == "connect":
            answer = await held.connect(**cmd)
        elif op == "echo":
            answer = await echo(**cmd)
        else:
            answer = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class Swarm:
    """``size`` swarm processes; :meth:`each` sends one command to each and gathers answers."""

    def __init__(self, size: int, preexec_fn: Callable[[], None] | None = None) -> None:
        here = Path(__file__).resolve().parent
        self.procs = [subprocess.Popen(
            [sys.executable, str(here / "swarm.py")], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=here, preexec_fn=preexec_fn,
        ) for _ in range(size)]

    def __len__(self) -> int:
        return len(self.procs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def send(self, commands: Sequence[dict[str, Any]]) -> None:
        """Send command i to process i (all start at once)."""
        for proc, cmd in zip(self.procs, commands, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(cmd) + "\n")
            proc.stdin.flush()

    def answers(self) -> list[dict[str, Any]]:
        """Each process's answer to the last command sent to all."""
        return [self._answer(proc) for proc in self.procs]

    @staticmethod
    def _answer(proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"swarm process {proc.pid} exited {proc.wait()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"swarm process {proc.pid}: {answer['error']}")
        return answer

    def call(self, index: int, command: dict[str, Any]) -> dict[str, Any]:
        """One command to process ``index`` alone."""
        proc = self.procs[index]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(command) + "\n")
        proc.stdin.flush()
        return self._answer(proc)

    def each(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        self.send(commands)
        return self.answers()

    def all(self, **command: Any) -> list[dict[str, Any]]:
        """The same command to every process."""
        return self.each([command] * len(self.procs))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal counts."""
    return [total // parts + (i < total % parts) for i in range(parts)]


if __name__ == "__main__":
    asyncio.run(serve())
