"""A service that cannot bind a port says which port, which setting and why, in one line, and
exits 3; never "Redis at ...". Several workers with no metrics setting each find their own."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.ports import free_ports

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROJECT = Path(__file__).resolve().parent / "readme"
CLI = [sys.executable, "-m", "channels_fleet.cli"]


@pytest.fixture
def taken() -> Iterator[int]:
    """A port some other process listens on."""
    (port,) = free_ports(1)
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", port))
        sock.listen()
        yield port


def run(redis: LocalRedis, *args: str, **env: str) -> tuple[int, str]:
    done = subprocess.run(
        [*CLI, *args], cwd=PROJECT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "myproject.settings",
             "CHANNELS_FLEET_REDIS_URL": redis.urls[0], "PYTHONPATH": str(PROJECT), **env})
    return done.returncode, done.stdout + done.stderr


def test_worker__metrics_port_in_use(redis_single: LocalRedis, taken: int) -> None:
    code, out = run(redis_single, "worker", "myproject.asgi:application",
                    CHANNELS_FLEET_METRICS_PORT=str(taken))
    assert code == 3
    assert (f"worker could not start: port {taken} (CHANNELS_FLEET_METRICS_PORT) is in use by "
            "another process; set CHANNELS_FLEET_METRICS_PORT (--metrics-port) to a free port, "
            "or 0 for none") in out
    assert "Redis at" not in out


def test_interface__derived_metrics_port_in_use(redis_single: LocalRedis, taken: int) -> None:
    code, out = run(redis_single, "interface", "--port", str(taken - 1000))
    assert code == 3
    assert (f"interface could not start: port {taken} (CHANNELS_FLEET_METRICS_PORT unset: the "
            f"public port {taken - 1000} + 1000) is in use by another process") in out


def test_interface__public_port_in_use(redis_single: LocalRedis, taken: int) -> None:
    code, out = run(redis_single, "interface", "--port", str(taken), "--metrics-port", "0")
    assert code == 3
    assert (f"interface could not start: port {taken} (CHANNELS_FLEET_PORT, --port) is in use "
            "by another process") in out


def test_web__public_port_in_use(redis_single: LocalRedis, taken: int) -> None:
    code, out = run(redis_single, "web", "myproject.wsgi:application", "--port", str(taken))
    assert code == 3
    assert (f"web could not start: port {taken} (CHANNELS_FLEET_PORT, --port) is in use by "
            "another process") in out
