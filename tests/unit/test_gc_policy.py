"""The services' collector policy: what survives a collection of the older generations is
frozen; the heartbeat's FrozenCollection walks it once per interval, so cycles among it (the
connections closed since) are still reclaimed, and only then.

Run in a fresh interpreter: freezing objects of the test process would change every later test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import gc, weakref
    from channels_fleet.services._common import FreezeSurvivors, FrozenCollection

    now = [0.0]
    gc.callbacks.append(FreezeSurvivors())
    walk = FrozenCollection(600, clock=lambda: now[0])

    class Conn:
        pass

    gc.collect()
    frozen = gc.get_freeze_count()
    conns = [Conn() for _ in range(1000)]  # a process's long-lived connection objects
    gc.collect(0)  # a young collection freezes nothing
    assert gc.get_freeze_count() == frozen
    gc.collect(1)  # they lived through a generation-1 collection: frozen
    assert gc.get_freeze_count() >= frozen + 1000, gc.get_freeze_count()

    # Two of them closed, left in a cycle: frozen, no collection sees them, however long ...
    first, second = conns[0], conns[1]
    first.peer, second.peer = second, first
    gone = weakref.ref(first)
    del conns, first, second
    now[0] = 10_000
    gc.collect()
    gc.collect()
    assert gone() is not None and gc.get_freeze_count() > 0
    # ... until the heartbeat's pause falls due and walks everything frozen.
    walk.walked_at = 0.0
    now[0] = 599
    assert not walk.due()
    now[0] = 600
    assert walk.due()
    walk.run()
    assert gone() is None
    assert gc.get_freeze_count() > 0  # what survived is frozen again
    assert not walk.due()  # the next one an interval later
    print("ok")
""")


def test_survivors_are_frozen_and_walked_once_per_interval_by_the_pause() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
