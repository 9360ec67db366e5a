"""Implicit TLS (SMTPS, POP3S) through moat to real Postfix and Dovecot:
delivery and retrieval byte for byte, curl, TLS versions and ciphers, SNI,
reload on SIGHUP and drain on SIGTERM.  See issue 3.
"""

from __future__ import annotations

import json
import os
import poplib
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import uuid

import pytest

from conftest import started_stack
from moatrun import Moat, free_port, listener, running

SENDER = "sender@example.org"


def make_message(subject: str) -> bytes:
    mid = f"<{uuid.uuid4().hex}@example.org>"
    return (f"From: Sender <{SENDER}>\r\n"
            "To: Alice <alice@example.test>\r\n"
            f"Subject: {subject}\r\n"
            f"Message-ID: {mid}\r\n"
            "Date: Mon, 02 Jan 2023 03:04:05 +0000\r\n"
            "\r\n"
            "first line\r\n"
            ".a line starting with a dot\r\n"
            "..two dots\r\n"
            "trailing spaces   \r\n"
            "\ttab\r\n"
            + "y" * 998 + "\r\n"
            "last line\r\n").encode("ascii")


@pytest.fixture(scope="module")
def stack():
    yield from started_stack(postfix_proxy="haproxy", dovecot_proxy=True)


@pytest.fixture(scope="module")
def moat(stack, pki, tmp_path_factory):
    m = Moat(tmp_path_factory.mktemp("moat"), pki, [
        listener("smtps", stack.smtp_addr, backend_proxy="v2"),
        listener("pop3s", stack.pop3_addr, protocol="pop3", backend_proxy="v2"),
    ], sni=[{"names": ["other.example.test", "*.wild.example.test"],
             "certificate": pki.other.chain, "key": pki.other.key}])
    yield from running(m)


