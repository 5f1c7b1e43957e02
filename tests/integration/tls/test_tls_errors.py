"""What a process says when it cannot get into a TLS Redis: one line naming the URL (never the
password), the command and the cause, at once, from the layer and from ``wait-for-redis``.

An unknown CA, a certificate for another name, a wrong password: no retry mends them, so
neither waits (``wait-for-redis`` exits 3 instead of polling forever). A rule missing from the
user's ACL: the command's refusal, named (layers/acl.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.acl_lines import documented_lines, with_password
from support.tls_cluster import PASSWORD, PrivateCA, TlsCluster

from channels_fleet import fleet_status
from channels_fleet.exceptions import RedisAccessError, RedisPermissionError
from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.settings import RedisSettings

pytestmark = pytest.mark.timeout(60)

#: The nodes send their CA along with their certificate (OpenSSL completes the chain from
#: tls-ca-cert-file): the client finds a root it does not trust. A server sending its
#: certificate alone gives "unable to get local issuer certificate" instead.
UNKNOWN_CA = "certificate verify failed: self-signed certificate in certificate chain"
WRONG_HOST = "certificate verify failed: IP address mismatch, certificate is not valid for " \
    "'127.0.0.2'"
WRONG_PASSWORD = "invalid username-password pair or user is disabled"


@pytest.fixture(scope="module")
def unknown_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed nothing the cluster serves."""
    return PrivateCA(tmp_path_factory.mktemp("unknown-ca"), name="another CA").path


def broken_user(cluster: TlsCluster, role: str, rule: str) -> None:
    """``fleet-broken``: the documented ``role`` line without ``rule``."""
    rules = documented_lines()[role]
    assert rule in rules
    cluster.set_user("fleet-broken", with_password([r for r in rules if r != rule], PASSWORD))


def cases(cluster: TlsCluster, unknown_ca: Path) -> dict[str, tuple[dict[str, str], list[str]]]:
    """``{case: (environment changes, what the line says)}``; the user is fleet-worker."""
    port = cluster.ports[0]
    url = f"rediss://fleet-worker@127.0.0.1:{port}"
    return {
        "unknown CA": ({"CHANNELS_FLEET_REDIS_CA_FILE": str(unknown_ca)},
                       [f"Redis {url}: TLS handshake for ", UNKNOWN_CA, str(unknown_ca)]),
        "wrong host name": ({"CHANNELS_FLEET_REDIS_URL": f"rediss://127.0.0.2:{port}"},
                            [f"Redis rediss://fleet-worker@127.0.0.2:{port}: TLS handshake for ",
                             WRONG_HOST]),
        "wrong password": ({"CHANNELS_FLEET_REDIS_PASSWORD": "not-the-password"},
                           [f"Redis {url} refused AUTH", "to user 'fleet-worker'", WRONG_PASSWORD,
                            "CHANNELS_FLEET_REDIS_PASSWORD"]),
        "no user": ({"CHANNELS_FLEET_REDIS_USERNAME": "", "CHANNELS_FLEET_REDIS_PASSWORD": ""},
                    [f"Redis rediss://127.0.0.1:{port} refused HELLO to the default user",
                     "authenticated", "CHANNELS_FLEET_REDIS_USERNAME"]),
    }


CASES = ("unknown CA", "wrong host name", "wrong password", "no user")


def one_line(error: BaseException | str) -> str:
    text = str(error)
    assert "\n" not in text.strip(), text
    assert PASSWORD not in text and "not-the-password" not in text, text
    return text


@pytest.mark.parametrize("case", CASES)
async def test_the_layer__fails_at_once_with_one_line(
        case: str, tls_cluster: TlsCluster, unknown_ca: Path) -> None:
    changes, says = cases(tls_cluster, unknown_ca)[case]
    settings = RedisSettings.from_env(tls_cluster.env("worker", **changes))
    layer = RedisClusterChannelLayer(hosts=list(settings.redis_url), retry_timeout=10)
    started = time.monotonic()
    try:
        with pytest.raises(RedisAccessError) as raised:
            await layer.send("tls.jobs", {"n": 1})
    finally:
        await layer.close_pools()
    assert time.monotonic() - started < 2, "retried as if Redis were away"
    text = one_line(raised.value)
    assert all(part in text for part in says), text
    assert "HELLO" in text or "AUTH" in text, text


@pytest.mark.parametrize("case", CASES)
def test_wait_for_redis__exits_3_with_one_line(
        case: str, tls_cluster: TlsCluster, unknown_ca: Path) -> None:
    changes, says = cases(tls_cluster, unknown_ca)[case]
    done = subprocess.run([sys.executable, "-m", "channels_fleet.redis_wait"],
                          env={**os.environ, **tls_cluster.env("worker", **changes)},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3, done.stdout + done.stderr
    text = one_line(done.stdout)
    assert all(part in text for part in says), text
    assert not done.stderr


def test_fleet_status__unknown_ca__one_line(tls_cluster: TlsCluster, unknown_ca: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in tls_cluster.env("exporter",
                                       CHANNELS_FLEET_REDIS_CA_FILE=str(unknown_ca)).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RedisAccessError) as raised:
        fleet_status()
    assert UNKNOWN_CA in one_line(raised.value)


async def test_missing_permission__the_layer_names_the_command(tls_cluster: TlsCluster) -> None:
    broken_user(tls_cluster, "web", "+evalsha")
    settings = RedisSettings.from_env(tls_cluster.env("web", CHANNELS_FLEET_REDIS_USERNAME=
                                                      "fleet-broken"))
    layer = RedisClusterChannelLayer(hosts=list(settings.redis_url))
    try:
        with pytest.raises(RedisPermissionError) as raised:
            await asyncio.wait_for(layer.send("tls.jobs", {"n": 1}), 10)
    finally:
        await layer.close_pools()
    text = one_line(raised.value)
    assert "refused EVALSHA send" in text and "to user 'fleet-broken'" in text, text
    assert "no permissions to run the 'evalsha' command" in text, text


def test_missing_permission__wait_for_redis_exits_3_naming_the_command(
        tls_cluster: TlsCluster) -> None:
    broken_user(tls_cluster, "worker", "+cluster|info")
    env = tls_cluster.env("worker", CHANNELS_FLEET_REDIS_USERNAME="fleet-broken")
    done = subprocess.run([sys.executable, "-m", "channels_fleet.redis_wait"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 3, done.stdout + done.stderr
    text = one_line(done.stdout)
    assert f"127.0.0.1:{tls_cluster.ports[0]} refused CLUSTER INFO to user 'fleet-broken'" \
        in text, text
