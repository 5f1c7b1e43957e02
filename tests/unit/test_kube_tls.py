"""The `tls` kind (channels_fleet.kube.tls): a CA and a server certificate that real TLS
accepts for the names asked (a handshake through the ssl module, hostname checked), and
nothing made twice."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from channels_fleet.kube.tls import TLSKindError, make_tls

NAMES = ["fleet-channels-fleet-redis", "*.fleet-channels-fleet-redis-headless.chat.svc",
         "*.fleet-channels-fleet-redis-headless.chat.svc.cluster.local"]


@dataclass(frozen=True)
class Item:  # channels_fleet.kube.kinds.Item's fields the kind reads
    secret: str = "fleet-channels-fleet-redis-tls"
    key: str = "tls.crt"
    kind: str = "tls"
    options: dict[str, Any] = field(default_factory=lambda: {"dnsNames": NAMES})


@pytest.fixture(scope="module")
def made() -> dict[str, bytes]:
    return make_tls(Item(), {})


def handshake(made: dict[str, bytes], tmp: Path, server_name: str) -> str:
    """A TLS server with tls.crt/tls.key, a client trusting only ca.crt and checking
    `server_name`: the name the client saw, or the client's error."""
    for k, v in made.items():
        (tmp / k).write_bytes(v)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp / "tls.crt", tmp / "tls.key")
    client_ctx = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port)) as raw, \
                    client_ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                subject = dict(x[0] for x in tls.getpeercert()["subject"])
                tls.sendall(b"x")
                return str(subject["commonName"])
        except ssl.SSLError as exc:
            return f"refused: {exc.reason}"
        finally:
            thread.join(5)


def test_keys_of_a_cert_manager_secret(made):
    assert sorted(made) == ["ca.crt", "tls.crt", "tls.key"]
    assert made["tls.key"].startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize("name", ["fleet-channels-fleet-redis",
                                  "fleet-channels-fleet-redis-shard-2-1."
                                  "fleet-channels-fleet-redis-headless.chat.svc",
                                  "localhost", "127.0.0.1"])
def test_a_client_trusting_the_ca_accepts_the_server_names(made, tmp_path, name):
    assert handshake(made, tmp_path, name) == NAMES[0]


def test_another_name_is_refused(made, tmp_path):
    assert handshake(made, tmp_path, "redis.example.com").startswith("refused: CERTIFICATE_VERIFY")


def test_another_ca_is_refused(made, tmp_path):
    other = make_tls(Item(), {})
    assert handshake({**made, "ca.crt": other["ca.crt"]}, tmp_path,
                     NAMES[0]).startswith("refused: CERTIFICATE_VERIFY")


def test_the_certificate_serves_both_ends_of_a_node_link(made):
    cert = x509.load_pem_x509_certificate(made["tls.crt"])
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {u.dotted_string for u in usages} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}


def test_made_once(made):
    assert make_tls(Item(), made) == {}


def test_part_of_a_pair_is_not_completed(made):
    with pytest.raises(TLSKindError, match="^Secret fleet-channels-fleet-redis-tls has ca.crt, "
                                           "tls.crt but not tls.key: delete it"):
        make_tls(Item(), {"ca.crt": made["ca.crt"], "tls.crt": made["tls.crt"]})


def test_names_are_required():
    with pytest.raises(TLSKindError, match="needs options.dnsNames"):
        make_tls(Item(options={}), {})
