"""The services' collector policy: what survives a collection of the older generations is
frozen, then thawed once every GC_THAW_INTERVAL so cycles among it are still reclaimed.

Run in a fresh interpreter: freezing objects of the test process would change every later test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import gc, weakref
    from channels_fleet_services._common import FreezeSurvivors

    now = [0.0]
    gc.callbacks.append(FreezeSurvivors(600, clock=lambda: now[0]))

    class Conn:
        pass

    gc.collect()
    frozen = gc.get_freeze_count()
    conns = [Conn() for _ in range(1000)]  # a process's long-lived connection objects
    gc.collect(0)  # a young collection neither freezes nor thaws
    assert gc.get_freeze_count() == frozen
    gc.collect(1)  # they lived through a generation-1 collection: frozen
    assert gc.get_freeze_count() >= frozen + 1000, gc.get_freeze_count()

    # Two of them closed, left in a cycle: frozen, no collection sees them ...
    first, second = conns[0], conns[1]
    first.peer, second.peer = second, first
    gone = weakref.ref(first)
    del conns, first, second
    gc.collect()
    assert gone() is not None
    # ... until a full collection past the interval thaws them, and the next one frees them.
    now[0] = 600
    gc.collect()
    assert gc.get_freeze_count() == 0
    gc.collect(1)  # thawed until a full collection has walked them
    assert gc.get_freeze_count() == 0 and gone() is not None
    gc.collect()
    assert gone() is None
    assert gc.get_freeze_count() > 0  # what survived is frozen again
    print("ok")
""")


def test_survivors_are_frozen_and_thawed_once_per_interval() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
