"""STARTTLS (SMTP 25/587-style, POP3 STLS) through moat to real Postfix and
Dovecot: delivery and retrieval byte for byte with smtplib, swaks and curl,
and the capability lists before and after TLS.  See issue 4.
"""

from __future__ import annotations

import os
import poplib
import shutil
import smtplib
import subprocess
import uuid

import pytest

from conftest import started_stack
from filterutil import Line, client_ctx, moat_with
from mailstack import proxy_v1_header
from moatrun import listener, running

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
            ".\tdot tab\r\n"
            "trailing spaces   \r\n"
            + "y" * 998 + "\r\n"
            "last line\r\n").encode("ascii")


@pytest.fixture(scope="module")
def stack():
    yield from started_stack(postfix_proxy="haproxy", dovecot_proxy=True)


@pytest.fixture(scope="module")
def moat(stack, pki, tmp_path_factory):
    m = moat_with(tmp_path_factory.mktemp("moat"), pki, [
        listener("mx", stack.smtp_addr, tls="starttls", backend_proxy="v2"),
        listener("sub", stack.submission_addr, tls="starttls", backend_proxy="v2"),
        listener("pop3", stack.pop3_addr, protocol="pop3", tls="starttls",
                 backend_proxy="v2"),
        listener("pop3req", stack.pop3_addr, protocol="pop3", tls="starttls",
                 backend_proxy="v2"),
    ], extra={"sub": {"require_tls": True}, "pop3req": {"require_tls": True}})
    yield from running(m)


def keywords(ehlo_lines):
    return [l[4:].split(b" ")[0].split(b"=")[0].strip().upper() for l in ehlo_lines[1:]]


def pop3_retr_last(moat, pki, name="pop3"):
    p = poplib.POP3("127.0.0.1", moat.port(name), timeout=20)
    try:
        p.stls(client_ctx(pki))
        p.user("alice")
        p.pass_("alicepw")
        count, _ = p.stat()
        return b"\r\n".join(p.retr(count)[1]) + b"\r\n"
    finally:
        p.quit()


def test_smtplib_starttls_mx_and_pop3_stls_byte_identical(stack, moat, pki):
    sent = make_message("starttls " + uuid.uuid4().hex)
    before = len(stack.maildir_messages("alice"))
    with smtplib.SMTP("127.0.0.1", moat.port("mx"), timeout=20) as s:
        s.ehlo("client.example.org")
        assert s.has_extn("starttls")
        s.starttls(context=client_ctx(pki))
        s.ehlo("client.example.org")
        assert not s.has_extn("starttls")
        s.sendmail(SENDER, ["alice@example.test"], sent)
    stored = stack.wait_for_messages("alice", before + 1, timeout=20)[-1]
    assert stored.endswith(sent.replace(b"\r\n", b"\n"))
    got = pop3_retr_last(moat, pki)
    assert got.endswith(sent), got[-400:]
    assert got[: -len(sent)].startswith(b"Return-Path: <sender@example.org>\r\n")


def test_submission_auth_after_starttls(stack, moat, pki):
    sent = make_message("submission " + uuid.uuid4().hex)
    before = len(stack.maildir_messages("alice"))
    with smtplib.SMTP("127.0.0.1", moat.port("sub"), timeout=20) as s:
        s.ehlo("client.example.org")
        assert not s.has_extn("auth")
        code, msg = s.mail(SENDER)
        assert code == 530 and b"Must issue a STARTTLS command first" in msg
        s.starttls(context=client_ctx(pki))
        s.ehlo("client.example.org")
        assert s.has_extn("auth")
        s.login("alice", "alicepw")
        s.sendmail(SENDER, ["alice@example.test"], sent)
    stored = stack.wait_for_messages("alice", before + 1, timeout=20)[-1]
    assert stored.endswith(sent.replace(b"\r\n", b"\n"))


