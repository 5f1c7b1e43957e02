"""What the layer makes of Redis refusing a command to its user (layers/acl.py)."""

from __future__ import annotations

import logging

import pytest
from redis import exceptions as rx
from redis._parsers.base import BaseParser

from channels_fleet.exceptions import LayerError, RedisPermissionError
from channels_fleet.layers import acl
from channels_fleet.layers.scripts import GROUP_ADD, SEND


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acl, "_logged", set())
    monkeypatch.setattr(acl, "WAKE", acl.Wake())


@pytest.mark.parametrize("reply", [
    "NOPERM this user has no permissions to run the 'client|unblock' command",
    "NOPERM this user has no permissions to access one of the keys used as arguments",
    # A command refused inside a script, as Redis 7.0 and 7.2+ / Valkey say it.
    "ERR The user executing the script can't run this command or subcommand script: ab12, "
    "on @user_script:1.",
    "ERR ACL failure in script: this user has no permissions to run the 'rpush' command "
    "script: ab12, on @user_script:1.",
])
def test_is_refusal__every_way_redis_says_no(reply: str) -> None:
    assert acl.is_refusal(BaseParser.parse_error(reply))


@pytest.mark.parametrize("exc", [
    rx.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    rx.ConnectionError("connection lost"),
    rx.NoScriptError("NOSCRIPT No matching script"),
])
def test_is_refusal__not_other_errors(exc: Exception) -> None:
    assert not acl.is_refusal(exc)


def test_command_name__a_script_names_what_it_calls() -> None:
    assert acl.command_name(("EVALSHA", SEND.sha, 1, "k")) == (
        "EVALSHA send (calls LLEN, LINDEX, LPOP, RPUSH, PEXPIRE)")
    assert acl.command_name((b"EVALSHA", GROUP_ADD.sha.encode(), 1, "k")) == (
        "EVALSHA group_add (calls ZADD, EXPIRE)")
    assert acl.command_name(("client", "unblock", 7)) == "CLIENT UNBLOCK"
    assert acl.command_name(("BLMPOP", 2, 1, "k", "LEFT")) == "BLMPOP"


def test_refused__names_server_command_key_and_user__logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    nope = rx.NoPermissionError("this user has no permissions to run the 'blmpop' command")
    with caplog.at_level(logging.ERROR, logger=acl.__name__):
        first = acl.refused("10.0.0.1:6379", "fleet-worker", ("BLMPOP", 2, 1, "asgi:q:{x}"),
                            "asgi:q:{x}", nope)
        acl.refused("10.0.0.2:6379", "fleet-worker", ("BLMPOP", 2, 1, "asgi:q:{y}"),
                    "asgi:q:{y}", nope)
    assert isinstance(first, RedisPermissionError)
    assert isinstance(first, LayerError) and isinstance(first, rx.NoPermissionError)
    message = str(first)
    for part in ("10.0.0.1:6379", "BLMPOP", "asgi:q:{x}", "'fleet-worker'", "'blmpop'",
                 "docs/redis-acl.md"):
        assert part in message
    assert [r.getMessage() for r in caplog.records] == [message]


def test_wake__refused_once__said_once_at_info(caplog: pytest.LogCaptureFixture) -> None:
    nope = rx.NoPermissionError("this user has no permissions to run the 'client|unblock' command")
    with caplog.at_level(logging.INFO, logger=acl.__name__):
        acl.WAKE.refuse("h:1", "CLIENT UNBLOCK", nope)
        acl.WAKE.refuse("h:2", "CLIENT ID", nope)
    assert acl.WAKE.refused
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert "CLIENT UNBLOCK" in record.getMessage() and "nothing is lost" in record.getMessage()


def test_naming__a_redis_py_refusal_names_url_server_user_command_and_key__not_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=acl.__name__), \
            pytest.raises(RedisPermissionError) as raised:
        with acl.naming("rediss://fleet-exporter:secret@redis.internal:6380", "LINDEX",
                        "fleet:q:{fleet.connect}"):
            raise BaseParser.parse_error(
                "NOPERM this user has no permissions to access one of the keys used as arguments")
    message = str(raised.value)
    for part in ("redis.internal:6380", "'fleet-exporter'", "LINDEX", "fleet:q:{fleet.connect}"):
        assert part in message
    assert "secret" not in message
    assert not caplog.records  # the caller reports it


def test_naming__other_errors_pass_unchanged() -> None:
    with pytest.raises(rx.ResponseError) as raised, acl.naming("", "GET"):
        raise rx.ResponseError("WRONGTYPE")
    assert type(raised.value) is rx.ResponseError


def test_naming__a_refusal_wrapped_by_the_cluster_client_names_the_refused_command() -> None:
    with pytest.raises(RedisPermissionError, match="refused CLUSTER SLOTS to user 'w'"):
        with acl.naming("redis://w:p@h:7000", "MGET", "fleet:hb:{hb}:*"):
            try:
                raise BaseParser.parse_error(
                    "NOPERM this user has no permissions to run the 'cluster|slots' command")
            except rx.ResponseError:
                raise rx.RedisClusterException(  # noqa: B904 (redis-py raises it so)
                    "Cluster mode is not enabled on this node")
