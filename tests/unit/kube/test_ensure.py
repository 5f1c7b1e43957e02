"""channels-fleet secrets ensure against a real HTTP server answering as the API server does."""

from __future__ import annotations

import base64

import pytest
from support.kube_api import State, api_server

from channels_fleet.exceptions import KubeApiError
from channels_fleet.kube.client import ApiClient
from channels_fleet.kube.command import main
from channels_fleet.kube.ensure import ensure_all
from channels_fleet.kube.kinds import KINDS, Item

NS = "chat"
REDIS = Item("fleet-redis-auth", "redis-password", "password")
PG = Item("fleet-postgresql-auth", "postgres-password", "password")


def data(state: State, name: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode()
            for k, v in state.secrets[(NS, name)].get("data", {}).items()}


def seed(state: State, name: str, **values: str) -> None:
    state.put(NS, {"metadata": {"name": name},
                   "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}})


def test_absent_secrets_are_created_with_a_password_and_the_labels() -> None:
    with api_server() as (url, state):
        outcomes = ensure_all(ApiClient(url, "token-1"), NS, [REDIS, PG], {"team": "chat"})
    assert [str(o) for o in outcomes] == [
        "secret fleet-redis-auth: created with redis-password",
        "secret fleet-postgresql-auth: created with postgres-password"]
    password = data(state, "fleet-redis-auth")["redis-password"]
    assert len(password) == 32 and password.isalnum()
    assert password != data(state, "fleet-postgresql-auth")["postgres-password"]
    assert state.secrets[(NS, "fleet-redis-auth")]["metadata"]["labels"] == {"team": "chat"}


def test_second_run__every_value_kept_nothing_written() -> None:
    with api_server() as (url, state):
        client = ApiClient(url, "token-1")
        ensure_all(client, NS, [REDIS])
        first = data(state, "fleet-redis-auth")
        state.requests.clear()
        (outcome,) = ensure_all(client, NS, [REDIS])
    assert data(state, "fleet-redis-auth") == first
    assert state.requests == [("GET", f"/api/v1/namespaces/{NS}/secrets/fleet-redis-auth")]
    assert str(outcome) == "secret fleet-redis-auth: has redis-password, unchanged"


def test_existing_secret__missing_key_added_others_untouched() -> None:
    with api_server() as (url, state):
        seed(state, "fleet-redis-auth", **{"other": "mine"})
        (outcome,) = ensure_all(ApiClient(url, "token-1"), NS,
                                [REDIS, Item("fleet-redis-auth", "other", "password")])
    assert data(state, "fleet-redis-auth")["other"] == "mine"
    assert len(data(state, "fleet-redis-auth")["redis-password"]) == 32
    assert str(outcome) == "secret fleet-redis-auth: added redis-password (kept other)"


def test_a_value_written_between_read_and_patch_is_kept() -> None:
    """The patch carries the resourceVersion it read: the server refuses a stale one (409) and
    ensure reads again, finds the key and leaves it as the other writer set it."""
    def other_writer(state: State) -> None:
        seed(state, "fleet-redis-auth", **{"redis-password": "theirs"})

    with api_server() as (url, state):
        seed(state, "fleet-redis-auth")
        state.before_patch = other_writer
        (outcome,) = ensure_all(ApiClient(url, "token-1"), NS, [REDIS])
    assert data(state, "fleet-redis-auth") == {"redis-password": "theirs"}
    assert not outcome.added


def test_created_meanwhile__409_on_create_then_kept() -> None:
    with api_server() as (url, state):
        client = ApiClient(url, "token-1")
        original = client.request

        def create_races(method: str, path: str, *args, **kwargs):  # type: ignore[no-untyped-def]
            if method == "POST":
                seed(state, "fleet-redis-auth", **{"redis-password": "first"})
            return original(method, path, *args, **kwargs)

        client.request = create_races  # type: ignore[method-assign]
        (outcome,) = ensure_all(client, NS, [REDIS])
    assert data(state, "fleet-redis-auth") == {"redis-password": "first"}
    assert not outcome.created


def test_forbidden_is_retried_while_the_role_takes_effect() -> None:
    with api_server() as (url, state):
        state.forbidden = 2
        ensure_all(ApiClient(url, "token-1"), NS, [REDIS], wait_for_access=30,
                   sleep=lambda s: None)
    assert "redis-password" in data(state, "fleet-redis-auth")


def test_forbidden_past_the_wait__one_line_naming_the_refusal() -> None:
    with api_server() as (url, state):
        state.forbidden = 100
        with pytest.raises(KubeApiError) as failed:
            ensure_all(ApiClient(url, "token-1"), NS, [REDIS], wait_for_access=0)
    assert str(failed.value).startswith(
        f"GET /api/v1/namespaces/{NS}/secrets/fleet-redis-auth: 403 secrets is forbidden")
    assert failed.value.status == 403


def test_immutable_secret_lacking_a_key__refused_with_the_key() -> None:
    with api_server() as (url, state):
        seed(state, "fleet-redis-auth")
        state.secrets[(NS, "fleet-redis-auth")]["immutable"] = True
        with pytest.raises(KubeApiError, match="immutable and lacks redis-password"):
            ensure_all(ApiClient(url, "token-1"), NS, [REDIS])


def test_a_kind_returning_an_existing_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS, "always", lambda item, current: {item.key: b"new"})
    with api_server() as (url, state):
        seed(state, "fleet-redis-auth", **{"redis-password": "old"})
        with pytest.raises(ValueError, match="would change key redis-password"):
            ensure_all(ApiClient(url, "token-1"), NS,
                       [Item("fleet-redis-auth", "redis-password", "always")])
    assert data(state, "fleet-redis-auth") == {"redis-password": "old"}


def test_unknown_kind__refused_before_any_request() -> None:
    with api_server() as (url, state):
        with pytest.raises(ValueError, match="unknown kind 'pasword' \\(known: password"):
            ensure_all(ApiClient(url, "token-1"), NS, [Item("s", "k", "pasword")])
    assert not state.requests


def test_command__prints_key_names_never_values(capsys: pytest.CaptureFixture[str]) -> None:
    with api_server() as (url, state):
        state.token = ""  # --server: e.g. `kubectl proxy`, which authenticates for us
        item = '{"secret": "fleet-redis-auth", "key": "redis-password", "kind": "password"}'
        code = main(["ensure", "--server", url, "--namespace", NS, "--label", "a=b", item])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "secret fleet-redis-auth: created with redis-password" in out
    assert data(state, "fleet-redis-auth")["redis-password"] not in out


def test_command__refusal_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with api_server() as (url, state):
        state.forbidden = 100
        code = main(["ensure", "--server", url, "--namespace", NS, "--wait-for-access", "0",
                     '{"secret": "s", "key": "k", "kind": "password"}'])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "403 secrets is forbidden" in err
