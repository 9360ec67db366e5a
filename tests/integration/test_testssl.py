"""TLS audit: testssl.sh (Debian's testssl.sh, command `testssl`) scans an
implicit SMTPS listener, an implicit POP3S listener and a STARTTLS SMTP
listener of moat in front of real Postfix and Dovecot, and the test fails
on any finding of severity HIGH or CRITICAL and on SSLv2, SSLv3, TLS 1.0 or
TLS 1.1 being offered.  See issue 9.

The certificate comes from a test CA handed to testssl with --add-ca and
names mail.example.test, the name testssl connects with (--ip 127.0.0.1,
no DNS), so certificate findings are about moat's certificate handling,
not artefacts of a lab certificate.  The leaf also names a CRL
distribution point, as a public CA's leaf would: testssl rates a leaf
with neither CRL nor OCSP URI HIGH.  It never fetches it (no --phone-out).

Scans are restricted to protocols, cipher categories, server defaults
and vulnerabilities (-p -s -S -U) and run concurrently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from certs import Leaf, make_pki
from conftest import require_mailstack
from mailstack import MailStack
from moatrun import Moat, listener

NAME = "mail.example.test"
SCAN_TIMEOUT = 600
BAD_SEVERITIES = ("HIGH", "CRITICAL")
OLD_PROTOCOLS = ("SSLv2", "SSLv3", "TLS1", "TLS1_1")


def crl_leaf(pki) -> Leaf:
    """A leaf for NAME signed by pki's CA with a CRL distribution point."""
    d = pki.dir
    ext = d / "audit.ext"
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
        "crlDistributionPoints = URI:http://ca.example.test/moat-test.crl\n"
        f"subjectAltName = DNS:{NAME}\n")
    def run(*args):
        p = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "audit.key", "-out", "audit.csr", "-subj", f"/CN={NAME}")
    run("ca", "-batch", "-config", "ca.cnf", "-notext", "-in", "audit.csr",
        "-out", "audit.crt", "-extfile", ext.name, "-days", "397")
    chain = d / "audit.chain.pem"
    chain.write_bytes((d / "audit.crt").read_bytes() + (d / "ca.crt").read_bytes())
    os.chmod(d / "audit.key", 0o600)
    return Leaf(cert=d / "audit.crt", key=d / "audit.key", chain=chain, names=[NAME])


class AuditPKI:
    """What Moat wants of a PKI: the audit leaf as the server certificate."""

    def __init__(self, pki, leaf):
        self.ca_cert = pki.ca_cert
        self.server_chain = leaf.chain
        self.server_key = leaf.key


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    if shutil.which("testssl") is None:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("CI=true but testssl is missing (apt-get install testssl.sh)")
        pytest.skip("testssl not installed (apt-get install testssl.sh)")
    require_mailstack()
    pki = make_pki(tmp_path_factory.mktemp("auditpki"), names=(NAME,),
                   expired=False, selfsigned=False)
    apki = AuditPKI(pki, crl_leaf(pki))
    ms = MailStack(postfix_proxy="haproxy", dovecot_proxy=True)
    ms.start()
    workdir = tmp_path_factory.mktemp("moat")
    m = Moat(workdir, apki, [
        listener("smtps", ms.smtp_addr, backend_proxy="v2"),
        listener("pop3s", ms.pop3_addr, protocol="pop3", backend_proxy="v2"),
        listener("smtp", ms.smtp_addr, tls="starttls", backend_proxy="v2"),
    ], verbose=0).start()
    try:
        yield m, apki, workdir
    finally:
        m.stop()
        ms.stop()
        shutil.rmtree(ms.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def scans(audit):
    """Runs the three scans at once; returns {listener: (findings, output)}."""
    m, apki, workdir = audit
    procs = {}
    for name, extra in (("smtps", []), ("pop3s", []), ("smtp", ["--starttls", "smtp"])):
        out = workdir / f"testssl-{name}.json"
        cmd = ["testssl", "--quiet", "--color", "0", "--warnings", "off",
               "--nodns", "none", "--connect-timeout", "10", "--openssl-timeout", "10",
               "-p", "-s", "-S", "-U", *extra,
               "--add-ca", str(apki.ca_cert), "--ip", "127.0.0.1",
               "--jsonfile", str(out), f"{NAME}:{m.port(name)}"]
        procs[name] = (subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True), out)
    started = time.monotonic()
    results = {}
    for name, (p, out) in procs.items():
        left = max(1.0, SCAN_TIMEOUT - (time.monotonic() - started))
        try:
            text, _ = p.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            for q, _ in procs.values():
                q.kill()
                q.wait()
            pytest.fail(f"testssl on {name} took longer than {SCAN_TIMEOUT}s")
        assert out.exists(), f"testssl wrote no JSON for {name}:\n{text[-3000:]}"
        results[name] = (json.loads(out.read_text()), text)
    print(f"testssl: three scans in {time.monotonic() - started:.0f}s")
    assert m.proc.poll() is None, m.log()[-3000:]
    return results


LISTENERS = ["smtps", "pop3s", "smtp"]


@pytest.mark.parametrize("name", LISTENERS)
def test_no_high_or_critical_findings(scans, name):
    findings, text = scans[name]
    bad = [f for f in findings if f.get("severity") in BAD_SEVERITIES]
    assert not bad, f"{name}: {json.dumps(bad, indent=1)}\n{text[-4000:]}"


@pytest.mark.parametrize("name", LISTENERS)
def test_only_tls12_and_tls13_offered(scans, name):
    findings, text = scans[name]
    by_id = {f["id"]: f for f in findings}
    for proto in OLD_PROTOCOLS:
        assert proto in by_id, f"{name}: testssl did not test {proto}:\n{text[-3000:]}"
        assert "not offered" in by_id[proto]["finding"], (name, by_id[proto])
    assert by_id["TLS1_2"]["finding"].startswith("offered"), by_id["TLS1_2"]
    assert by_id["TLS1_3"]["finding"].startswith("offered"), by_id["TLS1_3"]


@pytest.mark.parametrize("name", LISTENERS)
def test_certificate_trusted_by_name(scans, name):
    findings, _ = scans[name]
    by_id = {f["id"]: f for f in findings}
    trust = [f for f in findings if f["id"].startswith("cert_trust")]
    chain = [f for f in findings if f["id"].startswith("cert_chain_of_trust")]
    assert trust and all(f["severity"] == "OK" for f in trust), trust
    assert chain and all(f["severity"] == "OK" for f in chain), chain
    assert "secure_client_renego" in by_id, sorted(by_id)
    assert "not vulnerable" in by_id["secure_client_renego"]["finding"], \
        by_id["secure_client_renego"]
