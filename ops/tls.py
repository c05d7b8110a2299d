"""The stack's own certificate authority and the registry's server certificate (the `cryptography`
package): Docker engines pull only over TLS they trust, and a team has no public CA for an address like
10.0.0.5. Every engine that pulls trusts the CA once (`/etc/docker/certs.d/<host:port>/ca.crt`)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ops.credentials import write_private

CA_CERT, CA_KEY, CERT, KEY = "ca.crt", "ca.key", "server.crt", "server.key"
VALID = datetime.timedelta(days=825)  # the longest validity clients accept for a server certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "clothes-mlops stack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _subject_alternative_names(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def ensure_certificates(directory: Path, hosts: list[str]) -> Path:
    """The CA (made once, kept) and a server certificate for `hosts` (IP addresses or names), remade when
    the hosts change; returns the CA certificate's path, the file other machines must trust."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    if not (directory / CA_CERT).is_file():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = _name("clothes-mlops stack CA")
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + 5 * VALID)
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
            .sign(ca_key, hashes.SHA256())
        )
        write_private(directory / CA_KEY, _key_pem(ca_key))
        (directory / CA_CERT).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    wanted = _subject_alternative_names(hosts)
    if (directory / CERT).is_file():
        current = x509.load_pem_x509_certificate((directory / CERT).read_bytes())
        if current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == wanted:
            return directory / CA_CERT
    ca = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    signer = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID)
        .add_extension(wanted, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    )
    write_private(directory / KEY, _key_pem(key))
    (directory / CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return directory / CA_CERT
