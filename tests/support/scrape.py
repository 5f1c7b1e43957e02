"""Reading a service process's Prometheus metrics, as a test or a benchmark sees them."""

from __future__ import annotations

import re
import urllib.request

from channels_fleet.dev.stack import ServiceProcess


def metric(proc: ServiceProcess, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples on ``proc``'s /metrics whose labels are exactly
    ``labels`` (all of them if none are given)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics",
                                timeout=5) as resp:
        text = resp.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{([^}}]*)\}})?\s+(\S+)$", line)
        if m and (not want or m.group(1) == want):
            total += float(m.group(2))
    return total
