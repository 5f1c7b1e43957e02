"""A real Prometheus (Debian's binary) for tests: free port, own data dir, killed at teardown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from channels_fleet.dev.ports import free_ports
from channels_fleet.dev.stack import ServiceProcess


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise RuntimeError("prometheus not on PATH: run `make install-prometheus` "
                           "(Debian package prometheus)")
    return path


def run_promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS`` (Debian's, from the prometheus package), from the repository root."""
    path = shutil.which("promtool")
    if path is None:
        raise RuntimeError("promtool not on PATH: run `make install-prometheus` "
                           "(Debian package prometheus)")
    return subprocess.run([path, *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[3])


@dataclass
class Target:
    address: str  # host:port of a /metrics endpoint
    labels: dict[str, str]  # e.g. {"pod": "worker-0", "namespace": "fleet-live"}


class Prometheus:
    """``prometheus`` scraping ``targets`` every second, with ``rule_files`` loaded."""

    def __init__(self, workdir: Path, targets: list[Target], rule_files: list[Path]) -> None:
        self.workdir = workdir
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms",
                       "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{
                "job_name": "channels-fleet",
                "static_configs": [
                    {"targets": [t.address], "labels": t.labels} for t in targets
                ],
            }],
        }
        # JSON is YAML: no PyYAML needed.
        (workdir / "prometheus.yml").write_text(json.dumps(config, indent=2))
        self.process = ServiceProcess(
            "prometheus",
            [prometheus_binary(), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            env=os.environ, cwd=workdir, log=workdir / "prometheus.log",
            ready_url=f"{self.url}/-/ready",
        )

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def wait_ready(self, timeout: float = 30) -> None:
        self.process.wait_ready(timeout)

    def wait_targets_up(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        active: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            active = self.api("targets")["activeTargets"]
            if len(active) == count and all(t["health"] == "up" for t in active):
                return active
            time.sleep(0.25)
        raise RuntimeError(f"targets not all up in {timeout}s: "
                           f"{[(t['scrapeUrl'], t['health'], t['lastError']) for t in active]}")

    def tail(self, chars: int = 3000) -> str:
        return self.process.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        self.process.terminate_and_wait(10)
