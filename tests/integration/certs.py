"""Test PKI for integration tests, made with the ``openssl`` command line.

``make_pki(dir)`` creates, in ``dir``:

  ca.crt / ca.key            a self-signed test CA (CA:TRUE, keyCertSign)
  server.crt / server.key    leaf for ``names`` (SAN: the DNS names plus
                             IP 127.0.0.1 and ::1), signed by the CA
  server.chain.pem           leaf then CA (what moat's tls.certificate wants)
  other.*                    a second leaf for ``other_names`` (SNI tests)
  expired.*                  a leaf for ``names`` valid only in 2020 (expired)
  selfsigned.crt / .key      a self-signed leaf for ``names``, not from the CA

Keys are EC P-256 by default (fast), RSA-2048 with ``key="rsa"``.  Private
keys are PKCS#8 PEM, unencrypted, mode 0600.  Python stdlib only.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

__all__ = ["PKI", "Leaf", "make_pki", "openssl_available"]

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


@dataclass
class Leaf:
    cert: Path      # leaf certificate only
    key: Path       # its private key
    chain: Path     # leaf followed by the CA certificate
    names: List[str]


@dataclass
class PKI:
    dir: Path
    key_type: str
    ca_cert: Path
    ca_key: Path
    server: Leaf
    other: Leaf
    expired: Optional[Leaf]
    selfsigned: Optional[Leaf]
    names: List[str] = field(default_factory=list)

    # Shortcuts for the common case.
    @property
    def server_cert(self) -> Path:
        return self.server.cert

    @property
    def server_key(self) -> Path:
        return self.server.key

    @property
    def server_chain(self) -> Path:
        return self.server.chain


def openssl_available() -> bool:
    return os.access(OPENSSL, os.X_OK)


def _openssl(*args: str, cwd: Path) -> None:
    p = subprocess.run([OPENSSL, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{p.stdout}{p.stderr}")


def _newkey_args(key: str) -> List[str]:
    if key == "ec":
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    if key == "rsa":
        return ["-newkey", "rsa:2048"]
    raise ValueError(f"key must be 'ec' or 'rsa', not {key!r}")


def _san(names: Sequence[str], ips: Sequence[str]) -> str:
    parts = []
    for n in names:
        try:
            ipaddress.ip_address(n)
            parts.append(f"IP:{n}")
        except ValueError:
            parts.append(f"DNS:{n}")
    parts += [f"IP:{ip}" for ip in ips if f"IP:{ip}" not in parts]
    return ",".join(parts)


_CA_CNF = """\
[ ca ]
default_ca = testca
[ testca ]
dir = {dir}
database = $dir/ca.db/index.txt
serial = $dir/ca.db/serial
new_certs_dir = $dir/ca.db
certificate = $dir/ca.crt
private_key = $dir/ca.key
default_md = sha256
default_days = 825
policy = anything
unique_subject = no
copy_extensions = none
email_in_dn = no
[ anything ]
commonName = supplied
"""


def make_leaf(d: Path, stem: str, names: Sequence[str], key: str,
              ips: Sequence[str], *, startdate: Optional[str] = None,
              enddate: Optional[str] = None, days: int = 825) -> Leaf:
    """A leaf d/STEM.{crt,key,chain.pem} signed by the CA in d; called
    again for a stem, it replaces them (soak.py renews the server's)."""
    cn = names[0]
    ext = d / f"{stem}.ext"
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        f"keyUsage = critical, {'digitalSignature' if key == 'ec' else 'digitalSignature, keyEncipherment'}\n"
        "extendedKeyUsage = serverAuth, clientAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
        f"subjectAltName = {_san(names, ips)}\n")
    _openssl("req", "-new", *_newkey_args(key), "-nodes",
             "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", f"/CN={cn}", cwd=d)
    dates = (["-startdate", startdate, "-enddate", enddate] if startdate
             else ["-days", str(days)])
    _openssl("ca", "-batch", "-config", "ca.cnf", "-notext", "-in", f"{stem}.csr",
             "-out", f"{stem}.crt", "-extfile", ext.name, *dates, cwd=d)
    chain = d / f"{stem}.chain.pem"
    chain.write_bytes((d / f"{stem}.crt").read_bytes() + (d / "ca.crt").read_bytes())
    os.chmod(d / f"{stem}.key", 0o600)
    (d / f"{stem}.csr").unlink()
    ext.unlink()
    return Leaf(cert=d / f"{stem}.crt", key=d / f"{stem}.key", chain=chain, names=list(names))


def make_pki(dir, names: Sequence[str] = ("localhost", "mail.example.test"),
             key: str = "ec", *, other_names: Sequence[str] = ("other.example.test",),
             ips: Sequence[str] = ("127.0.0.1", "::1"), expired: bool = True,
             selfsigned: bool = True) -> PKI:
    """Create a test CA and leaves in ``dir`` (created if missing)."""
    d = Path(dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    names = list(names)
    if not names:
        raise ValueError("names must not be empty")
    db = d / "ca.db"
    db.mkdir(exist_ok=True)
    (db / "index.txt").write_text("")
    # Random 64-bit start serial (even-length hex, top bit clear, nonzero).
    (db / "serial").write_text(f"{secrets.randbits(62) | (1 << 62):016X}\n")
    (d / "ca.cnf").write_text(_CA_CNF.format(dir=d))

    _openssl("req", "-x509", *_newkey_args(key), "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "3650", "-subj", "/CN=moat test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    os.chmod(d / "ca.key", 0o600)

    server = make_leaf(d, "server", names, key, ips)
    other = make_leaf(d, "other", list(other_names), key, ips)
    exp = (make_leaf(d, "expired", names, key, ips,
                 startdate="20200101000000Z", enddate="20200201000000Z")
           if expired else None)
    ss = None
    if selfsigned:
        _openssl("req", "-x509", *_newkey_args(key), "-nodes", "-keyout", "selfsigned.key",
                 "-out", "selfsigned.crt", "-days", "825", "-subj", f"/CN={names[0]}",
                 "-addext", f"subjectAltName={_san(names, ips)}",
                 "-addext", "basicConstraints=critical,CA:FALSE", cwd=d)
        os.chmod(d / "selfsigned.key", 0o600)
        ss = Leaf(cert=d / "selfsigned.crt", key=d / "selfsigned.key",
                  chain=d / "selfsigned.crt", names=names)
    return PKI(dir=d, key_type=key, ca_cert=d / "ca.crt", ca_key=d / "ca.key",
               server=server, other=other, expired=exp, selfsigned=ss, names=names)
