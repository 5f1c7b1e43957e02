"""Certificate and AUTH failures as one line: a configuration error, not an outage.

A server whose certificate fails the check (signed by a CA not in the bundle, issued for another
host name), a client speaking TLS to a plain port, or AUTH refused (WRONGPASS, NOAUTH) will fail
the same way on every try: the layer, the relay's redis-py clients and ``wait-for-redis`` raise
:class:`RedisAccessError` at once instead of retrying as if Redis were away. Its message names
the URL (no password), the command and the cause:

    Redis rediss://fleet-worker@10.0.0.5:6379: TLS handshake for HELLO failed: certificate
    verify failed: unable to get local issuer certificate; ...
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator

from redis import exceptions as rx

from ..exceptions import RedisAccessError

_VERIFY = re.compile(r"certificate verify failed: (.+?)(?: \(_ssl\.c:\d+\))?\.?$", re.M)
_AUTH_REPLY = re.compile(r"^(WRONGPASS|NOAUTH|invalid username-password|"
                         r"Client sent AUTH|AUTH <password> called)")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def tls_cause(exc: BaseException) -> str | None:
    """What failed in a TLS handshake that no retry mends, or None (e.g. a reset)."""
    for error in _chain(exc):
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {error.verify_message.rstrip('.')}"
        if isinstance(error, ssl.SSLError) and \
                getattr(error, "reason", None) == "WRONG_VERSION_NUMBER":
            return "the server does not speak TLS on this port (SSL: WRONG_VERSION_NUMBER)"
        found = _VERIFY.search(str(error))
        if found:  # redis-py keeps only the text of the ssl error
            return f"certificate verify failed: {found.group(1).rstrip('.')}"
    return None


def auth_cause(exc: BaseException) -> str | None:
    """The server's reply when ``exc`` is AUTH refused (or a command that needs one first)."""
    for error in _chain(exc):
        # redis-py drops the reply's code (WRONGPASS, NOAUTH) from AuthenticationError's text.
        if isinstance(error, rx.AuthenticationError) or (
                isinstance(error, rx.ResponseError) and _AUTH_REPLY.search(str(error))):
            return str(error).rstrip(".")
    return None


def tls_error(url: str, command: str, ca_file: str | None,
              exc: BaseException) -> RedisAccessError | None:
    """The one-line error if ``exc`` is a TLS failure of ``command``'s connection to ``url``
    (shown without its password), else None."""
    cause = tls_cause(exc)
    if cause is None:
        return None
    bundle = ca_file or "the system's CA certificates"
    return RedisAccessError(
        f"Redis {url}: TLS handshake for {command} failed: {cause}; the server's certificate "
        f"must be signed by a CA in {bundle} and name the URL's host "
        "(CHANNELS_FLEET_REDIS_CA_FILE sets the bundle)"
    )


def auth_error(url: str, user: str | None, command: str,
               exc: BaseException) -> RedisAccessError | None:
    """The one-line error if ``exc`` is the server refusing ``user`` (AUTH), else None."""
    cause = auth_cause(exc)
    if cause is None:
        return None
    who = f"user {user!r}" if user else "the default user"
    if command != "AUTH" and "authenticat" not in cause.lower():  # not NOAUTH: redis-py's AUTH
        command = f"AUTH (before {command})"
    return RedisAccessError(
        f"Redis {url} refused {command} to {who}: {cause}; check "
        "CHANNELS_FLEET_REDIS_USERNAME and CHANNELS_FLEET_REDIS_PASSWORD (or the URL's user "
        "and password) against the server's ACL users"
    )


def access_error(url: str, user: str | None, command: str, ca_file: str | None,
                 exc: BaseException) -> RedisAccessError | None:
    """:func:`tls_error` or :func:`auth_error`, whichever ``exc`` is; None for neither."""
    return tls_error(url, command, ca_file, exc) or auth_error(url, user, command, exc)
