"""Scenario 1: a worker killed (kill -9) under load.

200 sockets over 3 workers, 20 messages/s each (4,000 echoes/s); one worker is killed: the
sockets it owned get 1012 within 5 s (re-homing off) or stay open, re-homed, with every message
echoed (on: what the dead worker had not acknowledged is replayed; ``lost_silently``, messages
never echoed on a socket that no close code ended, must be 0); the others lose 0 messages and
keep their order, and connects sent around the kill are served by the surviving workers.

Server to client as well: 21 more sockets (more if the killed worker got fewer than 3 of
them) are members of a room (the split project's ``RoomConsumer``) on the 3 workers, and this
process sends numbered messages to the room's group (``group_send``, 20 a second) throughout.
``missed``: (message, member) pairs whose group_send returned and that never reached a member
whose socket stayed open (after up to 10 s for late ones), must be 0: the killed worker's
members, re-homed, miss nothing sent while their consumers moved (re-homing on), and the other
members miss nothing at all. The killed worker's members are re-homed (on: still open) or
closed with 1012 (off).
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from relfigures import Figures, full_run, rehome_modes
from relload import open_echoes, settle, whoami, ws
from support.room import Room
from support.scrape import metric
from websockets.exceptions import ConnectionClosed

from channels_fleet.dev.stack import FleetStack

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(240)]

SOCKETS = int(os.environ.get("RELIABILITY_KILL_SOCKETS", "200"))
RATE = 20.0  # messages per second per socket
MEMBERS = 21  # room members (RoomConsumer), spread over the 3 workers
GROUP_RATE = 20.0  # group messages per second to the room, throughout the load


async def connect_one(fleet_iface: object) -> tuple[str, int | None, float]:
    """Open one socket around the kill: ('served', pid), ('served after a loss', pid) when the
    first message went to the dying worker and the socket, re-homed, answers the next one, or
    ('closed', code)."""
    started = time.monotonic()
    try:
        async with ws(fleet_iface, "/ws/echo/late/") as sock:  # type: ignore[arg-type]
            try:
                return "served", await whoami(sock, 10), time.monotonic() - started
            except TimeoutError:
                pid = await whoami(sock, 10)
                return "served after a loss", pid, time.monotonic() - started
    except ConnectionClosed as exc:
        return "closed", exc.rcvd.code if exc.rcvd else 1006, time.monotonic() - started
    except Exception as exc:
        return f"failed: {exc!r}", None, time.monotonic() - started


def modes() -> list[str]:
    # make test runs the 1012 mode only (the re-homed one adds half a minute, and issue 9's own
    # tests cover re-homing after kill -9 at a lighter load); make test-reliability runs both.
    return rehome_modes() if full_run() else ["off"]


@pytest.mark.parametrize("rehome", modes())
async def test_worker_kill9_under_load(fleet: FleetStack, figures: Figures, rehome: str) -> None:
    env = {"CHANNELS_FLEET_REHOME": rehome}
    iface, workers = fleet.start(workers=3, **env)
    echoes = await open_echoes(iface, SOCKETS)
    victim = workers[0]
    owned = [e for e in echoes if e.owner == victim.pid]
    others = [e for e in echoes if e.owner != victim.pid]
    assert owned and others, "the victim worker owns no socket"
    room = Room.of(fleet)
    homes: list[int] = []
    # Workers claim connections from one queue, not evenly: open more until the victim has a
    # few (then the count below has some re-homed members to count).
    while len(room.members) < 4 * MEMBERS and (not homes or homes.count(victim.pid) < 3):
        opened = await room.open(iface, MEMBERS if not homes else 5)
        homes += await asyncio.gather(*(m.ask_owner() for m in opened))
    members = room.members
    victim_members = [m for m, pid in zip(members, homes, strict=True) if pid == victim.pid]
    other_members = [m for m, pid in zip(members, homes, strict=True) if pid != victim.pid]
    assert victim_members and other_members, f"room members' workers: {homes}"
    readers = [asyncio.create_task(e.reader()) for e in echoes]
    stop = asyncio.Event()
    pacers = [asyncio.create_task(e.pace(RATE, stop)) for e in echoes]
    room.start(GROUP_RATE)
    load_started = time.monotonic()
    await asyncio.sleep(3)  # steady load first

    before = [asyncio.create_task(connect_one(iface)) for _ in range(20)]
    await asyncio.sleep(0.05)
    victim.popen.kill()
    killed = time.monotonic()
    at_kill = {id(e): e.sent for e in owned}
    after = [asyncio.create_task(connect_one(iface)) for _ in range(20)]

    # The victim's sockets: 1012 (re-homing off) or still answering (on), within 5 s.
    deadline = killed + 8
    while time.monotonic() < deadline and any(e.closed_at is None for e in owned):
        if rehome == "on":
            break
        await asyncio.sleep(0.05)
    # Load on for 5 s after the kill (8 s when re-homing: the re-homed sockets must echo again).
    await asyncio.sleep(max(0.0, killed + (5 if rehome == "off" else 8) - time.monotonic()))
    stop.set()
    await asyncio.gather(*pacers)
    await room.stop()
    achieved = sum(e.sent for e in echoes) / (time.monotonic() - load_started)
    await settle(others, 15)
    before_results = await asyncio.gather(*before)
    after_results = await asyncio.gather(*after)

    survivors_lost = sum(e.lost for e in others)
    survivors_closed = sum(1 for e in others if e.closed_at is not None)
    disorder = sum(e.out_of_order for e in others)
    # A connect sent after the kill is served by a survivor. One sent just before may have
    # been taken by the victim: claimed, it dies with it (1012; re-homed with re-homing on,
    # its message in flight replayed); taken but never claimed, its connect goes out again at the
    # claim deadline and a survivor serves it. Anything else is a failure.
    served = [r for r in before_results + after_results if r[0].startswith("served")]
    served_by_victim = [r for r in served if r[1] == victim.pid]
    after_wrong = [r for r in after_results if r[0] != "served" or r[1] == victim.pid]
    allowed = {("closed", 1012)} if rehome == "off" else set()
    before_wrong = [r for r in before_results if not r[0].startswith("served")
                    and (r[0], r[1]) not in allowed]
    refused = [r for r in before_results if not r[0].startswith("served")]

    # Never echoed on a socket no close code ended: what the client cannot know it lost.
    await settle(owned, 10)
    lost_silently = sum(e.lost for e in owned if e.closed_at is None)
    duplicated = sum(len(e.got) - len(set(e.got)) for e in owned)
    replayed = metric(iface, "channels_fleet_replayed_frames_total", cause="dead")
    possible = metric(iface, "channels_fleet_replay_duplicates_possible_total", cause="dead")
    counts = (f"lost_silently={lost_silently} replayed={replayed:.0f} "
              f"duplicated={duplicated} (duplicates possible: {possible:.0f})")
    if rehome == "off":
        codes = [e.code for e in owned]
        times = [e.closed_at - killed for e in owned if e.closed_at is not None]
        worst = max(times) if times else float("inf")
        ok_owned = codes == [1012] * len(owned) and worst <= 5.0 and lost_silently == 0
        owned_result = (f"{codes.count(1012)}/{len(owned)} closed 1012, slowest "
                        f"{worst:.2f} s after the kill; {counts}")
    else:
        # Re-homed: the socket stays open and echoes again. Its delay: from the kill to the
        # first echo of a message sent after the kill.
        delays = []
        for e in owned:
            after = [t for n, t in zip(e.got, e.times, strict=True) if n >= at_kill[id(e)]]
            delays.append(min(after) - killed if after else float("inf"))
        worst = max(delays)
        still_open = sum(e.closed_at is None for e in owned)
        ok_owned = still_open == len(owned) and worst <= 5.0 and lost_silently == 0
        owned_result = (f"{still_open}/{len(owned)} still open (re-homed), echoing again at "
                        f"most {worst:.2f} s after the kill; {counts}, of their "
                        f"{sum(e.sent for e in owned)} messages")

    figures.record(
        "1. worker kill -9 under load",
        f"{len(echoes)} sockets, 1 interface, 3 workers, {RATE:.0f} msg/s each "
        f"(achieved {achieved:.0f} msg/s in total); kill -9 of the worker owning "
        f"{len(owned)}; 40 connects around the kill; CHANNELS_FLEET_REHOME={rehome}",
        "victim's sockets: close code and time after the kill; messages lost silently "
        "(never echoed, no close code), replayed, echoed twice",
        owned_result, ok_owned, owned=len(owned), worst_s=round(worst, 2),
        lost_silently=lost_silently, replayed=replayed, duplicated=duplicated)
    figures.record(
        "1. worker kill -9 under load", f"the {len(others)} sockets on the 2 other workers",
        "messages sent vs echoed back (and order), sockets closed",
        f"{survivors_lost} lost of {sum(e.sent for e in others)}, {disorder} out of order, "
        f"{survivors_closed} closed", survivors_lost == 0 and survivors_closed == 0
        and disorder == 0, lost=survivors_lost, sent=sum(e.sent for e in others))
    # Server to client: group messages the room's open members never got.
    await room.settle(10)
    missed_moved = room.missed(victim_members)
    missed_others = room.missed(other_members)
    member_codes = sorted(m.code for m in members if m.code is not None)
    moved_open = len(room.open_members(victim_members))
    if rehome == "off":
        members_as_expected = [m.code for m in victim_members] == [1012] * len(victim_members)
        moved_result = f"{len(victim_members)} closed 1012 as expected: {members_as_expected}"
    else:  # re-homed: still open, or the count below would count nothing for them
        members_as_expected = moved_open == len(victim_members)
        moved_result = f"{moved_open}/{len(victim_members)} still open (re-homed)"
    others_open = len(room.open_members(other_members)) == len(other_members)
    ok_room = (missed_moved == 0 and missed_others == 0 and members_as_expected
               and others_open)
    room_result = (f"{missed_moved} missed by the killed worker's members ({moved_result}), "
                   f"{missed_others} by the other {len(other_members)} members, of "
                   f"{len(room.sent)} messages; closes {member_codes}")
    if missed_moved or missed_others:
        room_result += f"; e.g. {room.examples()}"
    figures.record(
        "1. worker kill -9 under load",
        f"{len(members)} room members (RoomConsumer), {len(victim_members)} of them on the "
        f"killed worker; {GROUP_RATE:.0f} group messages/s to the room (group_send) "
        f"throughout; CHANNELS_FLEET_REHOME={rehome}",
        "server to client: group messages sent (group_send returned) that never reached a "
        "member whose socket stayed open, message x member, after up to 10 s",
        room_result, ok_room, missed=missed_moved + missed_others, missed_moved=missed_moved,
        missed_others=missed_others, group_sent=len(room.sent), members=len(members),
        members_moved=len(victim_members))
    figures.record(
        "1. worker kill -9 under load", "40 new connects, 20 just before and 20 after the kill",
        "after: served by a survivor; before: served, or closed 1012 as the victim's",
        f"{sum(r[0] == 'served' and r[1] != victim.pid for r in after_results)}/20 after the "
        f"kill served by survivors; of the 20 before it, {len(served_by_victim)} answered by "
        f"the victim, {sum(r[0] == 'served after a loss' for r in before_results)} re-homed "
        f"after losing their first message, {len(refused)} closed "
        f"{sorted(str(r[1]) for r in refused)}",
        not after_wrong and not before_wrong, refused=len(refused))

    for e in echoes:
        await e.sock.close()
    await asyncio.gather(*readers)
    await room.close()
    assert ok_owned, owned_result
    assert survivors_lost == 0 and survivors_closed == 0 and disorder == 0, (
        survivors_lost, survivors_closed, disorder)
    assert not after_wrong, after_wrong
    assert not before_wrong, before_wrong
    assert ok_room, room_result