def test_swaks_tls(stack, moat, pki, tmp_path):
    if shutil.which("swaks") is None:
        pytest.skip("swaks not installed")
    for name, auth in (("mx", []), ("sub", ["--auth", "PLAIN", "--auth-user", "alice",
                                            "--auth-password", "alicepw"])):
        subject = f"swaks {name} " + uuid.uuid4().hex
        before = len(stack.maildir_messages("alice"))
        r = subprocess.run(["swaks", "--tls", "--server", "127.0.0.1",
                            "--port", str(moat.port(name)), "--from", SENDER,
                            "--to", "alice@example.test", "--header", f"Subject: {subject}",
                            "--timeout", "20"] + auth, capture_output=True, text=True)
        if "requires Net::SSLeay" in r.stderr and not os.environ.get("CI"):
            pytest.skip("swaks --tls needs libnet-ssleay-perl")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "STARTTLS" in r.stdout
        stack.wait_for_messages("alice", before + 1, timeout=20)
        assert any(subject.encode() in m for m in stack.maildir_messages("alice"))


def test_curl_ssl_reqd_smtp_and_pop3(stack, moat, pki, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    subject = "curl " + uuid.uuid4().hex
    msg = tmp_path / "msg.eml"
    sent = make_message(subject)
    msg.write_bytes(sent)
    for name, auth in (("mx", []), ("sub", ["--user", "alice:alicepw"])):
        before = len(stack.maildir_messages("alice"))
        subprocess.run(["curl", "-sS", "--max-time", "30", "--ssl-reqd",
                        "--cacert", str(pki.ca_cert),
                        "--url", f"smtp://127.0.0.1:{moat.port(name)}",
                        "--mail-from", SENDER, "--mail-rcpt", "alice@example.test",
                        "--upload-file", str(msg)] + auth, check=True, capture_output=True)
        stack.wait_for_messages("alice", before + 1, timeout=20)
    n = len(stack.maildir_messages("alice"))
    for name in ("pop3", "pop3req"):
        out = subprocess.run(["curl", "-sS", "--max-time", "30", "--ssl-reqd",
                              "--cacert", str(pki.ca_cert), "--user", "alice:alicepw",
                              f"pop3://127.0.0.1:{moat.port(name)}/{n}"],
                             check=True, capture_output=True).stdout
        assert out.endswith(sent), out[-300:]


HIDDEN = {b"STARTTLS", b"XCLIENT", b"XFORWARD", b"CHUNKING", b"BINARYMIME"}


def direct_ehlo(addr):
    """The backend's own EHLO keywords (with the PROXY header it expects)."""
    c = Line(addr[1])
    try:
        c.send(proxy_v1_header("127.0.0.1", "127.0.0.1", 40000, addr[1]))
        assert c.line().startswith(b"220")
        c.send(b"EHLO client.example.org\r\n")
        return keywords(c.smtp_reply())
    finally:
        c.close()


def direct_capa(addr):
    c = Line(addr[1])
    try:
        c.send(proxy_v1_header("127.0.0.1", "127.0.0.1", 40000, addr[1]))
        assert c.line().startswith(b"+OK")
        c.send(b"CAPA\r\n")
        return [l.strip() for l in c.pop3_multi()[1:-1]]
    finally:
        c.close()


def test_ehlo_capabilities_exact(stack, moat, pki):
    """Before TLS: the backend's list without HIDDEN (and without AUTH when
    TLS is required), then STARTTLS; after TLS: without HIDDEN."""
    for name, addr, hide_auth in (("mx", stack.smtp_addr, False),
                                  ("sub", stack.submission_addr, True)):
        backend = direct_ehlo(addr)
        assert b"PIPELINING" in backend and b"AUTH" in backend
        want_before = [k for k in backend if k not in HIDDEN
                       and not (hide_auth and k == b"AUTH")] + [b"STARTTLS"]
        want_after = [k for k in backend if k not in HIDDEN]
        c = Line(moat.port(name))
        try:
            c.line()
            c.send(b"EHLO client.example.org\r\n")
            assert keywords(c.smtp_reply()) == want_before
            c.send(b"STARTTLS\r\n")
            c.line()
            c.starttls(pki)
            c.send(b"EHLO client.example.org\r\n")
            assert keywords(c.smtp_reply()) == want_after
        finally:
            c.close()


def test_capa_exact(stack, moat, pki):
    backend = direct_capa(stack.pop3_addr)
    for name, required in (("pop3", False), ("pop3req", True)):
        want_before = [k for k in backend if k != b"STLS" and not (
            required and (k == b"USER" or k.startswith(b"SASL")))] + [b"STLS"]
        want_after = [k for k in backend if k != b"STLS"]
        c = Line(moat.port(name))
        try:
            c.line()
            c.send(b"CAPA\r\n")
            assert [l.strip() for l in c.pop3_multi()[1:-1]] == want_before
            c.send(b"STLS\r\n")
            c.line()
            c.starttls(pki)
            c.send(b"CAPA\r\n")
            assert [l.strip() for l in c.pop3_multi()[1:-1]] == want_after
        finally:
            c.close()


def test_ehlo_capabilities_before_and_after_tls(moat, pki):
    for name, auth_before in (("mx", True), ("sub", False)):
        c = Line(moat.port(name))
        try:
            assert c.line().startswith(b"220 ")
            c.send(b"EHLO client.example.org\r\n")
            before = keywords(c.smtp_reply())
            assert b"STARTTLS" in before
            assert before[-1] == b"STARTTLS"
            assert (b"AUTH" in before) == auth_before
            assert b"PIPELINING" in before
            for gone in (b"XCLIENT", b"XFORWARD", b"CHUNKING", b"BINARYMIME"):
                assert gone not in before
            c.send(b"STARTTLS\r\n")
            assert c.line() == b"220 2.0.0 Ready to start TLS\r\n"
            c.starttls(pki)
            c.send(b"MAIL FROM:<a@example.org>\r\n")
            assert c.line().startswith(b"503 ")
            c.send(b"EHLO client.example.org\r\n")
            after = keywords(c.smtp_reply())
            assert b"STARTTLS" not in after
            assert b"AUTH" in after
            for gone in (b"XCLIENT", b"XFORWARD", b"CHUNKING"):
                assert gone not in after
            c.send(b"STARTTLS\r\n")
            assert c.line().startswith(b"503 ")
            c.send(b"QUIT\r\n")
            assert c.line().startswith(b"221")
        finally:
            c.close()


def test_starttls_in_transaction_refused(moat, pki):
    c = Line(moat.port("mx"))
    try:
        c.line()
        c.send(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nSTARTTLS\r\n")
        c.smtp_reply()
        assert c.line().startswith(b"250")
        assert c.line().startswith(b"503 ")
        c.send(b"RSET\r\nSTARTTLS\r\n")
        assert c.line().startswith(b"250")
        assert c.line() == b"220 2.0.0 Ready to start TLS\r\n"
    finally:
        c.close()


def test_capa_before_and_after_stls(moat, pki):
    for name, user_before in (("pop3", True), ("pop3req", False)):
        c = Line(moat.port(name))
        try:
            assert c.line().startswith(b"+OK")
            c.send(b"CAPA\r\n")
            before = [l.strip() for l in c.pop3_multi()[1:-1]]
            assert b"STLS" in before
            assert (b"USER" in before) == user_before
            assert any(l.startswith(b"SASL") for l in before) == user_before
            if not user_before:
                c.send(b"USER alice\r\n")
                assert c.line().startswith(b"-ERR [AUTH] ")
            c.send(b"STLS\r\n")
            assert c.line() == b"+OK Begin TLS negotiation\r\n"
            c.starttls(pki)
            c.send(b"CAPA\r\n")
            after = [l.strip() for l in c.pop3_multi()[1:-1]]
            assert b"STLS" not in after
            assert b"USER" in after
            assert any(l.startswith(b"SASL") for l in after)
            c.send(b"STLS\r\n")
            assert c.line().startswith(b"-ERR")
            c.send(b"QUIT\r\n")
            assert c.line().startswith(b"+OK")
        finally:
            c.close()
