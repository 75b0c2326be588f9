"""Default broker functions for session app modules (seeds/002 "helpers.py").

An app module (named by an app's ``module`` key) must define ``get_launch_cmd(job)``,
``gen_config(job)``, ``gen_cert(job, password_hash)`` and ``get_password()``; what it
does not need to change it imports from here::

    from zephserver.launch.broker_helpers import gen_cert, get_launch_cmd, get_password

    def gen_config(job):
        path = os.path.join(job["job_root"], f"{job['job_id']}.config")
        ...
        return path

``job`` is the session's job object (a dict: job_root, app, job_id, port, host,
protocol, owner, argv, cert_key_type, cert_days, ...). Files go in ``job["job_root"]``,
the session's own directory.
"""

import datetime
import os
import secrets
from typing import Any


def get_launch_cmd(job: dict) -> list[str]:
    """The argv to run: the app's argv template, already substituted."""
    return list(job["argv"])


def gen_config(job: dict) -> str | None:
    """No configuration file."""
    return None


def get_password() -> str:
    """A fresh random password (the session's secret)."""
    return secrets.token_urlsafe(18)


def gen_cert(job: dict, password_hash: str | None) -> dict | None:
    """A self-signed certificate and its key for TLS protocols (https, wss), else None.

    Key type from ``job["cert_key_type"]`` ("ec-p256" or "rsa-3072"); validity
    ``job["cert_days"]`` days; both files mode 0600 in the session's directory.
    """
    if job.get("protocol") not in ("https", "wss"):
        return None
    return write_self_signed(job["job_root"], str(job["job_id"]), job.get("host", "localhost"),
                             job.get("cert_key_type", "ec-p256"), int(job.get("cert_days", 30)))


def write_self_signed(directory: str, stem: str, host: str, key_type: str,
                      days: int) -> dict[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key: Any
    if key_type == "rsa-3072":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    paths = {"cert": os.path.join(directory, f"{stem}.crt"),
             "key": os.path.join(directory, f"{stem}.key")}
    _write_private(paths["key"], key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    _write_private(paths["cert"], cert.public_bytes(serialization.Encoding.PEM))
    return paths


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
