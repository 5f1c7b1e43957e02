"""Browser tests of the demo through the split: Playwright (PyPI wheel, its own driver)
driving Debian's Chromium (``make browser``; never a browser download), real interface, worker
and web processes on the session Redis Cluster.

1. Alice and Bob sign in on the web tier (two browser contexts), open the same room on the
   interface, see each other's messages and a bound board card; then Bob's context loses
   ``window.WebSocket`` and he keeps chatting over long polling.
2. Alice (staff) watches the fleet view while both chat; she rolls the workers with the
   page's button (``make run``'s control socket, served here by the test): the fleet view
   shows the new workers and the re-homes, the room's sockets stay open and messages still
   arrive. The room is also looked at on a phone-width screen.
3. The interfaces are rolled (``make roll-interfaces``' roll, through the same control
   socket) while Bob talks to Alice: each page's session gets B and resumes on the new
   interface of its port; every message arrives, in order, the member list never changes,
   nobody is disconnected.

Screenshots go to ``.run/browser/``."""

from __future__ import annotations

import contextlib
import itertools
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.demo import PASSWORD, PROJECT, WORKER, demo_stack

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.ports import free_ports
from channels_fleet.dev.resume_key import resume_key
from channels_fleet.dev.stack import CLI

sys.path.insert(0, str(PROJECT))  # the demo's own roll (fleetview/roll.py), as `make run` has it
from fleetview.roll import (  # noqa: E402
    ROLL_INTERFACES,
    SOCKET_NAME,
    InterfaceRoll,
    RollControl,
    WorkerRoll,
    request_roll,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(240)]

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / ".run" / "browser"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 15_000
ROLL_MS = 120_000
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WORKER_SHOWN = "/^w\\d+$/.test(document.getElementById('worker').textContent)"
MEMBERS = ("[...document.querySelectorAll('#members .name')].map((e) => e.textContent)"
           ".join(', ')")


