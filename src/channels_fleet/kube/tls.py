"""The ``tls`` kind of ``channels-fleet secrets ensure``: a private CA and a server certificate.

For the chart's built-in Redis Cluster with ``redis.tls.enabled``: ``ca.crt`` (the CA the pods
trust: ``CHANNELS_FLEET_REDIS_CA_FILE``), ``tls.crt`` and ``tls.key`` (each node's certificate:
the client Service's and the pods' headless DNS names, in ``options["dnsNames"]``; also
``localhost`` and 127.0.0.1, where each node's own probes and script connect). The node
presents the same certificate as a client to its peers (cluster bus, replication), so it is
good for both server and client authentication. The keys are those of a cert-manager
Certificate's Secret, so a user-named one fits the same mounts.

Made once (the Secret's values never change afterwards): the CA's key is not kept, and the
certificates last ``options["days"]`` (default 3650). To renew, delete the Secret: the next
``ensure`` makes a new pair, and the Redis pods and their clients take it at their restart.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Mapping
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEYS = ("ca.crt", "tls.crt", "tls.key")
DEFAULT_DAYS = 3650
LOCAL_NAMES = ("localhost",)
LOCAL_ADDRESSES = ("127.0.0.1", "::1")


class Request(Protocol):
    """What the kind reads of a requested value (channels_fleet.kube.kinds.Item)."""

    @property
    def secret(self) -> str: ...

    @property
    def options(self) -> Mapping[str, Any]: ...


class TLSKindError(ValueError):
    """A tls request that cannot be met; the message names the Secret and the cause."""


def make_tls(item: Request, current: Mapping[str, bytes]) -> dict[str, bytes]:
    """ca.crt, tls.crt and tls.key for ``item.options["dnsNames"]``; nothing when the Secret
    has all three, an error when it has only some (made elsewhere: completing them would pair
    a new key with another's certificate)."""
    present = [k for k in KEYS if k in current]
    if len(present) == len(KEYS):
        return {}
    if present:
        raise TLSKindError(f"Secret {item.secret} has {', '.join(present)} but not "
                           f"{', '.join(k for k in KEYS if k not in present)}: delete it to have "
                           f"a new CA and certificate made, or complete it yourself")
    names = list(item.options.get("dnsNames") or [])
    if not names or not all(isinstance(n, str) and n for n in names):
        raise TLSKindError(f"Secret {item.secret}: the tls kind needs options.dnsNames, a list "
                           f"of the server's DNS names (got {names!r})")
    days = int(item.options.get("days", DEFAULT_DAYS))
    now = datetime.datetime.now(datetime.UTC)
    # A little in the past: a node whose clock is behind still accepts it.
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            f"channels-fleet CA for {names[0]}"[:64])])
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_key_usage(cert_sign=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in [*names, *LOCAL_NAMES]]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in LOCAL_ADDRESSES]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "tls.crt": cert.public_bytes(serialization.Encoding.PEM),
        "tls.key": key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()),
    }


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)
