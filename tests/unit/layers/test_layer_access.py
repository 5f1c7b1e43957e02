"""Which failures are a configuration error (certificate, AUTH) and how their line reads."""

from __future__ import annotations

import ssl

from redis import exceptions as rx

from channels_fleet.layers.access import access_error, auth_error, tls_cause

URL = "rediss://fleet-web@10.0.0.5:6379"


def test_certificate_failure_wrapped_by_redis_py__the_cause_from_its_text() -> None:
    exc = rx.ConnectionError("Error 1 connecting to 10.0.0.5:6379. [SSL: CERTIFICATE_VERIFY_"
                             "FAILED] certificate verify failed: unable to get local issuer "
                             "certificate (_ssl.c:1006).")
    error = access_error(URL, "fleet-web", "CLUSTER SLOTS", "/etc/redis-ca/ca.pem", exc)
    assert str(error).startswith(
        f"Redis {URL}: TLS handshake for CLUSTER SLOTS failed: certificate verify failed: "
        "unable to get local issuer certificate; the server's certificate must be signed by a "
        "CA in /etc/redis-ca/ca.pem")


def test_plain_port_spoken_to_in_tls__named() -> None:
    exc = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    exc.reason = "WRONG_VERSION_NUMBER"
    assert "does not speak TLS" in (tls_cause(exc) or "")


def test_outages_are_not_configuration_errors() -> None:
    for exc in (rx.ConnectionError("Connection refused"), ssl.SSLEOFError(8, "EOF"),
                rx.TimeoutError("timeout"), rx.ResponseError("CLUSTERDOWN")):
        assert access_error(URL, "fleet-web", "HELLO", None, exc) is None


def test_wrong_password__auth_before_the_command() -> None:
    exc = rx.AuthenticationError("invalid username-password pair or user is disabled.")
    assert str(auth_error(URL, "fleet-web", "HELLO", exc)).startswith(
        f"Redis {URL} refused AUTH (before HELLO) to user 'fleet-web': invalid "
        "username-password pair or user is disabled; check CHANNELS_FLEET_REDIS_USERNAME")


def test_no_password_where_one_is_needed__the_command_to_the_default_user() -> None:
    exc = rx.AuthenticationError("Authentication required.")
    assert str(auth_error("redis://redis:6379", None, "HELLO", exc)).startswith(
        "Redis redis://redis:6379 refused HELLO to the default user: Authentication required;")
