"""CHANNELS_FLEET_REDIS_USERNAME, _PASSWORD and _CA_FILE beside CHANNELS_FLEET_REDIS_URL: what
each URL becomes, for the fleet's own clients and the project's CHANNEL_LAYERS hosts."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.connection import parse_url

from channels_fleet.adopt import plan_alias
from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.redis_access import RedisAccess, display, same_server
from channels_fleet.settings import RedisSettings, SettingsError, WebSettings

AWKWARD = "p@ss/w:rd?#%"  # what a managed service may generate


@pytest.fixture
def ca(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


def test_user_and_password__override_the_urls_and_need_no_escaping() -> None:
    settings = RedisSettings.from_env({
        "CHANNELS_FLEET_REDIS_URL": "rediss://old:secret@redis-a:6379,rediss://redis-b:6380",
        "CHANNELS_FLEET_REDIS_USERNAME": "fleet-worker",
        "CHANNELS_FLEET_REDIS_PASSWORD": AWKWARD,
    })
    for url, host in zip(settings.redis_url, ("redis-a", "redis-b"), strict=True):
        options = parse_url(url)
        assert (options["username"], options["password"], options["host"]) == (
            "fleet-worker", AWKWARD, host)
    assert AWKWARD not in repr(settings)


def test_password_alone__the_charts_composed_url_keeps_working() -> None:
    """The chart sets CHANNELS_FLEET_REDIS_URL=redis://:$(CHANNELS_FLEET_REDIS_PASSWORD)@host:
    the password sits there unescaped, whatever it holds."""
    env = {"CHANNELS_FLEET_REDIS_PASSWORD": AWKWARD,
           "CHANNELS_FLEET_REDIS_URL": f"redis://:{AWKWARD}@fleet-redis:6379"}
    (url,) = InterfaceSettings.from_env(env).redis_url
    options = parse_url(url)
    assert (options.get("username"), options["password"], options["host"], options["port"]) == (
        None, AWKWARD, "fleet-redis", 6379)


def test_username_alone__keeps_the_urls_password() -> None:
    url = RedisAccess(username="fleet-web").apply("redis://:pw@redis:6379/0")
    assert url == "redis://fleet-web:pw@redis:6379/0"


def test_ca_file__every_rediss_url_verifies_against_it(ca: str) -> None:
    settings = WebSettings.from_env({
        "CHANNELS_FLEET_WSGI_APP": "p.wsgi:application",
        "CHANNELS_FLEET_REDIS_URL": "rediss://redis:6379?ssl_ca_certs=/old.pem&socket_timeout=3",
        "CHANNELS_FLEET_REDIS_CA_FILE": ca,
    })
    options = parse_url(settings.redis_url[0])
    assert (options["ssl_ca_certs"], options["socket_timeout"]) == (ca, 3.0)
    assert RedisAccess(ca_file=ca).apply("redis://redis:6379") == "redis://redis:6379"


def test_applied_twice__the_same_urls(ca: str) -> None:
    settings = RedisSettings(redis_url=("rediss://:x@redis:6379",), redis_username="u",
                             redis_password=AWKWARD, redis_ca_file=ca)
    again = RedisSettings(redis_url=settings.redis_url, redis_username="u",
                          redis_password=AWKWARD, redis_ca_file=ca)
    assert again.redis_url == settings.redis_url


def test_ca_file_missing__error_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"CHANNELS_FLEET_REDIS_CA_FILE=.*: no such file"):
        RedisSettings(redis_url=("rediss://redis:6379",), redis_ca_file=str(tmp_path / "no"))


def test_nothing_set__urls_as_written() -> None:
    url = "rediss://u:p%40@redis:6379?ssl_cert_reqs=none"
    assert RedisSettings(redis_url=(url,)).redis_url == (url,)


def test_display__no_password_no_query() -> None:
    url = RedisAccess("u", AWKWARD).apply("rediss://Redis:7000?ssl_ca_certs=/x")
    assert display(url) == "rediss://u@redis:7000"
    assert display("redis://redis") == "redis://redis:6379"


def test_same_server__by_host_and_port() -> None:
    fleet = ["rediss://fleet-worker:x@Redis.svc:6379?ssl_ca_certs=/ca.pem"]
    assert same_server("redis://redis.svc", fleet)
    assert not same_server("redis://redis.svc:6380", fleet)
    assert not same_server("redis://other:6379", fleet)


def test_project_layer__hosts_on_the_fleets_redis_connect_as_the_process(ca: str) -> None:
    access = RedisAccess("fleet-worker", AWKWARD, ca)
    fleet = ["rediss://fleet-worker@redis:6379"]
    project = {"BACKEND": "channels_redis.core.RedisChannelLayer",
               "CONFIG": {"hosts": [{"address": "rediss://app:old@redis:6379",
                                     "password": "old", "socket_timeout": 3}]}}
    (host,) = plan_alias("default", project, fleet, access).config["CONFIG"]["hosts"]
    assert host["socket_timeout"] == 3 and "password" not in host
    options = parse_url(host["address"])
    assert (options["username"], options["password"], options["ssl_ca_certs"]) == (
        "fleet-worker", AWKWARD, ca)


def test_project_layer__hosts_elsewhere_are_left_as_written() -> None:
    access = RedisAccess("fleet-worker", "pw")
    project = {"BACKEND": "channels_redis.core.RedisChannelLayer",
               "CONFIG": {"hosts": [("other-redis", 6379)]}}
    plan = plan_alias("default", project, ["redis://redis:6379"], access)
    assert plan.config["CONFIG"]["hosts"] == ["redis://other-redis:6379"]


def test_project_layer__ours_already__gets_the_access_too() -> None:
    ours = {"BACKEND": "channels_fleet.layers.RedisClusterChannelLayer",
            "CONFIG": {"hosts": ["redis://redis:6379"], "prefix": "shop"}}
    plan = plan_alias("default", ours, ["redis://redis:6379"], RedisAccess("fleet-web", "pw"))
    assert plan.config["CONFIG"] == {"hosts": ["redis://fleet-web:pw@redis:6379"],
                                     "prefix": "shop"}
    assert plan_alias("default", ours, ["redis://redis:6379"]).config is None
