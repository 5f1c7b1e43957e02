"""fleet-socket.js under node: its envelope logic against an in-process WebSocket stand-in
(fleet_socket_test.js; the transport and the clock are injected), and its ES module face."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import channels_fleet

STATIC = Path(channels_fleet.__file__).parent / "static" / "channels_fleet"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(NODE is None, reason="node is not installed: fleet-socket.js is not run"),
]


def run_node(*args: str) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run([NODE, *args], capture_output=True, text=True, timeout=50)


def test_fleet_socket_js__envelope_resume_and_events() -> None:
    result = run_node(str(Path(__file__).with_name("fleet_socket_test.js")),
                      str(STATIC / "fleet-socket.js"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout


def test_fleet_socket_js__imports_as_an_es_module() -> None:
    module = (STATIC / "fleet-socket.mjs").as_uri()
    script = f"import {{ FleetSocket }} from {module!r}; console.log(FleetSocket.SUBPROTOCOL)"
    result = run_node("--input-type=module", "-e", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "channels-fleet.resume.v1"
