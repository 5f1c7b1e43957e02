"""One browser test of the demo through the split: Playwright (PyPI wheel, its own driver)
driving Debian's Chromium (``make browser``; never a browser download), real interface, worker
and web processes on the session Redis Cluster.

Alice and Bob sign in on the web tier (two browser contexts), open the same room on the
interface, see each other's messages and a bound board card; then Bob's context loses
``window.WebSocket`` and he keeps chatting over long polling. Screenshots go to
``.run/browser/``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.demo import PASSWORD, demo_stack

from channels_fleet.devcluster import LocalRedis

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(180)]

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / ".run" / "browser"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 15_000
WORKER_SHOWN = "document.getElementById('worker').textContent.startsWith('fleet.worker.')"


@pytest.fixture(scope="module")
def demo(redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # The long poll answers 204 after 5 s here, so a poll cycles during the test.
    yield from demo_stack(redis_cluster.urls, tmp_path_factory.mktemp("browser-demo"),
                          poll_timeout=5.0)


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


def sign_in(browser: Any, demo: Any, user: str, websockets: bool = True) -> Any:
    context = browser.new_context()
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


def say(page: Any, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")


def sees(page: Any, line: str) -> None:
    page.locator("#log li", has_text=line).first.wait_for()


def test_two_browsers_chat_share_the_board_and_fall_back_to_long_polling(
        demo: Any, chromium: Any) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    iface = f"http://127.0.0.1:{demo.port}"
    alice = sign_in(chromium, demo, "alice")
    bob = sign_in(chromium, demo, "bob")

    # The web tier's session cookie works on the interface's port (same host).
    for page in (alice, bob):
        page.goto(f"{iface}/chat/browser/")
        page.wait_for_function("document.getElementById('transport').textContent === 'websocket'")
        page.wait_for_function(WORKER_SHOWN)
    # The live member list: each sees both.
    for page in (alice, bob):
        page.wait_for_function(
            "document.getElementById('members').textContent === 'alice, bob'")
    say(alice, "hi bob")
    sees(bob, "alice: hi bob")
    say(bob, "hi alice, what the heck")
    sees(alice, "bob: hi alice, what the ****")  # through the moderation channel
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

    # Bob loses WebSockets: the room falls back to long polling, both ways.
    alice.goto(f"{iface}/chat/browser/")
    alice.wait_for_function("document.getElementById('transport').textContent === 'websocket'")
    bob.context.close()
    bob = sign_in(chromium, demo, "bob", websockets=False)
    bob.goto(f"{iface}/chat/browser/")
    bob.wait_for_function("document.getElementById('transport').textContent === 'long polling'")
    assert bob.evaluate("typeof window.WebSocket") == "undefined"
    say(bob, "no websocket here")
    sees(alice, "bob: no websocket here")
    # A message sent between two polls is not kept (the demo's poll has no history): Alice
    # speaks until one reaches Bob's open poll.
    for n in range(10):
        say(alice, f"polled {n}")
        try:
            bob.locator("#log li", has_text="alice: polled").first.wait_for(timeout=1500)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try again
            continue
    sees(bob, "alice: polled")
    bob.wait_for_function(WORKER_SHOWN)
    bob.screenshot(path=str(SHOTS / "3-room-long-polling.png"), full_page=True)
    alice.screenshot(path=str(SHOTS / "4-room-alice.png"), full_page=True)

