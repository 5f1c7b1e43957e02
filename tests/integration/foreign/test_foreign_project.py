"""A foreign Django Channels project, unchanged, behind ``channels-fleet interface`` + ``worker``
(+ ``web``): what its consumers and views do under Daphne alone they must do through the split.

Its settings point channels_redis at one node of the session's Redis Cluster (channels_redis
itself cannot talk to a cluster: the services serve the alias with our layer).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from foreignstack import PASSWORD, foreign_stack, recv, ws
from support.demo import Browserish
from websockets.exceptions import ConnectionClosed, InvalidStatus

from channels_fleet.dev.cluster import LocalRedis

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def stack(redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    urls = redis_cluster.urls[:3]
    # Both workers also serve the project's background channel (what runworker did).
    # Apps that outlive their disconnect are cancelled after 2 s (Daphne: 10 s) to keep it short.
    with foreign_stack(tmp_path_factory.mktemp("foreign"), urls[0], urls, workers=2,
                       worker_args=("--channels", "thumbnails"),
                       CHANNELS_FLEET_APP_CLOSE_TIMEOUT="2") as stack:
        stack.session = Browserish(stack.web).login("alice", PASSWORD)
        yield stack


def request(stack: Any, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request to the interface (served by the project's "http" route on a worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


async def call(stack: Any, *args: Any, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(request, stack, *args, **kwargs)


async def web_post(stack: Any, path: str, body: bytes) -> int:
    def post() -> int:
        conn = http.client.HTTPConnection("127.0.0.1", stack.web, timeout=20)
        try:
            conn.request("POST", path, body=body)
            return conn.getresponse().status
        finally:
            conn.close()

    return await asyncio.to_thread(post)


# -- WebSockets -----------------------------------------------------------------------------


async def test_tutorial_chat__sync_and_async_consumers_share_a_room(stack: Any) -> None:
    async with ws(stack, "/ws/chat/lobby/") as sync, ws(stack, "/ws/achat/lobby/") as fast:
        await sync.send(json.dumps({"message": "hello from sync"}))
        assert json.loads(await recv(sync)) == {"message": "hello from sync"}
        assert json.loads(await recv(fast)) == {"message": "hello from sync"}
        await fast.send(json.dumps({"message": "hello from async"}))
        assert json.loads(await recv(sync)) == {"message": "hello from async"}
        assert json.loads(await recv(fast)) == {"message": "hello from async"}


async def test_chat_room_order_and_group_discard(stack: Any) -> None:
    async with ws(stack, "/ws/chat/order/") as listener:
        async with ws(stack, "/ws/achat/order/") as talker:
            for n in range(50):
                await talker.send(json.dumps({"message": n}))
            got = [json.loads(await recv(listener))["message"] for _ in range(50)]
            assert got == list(range(50))
        # The talker left (group_discard in disconnect): the room still works for the rest.
        async with ws(stack, "/ws/achat/order/") as again:
            await again.send(json.dumps({"message": "still here"}))
            assert json.loads(await recv(listener)) == {"message": "still here"}


async def test_json_consumer__query_headers_and_anonymous_user(stack: Any) -> None:
    async with ws(stack, "/ws/json/?token=abc&x=1", user_agent_header="foreign-test/1") as sock:
        await sock.send(json.dumps({"n": [1, 2, {"deep": True}]}))
        reply = json.loads(await recv(sock))
    assert reply == {"echo": {"n": [1, 2, {"deep": True}]}, "user": "",
                     "query": {"token": ["abc"], "x": ["1"]}, "agent": "foreign-test/1"}


async def test_orm_via_database_sync_to_async(stack: Any) -> None:
    async with ws(stack, "/ws/history/orm-room/", stack.session) as sock:
        assert json.loads(await recv(sock)) == {"history": []}
        await sock.send("first")
        assert json.loads(await recv(sock)) == {"history": ["first"]}
        await sock.send("second")
        assert json.loads(await recv(sock)) == {"history": ["first", "second"]}
    # A fresh connection (perhaps on the other worker) reads the same database.
    async with ws(stack, "/ws/history/orm-room/") as sock:
        assert json.loads(await recv(sock)) == {"history": ["first", "second"]}
    author = stack.django("from chat.models import Message; "
                          "print(Message.objects.get(text='first').author)")
    assert author == "alice"


async def test_user_from_the_web_tier_login_and_url_route_kwargs(stack: Any) -> None:
    async with ws(stack, "/ws/whoami/tagged/", stack.session) as sock:
        assert json.loads(await recv(sock)) == {"user": "alice", "tag": "tagged",
                                                "session": True}
    with pytest.raises(InvalidStatus) as refused:  # anonymous: closed before accept
        async with ws(stack, "/ws/whoami/tagged/"):
            pass
    assert refused.value.response.status_code == 403


async def test_close_with_a_custom_code(stack: Any) -> None:
    async with ws(stack, "/ws/close/4321/") as sock:
        await sock.send("close please")
        with pytest.raises(ConnectionClosed) as closed:
            await recv(sock)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4321


async def test_close_before_accept_is_http_403(stack: Any) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with ws(stack, "/ws/private/"):
            pass
    assert refused.value.response.status_code == 403


async def test_unknown_path_and_foreign_origin_are_refused(stack: Any) -> None:
    for path, kwargs, status in (("/ws/nowhere/", {}, 404),
                                 ("/ws/echo/", {"origin": "http://evil.example"}, 403)):
        with pytest.raises(InvalidStatus) as refused:
            from websockets.asyncio.client import connect

            headers = {"Origin": kwargs.get("origin", f"http://127.0.0.1:{stack.port}")}
            async with connect(f"ws://127.0.0.1:{stack.port}{path}", open_timeout=10,
                               additional_headers=headers):
                pass
        assert refused.value.response.status_code == status, path


async def test_binary_frames_and_a_1mb_text_frame(stack: Any) -> None:
    async with ws(stack, "/ws/echo/", max_size=4 * 1024 * 1024) as sock:
        payload = os.urandom(200_000)
        await sock.send(payload)
        assert await recv(sock) == payload[::-1]
        big = "x" * 1_000_000 + "end"
        await sock.send(big)
        assert await recv(sock, 20) == big
        await sock.send(b"\x00\xff")
        assert await recv(sock) == b"\xff\x00"


async def test_subprotocol_is_negotiated(stack: Any) -> None:
    async with ws(stack, "/ws/echo/", subprotocols=["graphql-ws", "other"]) as sock:
        assert sock.subprotocol == "graphql-ws"
        await sock.send("ping")
        assert await recv(sock) == "ping"


async def test_view_sends_to_a_stored_channel_name(stack: Any) -> None:
    async with ws(stack, "/ws/inbox/bob/") as sock:
        await asyncio.sleep(0.2)  # connect stored the channel name before accept; be safe
        assert await web_post(stack, "/chat/notify/bob/", b"you have mail") == 200
        assert json.loads(await recv(sock)) == {"inbox": "you have mail"}
        # The same from the worker's own "http" route.
        status, _, _ = await call(stack, "POST", "/chat/notify/bob/", b"via the interface")
        assert status == 200
        assert json.loads(await recv(sock)) == {"inbox": "via the interface"}


async def test_group_send_from_the_web_tier(stack: Any) -> None:
    async with ws(stack, "/ws/chat/webroom/") as sync, ws(stack, "/ws/achat/webroom/") as fast:
        await sync.send(json.dumps({"message": "in"}))
        await recv(sync), await recv(fast)
        body = json.dumps({"message": "announcement"}).encode()
        assert await web_post(stack, "/chat/webroom/broadcast/", body) == 200
        assert json.loads(await recv(sync)) == {"message": "announcement"}
        assert json.loads(await recv(fast)) == {"message": "announcement"}


async def test_accept_headers_and_close_reason(stack: Any) -> None:
    async with ws(stack, "/ws/goodbye/") as sock:
        assert sock.response.headers["x-room-version"] == "7"
        await sock.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            await recv(sock)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "goodbye")


async def test_a_crashing_consumer_closes_its_socket_with_1011(stack: Any) -> None:
    async with ws(stack, "/ws/crash/") as sock:
        await sock.send("boom")
        with pytest.raises(ConnectionClosed) as closed:
            await recv(sock)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    async with ws(stack, "/ws/echo/") as sock:  # the worker carries on
        await sock.send("still fine")
        assert await recv(sock) == "still fine"


async def test_disconnect_handler_runs_with_the_client_close_code(stack: Any) -> None:
    async with ws(stack, "/ws/presence/") as sock:
        await sock.close(code=4100)
    count = ("from chat.models import Message; "
             "print(Message.objects.filter(room='presence', text='left 4100').count())")
    for _ in range(50):
        if stack.django(count) == "1":
            break
        await asyncio.sleep(0.1)
    assert stack.django(count) == "1"


async def test_background_channel_from_a_view_to_groups_attribute_consumers(stack: Any) -> None:
    async with ws(stack, "/ws/broadcast/") as one, ws(stack, "/ws/broadcast/") as two:
        await asyncio.sleep(0.3)  # the groups attribute joins after accept
        assert await web_post(stack, "/chat/thumbnail/cat/", b"") == 200
        assert await recv(one) == "thumbnail cat ready"
        assert await recv(two) == "thumbnail cat ready"


async def test_percent_encoded_unicode_path_reaches_url_route(stack: Any) -> None:
    # (Not a chat room: the tutorial's group name would be refused, under Daphne alone too.)
    async with ws(stack, "/ws/history/caf%C3%A9/") as sock:
        assert json.loads(await recv(sock)) == {"history": []}
        await sock.send("☕ ü")
        assert json.loads(await recv(sock)) == {"history": ["☕ ü"]}
    rooms = stack.django("from chat.models import Message; "
                         "print(Message.objects.get(text='☕ ü').room == 'café')")
    assert rooms == "True"


async def test_layer_taken_at_import_by_a_signals_module(stack: Any) -> None:
    """signals.py (imported by AppConfig.ready) keeps ``get_channel_layer()`` in a global: the
    layer it took during django.setup() must be the adopted one, in the web tier and workers."""
    async with ws(stack, "/ws/chat/announced/") as sock:
        await sock.send(json.dumps({"message": "in"}))
        await recv(sock)
        assert await web_post(stack, "/chat/announced/post/", b"from the web tier") == 200
        assert json.loads(await recv(sock)) == {"message": "saved: from the web tier"}
        status, _, _ = await call(stack, "POST", "/chat/announced/post/", b"from a worker")
        assert status == 200
        assert json.loads(await recv(sock)) == {"message": "saved: from a worker"}


async def test_receiver_connected_by_importing_consumers_fires_for_web_tier_saves(
        stack: Any) -> None:
    """consumers.py (imported only through asgi.py's routing) connects a post_save receiver, as
    djangochannelsrestframework's model_observer does. Under runserver the views run in that
    process; the web tier imports ASGI_APPLICATION too, so a save made by one of its views
    reaches the sockets."""
    async with ws(stack, "/ws/chat/followed/") as sock:
        await sock.send(json.dumps({"message": "in"}))
        await recv(sock)
        assert await web_post(stack, "/chat/followed/post/", b"from the web tier") == 200
        assert json.loads(await recv(sock)) == {"message": "followed: from the web tier"}


async def test_a_1mb_group_message(stack: Any) -> None:
    async with ws(stack, "/ws/chat/big/", max_size=4 * 1024 * 1024) as sync, \
            ws(stack, "/ws/achat/big/", max_size=4 * 1024 * 1024) as fast:
        big = "y" * 1_000_000
        await fast.send(json.dumps({"message": big}))
        assert json.loads(await recv(sync, 20)) == {"message": big}
        assert json.loads(await recv(fast, 20)) == {"message": big}


# -- HTTP through the worker's "http" route (Django's get_asgi_application) --------------------


async def test_http_pages_through_the_worker(stack: Any) -> None:
    status, headers, body = await call(stack, "GET", "/chat/",
                                       headers={"Cookie": f"sessionid={stack.session}"})
    assert status == 200 and b"<h1>Rooms</h1><p>alice</p>" in body
    assert headers["content-type"].startswith("text/html")
    status, _, body = await call(stack, "GET", "/chat/whoami/",
                                 headers={"Cookie": f"sessionid={stack.session}"})
    assert status == 200
    assert json.loads(body) == {"user": "alice", "remote": "127.0.0.1",
                                "host": f"127.0.0.1:{stack.port}"}
    status, _, _ = await call(stack, "GET", "/chat/no-such-page/x/")
    assert status == 404


async def test_http_post_csrf_exempt_and_protected(stack: Any) -> None:
    body = os.urandom(1_000_000)  # larger than one relay chunk
    status, headers, reply = await call(stack, "POST", "/chat/echo/", body)
    assert status == 200 and reply == body[::-1]
    assert headers["content-type"] == "application/octet-stream"
    # The login form is CSRF-protected: without a token, 403, as under Daphne.
    status, _, _ = await call(stack, "POST", "/accounts/login/", b"username=alice",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403


async def test_http_streaming_response(stack: Any) -> None:
    status, headers, body = await call(stack, "GET", "/chat/stream/?n=2000")
    assert status == 200 and "content-length" not in headers
    assert body.decode().splitlines() == [f"row {i}" for i in range(2000)]


async def test_event_stream_that_never_reads_its_disconnect_is_stopped(stack: Any) -> None:
    """An AsyncHttpConsumer streaming from handle() never reads http.disconnect: Daphne cancels
    it application_close_timeout after the client left, so its finally blocks (group_discard,
    a GraphQL subscription's cleanup) run; the worker must too, not stream on for ever."""

    def read_two_ticks_and_leave() -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=20)
        conn.request("GET", "/events/left/")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("content-type") == "text/event-stream"
        ticks = resp.read1(64) + resp.read1(64)
        conn.close()
        return ticks

    assert (await asyncio.to_thread(read_two_ticks_and_leave)).startswith(b"data: tick 0")
    ended = "from chat.models import Message; print(Message.objects.filter(room='ticker').count())"
    for _ in range(80):
        if stack.django(ended) == "1":
            break
        await asyncio.sleep(0.1)
    assert stack.django(ended) == "1"


async def test_admin_login_page_through_the_worker(stack: Any) -> None:
    status, headers, _ = await call(stack, "GET", "/admin/")
    assert status == 302 and headers["location"].startswith("/admin/login/")


async def test_http_10mb_download_and_head(stack: Any) -> None:
    status, headers, body = await call(stack, "GET", "/chat/download/?mb=10")
    assert status == 200 and len(body) == 10 * 1024 * 1024 and set(body) == {ord("z")}
    assert headers["content-disposition"] == 'attachment; filename="export.bin"'
    status, headers, body = await call(stack, "HEAD", "/chat/")
    assert status == 200 and body == b""


async def test_login_through_the_interface_sets_several_cookies(stack: Any) -> None:
    import re
    from urllib.parse import urlencode

    status, headers, page = await call(stack, "GET", "/accounts/login/")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    csrf = headers["set-cookie"].split(";")[0]
    form = urlencode({"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token,
                      "next": "/chat/whoami/"}).encode()
    status, _, _ = await asyncio.to_thread(_raw_login, stack, form, csrf)
    assert status == 302


def _raw_login(stack: Any, form: bytes, csrf: str) -> tuple[int, list[str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=20)
    try:
        conn.request("POST", "/accounts/login/", body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": csrf})
        resp = conn.getresponse()
        cookies = [v for k, v in resp.getheaders() if k.lower() == "set-cookie"]
        names = sorted(c.split("=")[0] for c in cookies)
        assert names == ["csrftoken", "sessionid"], cookies  # two Set-Cookie headers, both kept
        return resp.status, cookies, resp.read()
    finally:
        conn.close()
