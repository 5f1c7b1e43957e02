"""Service settings: environment, flag overrides and checks that name the variable."""

from __future__ import annotations

import pytest

from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.settings import SettingsError, WebSettings
from channels_fleet.worker.settings import WorkerSettings

ENV = {"CHANNELS_FLEET_REDIS_URL": "redis://a:7000, redis://b:7001"}


def test_redis_url__comma_separated_list() -> None:
    assert InterfaceSettings.from_env(ENV).redis_url == ("redis://a:7000", "redis://b:7001")


def test_missing_redis_url__error_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="CHANNELS_FLEET_REDIS_URL is not set"):
        InterfaceSettings.from_env({})


def test_non_redis_url__refused() -> None:
    with pytest.raises(SettingsError, match="not a redis:// URL"):
        InterfaceSettings.from_env({"CHANNELS_FLEET_REDIS_URL": "http://a:1"})


def test_flags_override_environment() -> None:
    env = {**ENV, "CHANNELS_FLEET_PORT": "9000"}
    assert InterfaceSettings.from_env(env).port == 9000
    assert InterfaceSettings.from_env(env, port=9100).port == 9100
    assert InterfaceSettings.from_env(env, port=None).port == 9000


def test_typed_values_and_lists() -> None:
    env = {**ENV, "CHANNELS_FLEET_DRAIN_TIMEOUT": "7.5",
           "CHANNELS_FLEET_ALLOWED_ORIGINS": "https://a.example, .b.example"}
    settings = InterfaceSettings.from_env(env)
    assert settings.drain_timeout == 7.5
    assert settings.allowed_origins == ("https://a.example", ".b.example")


def test_bad_number__error_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="CHANNELS_FLEET_PORT"):
        InterfaceSettings.from_env({**ENV, "CHANNELS_FLEET_PORT": "eighty"})


def test_heartbeat_ttl_must_cover_two_beats() -> None:
    with pytest.raises(SettingsError, match="HEARTBEAT_TTL"):
        InterfaceSettings.from_env({**ENV, "CHANNELS_FLEET_HEARTBEAT_TTL": "1.5"})


def test_worker__app_channels_concurrency() -> None:
    env = {**ENV, "CHANNELS_FLEET_APP": "proj.asgi:application",
           "CHANNELS_FLEET_CHANNELS": "thumbs,mail"}
    settings = WorkerSettings.from_env(env, concurrency=50)
    assert settings.app == "proj.asgi:application"
    assert settings.channels == ("thumbs", "mail")
    assert settings.concurrency == 50


def test_worker__app_must_be_module_colon_attribute() -> None:
    with pytest.raises(SettingsError, match="module:attribute"):
        WorkerSettings.from_env(ENV, app="proj.asgi")


def test_worker__zero_concurrency_refused() -> None:
    with pytest.raises(SettingsError, match="CHANNELS_FLEET_CONCURRENCY"):
        WorkerSettings.from_env(ENV, app="p:a", concurrency=0)


def test_worker__app_close_timeout_as_daphne() -> None:
    assert WorkerSettings.from_env(ENV, app="p:a").app_close_timeout == 10
    env = {**ENV, "CHANNELS_FLEET_APP_CLOSE_TIMEOUT": "2.5"}
    assert WorkerSettings.from_env(env, app="p:a").app_close_timeout == 2.5
    with pytest.raises(SettingsError, match="CHANNELS_FLEET_APP_CLOSE_TIMEOUT"):
        WorkerSettings.from_env(ENV, app="p:a", app_close_timeout=0)


def test_web__needs_no_redis() -> None:
    env = {"CHANNELS_FLEET_WSGI_APP": "proj.wsgi:application", "CHANNELS_FLEET_WEB_WORKERS": "3"}
    settings = WebSettings.from_env(env)
    assert (settings.wsgi_app, settings.web_workers, settings.port) == (
        "proj.wsgi:application", 3, 8000)


def test_settings_are_frozen() -> None:
    settings = InterfaceSettings.from_env(ENV)
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
