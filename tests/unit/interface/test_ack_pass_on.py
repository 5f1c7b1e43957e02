"""interface/client.py's Connections.on_ack: the counts an owner sends for a session's forwarder
(worker/session.HomeCounts) ride with the output they cover and go on to that forwarder, as the
owner's; the rest stay here."""

from __future__ import annotations

from typing import Any

from channels_fleet.interface.client import Connections

ME, HOME, ADOPTER, OWNER = "fleet.iface.me!1", "fleet.iface.home!2", "fleet.worker.a!3", "w!4"


def connections() -> tuple[Connections, list[tuple[str, list[Any], str]]]:
    passed: list[tuple[str, list[Any], str]] = []

    def pass_on(forwarder: str, counts: list[Any], owner: str) -> bool:
        if forwarder == ME:
            return False
        passed.append((forwarder, counts, owner))
        return True

    return Connections(lambda conn: None, pass_on), passed


async def test_entries_naming_a_forwarder_go_to_it__grouped__as_the_sender_s() -> None:
    conns, passed = connections()
    await conns.on_ack("", [["c~1", 3, 3], ["h~1", 2, 4, HOME], ["h~2", 1, 1, ADOPTER],
                            ["h~3", 5, 5, HOME]], OWNER)
    assert passed == [(HOME, [["h~1", 2, 4], ["h~3", 5, 5]], OWNER),
                      (ADOPTER, [["h~2", 1, 1]], OWNER)]


async def test_passed_on_again__the_item_names_the_owner() -> None:
    conns, passed = connections()
    await conns.on_ack(OWNER, [["h~1", 2, 2, HOME]], "fleet.iface.other!9")
    assert passed == [(HOME, [["h~1", 2, 2]], OWNER)]


async def test_for_this_interface__kept_here__a_bad_item_passes_nothing() -> None:
    conns, passed = connections()
    await conns.on_ack("", [["h~1", 2, 2, ME]], OWNER)
    await conns.on_ack("", [["h~1", 2, 2, HOME], ["h~2", -1, 0, HOME]], OWNER)
    await conns.on_ack("", [["h~1", 2, 2, 7]], OWNER)
    assert passed == []