def client_ctx(pki, **kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def pop3_retr_last(moat, pki, user="alice", password="alicepw") -> bytes:
    p = poplib.POP3_SSL("127.0.0.1", moat.port("pop3s"), context=client_ctx(pki),
                        timeout=20)
    try:
        p.user(user)
        p.pass_(password)
        count, _ = p.stat()
        return b"\r\n".join(p.retr(count)[1]) + b"\r\n"
    finally:
        p.quit()


def test_smtps_delivery_and_pop3s_byte_identical(stack, moat, pki):
    sent = make_message("smtps " + uuid.uuid4().hex)
    before = len(stack.maildir_messages("alice"))
    with smtplib.SMTP_SSL("127.0.0.1", moat.port("smtps"), context=client_ctx(pki),
                          timeout=20) as s:
        s.ehlo("client.example.org")
        s.sendmail(SENDER, ["alice@example.test"], sent)
    stored = stack.wait_for_messages("alice", before + 1, timeout=20)[-1]
    assert stored.endswith(sent.replace(b"\r\n", b"\n"))

    got = pop3_retr_last(moat, pki)
    # Everything we sent comes back exactly, after the MTA's trace headers.
    assert got.endswith(sent), got[-400:]
    assert got[: -len(sent)].startswith(b"Return-Path: <sender@example.org>\r\n")


def test_curl_smtps_and_pop3s(stack, moat, pki, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    subject = "curl " + uuid.uuid4().hex
    msg = tmp_path / "msg.eml"
    msg.write_bytes(make_message(subject))
    before = len(stack.maildir_messages("alice"))
    subprocess.run(["curl", "-sS", "--max-time", "30", "--cacert", str(pki.ca_cert),
                    "--url", f"smtps://127.0.0.1:{moat.port('smtps')}",
                    "--mail-from", SENDER, "--mail-rcpt", "alice@example.test",
                    "--upload-file", str(msg)], check=True, capture_output=True)
    stack.wait_for_messages("alice", before + 1, timeout=20)
    out = subprocess.run(["curl", "-sS", "--max-time", "30", "--cacert", str(pki.ca_cert),
                          "--user", "alice:alicepw",
                          f"pop3s://127.0.0.1:{moat.port('pop3s')}/{before + 1}"],
                         check=True, capture_output=True).stdout
    assert subject.encode() in out


def tls_connect(moat, ctx, name="pop3s", server_hostname="localhost"):
    sock = socket.create_connection(("127.0.0.1", moat.port(name)), timeout=20)
    return ctx.wrap_socket(sock, server_hostname=server_hostname)


def test_tls13(moat, pki):
    ctx = client_ctx(pki, minimum_version=ssl.TLSVersion.TLSv1_3)
    with tls_connect(moat, ctx) as s:
        assert s.version() == "TLSv1.3"
        assert s.recv(100).startswith(b"+OK")


def test_tls12_is_ecdhe_aead(moat, pki):
    ctx = client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    with tls_connect(moat, ctx) as s:
        assert s.version() == "TLSv1.2"
        cipher = s.cipher()[0]
        assert cipher.startswith("ECDHE-"), cipher
        assert "GCM" in cipher or "CHACHA20" in cipher, cipher
        assert s.recv(100).startswith(b"+OK")


def test_tls12_without_ecdhe_aead_refused(moat, pki):
    ctx = client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("AES128-SHA:AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA:"
                    "ECDHE-RSA-AES128-SHA:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with tls_connect(moat, ctx):
            pass


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls11_refused_and_logged(moat, pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as e:
        pytest.skip(f"this Python/OpenSSL cannot offer TLS 1.1: {e}")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with tls_connect(moat, ctx):
            pass
    moat.wait_log("tls_fail reason=\"unsupported protocol\"")
    # The session's close line carries the same detail.
    moat.wait_log('close reason=tls_fail error="unsupported protocol"')
    # moat keeps serving.
    with tls_connect(moat, client_ctx(pki)) as s:
        assert s.recv(100).startswith(b"+OK")


def peer_cn(moat, pki, server_hostname, name="pop3s"):
    ctx = client_ctx(pki)
    ctx.check_hostname = False
    with tls_connect(moat, ctx, name=name, server_hostname=server_hostname) as s:
        cert = s.getpeercert()
    return dict(x[0] for x in cert["subject"])["commonName"]


def test_sni_picks_certificate(moat, pki):
    assert peer_cn(moat, pki, "other.example.test") == "other.example.test"
    assert peer_cn(moat, pki, "OTHER.example.test") == "other.example.test"
    assert peer_cn(moat, pki, "a.wild.example.test") == "other.example.test"
    # A wildcard stands for one label only; unknown names get the default.
    assert peer_cn(moat, pki, "a.b.wild.example.test") == "localhost"
    assert peer_cn(moat, pki, "localhost") == "localhost"
    assert peer_cn(moat, pki, "unknown.example.org") == "localhost"


def test_sni_cannot_forge_log_lines(moat, pki):
    """The SNI is the client's text: a line break in it (OpenSSL lets
    any byte but NUL through) must not start a log line of its own, such
    as a fake refusal of another address for a log watcher to act on."""
    forged = "<4>moat: 0000000000000000 reject ip=203.0.113.9 reason=banned"
    ctx = client_ctx(pki, check_hostname=False)
    with socket.create_connection(("127.0.0.1", moat.port("smtps")), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname="x\r\n" + forged) as s:
            assert s.recv(512).startswith(b"220 ")
    text = moat.wait_log("203.0.113.9")
    assert not any(line.startswith(forged) for line in text.splitlines())
    line = [l for l in text.splitlines() if "203.0.113.9" in l][-1]
    assert " tls version=" in line and ' sni="x??<4>moat: ' in line, line


def test_garbage_instead_of_tls_logged(moat, pki):
    with socket.create_connection(("127.0.0.1", moat.port("smtps")), timeout=20) as s:
        s.sendall(b"EHLO plaintext.example\r\n" * 10)
        s.settimeout(20)
        try:
            while s.recv(4096):
                pass
        except ConnectionError:
            pass
    moat.wait_log("tls_fail reason=")
    # The same failure is a tls_fail event for those who tail events.
    sid = re.findall(r"(\S+) tls_fail reason=", moat.log())[-1]
    events = [json.loads(line) for line in
              (moat.workdir / "events.jsonl").read_text().splitlines()]
    fail = [e for e in events if e["event"] == "tls_fail" and
            e.get("session") == sid]
    assert len(fail) == 1, events
    assert fail[0]["ip"] == "127.0.0.1"
    assert fail[0]["listener"] == "smtps"
    assert fail[0]["reason"]
    with tls_connect(moat, client_ctx(pki)) as s:
        assert s.recv(100).startswith(b"+OK")


def test_min_version_13(stack, pki, tmp_path):
    m = Moat(tmp_path, pki, [listener("pop3s", stack.pop3_addr, protocol="pop3")],
             min_version="1.3").start()
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with tls_connect(m, client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)):
                pass
        with tls_connect(m, client_ctx(pki)) as s:
            assert s.version() == "TLSv1.3"
    finally:
        assert m.stop() == 0


def test_reload_keeps_sessions_and_swaps_certificate(stack, pki, tmp_path):
    m = Moat(tmp_path, pki, [listener("smtps", stack.smtp_addr, backend_proxy="v2")]).start()
    try:
        ctx = client_ctx(pki)
        old = smtplib.SMTP_SSL("127.0.0.1", m.port("smtps"), context=ctx, timeout=20)
        old.ehlo("before.example.org")
        # Serve the other certificate from now on.
        text = m.config_path.read_text()
        m.config_path.write_text(text.replace(str(pki.server_chain), str(pki.other.chain))
                                 .replace(str(pki.server_key), str(pki.other.key)))
        m.signal(signal.SIGHUP)
        m.wait_log("reload done")
        assert peer_cn(m, pki, "localhost", "smtps") == "other.example.test"
        # The session from before the reload goes on undisturbed.
        before = len(stack.maildir_messages("alice"))
        old.sendmail(SENDER, ["alice@example.test"], make_message("across reload"))
        old.quit()
        stack.wait_for_messages("alice", before + 1, timeout=20)

        # A broken config is refused and the running one kept.
        m.config_path.write_text(text + "\nnot toml at all [[[\n")
        m.signal(signal.SIGHUP)
        m.wait_log("keeping the running configuration")
        assert peer_cn(m, pki, "localhost", "smtps") == "other.example.test"
    finally:
        assert m.stop() == 0


def test_sigterm_drains_open_sessions(stack, pki, tmp_path):
    m = Moat(tmp_path, pki, [listener("smtps", stack.smtp_addr, backend_proxy="v2")],
             drain="30s").start()
    s = smtplib.SMTP_SSL("127.0.0.1", m.port("smtps"), context=client_ctx(pki), timeout=20)
    s.ehlo("drain.example.org")
    m.signal(signal.SIGTERM)
    m.wait_log("draining 1 sessions")
    # No new connections, but the open session completes its mail.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", m.port("smtps")), timeout=5).close()
    # logrotate's SIGHUP meanwhile: no reload, but the events file is
    # reopened, so what the drain still writes goes to the new file.
    events = m.workdir / "events.jsonl"
    events.rename(m.workdir / "events.jsonl.1")
    m.signal(signal.SIGHUP)
    m.wait_log("reload refused: moat is shutting down")
    m.wait_log("the events file was reopened all the same")
    assert events.exists()
    before = len(stack.maildir_messages("alice"))
    s.sendmail(SENDER, ["alice@example.test"], make_message("during drain"))
    s.quit()
    stack.wait_for_messages("alice", before + 1, timeout=20)
    assert m.proc.wait(30) == 0
    m.stop()


def test_ipv4_and_ipv6_listen_addresses(stack, pki, tmp_path):
    """One listener, an IPv4 and an IPv6 address: both serve, and Dovecot
    learns the IPv6 client through the PROXY v2 header."""
    port4, port6 = free_port("127.0.0.1"), free_port("::1")
    m = Moat(tmp_path, pki, [listener(
        "pop3s", stack.pop3_addr, protocol="pop3", backend_proxy="v2",
        listen=[f"127.0.0.1:{port4}", f"[::1]:{port6}"])]).start()
    try:
        ctx = client_ctx(pki)
        for host, port in (("127.0.0.1", port4), ("::1", port6)):
            p = poplib.POP3_SSL(host, port, context=ctx, timeout=20)
            try:
                assert p.getwelcome().startswith(b"+OK"), host
                p.user("alice")
                p.pass_("alicepw")
            finally:
                p.quit()
        m.wait_log("ip=::1")
        stack.wait_log(r"rip=::1", which="dovecot")
    finally:
        assert m.stop() == 0


def sent_chain(port: int, servername: str = "localhost") -> list:
    """The subjects of the certificates moat sends, in order."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                        "-servername", servername, "-showcerts"],
                       input=b"", capture_output=True, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    assert "BEGIN CERTIFICATE" in out, out + r.stderr.decode("utf-8", "replace")
    return re.findall(r"^ *\d+ s:(.*)$", out, re.M)


def test_chain_sent_as_in_the_file(stack, moat, pki, tmp_path):
    """The certificate file's chain goes out as written (leaf, then the
    CA behind it, as in a fullchain.pem), and a file holding only the
    leaf sends only the leaf: moat builds no chain of its own."""
    assert sent_chain(moat.port("smtps")) == ["CN = localhost", "CN = moat test CA"]
    assert sent_chain(moat.port("smtps"), "other.example.test") == \
        ["CN = other.example.test", "CN = moat test CA"]
    m = Moat(tmp_path, pki, [listener("smtps", stack.smtp_addr, backend_proxy="v2")])
    m.config_path.write_text(m.config_path.read_text().replace(
        f'"{pki.server_chain}"', f'"{pki.server_cert}"'))
    m.start()
    try:
        assert sent_chain(m.port("smtps")) == ["CN = localhost"]
    finally:
        assert m.stop() == 0
