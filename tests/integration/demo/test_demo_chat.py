"""The demo chat through the split (interface, worker, web tier on the Redis Cluster): login on
the web tier seen by the socket, anonymous posting refused, long polling, SSE, the moderation
background channel triggered from the consumer and from a view, the status strip's data."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from support.demo import Browserish, demo_stack
from websockets.asyncio.client import connect

from channels_fleet.dev.cluster import LocalRedis

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(120)]

POLL_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def demo(redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("chat-demo")
    for stack in demo_stack(redis_cluster.urls, tmp, poll_timeout=POLL_TIMEOUT):
        browser = Browserish(stack.web)
        stack.alice = browser.login("alice")
        stack.alice_browser = browser
        yield stack


def room(demo: Any, name: str, session: str | None = None) -> Any:
    headers = {"Cookie": f"sessionid={session}"} if session else {}
    return connect(f"ws://127.0.0.1:{demo.port}/ws/chat/{name}/", open_timeout=10,
                   origin=f"http://127.0.0.1:{demo.port}", additional_headers=headers)


async def recv(sock: Any) -> dict:
    return json.loads(await asyncio.wait_for(sock.recv(), 10))


async def frames_until(sock: Any, want: Any) -> dict:
    """Read frames until one matches ``want`` (presence frames may come in any order)."""
    while True:
        frame = await recv(sock)
        if want(frame):
            return frame


async def chat(sock: Any) -> dict:
    """The next frame that is not about presence (a client that asked for it gets both)."""
    return await frames_until(sock, lambda f: f.get("type") != "presence")


def request(demo: Any, method: str, path: str, body: dict | None = None,
            session: str | None = None, timeout: float = 15) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", demo.port, timeout=timeout)
    headers = {"Cookie": f"sessionid={session}"} if session else {}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers.update({"Content-Type": "application/json",
                        "Origin": f"http://127.0.0.1:{demo.port}"})
    try:
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


async def test_login_on_the_web_tier__the_socket_sees_the_user_and_who_serves_it(
        demo: Any) -> None:
    async with room(demo, "auth", demo.alice) as sock:
        await sock.send(json.dumps({"type": "status"}))
        status = await recv(sock)
        assert status["user"] == "alice"
        # By the names the fleet's status gives them (CHANNELS_FLEET_NAME), not their channels.
        assert (status["interface"], status["worker"], status["rehomed"]) == ("i1", "w1", 0)
        await sock.send(json.dumps({"message": "hello"}))
        assert await recv(sock) == {"message": "hello", "user": "alice"}


async def test_anonymous_reads_but_may_not_post(demo: Any) -> None:
    async with room(demo, "anon") as anon, room(demo, "anon", demo.alice) as alice:
        await anon.send(json.dumps({"type": "status"}))
        assert (await recv(anon))["user"] is None
        await anon.send(json.dumps({"message": "let me in"}))
        assert await chat(anon) == {"error": "sign in to post"}
        await alice.send(json.dumps({"message": "only me"}))
        assert await chat(anon) == {"message": "only me", "user": "alice"}  # nothing before
    status, body = await asyncio.to_thread(request, demo, "POST", "/poll/anon/", {"message": "x"})
    assert (status, json.loads(body)) == (403, {"error": "sign in to post"})
    # Not JSON, or from another site's page: refused even when signed in.
    conn = http.client.HTTPConnection("127.0.0.1", demo.port, timeout=10)
    conn.request("POST", "/poll/anon/", body=b"message=x", headers={
        "Cookie": f"sessionid={demo.alice}", "Content-Type": "application/x-www-form-urlencoded"})
    assert conn.getresponse().status == 403
    conn.close()


async def test_long_poll_delivers_a_message_and_posts_into_the_room(demo: Any) -> None:
    async with room(demo, "lp", demo.alice) as sock:
        poll = asyncio.create_task(asyncio.to_thread(request, demo, "GET", "/poll/lp/"))
        # The poll joins the room's group on the worker; post until it has.
        for n in range(20):
            await sock.send(json.dumps({"message": f"to the poller {n}"}))
            await recv(sock)
            done, _ = await asyncio.wait({poll}, timeout=0.3)
            if done:
                break
        status, body = await poll
        assert status == 200
        reply = json.loads(body)
        assert reply["messages"][0]["user"] == "alice"
        assert reply["messages"][0]["message"].startswith("to the poller")
        assert reply["served_by"]["interface"] == "i1"

        # Posting over HTTP reaches the WebSocket members.
        status, body = await asyncio.to_thread(
            request, demo, "POST", "/poll/lp/", {"message": "over http"}, demo.alice)
        assert (status, json.loads(body)) == (202, {"posted": True})
        assert await recv(sock) == {"message": "over http", "user": "alice"}


def test_long_poll_times_out_with_204(demo: Any) -> None:
    started = time.monotonic()
    status, body = request(demo, "GET", "/poll/quiet/")
    elapsed = time.monotonic() - started
    assert (status, body) == (204, b"")
    assert POLL_TIMEOUT - 0.1 <= elapsed < POLL_TIMEOUT + 5


async def test_server_sent_events_stream_the_room(demo: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", demo.port)
    try:
        writer.write(b"GET /poll/events/sse/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Cookie: sessionid=" + demo.alice.encode() + b"\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"text/event-stream" in head.lower()
        chunked = b"transfer-encoding: chunked" in head.lower()

        async def event() -> bytes:
            buf = b""
            while b"\n\n" not in buf:
                buf += await asyncio.wait_for(reader.read(4096), 10)
            return buf

        first = await event()
        assert b"event: status" in first
        status = json.loads(first.split(b"data: ", 1)[1].split(b"\n", 1)[0])
        assert status["user"] == "alice" and status["worker"] == "w1"

        async with room(demo, "sse", demo.alice) as sock:
            await sock.send(json.dumps({"message": "streamed"}))
            await recv(sock)
            data = await event()
        line = data.split(b"data: ", 1)[1].split(b"\n", 1)[0]
        assert json.loads(line) == {"message": "streamed", "user": "alice"}
        assert chunked or b"content-length" not in head.lower()
    finally:
        writer.close()


async def test_moderation_channel_from_the_consumer_and_from_a_view(demo: Any) -> None:
    async with room(demo, "mod") as listener, room(demo, "mod", demo.alice) as alice:
        # From the consumer: the worker's "moderation" channel censors, then posts.
        await alice.send(json.dumps({"message": "what the Heck"}))
        assert await recv(listener) == {"message": "what the ****", "user": "alice"}
        # From a view on the web tier (gunicorn): the no-JavaScript form of the room.
        status = await asyncio.to_thread(
            demo.alice_browser.post_form, "/chat/mod/post/", {"message": "darn it"})
        assert status == 200  # redirected back to the room page
        assert await recv(listener) == {"message": "**** it", "user": "alice"}


def test_room_page_through_the_interface_names_its_worker(demo: Any) -> None:
    status, body = request(demo, "GET", "/chat/lobby/", session=demo.alice)
    page = body.decode()
    assert status == 200
    assert "Signed in as <strong>alice</strong>" in page
    assert "w1 via i1" in page


async def test_live_member_list_for_clients_that_ask(demo: Any) -> None:
    async with room(demo, "who", demo.alice) as alice:
        await alice.send(json.dumps({"type": "status"}))
        status = await recv(alice)
        assert status["fresh"] is True and status["me"]["user"] == "alice"
        async with room(demo, "who") as anon:
            joined = await frames_until(alice, lambda f: f.get("type") == "presence")
            assert joined["join"]["user"] == "anonymous"
            await anon.send(json.dumps({"type": "status"}))
            status = await frames_until(anon, lambda f: f.get("type") == "status")
            assert status["fresh"] is True
            here = await frames_until(anon, lambda f: f.get("type") == "presence")
            assert here["join"]["user"] == "alice"
            assert here["join"]["id"] != status["me"]["id"]
            # Asking again refreshes the strip without a new member list.
            await anon.send(json.dumps({"type": "status"}))
            assert (await frames_until(anon, lambda f: f.get("type") == "status"))["fresh"] is False
            anon_id = status["me"]["id"]
        left = await frames_until(alice, lambda f: f.get("type") == "presence" and "leave" in f)
        assert left["leave"] == {"id": anon_id, "user": "anonymous"}



async def test_fleet_socket_pushes_the_fleet_every_second_and_who_serves_it(demo: Any) -> None:
    async with connect(f"ws://127.0.0.1:{demo.port}/ws/fleet/", open_timeout=10,
                       origin=f"http://127.0.0.1:{demo.port}") as sock:
        first = await recv(sock)
        started = time.monotonic()
        second = await recv(sock)
        assert 0.5 < time.monotonic() - started < 5
    assert first["type"] == "fleet" and first["error"] is None
    procs = {p["name"]: p for p in second["fleet"]["processes"]}
    assert set(procs) == {"i1", "w1"}
    assert procs["i1"]["kind"] == "interface" and procs["w1"]["kind"] == "worker"
    assert procs["w1"]["concurrency"] == 1000 and procs["w1"]["sockets"] >= 1  # this socket
    assert procs["i1"]["sockets"] >= 1 and not procs["i1"]["draining"]
    assert second["fleet"]["queue"]["name"] == "fleet.connect"
    assert second["you"] == {"interface": procs["i1"]["channel"],
                             "worker": procs["w1"]["channel"], "rehomed": 0}


def test_fleet_page_through_the_interface_and_who_may_roll(demo: Any) -> None:
    status, body = request(demo, "GET", "/fleet/", session=demo.alice)
    assert status == 200 and "The fleet" in body.decode()
    assert "Roll the workers" in body.decode()
    # No `make run` control socket in this stack: no button, and the view says why.
    assert 'id="roll-button"' not in body.decode()

    def roll(browser: Browserish, csrf: bool = True) -> tuple[int, str]:
        fields = {"csrfmiddlewaretoken": browser.cookie("csrftoken")} if csrf else {}
        req = urllib.request.Request(f"{browser.base}/fleet/roll/",
                                     data=urllib.parse.urlencode(fields).encode())
        try:
            with browser.opener.open(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    bob = Browserish(demo.web)
    bob.login("bob")
    assert roll(bob) == (403, json.dumps({"error": "only staff may roll the workers "
                                                   "(sign in as alice)"}))
    status, said = roll(demo.alice_browser)
    assert status == 503 and "CHAT_ROLL_SOCKET is unset" in json.loads(said)["error"]
    status, said = roll(demo.alice_browser, csrf=False)
    assert status == 403 and "CSRF" in said  # Django's own refusal, before the view


async def test_a_full_newcomer_channel_does_not_close_the_members_who_answer(
        demo: Any, redis_cluster: LocalRedis) -> None:
    """A member answers a newcomer's "who is here?" with a direct send; when that channel is
    full (a newcomer still starting, under load) the answer is dropped, the member stays."""
    from channels_fleet.layers import RedisClusterChannelLayer

    layer = RedisClusterChannelLayer(hosts=redis_cluster.urls[:3], prefix="chat", capacity=100)
    full = await layer.new_channel("newcomer")
    for _ in range(100):
        await layer.send(full, {"type": "filler"})
    async with room(demo, "full", demo.alice) as alice:
        await alice.send(json.dumps({"type": "status"}))
        await frames_until(alice, lambda f: f.get("type") == "status")
        await layer.group_send("chat_full", {"type": "presence.hello", "reply_to": full})
        await alice.send(json.dumps({"message": "still here"}))
        assert await chat(alice) == {"message": "still here", "user": "alice"}
