"""Key layout and element format: every call's keys share one slot; elements round-trip."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels_fleet.layers.keys import (
    channel_key,
    group_key,
    non_local_name,
    pack_element,
    slot_of,
    unpack_element,
)
from channels_fleet.layers.scripts import ALL, GROUP_ADD, GROUP_MEMBERS, SEND
from channels_fleet.layers.sender import Item, Sender

NAMES = st.from_regex(r"[a-zA-Z0-9\-_.]{1,40}", fullmatch=True)


def test_channel_key__hash_tag_is_the_channel():
    assert channel_key("asgi", "chat.room") == "asgi:q:{chat.room}"


def test_channel_key__process_local_channels_share_their_prefix_list():
    assert channel_key("fleet", "w.abc!1") == channel_key("fleet", "w.abc!2") == "fleet:q:{w.abc!}"
    assert non_local_name("w.abc!xyz") == "w.abc!"
    assert non_local_name("plain") == "plain"


def test_work_queue_key__is_the_pinned_name_keda_reads():
    assert channel_key("fleet", "fleet.connect") == "fleet:q:{fleet.connect}"


def test_group_key__hash_tag_is_the_group():
    assert group_key("asgi", "room-1") == "asgi:g:{room-1}"


@given(prefix=NAMES, channel=NAMES, other=NAMES)
def test_slot__key_slot_depends_only_on_the_hash_tag(prefix, channel, other):
    local = f"{channel}!"
    assert slot_of(channel_key(prefix, channel)) == slot_of(f"{{{channel}}}")
    assert slot_of(channel_key(prefix, local + other)) == slot_of(channel_key(prefix, local))
    assert slot_of(group_key(prefix, channel)) == slot_of(channel_key(prefix, channel))


@given(expires=st.integers(0, 2**50), channels=st.lists(NAMES, min_size=1, max_size=5),
       body=st.binary(max_size=200))
def test_element__round_trips_any_body(expires, channels, body):
    assert unpack_element(pack_element(expires, channels, body)) == (expires, channels, body)


def test_element__single_channel_form():
    element = pack_element(123, "a.b!c", b"x|y")
    assert element == b"123|a.b!c|x|y"
    assert unpack_element(element) == (123, ["a.b!c"], b"x|y")


def test_scripts__each_declares_numkeys_one_and_unique_sha():
    assert len({script.sha for script in ALL}) == len(ALL)
    assert {SEND.name, GROUP_ADD.name, GROUP_MEMBERS.name} == {s.name for s in ALL}


class _Router:
    def node_for(self, key):
        return None


class _Executor:
    router = _Router()


def test_sender_calls__every_script_call_touches_one_slot():
    """Every EVALSHA the sender builds names exactly one key, and elements never leak keys."""
    sender = Sender(_Executor(), 60_000)  # type: ignore[arg-type]
    channels = [f"room.{i}" for i in range(50)] + [f"w.x!{i}" for i in range(50)]
    items = [
        Item(channel_key("asgi", channel), pack_element(1, channel, b"m"), 10, None)  # type: ignore[arg-type]
        for channel in channels
    ]
    calls = sender._calls(items)
    # process-local channels of one prefix collapse into one call on one LIST
    assert len(calls) == 51
    for op, chunk in calls:
        assert op.args[0] == "EVALSHA" and op.args[2] == 1
        assert op.args[3] == op.key
        slots = {slot_of(op.key)} | {slot_of(item.key) for item in chunk}
        assert len(slots) == 1


@pytest.mark.parametrize("script", ALL, ids=lambda s: s.name)
def test_scripts__use_only_keys_from_keys_table(script):
    # Cluster routing needs every key in KEYS: the scripts never build key names themselves.
    assert "KEYS[1]" in script.source
    assert "KEYS[2]" not in script.source
    assert ".. ':" not in script.source
