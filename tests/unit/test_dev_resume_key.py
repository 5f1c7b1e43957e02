"""make run's resume key: made once per run dir (0600) and kept there, the same for every
interface; workers and the web tier never get it."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from channels_fleet.dev.resume_key import FILE_NAME, KEY_LENGTH, resume_key
from channels_fleet.interface.settings import InterfaceSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "chat"))
from run import service_env  # noqa: E402  (examples/chat/run.py: `make run`)


def test_resume_key__made_once_private_and_kept(tmp_path: Path) -> None:
    run_dir = tmp_path / ".run"
    key = resume_key(run_dir)
    assert len(key) == KEY_LENGTH and key.isalnum()
    path = run_dir / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resume_key(run_dir) == key  # a restarted `make run` keeps it
    assert resume_key(tmp_path / "other") != key
    # What the interface reads from it is a valid key (32 bytes at least).
    settings = InterfaceSettings.from_env({"CHANNELS_FLEET_REDIS_URL": "redis://127.0.0.1:1",
                                           "CHANNELS_FLEET_RESUME_KEY": key})
    assert settings.resume


def test_resume_key__a_damaged_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("short\n")
    with pytest.raises(ValueError, match="not a resume key"):
        resume_key(tmp_path)


def test_make_run__interfaces_get_the_key__workers_and_web_do_not(tmp_path: Path) -> None:
    key = resume_key(tmp_path)
    interfaces = [service_env("interface", n, 9100 + n, key) for n in (1, 2)]
    assert [env["CHANNELS_FLEET_RESUME_KEY"] for env in interfaces] == [key, key]
    assert interfaces[0]["CHANNELS_FLEET_NAME"] == "i1"
    for kind in ("worker", "web"):
        assert "CHANNELS_FLEET_RESUME_KEY" not in service_env(kind, 1, 9110, key)
