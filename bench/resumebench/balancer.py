"""The resume bench's load balancer: a round-robin TCP proxy in a process of its own.

What a Kubernetes Service does for the clients of ``bench/resume.py``: each new connection goes
to the next backend that passed its last readiness probe (``/readyz`` on its metrics port,
every 0.2 s); a backend that refuses the connection (killed) is skipped for the next one.
Bytes are piped untouched both ways, and when either side ends the other is closed, so a
killed interface's clients see their connection end (no close frame) and reconnect through
here to a live one. Its own process: piping 2,000 sockets would otherwise take the clients'
core, and it holds 2 descriptors per client.

    python bench/resumebench/balancer.py    # prints its port; stdin: "backends P:Q P:Q ..."

Each stdin line replaces the backends (client port P, probe port Q); ``ok`` is printed once
it is in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import threading
import urllib.request

PROBE_EVERY = 0.2


def ready(probe_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{probe_port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class Balancer:
    def __init__(self) -> None:
        self.backends: list[tuple[int, int]] = []
        self.up: set[int] = set()  # client ports whose last probe passed
        self.turn = 0

    def replace(self, line: str) -> None:
        self.backends = [(int(p), int(q)) for p, q in
                         (pair.split(":") for pair in line.split()[1:])]
        self.up = {p for p, q in self.backends if ready(q)}

    async def probe(self) -> None:
        while True:
            backends = self.backends
            up = await asyncio.gather(*(asyncio.to_thread(ready, q) for _, q in backends))
            self.up = {p for (p, _), ok in zip(backends, up, strict=True) if ok}
            await asyncio.sleep(PROBE_EVERY)

    def order(self) -> list[int]:
        """The ready backends' ports, starting at the next one's turn."""
        ports = [p for p, _ in self.backends if p in self.up]
        if not ports:
            return []
        self.turn = (self.turn + 1) % len(ports)
        return ports[self.turn:] + ports[:self.turn]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in self.order():
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                self.up.discard(port)  # killed: until its probe passes again
                continue
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            return
        writer.close()  # no backend: the client retries, as against a Service with none


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    with contextlib.suppress(Exception):
        dst.close()


async def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    balancer = Balancer()
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(balancer.handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    done = asyncio.Event()

    def control() -> None:  # stdin in a thread: a blocking read is the simplest pipe reader
        for line in sys.stdin:
            balancer.replace(line)  # whole-list assignments: the loop sees old or new
            print("ok", flush=True)
        loop.call_soon_threadsafe(done.set)  # stdin closed: the bench is gone

    threading.Thread(target=control, daemon=True).start()
    prober = asyncio.create_task(balancer.probe())
    await done.wait()
    prober.cancel()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
