"""Attack 8: with the TLS it now requires, ``models serve`` is stalled by one silent connection.

The listening socket is wrapped for TLS, so the handshake of every new connection runs inside
``accept`` on the server's single accept loop, with no timeout. Anyone who can reach the port
opens one TCP connection and sends nothing: no other client (device, worker, a rollback's
fetch) is answered while it stays open.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from streamedge.registry import ModelRegistry
from streamedge.registry_server import RegistryServer


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_one_silent_connection_does_not_stall_a_tls_registry_server(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    registry = ModelRegistry(tmp_path / "registry", Ed25519PrivateKey.generate())
    server = RegistryServer(registry, "127.0.0.1", 0, "token", cert, key)
    server.start()
    silent = socket.create_connection(("127.0.0.1", server.port))  # connects, never says hello
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    answered = threading.Event()

    def healthz() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw, \
                context.wrap_socket(raw) as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            if tls.recv(64).startswith(b"HTTP/1.1 200"):
                answered.set()

    try:
        threading.Thread(target=healthz, daemon=True).start()
        assert answered.wait(10), "a TLS registry server answered nobody while one connection stayed silent"
    finally:
        silent.close()  # frees the accept loop
        server.stop()
