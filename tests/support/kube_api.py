"""A small Secrets API on a real HTTP server, as the Kubernetes API server answers it.

GET/POST/PATCH (JSON merge patch) of /api/v1/namespaces/<ns>/secrets[/<name>], resourceVersion
checks (409 Conflict), 403 for the first `forbidden` requests (a Role not in effect yet), and a
hook (`before_patch`) that lets a test change a Secret between the client's read and its patch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/api/v1/namespaces/"


@dataclass
class State:
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    forbidden: int = 0
    token: str = "token-1"  # "" accepts any client, as `kubectl proxy` does
    before_patch: Callable[[State], None] | None = None
    version: int = 0

    def put(self, namespace: str, secret: dict[str, Any]) -> None:
        self.version += 1
        secret.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        self.secrets[(namespace, secret["metadata"]["name"])] = secret


def handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def status(self, code: int, message: str) -> None:
            self.reply(code, {"kind": "Status", "code": code, "message": message})

        def handle_one(self) -> None:
            state.requests.append((self.command, self.path))
            if state.forbidden > 0:
                state.forbidden -= 1
                return self.status(403, 'secrets is forbidden: User "system:serviceaccount:x" '
                                        'cannot get resource "secrets"')
            if state.token and self.headers["Authorization"] != f"Bearer {state.token}":
                return self.status(401, "Unauthorized")
            namespace, _, rest = self.path.removeprefix(PREFIX).partition("/secrets")
            name = rest.strip("/")
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            found = state.secrets.get((namespace, name))
            if self.command == "GET":
                if found is None:
                    return self.status(404, f'secrets "{name}" not found')
                return self.reply(200, found)
            if self.command == "POST":
                key = (namespace, body["metadata"]["name"])
                if key in state.secrets:
                    return self.status(409, f'secrets "{key[1]}" already exists')
                state.put(namespace, body)
                return self.reply(201, body)
            if self.command == "PATCH":
                assert self.headers["Content-Type"] == "application/merge-patch+json"
                if state.before_patch:
                    hook, state.before_patch = state.before_patch, None
                    hook(state)
                    found = state.secrets[(namespace, name)]
                if body["metadata"]["resourceVersion"] != found["metadata"]["resourceVersion"]:
                    return self.status(409, "the object has been modified")
                found.setdefault("data", {}).update(body["data"])
                state.put(namespace, found)
                return self.reply(200, found)
            return self.status(405, "method not allowed")

        do_GET = do_POST = do_PATCH = handle_one

    return Handler


@contextmanager
def api_server() -> Iterator[tuple[str, State]]:
    state = State()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
