"""The images themselves: non-root, read-only root filesystem, tini as PID 1, no project code in
the interface image, no compilers, and the command that every service runs."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from fleet_podman import HARDENED, IMAGES, LIMITS, ROOT, UID, podman, run

# The first test also waits for the session's (incremental) image build; every step inside a
# test has its own short timeout.
pytestmark = [pytest.mark.usefixtures("images"), pytest.mark.timeout(600)]

PY = '["tini", "--", "python3", "-c"]'
ALL = [
    "interface",
    "project",
    pytest.param("chat", marks=pytest.mark.skipif(
        not (ROOT / "examples/chat/manage.py").exists(), reason="examples/chat not written yet")),
]


def python(image: str, code: str) -> str:
    out = run(image, code, entrypoint=PY)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("name", ALL)
def test_cli_runs_read_only_as_non_root(name: str) -> None:
    out = run(IMAGES[name], "--help")
    assert out.returncode == 0, out.stderr
    for service in ("interface", "worker", "web"):
        assert service in out.stdout
    facts = json.loads(python(IMAGES[name], """
import json, os, channels_fleet, channels_fleet.services.interface
def writable(path):
    try:
        open(path, "w").close()
        return True
    except OSError:
        return False
pid1 = open("/proc/1/comm").read().strip()
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "pid1": pid1,
                  "root_writable": writable("/probe"), "tmp_writable": writable("/tmp/probe"),
                  "site_writable": writable(os.path.dirname(channels_fleet.__file__) + "/x")}))
"""))
    assert facts == {
        "uid": UID, "gid": UID, "pid1": "tini",
        "root_writable": False, "tmp_writable": True, "site_writable": False,
    }


@pytest.mark.parametrize("name", ALL)
def test_image_config(name: str) -> None:
    config = json.loads(podman("image", "inspect", IMAGES[name]).stdout)[0]["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["tini", "--", "channels-fleet"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]


@pytest.mark.parametrize("name", ["interface", "project"])
def test_no_compiler(name: str) -> None:
    out = run(IMAGES[name], "-c", "for c in gcc cc c++ clang make ld; do command -v $c; done; true",
              entrypoint='["tini", "--", "sh"]')
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_interface_venv_has_no_installer() -> None:
    """Nothing installs into the interface image at run time (the base's own pip aside)."""
    out = run(IMAGES["interface"], "-c", "ls /opt/venv/bin; python3 -c 'import channels_fleet'",
              entrypoint='["tini", "--", "sh"]')
    assert out.returncode == 0, out.stderr
    assert "channels-fleet" in out.stdout.split()
    assert not {"pip", "pip3", "easy_install"} & set(out.stdout.split())


@pytest.mark.skipif(not (ROOT / "examples/chat/manage.py").exists(), reason="no examples/chat")
def test_project_loads_under_an_arbitrary_uid() -> None:
    """Platforms that pick the UID (OpenShift: random UID, GID 0) run the images unchanged."""
    out = run(IMAGES["chat"], """
import os, django
django.setup()
import chat_project.asgi, chat_project.wsgi
print(os.getuid(), os.getgid())
""", entrypoint=PY, user="123456:0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["123456", "0"]


def test_interface_image_has_no_project_code() -> None:
    found = python(IMAGES["interface"], """
import importlib.util, os
print(os.path.exists("/app"), importlib.util.find_spec("chat_project") is not None)
""")
    assert found.split() == ["False", "False"]
    cmd = json.loads(podman("image", "inspect", IMAGES["interface"]).stdout)[0]["Config"]["Cmd"]
    assert cmd == ["interface"]


def test_sigterm_reaches_the_service_through_tini() -> None:
    """`podman stop` sends SIGTERM to PID 1 (tini), which must forward it to the child."""
    name = f"fleet-test-sigterm-{uuid.uuid4().hex[:10]}"
    podman("rm", "--force", "--time", "0", name, check=False)
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: sys.exit(42))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    try:
        podman("run", "--detach", "--name", name, *LIMITS, *HARDENED, "--network", "none",
               "--entrypoint", PY, IMAGES["project"], code)
        for _ in range(100):
            if "ready" in podman("logs", name, check=False).stdout:
                break
            time.sleep(0.1)
        podman("stop", "--time", "20", name, timeout=60)
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 42  # the handler ran: not a SIGKILL after the timeout
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
