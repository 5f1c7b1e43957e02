"""ApiClient.in_cluster: where a pod's credentials come from, and what a missing one says."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels_fleet.exceptions import KubeApiError
from channels_fleet.kube.client import ApiClient


def test_outside_a_pod__says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeApiError, match="KUBERNETES_SERVICE_HOST is not set: not running in a"):
        ApiClient.in_cluster()


def test_no_mounted_token__names_the_file_and_the_setting(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    with pytest.raises(KubeApiError) as failed:
        ApiClient.in_cluster(tmp_path)
    assert str(failed.value) == (
        f"service account credentials at {tmp_path}: No such file or directory "
        f"({tmp_path / 'token'}); is automountServiceAccountToken false?")


def test_an_ipv6_service_host_is_bracketed(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    (tmp_path / "token").write_text("token-1\n")
    # Any readable CA bundle: the system's, as the pod's would be.
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if not ca.exists():
        pytest.skip("no CA bundle on this machine")
    (tmp_path / "ca.crt").write_bytes(ca.read_bytes())
    assert ApiClient.in_cluster(tmp_path).url == "https://[fd00::1]:6443"


def test_an_unreachable_server__one_line_with_method_and_url() -> None:
    client = ApiClient("http://127.0.0.1:9")
    with pytest.raises(KubeApiError, match=r"^GET http://127.0.0.1:9/api/v1/x: \[Errno 111\]"):
        client.request("GET", "/api/v1/x")
