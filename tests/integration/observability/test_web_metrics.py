"""The web tier's metrics under a real gunicorn with 2 workers, in multiprocess mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from channels_fleet.dev.ports import free_ports
from channels_fleet.dev.stack import ServiceProcess

pytestmark = pytest.mark.timeout(60)

WEBAPP = Path(__file__).resolve().parent / "webapp"


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        exc.close()
        return exc.code, body


def sample(text: str, prefix: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.fixture
def gunicorn(tmp_path):
    port, metrics_port = free_ports(2)
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    (prom_dir / "counter_999999.db").write_bytes(b"stale file from an earlier run")
    env = {**os.environ, "FLEETWEB_PORT": str(port), "FLEETWEB_METRICS_PORT": str(metrics_port),
           "FLEETWEB_PROM_DIR": str(prom_dir), "PYTHONPATH": str(WEBAPP)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    service = ServiceProcess(
        "gunicorn",
        [sys.executable, "-m", "gunicorn", "-c", str(WEBAPP / "fleetweb_gunicorn.py"),
         "fleetweb_app:application"],
        env=env, cwd=WEBAPP, log=tmp_path / "gunicorn.log",
    )
    proc = service.popen
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if fetch(f"http://127.0.0.1:{port}/")[0] == 200 and len(children(proc.pid)) == 2:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("gunicorn did not start:\n" + (tmp_path / "gunicorn.log").read_text())
        yield proc, port, metrics_port, prom_dir
    finally:
        service.terminate_and_wait(15)


def busy_both_workers(port: int) -> None:
    """Two slow requests at once: each of the 2 sync workers serves one (sequential requests
    may all go to the same worker), so both have written their files."""
    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(lambda _: fetch(f"http://127.0.0.1:{port}/slow")[0], range(2)))
    assert statuses == [200, 200]


def test_requests_from_every_worker_are_summed_at_the_master(gunicorn) -> None:
    proc, port, metrics_port, prom_dir = gunicorn
    assert not (prom_dir / "counter_999999.db").exists()  # wiped at start
    # The readiness probe of the start loop made one request already; count from here.
    _, before = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
    ok0 = sample(before.decode(), 'channels_fleet_web_requests_total{method="GET",status="2xx"}')
    busy_both_workers(port)
    for _ in range(28):
        assert fetch(f"http://127.0.0.1:{port}/")[0] == 200
    for _ in range(3):
        assert fetch(f"http://127.0.0.1:{port}/missing")[0] == 404
    for _ in range(2):
        assert fetch(f"http://127.0.0.1:{port}/boom")[0] == 500
    status, body = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
    text = body.decode()
    assert status == 200
    get = 'channels_fleet_web_requests_total{method="GET",status="%s"}'
    assert sample(text, get % "2xx") == (ok0 or 0) + 30
    assert sample(text, get % "4xx") == 3
    assert sample(text, get % "5xx") == 2
    count = sample(text, 'channels_fleet_web_request_duration_seconds_count{method="GET"}')
    assert count == (ok0 or 0) + 35
    # Both workers wrote files: the master really sums processes.
    pids = {p.stem.rsplit("_", 1)[1] for p in prom_dir.glob("counter_*.db")}
    assert {str(pid) for pid in children(proc.pid)} <= pids
    assert fetch(f"http://127.0.0.1:{metrics_port}/readyz") == (200, b"ok\n")
    assert 'channels_fleet_ready{component="web"} 1.0' in text


def test_a_killed_worker_keeps_its_counts_and_loses_its_live_gauges(gunicorn) -> None:
    proc, port, metrics_port, prom_dir = gunicorn
    for _ in range(20):
        fetch(f"http://127.0.0.1:{port}/")
    busy_both_workers(port)
    victim = children(proc.pid)[0]
    assert list(prom_dir.glob(f"gauge_livesum_{victim}.db"))
    _, before = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
    get = 'channels_fleet_web_requests_total{method="GET",status="2xx"}'
    total = sample(before.decode(), get)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and list(prom_dir.glob(f"gauge_livesum_{victim}.db")):
        time.sleep(0.1)
    assert not list(prom_dir.glob(f"gauge_livesum_{victim}.db"))  # child_exit ran
    _, after = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
    assert sample(after.decode(), get) >= total  # counters are history: they stay


def test_setup_after_prometheus_client_import_is_refused(tmp_path) -> None:
    code = (
        "import prometheus_client\n"
        "from channels_fleet.observability import web as web_metrics\n"
        "try:\n"
        f"    web_metrics.setup_multiprocess({str(tmp_path)!r})\n"
        "except web_metrics.MultiprocessSetupError as exc:\n"
        "    print('refused:', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=30)
    assert "refused: prometheus_client was imported before" in out.stdout, out.stderr
