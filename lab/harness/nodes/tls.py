"""Throw-away TLS material for test brokers: a CA, a server certificate for 127.0.0.1/localhost and
a client certificate, made with the openssl command line (the only X.509 tool every machine here
has). Nothing is ever trusted outside the directory it is written to."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .base import LOOPBACK, NodeError

#: Days the certificates are valid: a test run, with room for a slow machine's clock.
VALID_DAYS = 2


@dataclass(frozen=True)
class TLSFiles:
    """Paths of one CA and the server and client certificates it signed (PEM, keys unencrypted)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise NodeError("openssl not found on PATH: it makes the test certificates")
    done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise NodeError(f"openssl {args[0]} failed ({done.returncode}): {done.stderr.strip()}")


def _signed(directory: Path, name: str, subject: str, extensions: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, cert, ext = (directory / f"{name}{suffix}" for suffix in (".key", ".csr", ".crt", ".ext"))
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subject, cwd=directory
    )
    ext.write_text(extensions)
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        str(VALID_DAYS),
        "-sha256",
        "-extfile",
        str(ext),
        cwd=directory,
    )
    csr.unlink()
    ext.unlink()
    return cert, key


def make_test_certs(directory: str | Path, name: str = "brokerstack-test") -> TLSFiles:
    """A fresh CA in ``directory`` and, signed by it, a server certificate valid for 127.0.0.1 and
    localhost (what clients here verify the host name against) and a client certificate."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_cert),
        "-days",
        str(VALID_DAYS),
        "-sha256",
        "-subj",
        f"/CN={name} CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    server = _signed(
        directory,
        "server",
        "/CN=localhost",
        f"subjectAltName=IP:{LOOPBACK},DNS:localhost\nextendedKeyUsage=serverAuth\n",
        (ca_cert, ca_key),
    )
    client = _signed(directory, "client", f"/CN={name} client", "extendedKeyUsage=clientAuth\n", (ca_cert, ca_key))
    for path in directory.iterdir():
        # Readable by a broker that runs as another user (a container's redis user).
        path.chmod(0o644)
    return TLSFiles(ca_cert, ca_key, server[0], server[1], client[0], client[1])
