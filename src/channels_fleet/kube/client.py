"""The Kubernetes API server, as a pod reaches it: HTTPS with its service account's token and CA.

Standard library only (http.client + ssl): the image gains no dependency for a few requests.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from channels_fleet.exceptions import KubeApiError

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TIMEOUT = 10.0


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]


class ApiClient:
    """JSON requests to one API server; a reply outside 2xx raises KubeApiError (its `status`,
    the server's message)."""

    def __init__(self, url: str, token: str = "", context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"API server URL {url!r}: expected https://host:port")
        self.url = url.rstrip("/")
        self._parts = parts
        self._token = token
        self._context = context

    @classmethod
    def in_cluster(cls, account: Path = SERVICE_ACCOUNT) -> ApiClient:
        """The API server of the pod's cluster (KUBERNETES_SERVICE_HOST/PORT), with the token
        and CA Kubernetes mounts into every pod that automounts its service account."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeApiError("KUBERNETES_SERVICE_HOST is not set: not running in a pod")
        try:
            token = (account / "token").read_text().strip()
            context = ssl.create_default_context(cafile=str(account / "ca.crt"))
        except OSError as exc:
            raise KubeApiError(f"service account credentials at {account}: {exc.strerror} "
                               f"({exc.filename}); is automountServiceAccountToken false?") from exc
        bracketed = f"[{host}]" if ":" in host else host
        return cls(f"https://{bracketed}:{port}", token, context)

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> Response:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        connection = self._connect()
        try:
            connection.request(method, path, payload, headers)
            reply = connection.getresponse()
            raw = reply.read()
        except (OSError, http.client.HTTPException) as exc:
            raise KubeApiError(f"{method} {self.url}{path}: {exc}") from exc
        finally:
            connection.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"message": raw[:200].decode(errors="replace")}
        if not 200 <= reply.status < 300:
            message = data.get("message") or reply.reason
            raise KubeApiError(f"{method} {path}: {reply.status} {message}", status=reply.status)
        return Response(reply.status, data)

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self._parts.hostname or "", self._parts.port
        if self._parts.scheme == "http":
            return http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        return http.client.HTTPSConnection(host, port, timeout=TIMEOUT, context=self._context)
