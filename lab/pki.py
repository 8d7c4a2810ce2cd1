"""Throwaway certificates made at run time (cryptography): no key is ever committed.

The lab's Verbund CA signs one certificate per site for the inter-site trunk
(TLS with mutual certificates: each site is server and client with the same
certificate); the tests use the same helpers for the AML pull stand-in and for
certificates of a CA nobody trusts. The Verbund's Redis (nodes, sentinels, the services as
clients) gets a CA of its own when a test runs it over TLS (redis_pki).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Issuer = tuple[x509.Name, ec.EllipticCurvePrivateKey]


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    subject: str,
    issuer: Issuer | None,
    *,
    ca: bool = False,
    server: bool = False,
    client: bool = True,
    alt_names: list[str] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate valid for a day; issuer None: self-signed. alt_names: IP addresses or DNS names."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer is not None else (name(subject), key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )  # fmt: skip
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName([_alt_name(n) for n in alt_names]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def _alt_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    """<stem>.crt and <stem>.key (only the owner may read the key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass(frozen=True)
class SiteCertificate:
    cert: Path
    key: Path
    ca: Path  # the Verbund CA: the only one the trunk trusts


def _pki(directory: Path, ca_name: str, ca_stem: str, holders: dict[str, list[str]]) -> dict[str, SiteCertificate]:
    """A fresh CA and a certificate per holder (server and client, for the holder's addresses)."""
    ca_cert, ca_key = issue(ca_name, None, ca=True)
    ca_path, ca_key_path = write(directory, ca_stem, ca_cert, ca_key)
    ca_key_path.unlink()  # nothing is signed later: the CA key is not kept
    certificates = {}
    for holder, addresses in holders.items():
        cert, key = issue(holder, (ca_cert.subject, ca_key), server=True, alt_names=addresses)
        cert_path, key_path = write(directory, holder, cert, key)
        certificates[holder] = SiteCertificate(cert_path, key_path, ca_path)
    return certificates


def verbund_pki(directory: Path, site_addresses: dict[str, str]) -> dict[str, SiteCertificate]:
    """A fresh Verbund CA and a trunk certificate per site (server and client, for the site's address)."""
    holders = {f"asterisk-{site}": [address] for site, address in site_addresses.items()}
    certificates = _pki(directory, "Verbund112 lab CA", "verbund-ca", holders)
    return {site: certificates[f"asterisk-{site}"] for site in site_addresses}


def redis_pki(directory: Path, holders: list[str], address: str) -> dict[str, SiteCertificate]:
    """A fresh CA of the Verbund's Redis and a certificate per holder (a Redis node, a sentinel, a
    service), each for ``address``: every one is server and client (a replica connects to its
    master, a sentinel to the nodes and the other sentinels, each presenting its certificate)."""
    return _pki(directory, "Verbund112 lab Redis CA", "redis-ca", {holder: [address] for holder in holders})
