"""One session's sequence state: Outbox (bounded, replays) and Inbox (in order, ack timing)."""

from __future__ import annotations

import pytest

from channels_fleet.resume.buffers import Inbox, Outbox
from channels_fleet.resume.envelope import ACK_AFTER_S, ACK_EVERY, ProtocolError


def test_outbox__numbers_from_one_and_drops_what_is_acked() -> None:
    out = Outbox(max_frames=10, max_bytes=1000)
    assert [out.add(p) for p in ("a", b"bb", "ccc")] == [1, 2, 3]
    out.ack(2)
    assert out.unacked() == [(3, "ccc")]
    assert (len(out), out.size) == (1, 3)


def test_outbox__stale_ack_ignored_future_ack_is_protocol_error() -> None:
    out = Outbox(max_frames=10, max_bytes=1000)
    out.add("a")
    out.add("b")
    out.ack(2)
    out.ack(1)
    assert out.acked == 2
    with pytest.raises(ProtocolError, match="ack 3 of frames never sent"):
        out.ack(3)


def test_outbox__replays_past_the_peers_ack() -> None:
    out = Outbox(max_frames=10, max_bytes=1000)
    for p in "abcd":
        out.add(p)
    out.ack(1)
    assert out.can_replay(2)
    assert out.unacked(2) == [(3, "c"), (4, "d")]


def test_outbox__bound_on_frames_drops_oldest_and_remembers() -> None:
    out = Outbox(max_frames=3, max_bytes=1000)
    for p in "abcde":
        out.add(p)
    assert [s for s, _ in out.unacked()] == [3, 4, 5]
    assert out.lost == 2
    assert not out.can_replay(1)  # frame 2 is gone and the peer lacks it
    assert out.can_replay(2)  # the peer had it: nothing lost after all


def test_outbox__bound_on_bytes_counts_utf8() -> None:
    out = Outbox(max_frames=100, max_bytes=4)
    out.add("é")  # 2 bytes
    out.add("é")
    assert out.size == 4 and out.lost == 0
    out.add("x")
    assert out.size == 3 and out.lost == 1


def test_outbox__a_frame_over_the_byte_bound_is_not_kept() -> None:
    out = Outbox(max_frames=100, max_bytes=4)
    assert out.add(b"12345") == 1
    assert (len(out), out.lost) == (0, 1)


def test_outbox__cannot_replay_before_an_ack_it_already_dropped() -> None:
    out = Outbox(max_frames=10, max_bytes=1000)
    for p in "abc":
        out.add(p)
    out.ack(2)
    assert not out.can_replay(1)  # the server went back on its ack
    assert not out.can_replay(4)  # past what was sent


def test_outbox__reset_counts_the_unacknowledged() -> None:
    out = Outbox(max_frames=2, max_bytes=1000)
    for p in "abcd":
        out.add(p)
    out.ack(1)
    assert out.reset() == 3
    assert out.add("new") == 1


def test_outbox__refuses_empty_bounds() -> None:
    with pytest.raises(ValueError, match="max_frames >= 1"):
        Outbox(max_frames=0, max_bytes=1)


def test_inbox__in_order_duplicates_dropped_gap_is_protocol_error() -> None:
    inbox = Inbox()
    assert inbox.accept(1, now=0.0)
    assert inbox.accept(2, now=0.0)
    assert not inbox.accept(2, now=0.0)
    assert not inbox.accept(1, now=0.0)
    with pytest.raises(ProtocolError, match="frame 4 after frame 2: 1 missing"):
        inbox.accept(4, now=0.0)


def test_inbox__ack_due_after_ack_every_frames() -> None:
    inbox = Inbox()
    for seq in range(1, ACK_EVERY):
        inbox.accept(seq, now=0.0)
        assert not inbox.ack_due(0.0)
    inbox.accept(ACK_EVERY, now=0.0)
    assert inbox.ack_due(0.0)
    assert inbox.ack() == ACK_EVERY
    assert not inbox.ack_due(0.0)


def test_inbox__ack_due_when_the_oldest_is_ack_after_old() -> None:
    inbox = Inbox()
    assert inbox.ack_at() is None
    inbox.accept(1, now=10.0)
    inbox.accept(2, now=10.5)
    assert inbox.ack_at() == 10.0 + ACK_AFTER_S
    assert not inbox.ack_due(10.0 + ACK_AFTER_S - 0.01)
    assert inbox.ack_due(10.0 + ACK_AFTER_S)
    inbox.ack()
    assert inbox.ack_at() is None and not inbox.ack_due(100.0)
