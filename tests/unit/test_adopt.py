"""Adopting a project's CHANNEL_LAYERS: each channels_redis / in-memory form mapped onto our layer.

Every adopted config is also handed to RedisClusterChannelLayer's constructor, which refuses
options it does not know: the mapping must produce only what it accepts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from channels_fleet.adopt import OURS, plan_alias, redact
from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.settings import WebSettings
from channels_fleet.worker.settings import WorkerSettings

CORE = "channels_redis.core.RedisChannelLayer"
PUBSUB = "channels_redis.pubsub.RedisPubSubChannelLayer"
FLEET_URL = ["redis://fleet-redis:6379"]


def adopted(layer: dict[str, Any], alias: str = "default") -> dict[str, Any]:
    plan = plan_alias(alias, layer, FLEET_URL)
    assert not plan.why_not, plan.why_not
    assert plan.config is not None and plan.config["BACKEND"] == OURS
    RedisClusterChannelLayer(**plan.config["CONFIG"])  # the constructor accepts it
    return plan.config["CONFIG"]


@pytest.mark.parametrize(("hosts", "expected"), [
    ([("127.0.0.1", 6379)], ["redis://127.0.0.1:6379"]),
    ([["redis", "6380"]], ["redis://redis:6380"]),
    (["redis://:secret@redis:6379/2"], ["redis://:secret@redis:6379/2"]),
    (["rediss://redis.example:6380"], ["rediss://redis.example:6380"]),
    ([{"address": "redis://redis:6379", "password": "pw", "db": 1}],
     [{"address": "redis://redis:6379", "password": "pw", "db": 1}]),
    ([{"host": "redis", "port": 6381, "ssl": True}],
     [{"address": "redis://redis:6381", "ssl": True}]),
    ([("::1", 6379)], ["redis://[::1]:6379"]),
    (None, ["redis://localhost:6379"]),  # channels_redis's default stays the default
])
def test_channels_redis_hosts__every_form(hosts: Any, expected: list[Any]) -> None:
    config = {"hosts": hosts} if hosts is not None else {}
    assert adopted({"BACKEND": CORE, "CONFIG": config})["hosts"] == expected


def test_channels_redis_options__kept_with_their_meaning() -> None:
    key = "a-very-secret-key-of-some-length"
    config = adopted({"BACKEND": CORE, "CONFIG": {
        "hosts": [("r", 6379)], "prefix": "myproj", "expiry": 30, "group_expiry": 600,
        "capacity": 500, "channel_capacity": {"http.request": 200, "chat.*": 50},
        "symmetric_encryption_keys": [key], "random_prefix_length": 12,
    }})
    assert config == {
        "hosts": ["redis://r:6379"], "prefix": "myproj", "expiry": 30, "group_expiry": 600,
        "capacity": 500, "channel_capacity": {"http.request": 200, "chat.*": 50},
        "symmetric_encryption_keys": [key],
    }


def test_harmless_options__dropped_with_a_note() -> None:
    plan = plan_alias("default", {"BACKEND": PUBSUB, "CONFIG": {
        "hosts": [{"address": "redis://r:6379", "retry_on_timeout": True}],
        "on_disconnect": print, "random_prefix_length": 4}}, FLEET_URL)
    assert plan.config is not None
    assert plan.config["CONFIG"] == {"hosts": ["redis://r:6379"]}
    notes = " | ".join(plan.notes)
    assert "retry_on_timeout" in notes and "on_disconnect" in notes
    assert "random_prefix_length" in notes


@pytest.mark.parametrize(("config", "why"), [
    ({"hosts": [("a", 6379), ("b", 6379)]}, "shards"),
    ({"hosts": [{"sentinels": [("s", 26379)], "master_name": "m"}]}, "Sentinel"),
    ({"hosts": "redis://r:6379"}, "not a list"),
    ({"hosts": [("r", 6379)], "bogus": 1}, "bogus"),
    ({"hosts": [("r", "not-a-port")]}, "not-a-port"),
])
def test_cannot_mean_the_same__project_layer_kept_with_a_reason(config: dict, why: str) -> None:
    plan = plan_alias("default", {"BACKEND": CORE, "CONFIG": config}, FLEET_URL)
    assert plan.config is None
    assert why in plan.why_not


def test_in_memory__moves_to_the_fleet_redis() -> None:
    config = adopted({"BACKEND": "channels.layers.InMemoryChannelLayer",
                      "CONFIG": {"capacity": 10, "group_expiry": 60}})
    assert config == {"hosts": FLEET_URL, "prefix": "asgi", "capacity": 10, "group_expiry": 60}
    other = adopted({"BACKEND": "channels.layers.InMemoryChannelLayer"}, alias="events")
    assert other["prefix"] == "asgi-events"  # two in-memory aliases never shared anything


def test_in_memory_without_fleet_redis__kept() -> None:
    plan = plan_alias("default", {"BACKEND": "channels.layers.InMemoryChannelLayer"}, [])
    assert plan.config is None and "CHANNELS_FLEET_REDIS_URL" in plan.why_not


@pytest.mark.parametrize("backend", [OURS, "myproject.layers.CustomLayer"])
def test_ours_and_custom_layers__left_alone(backend: str) -> None:
    plan = plan_alias("default", {"BACKEND": backend, "CONFIG": {"x": 1}}, FLEET_URL)
    assert plan.config is None and not plan.why_not


def test_other_keys_of_the_alias__kept() -> None:
    plan = plan_alias("default", {"BACKEND": CORE, "CONFIG": {},
                                  "TEST_CONFIG": {"expiry": 1}}, FLEET_URL)
    assert plan.config is not None and plan.config["TEST_CONFIG"] == {"expiry": 1}


def test_redact__hides_passwords_only() -> None:
    assert redact("redis://:pw@r:6379/0") == "redis://:***@r:6379/0"
    assert redact("rediss://user:pw@r:6380") == "rediss://user:***@r:6380"
    assert redact("redis://r:6379") == "redis://r:6379"


def test_opt_out_setting() -> None:
    env = {"CHANNELS_FLEET_REDIS_URL": "redis://r:1", "CHANNELS_FLEET_APP": "a:b"}
    assert WorkerSettings.from_env(env).adopt_layers is True
    assert WorkerSettings.from_env({**env, "CHANNELS_FLEET_ADOPT_LAYERS": "off"}).adopt_layers \
        is False
    web = WebSettings.from_env({**env, "CHANNELS_FLEET_WSGI_APP": "a:b",
                                "CHANNELS_FLEET_ADOPT_LAYERS": "off"})
    assert web.adopt_layers is False and web.redis_url == ("redis://r:1",)


def test_adopt_channel_layers__patches_django_settings_and_drops_cached_layers() -> None:
    """In a fresh process (Django settings are per process): a layer built before adoption
    is not the one served after it; every alias is looked at, each logs one line."""
    script = textwrap.dedent("""
        import logging, sys
        logging.basicConfig(level="INFO", stream=sys.stdout, format="%(message)s")
        from django.conf import settings
        settings.configure(INSTALLED_APPS=["channels"], CHANNEL_LAYERS={
            "default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                        "CONFIG": {"hosts": [("127.0.0.1", 1)]}},
            "memory": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
            "custom": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {},
                       "TEST_CONFIG": {}},
            "sentinel": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {
                "hosts": [{"sentinels": [("127.0.0.1", 2)], "master_name": "m"}]}},
        })
        import django; django.setup()
        from channels.layers import get_channel_layer
        get_channel_layer()  # cached before adoption
        from channels_fleet.adopt import adopt_channel_layers
        print("adopted", adopt_channel_layers(["redis://127.0.0.1:3"]))
        for alias in ("default", "memory", "custom", "sentinel"):
            print(alias, type(get_channel_layer(alias)).__name__)
    """)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "adopted ['default', 'memory', 'custom']" in out
    assert "default RedisClusterChannelLayer" in out
    assert "memory RedisClusterChannelLayer" in out
    assert "sentinel RedisChannelLayer" in out
    assert out.count("replaced by channels_fleet.layers.RedisClusterChannelLayer") == 3
    assert "CHANNEL_LAYERS['sentinel']: kept channels_redis.core.RedisChannelLayer: " \
           "Redis Sentinel" in out
