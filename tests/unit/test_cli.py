"""The ``channels-fleet`` command hands each service its own flags, --help included."""

from __future__ import annotations

import pytest

from channels_fleet.cli import main


@pytest.mark.parametrize(("service", "flag"), [
    ("interface", "--port"), ("worker", "--concurrency"), ("web", "--workers"),
    ("dev", "--workers"),
])
def test_service_help_lists_its_flags(service: str, flag: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([service, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: channels-fleet {service}")
    assert flag in out


def test_unknown_service_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["runserver"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
