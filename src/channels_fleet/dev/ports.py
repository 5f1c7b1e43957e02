"""Free loopback ports for local servers, never handed out twice on this machine at once."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from pathlib import Path

RESERVED_PORTS = {6379, 16379}
LOWEST_PORT, HIGHEST_PORT = 20000, 29999
BUS_OFFSET = 10000


def _first_ephemeral_port() -> int:
    """Where the kernel starts picking source ports for outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


class NoFreePorts(RuntimeError):
    """Not enough free loopback ports could be found."""


def _port_free(port: int) -> bool:
    """Free, and reachable: some sandboxed VMs refuse loopback connections to a few ports even
    with a listener on them (19 of 64,512 on one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
    return True


#: Ports handed out lately, one file each, for every process on this machine: a port is free
#: until the process it was picked for binds it, so a second pick in that window (by this
#: process, or by ``channels-fleet dev`` picking its private ports while the test that picked
#: its ``--port`` starts it) could hand it out again; the loser exits 3, "port ... is in use".
#: A fixed directory, not TMPDIR: the processes that must see each other's picks may differ in it.
PICKED_PORTS_DIR = Path("/tmp/channels-fleet-ports")
_PICKED_FOR = 600.0
_pick_lock = threading.Lock()


def _claim(port: int) -> bool:
    """Claim ``port`` machine-wide for ten minutes; False if another pick holds it."""
    mark = PICKED_PORTS_DIR / str(port)
    try:
        os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        return True
    except FileExistsError:
        try:
            if time.time() - mark.stat().st_mtime < _PICKED_FOR:
                return False
            os.utime(mark)  # a stale claim: taken over
            return True
        except FileNotFoundError:
            return _claim(port)


def free_ports(count: int, *, with_bus: bool = False) -> list[int]:
    """Pick ``count`` free loopback ports (and port+10000 for the cluster bus, below the
    kernel's ephemeral range), none of them picked by any process on this machine in the last
    ten minutes."""
    PICKED_PORTS_DIR.mkdir(mode=0o1777, exist_ok=True)
    highest = HIGHEST_PORT
    below_ephemeral = _first_ephemeral_port() - BUS_OFFSET - 1
    if with_bus and below_ephemeral > LOWEST_PORT:
        # A bus port in the ephemeral range can become any outgoing connection's source port
        # (or its TIME_WAIT) between this pick and Redis binding it.
        highest = min(highest, below_ephemeral)
    chosen: list[int] = []
    rng = random.Random()
    with _pick_lock:
        for _ in range(100_000):
            if len(chosen) == count:
                return chosen
            port = rng.randint(LOWEST_PORT, highest)
            if port in chosen or port in RESERVED_PORTS:
                continue
            if (_port_free(port) and (not with_bus or _port_free(port + BUS_OFFSET))
                    and _claim(port)):
                chosen.append(port)
    raise NoFreePorts(f"found {len(chosen)} of {count} free loopback ports in "
                      f"{LOWEST_PORT}-{highest} (picks of the last ten minutes are in "
                      f"{PICKED_PORTS_DIR})")
