"""SASL_SSL for the local broker: a CA and broker certificate, SCRAM users, client configs.

A secure broker (``streamedge kafka up --secure``) listens for clients on ``SASL_SSL`` only
(SCRAM-SHA-512 over TLS) and for its KRaft controller quorum on mutual TLS. Who may do what is
decided by KRaft's ``StandardAuthorizer`` from the ACLs of :mod:`streamedge.kafka.acls`; the
admin user (also the inter-broker user) and the broker's certificate are super users.

Everything is generated once per state folder, in ``<state_dir>/security/`` (mode 0600)::

    ca.pem             the CA certificate clients verify the broker with (``ssl_cafile``)
    ca-key.pem         the CA private key (keep it, or new certificates cannot be issued)
    broker.p12         the broker's key and certificate (PKCS#12; SAN 127.0.0.1 and localhost)
    credentials.json   SCRAM passwords of every principal and the keystore password
    <principal>.toml   a ``streamedge --config`` file per principal: bootstrap plus ``[kafka]``

SCRAM credentials of a KRaft cluster are written into its metadata when the storage is formatted
(``kafka-storage format --add-scram``, Kafka 3.5 and later), so the files must exist before the
first start and are reused by every later one.

Python use::

    security = BrokerSecurity.ensure(state_dir / "security")
    broker = LocalBroker(state_dir, port, controller_port, security=security)
    broker.up()
    grant_acls(security.client_settings("admin", broker.bootstrap), TopicLayout())
    worker = security.client_settings("worker", broker.bootstrap)   # KafkaSettings, SASL_SSL
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import socket
import ssl
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr

from streamedge.errors import ConfigError
from streamedge.kafka._wire import request
from streamedge.kafka.settings import KafkaSettings

__all__ = ["BROKER_PRINCIPAL", "MECHANISM", "PRINCIPALS", "BrokerSecurity", "Principal", "sasl_handshake",
           "write_secret"]

Principal = Literal["admin", "device", "worker", "promoter"]
PRINCIPALS: tuple[Principal, ...] = get_args(Principal)
MECHANISM: Final = "SCRAM-SHA-512"
# The broker's certificate subject: its principal on the mutual-TLS controller listener.
BROKER_PRINCIPAL = "User:CN=streamedge-broker"
# Certificates outlive any development run; a new state folder issues new ones.
_VALID_DAYS = 825
_SASL_HANDSHAKE_API_KEY = 17


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only: created 0600, never world-readable in between.

    An existing file is cut to 0600 before ``data`` goes in (``os.open``'s mode applies only to a
    file it creates).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue_certificates(folder: Path, keystore_password: str) -> None:
    """A CA and a broker key pair signed by it (ECDSA P-256), the broker's as PKCS#12."""
    now = datetime.datetime.now(datetime.UTC)
    valid_until = now + datetime.timedelta(days=_VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("streamedge local CA")
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(valid_until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    broker_key = ec.generate_private_key(ec.SECP256R1())
    broker_cert = (
        x509.CertificateBuilder().subject_name(_name(BROKER_PRINCIPAL.removeprefix("User:CN=")))
        .issuer_name(ca_name).public_key(broker_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(valid_until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Clients check the name they dialled (127.0.0.1 or localhost) against these.
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        # clientAuth too: the broker presents the same certificate to the controller listener.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    write_secret(folder / "ca.pem", ca_cert.public_bytes(pem))
    write_secret(folder / "ca-key.pem", ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    write_secret(folder / "broker.p12", pkcs12.serialize_key_and_certificates(
        b"broker", broker_key, broker_cert, [ca_cert],
        serialization.BestAvailableEncryption(keystore_password.encode())))


class BrokerSecurity:
    """The CA, broker keystore and SCRAM users of one secure broker (or cluster), under ``folder``.

    Build with :meth:`ensure` (create once, then load) or :meth:`load` (must exist).
    """

    def __init__(self, folder: Path, passwords: Mapping[str, str], keystore_password: str) -> None:
        self.folder = Path(folder).resolve()
        self._passwords = dict(passwords)
        self._keystore_password = keystore_password

    @classmethod
    def exists(cls, folder: Path) -> bool:
        """Whether ``folder`` holds a generated setup (``credentials.json``)."""
        return (Path(folder) / "credentials.json").is_file()

    @classmethod
    def load(cls, folder: Path) -> BrokerSecurity:
        """The setup generated earlier in ``folder``.

        Raises:
            ConfigError: ``folder`` has no readable ``credentials.json``.
        """
        path = Path(folder) / "credentials.json"
        try:
            data = json.loads(path.read_text())
            passwords: dict[str, str] = {name: str(data["users"][name]) for name in PRINCIPALS}
            return cls(Path(folder), passwords, str(data["keystore_password"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"no usable broker credentials in {path}: {exc}") from exc

    @classmethod
    def ensure(cls, folder: Path) -> BrokerSecurity:
        """Load the setup in ``folder``, generating CA, keystore and passwords first if there is none."""
        folder = Path(folder)
        if cls.exists(folder):
            return cls.load(folder)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        passwords: dict[str, str] = {name: secrets.token_urlsafe(24) for name in PRINCIPALS}
        keystore_password = secrets.token_urlsafe(24)
        _issue_certificates(folder, keystore_password)
        write_secret(folder / "credentials.json", json.dumps(
            {"mechanism": MECHANISM, "users": passwords, "keystore_password": keystore_password}, indent=2).encode())
        return cls(folder, passwords, keystore_password)

    @property
    def cafile(self) -> Path:
        """The CA certificate (PEM) that verifies the broker."""
        return self.folder / "ca.pem"

    def password(self, principal: Principal) -> SecretStr:
        """The SCRAM password of ``principal``."""
        return SecretStr(self._passwords[principal])

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments creating every SCRAM user in the new metadata log."""
        args: list[str] = []
        for name in PRINCIPALS:
            args += ["--add-scram", f"{MECHANISM}=[name={name},password={self._passwords[name]}]"]
        return args

    def server_properties(self, port: int, controller_port: int) -> dict[str, str]:
        """Broker properties replacing the PLAINTEXT listeners: SASL_SSL for clients and brokers,
        mutual TLS for the controller quorum, the StandardAuthorizer with ACLs required."""
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
                f'username="admin" password="{self._passwords["admin"]}";')
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            # SCRAM cannot authenticate controller connections (its users live in the metadata the
            # controllers serve), so the quorum authenticates by certificate instead.
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "listener.name.controller.ssl.client.auth": "required",
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.folder / "broker.p12"),
            "ssl.keystore.password": self._keystore_password,
            "ssl.key.password": self._keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.cafile),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:admin;{BROKER_PRINCIPAL}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def client_settings(self, principal: Principal, bootstrap: str, client_id: str = "streamedge",
                        password: SecretStr | None = None) -> KafkaSettings:
        """KafkaSettings for ``principal`` (SASL_SSL, SCRAM-SHA-512, this CA); ``password`` overrides the real one."""
        return KafkaSettings(bootstrap_servers=bootstrap, security_protocol="SASL_SSL", sasl_mechanism=MECHANISM,
                             sasl_username=principal, sasl_password=password or self.password(principal),
                             ssl_cafile=self.cafile, client_id=client_id)

    def write_client_configs(self, bootstrap: str) -> list[Path]:
        """Write ``<principal>.toml`` per principal, for ``streamedge --config``; returns the paths."""
        written: list[Path] = []
        for name in PRINCIPALS:
            text = (f'bootstrap_servers = "{bootstrap}"\n\n[kafka]\nsecurity_protocol = "SASL_SSL"\n'
                    f'sasl_mechanism = "{MECHANISM}"\nsasl_username = "{name}"\n'
                    f'sasl_password = "{self._passwords[name]}"\nssl_cafile = "{self.cafile}"\n')
            path = self.folder / f"{name}.toml"
            write_secret(path, text.encode())
            written.append(path)
        return written

    def probe(self, host: str, port: int, timeout: float) -> bool:
        """Whether the broker completes a TLS handshake (verified against the CA) and offers SCRAM."""
        try:
            return MECHANISM in sasl_handshake(host, port, self.cafile, timeout)
        except (OSError, struct.error, ValueError):
            return False


def sasl_handshake(host: str, port: int, cafile: Path, timeout: float) -> list[str]:
    """Connect with TLS, send SaslHandshake v1 for SCRAM-SHA-512; returns the mechanisms the broker offers.

    Request processing starts only once the broker serves, so an answer means it is up. No
    credentials are sent: the connection is closed after the handshake answer.
    """
    context = ssl.create_default_context(cafile=str(cafile))
    mechanism = MECHANISM.encode()
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=host) as sock:
        response = request(sock, _SASL_HANDSHAKE_API_KEY, 1, 1, b"streamedge-probe",
                            struct.pack(">h", len(mechanism)) + mechanism)
    _error, count = struct.unpack(">hi", response[:6])
    mechanisms, offset = [], 6
    for _ in range(count):
        (length,) = struct.unpack(">h", response[offset:offset + 2])
        mechanisms.append(response[offset + 2:offset + 2 + length].decode())
        offset += 2 + length
    return mechanisms
