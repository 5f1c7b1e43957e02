"""A TLS-only Redis Cluster with a private CA and docs/redis-acl.md's users, as managed ones run.

No plain port (``port 0``, ``tls-port``); the cluster bus and replication over TLS too; the
default user off; one user per role with exactly the documented ACL line (its password
replaced), and an admin for the test itself. Certificates come from a CA made for the test
(:class:`PrivateCA`), issued for ``127.0.0.1`` (the address the nodes announce) and
``redis-cluster.test``; the nodes listen on ``127.0.0.2`` too, which a client connecting by it
finds missing from the certificate (redis-py's cluster client turns ``localhost`` into
127.0.0.1 itself: no use for that).

    cluster = TlsCluster(tmp_path).start()
    settings.redis_url == ("rediss://127.0.0.1:<port>",), username/password/CA beside it
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from channels_fleet.dev.cluster import redis_server_binary
from channels_fleet.dev.ports import free_ports
from channels_fleet.process import die_with_parent
from channels_fleet.settings import RedisSettings
from support.acl_lines import documented_lines, with_password

PASSWORD = "tls-role-password"
ADMIN = ("fleet-admin", "tls-admin-password")
SERVER_NAMES = ("127.0.0.1", "redis-cluster.test")


@dataclass
class PrivateCA:
    """A private CA in ``directory``: ``ca.pem``, and certificates it issues."""

    directory: Path
    name: str = "channels-fleet test CA"
    key: Any = None
    cert: Any = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self.cert = (
            _builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @property
    def path(self) -> Path:
        return self.directory / "ca.pem"

    def issue(self, stem: str, names: tuple[str, ...]) -> tuple[Path, Path]:
        """A server (and client) certificate for ``names`` (IPs or DNS): (cert, key) paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n)
                for n in names]
        cert = (
            _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]),
                     self.cert.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH, x509.OID_CLIENT_AUTH]),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)))


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass
class TlsCluster:
    """``masters`` x (1 + ``replicas``) redis-server processes, TLS only, documented users."""

    workdir: Path
    masters: int = 3
    replicas: int = 1
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ca = PrivateCA(self.workdir / "ca")
        self.cert, self.key = self.ca.issue("server", SERVER_NAMES)

    # -- what tests use --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The first node, no user info: the settings give user, password and CA."""
        return f"rediss://127.0.0.1:{self.ports[0]}"

    def env(self, role: str, **changes: str) -> dict[str, str]:
        """What the chart gives a ``role`` pod: a bare URL and, beside it, the role's user,
        password and the CA file (``changes``: other values, by variable name)."""
        env = {
            "CHANNELS_FLEET_REDIS_URL": self.url,
            "CHANNELS_FLEET_REDIS_USERNAME": f"fleet-{role}",
            "CHANNELS_FLEET_REDIS_PASSWORD": PASSWORD,
            "CHANNELS_FLEET_REDIS_CA_FILE": str(self.ca.path),
        }
        env.update(changes)
        return env

    def settings(self, role: str, cls: type = RedisSettings, **more: Any) -> Any:
        """``cls.from_env`` of :meth:`env` (``more``: other fields, as flags give them)."""
        return cls.from_env(self.env(role), **more)

    def user_url(self, user: str, password: str = PASSWORD, *, host: str = "127.0.0.1") -> str:
        """A URL carrying ``user``'s password and the CA, as a CHANNEL_LAYERS host would."""
        return (f"rediss://{user}:{password}@{host}:{self.ports[0]}"
                f"?ssl_ca_certs={self.ca.path}")

    def admin(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, username=ADMIN[0], password=ADMIN[1],
                           ssl=True, ssl_ca_certs=str(self.ca.path), socket_timeout=5)

    def set_user(self, name: str, rules: list[str]) -> None:
        for port in self.ports:
            with self.admin(port) as client:
                client.execute_command("ACL", "SETUSER", name, *rules)

    def primary_and_replica(self, slot: int) -> tuple[int, int]:
        """Ports of the primary serving ``slot`` and of one of its replicas, now."""
        with self.admin(self.ports[0]) as client:
            for start, end, primary, *replicas in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(primary[1]), int(replicas[0][1])
        raise AssertionError(f"slot {slot} is served by no node")

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> TlsCluster:
        self.ports = free_ports(self.masters * (1 + self.replicas), with_bus=True)
        try:
            for port in self.ports:
                self.processes.append(self._start_node(port))
            for port in self.ports:
                self._wait_answers(port)
            self._create()
            self.wait_formed()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(timeout=10)

    def _start_node(self, port: int) -> subprocess.Popen[bytes]:
        workdir = (self.workdir / str(port)).resolve()
        workdir.mkdir(parents=True)
        users = [f"user {ADMIN[0]} on >{ADMIN[1]} ~* &* +@all", "user default off"]
        users += [f"user fleet-{role} {' '.join(with_password(rules, PASSWORD))}"
                  for role, rules in documented_lines().items()]
        conf = workdir / "redis.conf"
        conf.write_text("\n".join([
            "port 0", f"tls-port {port}",
            # 127.0.0.2: the same node by an address its certificate does not name.
            "bind 127.0.0.1 127.0.0.2", "protected-mode no",
            f"tls-cert-file {self.cert}", f"tls-key-file {self.key}",
            f"tls-ca-cert-file {self.ca.path}",
            # Managed services ask clients for no certificate; the nodes present theirs.
            "tls-auth-clients no", "tls-cluster yes", "tls-replication yes",
            "cluster-enabled yes", f"cluster-config-file {workdir / 'nodes.conf'}",
            "cluster-node-timeout 2000", "cluster-replica-validity-factor 0",
            f"masteruser {ADMIN[0]}", f"masterauth {ADMIN[1]}",
            'save ""', "appendonly no", f"dir {workdir}", f"logfile {workdir / 'redis.log'}",
            *users, "",
        ]))
        return subprocess.Popen([redis_server_binary(), str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)

    def _wait_answers(self, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.admin(port) as client:
                    client.ping()
                return
            except redis.ConnectionError as exc:
                if time.monotonic() > deadline:
                    log = self.workdir / str(port) / "redis.log"
                    raise RuntimeError(f"TLS redis-server on {port} did not answer:\n"
                                       f"{log.read_text()[-2000:] if log.exists() else ''}"
                                       ) from exc
                time.sleep(0.05)

    def _create(self) -> None:
        result = subprocess.run(
            ["redis-cli", "--tls", "--cacert", str(self.ca.path), "--user", ADMIN[0],
             "--pass", ADMIN[1], "--no-auth-warning", "--cluster", "create",
             *(f"127.0.0.1:{port}" for port in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout}"
                               f"{result.stderr}")

    def wait_formed(self, timeout: float = 30.0) -> None:
        """Every node says cluster_state:ok, ``masters`` primaries, every replica synced and
        listed by CLUSTER SLOTS."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._formed():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the TLS cluster did not form within {timeout}s")

    def _formed(self) -> bool:
        primaries = 0
        for port in self.ports:
            with self.admin(port) as client:
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                replication = client.info("replication")
            if replication["role"] == "master":
                primaries += 1
            elif replication.get("master_link_status") != "up":
                return False
        if primaries != self.masters:
            return False
        # CLUSTER SLOTS lists a replica only once gossip has told the node asked that it has
        # synced, which lags the replica's own master_link_status (none listed right after
        # forming, in 6 of 6 clusters): tests read replicas from it.
        with self.admin(self.ports[0]) as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        return all(len(r) - 3 >= self.replicas for r in ranges)