@pytest.fixture(scope="module")
def demo(redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The demo as ``make run`` has it: 2 interfaces (i1, i2), 2 workers (w1, w2), and the
    control socket ``make run`` listens on, so the fleet view's roll button works: each roll
    starts w3, w4 ... and stops the old ones (an interface roll: i3, i4 ... on their ports)."""
    tmp = tmp_path_factory.mktemp("browser-demo")
    control_path = tmp / SOCKET_NAME
    # The long poll answers 204 after 5 s here, so a poll cycles during the test.
    sites = demo_stack(redis_cluster.urls, tmp, poll_timeout=5.0, workers=2, interfaces=2,
                       CHAT_ROLL_SOCKET=str(control_path))
    site = next(sites)
    names = itertools.count(3)

    def start_worker() -> Any:
        return site.stack.worker(*WORKER[1:], app=WORKER[0],
                                 CHANNELS_FLEET_NAME=f"w{next(names)}")

    ifaces = itertools.count(3)
    key = resume_key(tmp)  # the one demo_stack gave i1 and i2

    def start_interface(port: int) -> Any:
        metrics, n = free_ports(1)[0], next(ifaces)
        return site.stack.spawn(
            "interface", [*CLI, "interface", "--port", str(port)], port=port,
            metrics_port=metrics, name=f"interface-{n}", CHANNELS_FLEET_METRICS_PORT=str(metrics),
            CHANNELS_FLEET_NAME=f"i{n}", CHANNELS_FLEET_RESUME_KEY=key).wait_ready()

    busy = threading.Lock()
    control = RollControl(control_path, WorkerRoll(site.stack, start_worker, busy),
                          InterfaceRoll(site.stack, start_interface, busy)).start()
    site.control_path = control_path
    try:
        yield site
    finally:
        control.stop()
        sites.close()  # the stack stops


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: run `make browser`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(browser: Any, demo: Any, user: str, websockets: bool = True,
            viewport: dict[str, int] = DESKTOP) -> Any:
    context = browser.new_context(viewport=viewport)
    if not websockets:
        # As behind a proxy that blocks WebSockets: the page must fall back to long polling.
        context.add_init_script("delete window.WebSocket;")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"http://127.0.0.1:{demo.web}/accounts/login/")
    page.fill("#id_username", user)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"http://127.0.0.1:{demo.web}/")
    assert f"Signed in as {user}" in page.inner_text(".who")
    return page


def enter(page: Any, demo: Any, room: str, port: int = 0) -> None:
    page.goto(f"http://127.0.0.1:{port or demo.port}/chat/{room}/")
    page.wait_for_function("document.getElementById('transport').textContent === 'websocket'")
    page.wait_for_function(WORKER_SHOWN)


def say(page: Any, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")


def sees(page: Any, user: str, text: str, timeout: float = WAIT_MS) -> None:
    """A message from ``user`` with ``text`` is in the room's list, with its author and time
    (shown above the first of an author's consecutive messages)."""
    message = page.locator("#log li.msg", has=page.locator(".author", has_text=user))
    message.filter(has_text=text).first.wait_for(timeout=timeout)
    assert message.filter(has_text=text).first.locator("time").get_attribute("datetime")


def text_of(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text())


def test_two_browsers_chat_share_the_board_and_fall_back_to_long_polling(
        demo: Any, chromium: Any) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    iface = f"http://127.0.0.1:{demo.port}"
    alice = sign_in(chromium, demo, "alice")
    bob = sign_in(chromium, demo, "bob")

    # The web tier's session cookie works on the interface's port (same host).
    for page in (alice, bob):
        enter(page, demo, "browser")
    # The live member list: each sees both.
    for page in (alice, bob):
        page.wait_for_function(f"{MEMBERS} === 'alice, bob'")
    say(alice, "hi bob")
    sees(bob, "alice", "hi bob")
    say(bob, "hi alice, what the heck")
    sees(alice, "bob", "hi alice, what the ****")  # through the moderation channel
    alice.screenshot(path=str(SHOTS / "1-room-websocket.png"), full_page=True)

    # The bound board: a card Alice adds shows up on Bob's board.
    for page in (alice, bob):
        page.goto(f"{iface}/board/")
        page.wait_for_function("document.getElementById('board-state').textContent === 'live'")
    title = f"card {time.time_ns()}"
    alice.fill(".card-add input[name=title]", title)
    alice.click(".card-add button")
    card = bob.locator("[data-column=todo] .card", has_text=title)
    card.wait_for()
    assert "alice" in card.inner_text()
    bob.screenshot(path=str(SHOTS / "2-board.png"), full_page=True)

    # Bob loses WebSockets: the room falls back to long polling, both ways, and says so.
    enter(alice, demo, "browser")
    bob.context.close()
    bob = sign_in(chromium, demo, "bob", websockets=False)
    bob.goto(f"{iface}/chat/browser/")
    bob.wait_for_function("document.getElementById('transport').textContent === 'long polling'")
    assert bob.evaluate("typeof window.WebSocket") == "undefined"
    assert bob.locator("#fallback").is_visible()
    assert "long polling" in text_of(bob, "#fallback").lower()
    say(bob, "no websocket here")
    sees(alice, "bob", "no websocket here")
    # A message sent between two polls is not kept (the demo's poll has no history): Alice
    # speaks until one reaches Bob's open poll.
    for n in range(10):
        say(alice, f"polled {n}")
        try:
            sees(bob, "alice", "polled", timeout=1500)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try again
            continue
    sees(bob, "alice", "polled")
    bob.wait_for_function(WORKER_SHOWN)
    bob.screenshot(path=str(SHOTS / "3-room-long-polling.png"), full_page=True)
    alice.screenshot(path=str(SHOTS / "4-room-alice.png"), full_page=True)
    for page in (alice, bob):
        page.context.close()


def workers_shown(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("#workers .proc", "els => els.map(e => e.dataset.name)"))


def test_fleet_view_watches_a_worker_roll__the_room_keeps_its_sockets(
        demo: Any, chromium: Any) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    iface = f"http://127.0.0.1:{demo.port}"
    alice = sign_in(chromium, demo, "alice")  # staff: she gets the roll button
    fleet = alice
    fleet.goto(f"{iface}/fleet/")
    fleet.wait_for_function("document.getElementById('live').textContent === 'live'")
    fleet.wait_for_function("document.querySelectorAll('#workers .proc').length === 2")
    before = workers_shown(fleet)
    assert before == ["w1", "w2"]
    assert fleet.eval_on_selector_all("#ifaces .proc", "els => els.map(e => e.dataset.name)") \
        == ["i1", "i2"]
    # The viewer's own socket: which interface and worker serve it.
    assert text_of(fleet, "#you").startswith("interface i1 \u2192 worker w")

    # Two members chat in a room, through both interfaces; Bob on a phone-width screen.
    room = alice.context.new_page()
    room.set_default_timeout(WAIT_MS)
    enter(room, demo, "roll")
    bob = sign_in(chromium, demo, "bob", viewport=PHONE)
    enter(bob, demo, "roll", port=demo.ports[1])
    bob.wait_for_function(f"{MEMBERS} === 'alice, bob'")
    say(bob, "before the roll")
    sees(room, "bob", "before the roll")
    fleet.wait_for_function("Number(document.getElementById('s-sockets').textContent) >= 3")

    # Roll the workers from the page; chat goes on while the sockets move.
    fleet.click("#roll-button")
    fleet.wait_for_function("document.getElementById('roll-said').textContent.startsWith('rolling')")
    n = 0
    deadline = time.monotonic() + ROLL_MS / 1000
    while time.monotonic() < deadline:
        shown = workers_shown(fleet)
        if not set(shown) & {"w1", "w2"} and len(shown) == 2:
            break
        say(bob, f"during the roll {n}")
        n += 1
        fleet.wait_for_timeout(700)
    assert workers_shown(fleet) == ["w3", "w4"]
    sees(room, "bob", f"during the roll {n - 1}")

    # Nobody was disconnected: the room's sockets stayed open, on a new worker, and talk.
    for page in (room, bob):
        page.wait_for_function("/^w[34]$/.test(document.getElementById('worker').textContent)")
        assert text_of(page, "#interface") in ("i1", "i2")
        assert text_of(page, "#disconnects") == "0"
        assert text_of(page, "#transport") == "websocket"
        assert text_of(page, "#rehomed").startswith(("1", "2"))
    say(bob, "after the roll")
    sees(room, "bob", "after the roll")
    say(room, "still here")
    sees(bob, "alice", "still here")
    # The fleet view saw it: every socket re-homed at least once (each sat on w1 or w2), no
    # disconnect, its own socket kept too.
    def rehomed() -> int:
        events = text_of(fleet, "#events")
        return sum(int(n) for n in re.findall(r"re-homed (\d+) socket", events))

    deadline = time.monotonic() + 5  # the interfaces' next heartbeats carry the last ones
    while rehomed() < 3 and time.monotonic() < deadline:
        fleet.wait_for_timeout(200)
    assert rehomed() >= 3
    assert text_of(fleet, "#s-closed") == "0"
    assert text_of(fleet, "#you-disconnects") == "0"
    events = text_of(fleet, "#events")
    assert "w3 (pid" in events and "w1 left" in events and "w2 left" in events
    fleet.screenshot(path=str(SHOTS / "fleet.png"), full_page=True)
    room.screenshot(path=str(SHOTS / "room.png"), full_page=True)
    bob.screenshot(path=str(SHOTS / "room-phone.png"), full_page=True)


def test_the_chat_keeps_every_message_and_its_members_while_the_interfaces_roll(
        demo: Any, chromium: Any) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    alice = sign_in(chromium, demo, "alice")
    enter(alice, demo, "iroll", port=demo.ports[0])
    bob = sign_in(chromium, demo, "bob")
    enter(bob, demo, "iroll", port=demo.ports[1])
    for page in (alice, bob):
        page.wait_for_function(f"{MEMBERS} === 'alice, bob'")
    say(bob, "before the interface roll")
    sees(alice, "bob", "before the interface roll")
    fleet = alice.context.new_page()
    fleet.set_default_timeout(WAIT_MS)
    fleet.goto(f"http://127.0.0.1:{demo.ports[1]}/fleet/")
    fleet.wait_for_function("document.getElementById('live').textContent === 'live'")

    # Roll i1 and i2 (make roll-interfaces) while Bob keeps talking.
    said: list[str] = []
    roll = threading.Thread(target=request_roll, args=(demo.control_path, said.append),
                            kwargs={"request": ROLL_INTERFACES})
    roll.start()
    n = 0
    deadline = time.monotonic() + ROLL_MS / 1000
    while roll.is_alive() and time.monotonic() < deadline:
        say(bob, f"during the interface roll {n}")
        n += 1
        assert alice.evaluate(MEMBERS) == "alice, bob"
        assert bob.evaluate(MEMBERS) == "alice, bob"
        alice.wait_for_timeout(700)
    roll.join(1)
    assert not roll.is_alive(), said
    assert said[-1].startswith("done: interfaces now i3, i4; "), said
    assert re.search(r"; [2-9]\d* sessions resumed", said[-1]), said  # at least the two pages

    # Nobody left the room or was disconnected: each page's session resumed (counted below).
    for page in (alice, bob):
        assert page.evaluate(MEMBERS) == "alice, bob"
        assert text_of(page, "#disconnects") == "0"
        assert text_of(page, "#transport") == "websocket"
    fleet.wait_for_function("document.getElementById('live').textContent === 'live'")
    fleet.wait_for_function(
        "[...document.querySelectorAll('#ifaces .proc')].map(e => e.dataset.name).join() "
        "=== 'i3,i4'", timeout=ROLL_MS)
    assert text_of(fleet, "#s-closed") == "0"

    # Every message Bob sent reached Alice, once each and in order.
    with contextlib.suppress(Exception):  # what is missing is asserted below
        sees(alice, "bob", f"during the interface roll {n - 1}")
    alice.screenshot(path=str(SHOTS / "5-room-interface-roll.png"), full_page=True)
    log = alice.eval_on_selector_all("#log li.msg", "els => els.map(e => e.textContent)")
    seen = [int(m) for m in re.findall(r"during the interface roll (\d+)", " ".join(log))]
    assert seen == list(range(n)), f"Alice saw {seen} of 0..{n - 1}"
    say(alice, "after the interface roll")
    sees(bob, "alice", "after the interface roll")
    sees(alice, "alice", "after the interface roll")
    # The page shows its resume count when a message comes (the client has no resume event):
    # read only now that both have had one since the roll.
    for page in (alice, bob):
        assert int(text_of(page, "#resumed")) >= 1
    for page in (alice, bob):
        page.context.close()
