"""A local certificate authority for the NATS cluster: made once, kept in a folder.

`ensure(directory, hosts)` makes `ca.pem` (the CA certificate clients verify the servers with,
RUNLOOM_NATS_CA), `ca-key.pem`, and `server.pem` / `server-key.pem`: one certificate for every
node, valid for `hosts` (IP addresses or names), used for client connections and for the routes
between nodes. Keys are written mode 600. A server certificate that does not cover the hosts
asked for is made again (the CA stays).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 825


@dataclass(frozen=True)
class ServerTls:
    ca: Path
    cert: Path
    key: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Runloom local NATS CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _covers(cert_path: Path, hosts: Sequence[str]) -> bool:
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = set(names.get_values_for_type(x509.DNSName))
    have |= {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    expires = cert.not_valid_after_utc
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    return set(hosts) <= have and expires > soon


def ensure(directory: Path, hosts: Sequence[str]) -> ServerTls:
    """The CA and a server certificate for `hosts` under `directory` (folder mode 700)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    hosts = list(dict.fromkeys([*hosts, "127.0.0.1", "localhost"]))
    ca_cert, ca_key = _ca(directory)
    out = ServerTls(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    if _covers(out.cert, hosts) and out.key.exists():
        return out
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "runloom-nats")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(out.key, _key_pem(key))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out


def client_block(t: ServerTls) -> str:
    """nats-server's `tls` block for client connections: the server presents its certificate;
    clients authenticate with their nkey, not a client certificate."""
    return (
        "tls {\n"
        f'  cert_file: "{t.cert}"\n'
        f'  key_file: "{t.key}"\n'
        f'  ca_file: "{t.ca}"\n'
        "  timeout: 2\n"
        "}\n"
    )


def route_block(t: ServerTls) -> str:
    """The `tls` block inside `cluster {}`: routes are TLS both ways, each node verifying the
    other's certificate against the CA."""
    return (
        "tls {\n"
        f'  cert_file: "{t.cert}"\n'
        f'  key_file: "{t.key}"\n'
        f'  ca_file: "{t.ca}"\n'
        "  verify: true\n"
        "  timeout: 2\n"
        "}\n"
    )
