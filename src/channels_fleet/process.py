"""Child processes that do not outlive their parent."""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """In a child, before exec: get ``sig`` when the thread that forked it ends (the process
    dying included, even by kill -9). For ``subprocess.Popen(preexec_fn=...)``."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig)
