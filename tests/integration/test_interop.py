"""Real mail clients on other TLS stacks than Python's through moat to real
Postfix and Dovecot: GnuTLS (gnutls-cli, msmtp), OpenSSL's s_client and
fetchmail, over implicit TLS and STARTTLS, TLS 1.2 and 1.3. Each test
skips when its client is not installed (scripts/deps installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from conftest import started_stack
from moatrun import Moat, listener, running

SENDER = "sender@example.org"


def need(tool: str) -> None:
    """A skip that says which client is missing; under CI a failure, as
    scripts/deps installs them all."""
    if shutil.which(tool) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} not installed")
        pytest.skip(f"{tool} not installed")


@pytest.fixture(scope="module")
def stack():
    yield from started_stack(postfix_proxy="haproxy", dovecot_proxy=True)


@pytest.fixture(scope="module")
def moat(stack, pki, tmp_path_factory):
    m = Moat(tmp_path_factory.mktemp("moat"), pki, [
        listener("mx", stack.smtp_addr, tls="starttls", backend_proxy="v2"),
        listener("smtps", stack.submission_addr, backend_proxy="v2"),
        listener("pop3", stack.pop3_addr, protocol="pop3", tls="starttls",
                 backend_proxy="v2"),
        listener("pop3s", stack.pop3_addr, protocol="pop3", backend_proxy="v2"),
    ])
    yield from running(m)


def gnutls(pki, port: int, data: bytes, *args: str, greeting: bytes = b"") -> str:
    """gnutls-cli with data on stdin, sent in one write once TLS is up
    (and, when greeting is given, once a line starting with it came, as
    a client waits for the greeting); at the end of stdin it sends
    close_notify and reads on until moat closes. Returns what it printed
    (stdout and stderr)."""
    p = subprocess.Popen(["gnutls-cli", "--x509cafile", str(pki.ca_cert),
                          "-p", str(port), *args, "localhost"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, bufsize=0)
    seen = b""
    try:
        while greeting:
            line = p.stdout.readline()
            seen += line
            if not line or line.startswith(greeting):
                break
        seen += p.communicate(data, timeout=30)[0]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = seen.decode(errors="replace")
    assert p.returncode == 0, out
    return out


def test_gnutls_pipelines_behind_the_ehlo_after_starttls(stack, moat, pki):
    """RFC 3207 4.2: after STARTTLS the client sends EHLO again. A client
    that pipelines its transaction behind that EHLO (gnutls-cli writes
    what it has in one record) must get the backend's answers, not
    "503 send EHLO first" for an EHLO it did send."""
    need("gnutls-cli")
    subject = "gnutls pipelined " + uuid.uuid4().hex
    before = len(stack.maildir_messages("alice"))
    out = gnutls(pki, moat.port("mx"),
                 b"EHLO client.example.org\r\n"
                 b"MAIL FROM:<" + SENDER.encode() + b">\r\n"
                 b"RCPT TO:<alice@example.test>\r\n"
                 b"DATA\r\n"
                 b"Subject: " + subject.encode() + b"\r\n\r\nbody\r\n.\r\n"
                 b"QUIT\r\n", "--starttls-proto", "smtp")
    assert "send EHLO first" not in out, out
    assert "250 2.1.0 Ok" in out and "250 2.1.5 Ok" in out, out
    assert "221 2.0.0 Bye" in out, out
    stack.wait_for_messages("alice", before + 1, timeout=20)
    assert any(subject.encode() in m for m in stack.maildir_messages("alice"))


@pytest.mark.parametrize("prio", ["NORMAL", "NORMAL:-VERS-TLS1.3"])
def test_gnutls_implicit_tls_smtp_and_pop3(stack, moat, pki, prio):
    """GnuTLS over TLS 1.3 and 1.2 (ECDHE with an ECDSA certificate, no
    SNI since it connects by name "localhost" only for verification):
    a submission with AUTH, then POP3 with AUTH PLAIN, UIDL and TOP; moat
    ends both with close_notify, which gnutls-cli reports as a clean
    close, not "non-properly terminated"."""
    need("gnutls-cli")
    version = "TLS1.2" if "-VERS-TLS1.3" in prio else "TLS1.3"
    subject = "gnutls " + uuid.uuid4().hex
    before = len(stack.maildir_messages("bob"))
    out = gnutls(pki, moat.port("smtps"),
                 b"EHLO client.example.org\r\n"
                 b"AUTH PLAIN AGFsaWNlAGFsaWNlcHc=\r\n"
                 b"MAIL FROM:<alice@example.test>\r\n"
                 b"RCPT TO:<bob@example.test>\r\n"
                 b"DATA\r\n"
                 b"Subject: " + subject.encode() + b"\r\n\r\nbody\r\n.\r\n"
                 b"QUIT\r\n", "--priority", prio, greeting=b"220 ")
    assert f"({version}-X.509)" in out, out
    assert "235 2.7.0" in out and "221 2.0.0 Bye" in out, out
    assert "non-properly terminated" not in out, out
    stack.wait_for_messages("bob", before + 1, timeout=20)
    out = gnutls(pki, moat.port("pop3s"),
                 b"CAPA\r\nAUTH PLAIN AGJvYgBib2Jwdw==\r\nSTAT\r\n"
                 b"UIDL 1\r\nTOP 1 0\r\nQUIT\r\n", "--priority", prio,
                 greeting=b"+OK")
    assert "+OK Logged in." in out and "+OK Logging out." in out, out
    assert "non-properly terminated" not in out, out


def test_msmtp_starttls_and_smtps(stack, moat, pki, tmp_path):
    """msmtp (GnuTLS, pipelines MAIL/RCPT/DATA) sends through both kinds
    of listener."""
    need("msmtp")
    rc = tmp_path / "msmtprc"
    rc.write_text(
        f"defaults\ntls on\ntls_trust_file {pki.ca_cert}\n"
        f"tls_host_override localhost\nfrom {SENDER}\n"
        f"account mx\nhost 127.0.0.1\nport {moat.port('mx')}\n"
        "tls_starttls on\nauth off\n"
        f"account smtps\nhost 127.0.0.1\nport {moat.port('smtps')}\n"
        "tls_starttls off\nauth plain\nuser alice\npassword alicepw\n"
        "from alice@example.test\n")
    rc.chmod(0o600)
    for account in ("mx", "smtps"):
        subject = f"msmtp {account} " + uuid.uuid4().hex
        before = len(stack.maildir_messages("bob"))
        r = subprocess.run(["msmtp", "-C", str(rc), "-a", account, "bob@example.test"],
                           input=f"Subject: {subject}\r\n\r\nhello\r\n".encode(),
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        stack.wait_for_messages("bob", before + 1, timeout=20)
        assert any(subject.encode() in m for m in stack.maildir_messages("bob"))


def test_fetchmail_stls_and_pop3s(stack, moat, pki, tmp_path):
    """fetchmail (OpenSSL, CAPA, STLS, USER/PASS, UIDL) fetches over STLS
    and implicit TLS, and says nothing about errors."""
    need("fetchmail")
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(pki.ca_cert, certs / "ca.pem")
    subprocess.run(["openssl", "rehash", str(certs)], check=True, capture_output=True)
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll 127.0.0.1 service {moat.port('pop3')} protocol pop3 uidl\n"
        "  user bob password bobpw is root here\n"
        f"  sslproto tls1.2+ sslcertck sslcertpath {certs} sslcommonname localhost\n"
        "  keep fetchall mda \"/bin/cat > /dev/null\"\n"
        f"poll localhost via 127.0.0.1 service {moat.port('pop3s')} protocol pop3\n"
        "  user bob password bobpw is root here\n"
        f"  ssl sslcertck sslcertpath {certs} sslcommonname localhost\n"
        "  keep fetchall mda \"/bin/cat > /dev/null\"\n")
    rc.chmod(0o600)
    r = subprocess.run(["fetchmail", "-f", str(rc), "-v", "--nodetach",
                        "-i", str(tmp_path / "ids")],
                       env=dict(os.environ, HOME=str(tmp_path)),
                       capture_output=True, timeout=60)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode in (0, 1), out     # 1: no mail
    assert out.count("upgrade to TLS succeeded") == 1, out
    assert out.count("POP3< +OK Logging out") == 2, out
    assert "rror" not in out, out


@pytest.fixture(scope="module")
def idle_moat(stack, pki, tmp_path_factory):
    m = Moat(tmp_path_factory.mktemp("moat-idle"), pki, [
        listener("mx", stack.smtp_addr, tls="starttls", backend_proxy="v2", idle="2s"),
        listener("smtps", stack.submission_addr, backend_proxy="v2", idle="2s"),
        listener("pop3", stack.pop3_addr, protocol="pop3", tls="starttls",
                 backend_proxy="v2", idle="2s"),
        listener("pop3s", stack.pop3_addr, protocol="pop3", backend_proxy="v2",
                 idle="2s"),
    ])
    yield from running(m)


def test_idle_timeout_says_goodbye_with_close_notify(idle_moat, pki):
    """A client that idles past timeouts.idle reads what Postfix or
    Dovecot would say on their own timeout (421 4.4.2 / -ERR) and a TLS
    close_notify: neither GnuTLS nor OpenSSL reports a broken
    connection ("non-properly terminated", "unexpected eof")."""
    need("gnutls-cli")
    ca = str(pki.ca_cert)
    runs = []
    for name, proto in (("mx", "smtp"), ("smtps", None), ("pop3", "pop3"),
                        ("pop3s", None)):
        port = str(idle_moat.port(name))
        starttls = ["--starttls-proto", proto] if proto else []
        runs.append((name, "gnutls", subprocess.Popen(
            ["gnutls-cli", "--x509cafile", ca, "-p", port, *starttls, "localhost"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        starttls = ["-starttls", proto] if proto else []
        runs.append((name, "openssl", subprocess.Popen(
            ["openssl", "s_client", "-quiet", "-CAfile", ca, "-connect",
             "127.0.0.1:" + port, *starttls],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    for name, client, p in runs:
        try:
            # Both exit when moat closes; stdin stays open until then.
            p.wait(timeout=15)
        finally:
            if p.poll() is None:
                p.kill()
        out = p.stdout.read().decode(errors="replace")
        p.stdin.close()
        p.stdout.close()
        bye = "421 4.4.2 " if name in ("mx", "smtps") else "-ERR "
        assert bye in out, f"{name} {client}: {out}"
        assert "non-properly terminated" not in out, f"{name} {client}: {out}"
        assert "unexpected eof" not in out, f"{name} {client}: {out}"
