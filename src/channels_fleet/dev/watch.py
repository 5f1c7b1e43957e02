"""What ``channels-fleet dev`` watches and shows: the project's Python files and its services' logs.

Polling modification times needs no dependency and sees every editor's way of saving (in place,
rename over, delete and create); a project of a few hundred files is read in milliseconds.

    watcher = SourceWatcher(Path.cwd())
    changed = watcher.changed()          # paths saved, added or removed since the last call
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

#: Directories never looked into: caches, VCS and tool state, installed packages.
SKIPPED_DIRS = {"__pycache__", "node_modules", "site-packages"}


def python_files(root: Path) -> Iterator[Path]:
    """Every ``.py`` file under ``root``, outside hidden directories, caches and virtualenvs."""
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS
                   and not os.path.exists(os.path.join(directory, d, "pyvenv.cfg"))]
        for name in files:
            if name.endswith(".py"):
                yield Path(directory, name)


class SourceWatcher:
    """Notices Python files saved, added or removed under a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen = self._snapshot()

    def __len__(self) -> int:
        return len(self.seen)

    def _snapshot(self) -> dict[Path, int]:
        seen = {}
        for path in python_files(self.root):
            try:
                seen[path] = path.stat().st_mtime_ns
            except OSError:
                continue  # removed while walking
        return seen

    def changed(self) -> list[Path]:
        """The files changed since the last call (or since this watcher was made), sorted."""
        now = self._snapshot()
        changed = {p for p, mtime in now.items() if self.seen.get(p) != mtime}
        changed |= set(self.seen) - set(now)
        self.seen = now
        return sorted(changed)


class LogTail(threading.Thread):
    """Copies what the services write to their log files to this terminal, each line led by
    the service's name (``worker-3 | ...``), as long as the process runs."""

    def __init__(self, sources: Callable[[], Iterable[tuple[str, Path]]],
                 interval: float = 0.2) -> None:
        super().__init__(name="dev-log-tail", daemon=True)
        self.sources = sources
        self.interval = interval
        self.offsets: dict[Path, int] = {}
        self.stopped = threading.Event()
        self._lock = threading.Lock()  # flush() runs on this thread and on the caller's

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        """Copy what was written since the last flush (whole lines)."""
        with self._lock:
            self._copy()

    def _copy(self) -> None:
        for name, log in list(self.sources()):
            try:
                with open(log, "rb") as source:
                    source.seek(self.offsets.get(log, 0))
                    data = source.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # whole lines only; the rest next time
            if not end:
                continue
            self.offsets[log] = self.offsets.get(log, 0) + end
            for line in data[:end].decode(errors="replace").splitlines():
                print(f"{name} | {line}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self.stopped.set()
        self.join(2)
        self.flush()
