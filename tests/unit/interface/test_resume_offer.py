"""The interface reads a resume offer: the app sees its own subprotocols only; tokens checked."""

from __future__ import annotations

import pytest

from channels_fleet.interface.resume_offer import (
    SELECTED,
    app_scope,
    negotiate,
    resume_key,
)
from channels_fleet.resume import envelope
from channels_fleet.resume.token import SessionKey

KEY = SessionKey(b"k" * 32)


def scope(subprotocols: list[str], origin: str | None = "https://chat.example.com") -> dict:
    headers = [(b"host", b"chat.example.com")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if subprotocols:
        headers.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode()))
    return {"type": "websocket", "path": "/ws/", "headers": headers,
            "subprotocols": subprotocols}


def protocol_header(seen: dict) -> list[bytes]:
    return [v for k, v in seen["headers"] if k == b"sec-websocket-protocol"]


def test_new_session__the_app_sees_its_own_subprotocols_only() -> None:
    offer, seen = negotiate(scope(envelope.offer(["chat.v2", "chat.v1"])), KEY)
    assert offer is not None
    assert (offer.session_id, offer.token, offer.last, offer.forged) == (None, None, 0, False)
    assert offer.app == ("chat.v2", "chat.v1")
    assert offer.origin == "https://chat.example.com"
    assert seen["subprotocols"] == ["chat.v2", "chat.v1"]
    assert protocol_header(seen) == [b"chat.v2, chat.v1"]


def test_resume__a_token_this_fleet_issued_names_its_session() -> None:
    session_id, token = KEY.issue()
    offer, seen = negotiate(scope(envelope.offer(["chat.v2"], token, 41)), KEY)
    assert offer is not None
    assert (offer.session_id, offer.token, offer.last, offer.forged) == (session_id, token, 41,
                                                                        False)
    assert seen["subprotocols"] == ["chat.v2"]
    assert all(token.encode() not in value for _, value in seen["headers"])


def test_resume__a_forged_token_is_a_new_session_never_a_refusal() -> None:
    _, token = SessionKey(b"another fleet's key, 32 bytes!!!").issue()
    offer, seen = negotiate(scope(envelope.offer([], token, 3)), KEY)
    assert offer is not None
    assert (offer.session_id, offer.token, offer.last, offer.forged) == (None, None, 0, True)
    assert seen["subprotocols"] == []
    assert protocol_header(seen) == []  # nothing of the app's: no header at all


def test_resume__a_token_of_the_right_shape_but_wrong_length_is_forged() -> None:
    offer, _ = negotiate(scope(envelope.offer([], "A" * 24, 3)), KEY)
    assert offer is not None and offer.forged and offer.session_id is None


def test_resume__a_session_offered_without_the_protocol_is_ignored_and_stripped() -> None:
    _, token = KEY.issue()
    offered = [f"{envelope.SESSION_PREFIX}{token}.3", "chat.v2"]
    offer, seen = negotiate(scope(offered), KEY)
    assert offer is None
    assert seen["subprotocols"] == ["chat.v2"]


def test_resume_off__a_plain_socket_but_the_fleets_names_still_stripped() -> None:
    _, token = KEY.issue()
    offer, seen = negotiate(scope(envelope.offer(["chat.v2"], token, 1)), None)
    assert offer is None
    assert seen["subprotocols"] == ["chat.v2"]
    assert protocol_header(seen) == [b"chat.v2"]


def test_plain_socket__the_scope_is_untouched() -> None:
    original = scope(["chat.v2"])
    offer, seen = negotiate(original, KEY)
    assert offer is None and seen is original
    offer, seen = negotiate({"type": "websocket", "headers": []}, KEY)
    assert offer is None and "subprotocols" not in seen


def test_negotiate__does_not_change_the_servers_scope() -> None:
    original = scope(envelope.offer(["chat.v2"]))
    before = {**original, "headers": list(original["headers"])}
    negotiate(original, KEY)
    assert original == before


def test_negotiate__no_origin_is_empty() -> None:
    offer, _ = negotiate(scope(envelope.offer(), origin=None), KEY)
    assert offer is not None and offer.origin == ""


def test_app_scope__other_headers_kept_in_order() -> None:
    seen = app_scope(scope(["a", "b"]), ["b"])
    assert [k for k, _ in seen["headers"]] == [b"host", b"origin", b"sec-websocket-protocol"]
    assert protocol_header(seen) == [b"b"]


def test_resume_key__empty_is_off_short_is_refused() -> None:
    assert resume_key("") is None
    assert isinstance(resume_key("s" * 32), SessionKey)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        resume_key("short")


def test_selected__is_the_protocols_name() -> None:
    assert SELECTED == "channels-fleet.resume.v1"
