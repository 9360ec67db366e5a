"""require_tls, line limits and refused commands through moat to real
Postfix and Dovecot: what moat answers itself never reaches the backend
(Postfix logs every command of a debug_peer_list client; Dovecot logs every
login attempt).  See issue 4.
"""

from __future__ import annotations

import uuid

import pytest

from conftest import started_stack
from filterutil import Line, moat_with, wait_events
from moatrun import listener, running


@pytest.fixture(scope="module")
def stack():
    # Both backends trust loopback, moat's address, with XCLIENT.
    yield from started_stack(xclient_hosts="127.0.0.0/8",
                             postconf={"debug_peer_list": "127.0.0.0/8", "debug_peer_level": "2"},
                             dovecot_conf="login_trusted_networks = 127.0.0.0/8\n")


@pytest.fixture(scope="module")
def moat(stack, pki, tmp_path_factory):
    m = moat_with(tmp_path_factory.mktemp("moat"), pki, [
        listener("sub", stack.submission_addr, tls="starttls"),
        listener("pop3", stack.pop3_addr, protocol="pop3", tls="starttls"),
        listener("short", stack.smtp_addr, tls="none"),
        listener("pop3plain", stack.pop3_addr, protocol="pop3", tls="none"),
    ], extra={"sub": {"require_tls": True}, "pop3": {"require_tls": True},
              "short": {"max_line": 512}})
    yield from running(m)


def greeted(moat, name: str, timeout: float = 10.0):
    """An SMTP client through moat, past the greeting and EHLO: the client
    and the EHLO reply lines."""
    c = Line(moat.port(name), timeout=timeout)
    assert c.line().startswith(b"220")
    c.send(b"EHLO c.example\r\n")
    return c, c.smtp_reply()


def test_smtp_auth_and_mail_before_tls(stack, moat):
    tag = uuid.uuid4().hex[:10]
    mark = stack.log_mark("postfix")
    c, caps = greeted(moat, "sub")
    try:
        assert not any(l[4:].upper().startswith(b"AUTH") for l in caps)
        c.send(f"MAIL FROM:<rt-{tag}@example.org>\r\nAUTH PLAIN AHJ0LXt0YWd9AHg=\r\n"
               f"VRFY marker-{tag}\r\n".encode())
        assert c.line() == b"530 5.7.0 Must issue a STARTTLS command first\r\n"
        assert c.line() == b"530 5.7.0 Must issue a STARTTLS command first\r\n"
        c.line()
    finally:
        c.close()
    stack.wait_log(rf"VRFY marker-{tag}", "postfix", since=mark)
    log = stack.postfix_log()
    assert f"rt-{tag}" not in log
    assert "AHJ0LXt0YWd9AHg=" not in log


def test_pop3_login_commands_before_tls(stack, moat):
    tag = uuid.uuid4().hex[:10]
    c = Line(moat.port("pop3"))
    try:
        assert c.line().startswith(b"+OK")
        c.send(f"USER rt-{tag}\r\nPASS x\r\nAPOP rt-{tag} 0123456789abcdef0123456789abcdef\r\n"
               "AUTH PLAIN\r\nCAPA\r\n".encode())
        for _ in range(4):
            assert c.line().startswith(b"-ERR [AUTH] "), "refused locally"
        capa = c.pop3_multi()
        assert b"STLS\r\n" in capa
    finally:
        c.close()
    assert f"rt-{tag}" not in stack.dovecot_log()


def test_client_xclient_refused_never_forwarded(stack, moat):
    tag = uuid.uuid4().hex[:10]
    mark = stack.log_mark("postfix")
    c, ehlo = greeted(moat, "short")
    try:
        caps = [l[4:].upper() for l in ehlo]
        assert not any(k.startswith((b"XCLIENT", b"XFORWARD")) for k in caps)
        c.send(f"XCLIENT ADDR=192.0.2.{len(tag)} NAME=x-{tag}\r\n"
               f"XFORWARD NAME=y-{tag}\r\nVRFY marker-{tag}\r\n".encode())
        assert c.line().startswith(b"550 5.7.0")
        assert c.line().startswith(b"550 5.7.0")
        c.line()
    finally:
        c.close()
    stack.wait_log(rf"VRFY marker-{tag}", "postfix", since=mark)
    log = stack.postfix_log()
    assert f"x-{tag}" not in log and f"y-{tag}" not in log


def test_pop3_client_xclient_refused_never_forwarded(stack, moat):
    """Regression: Dovecot lets a trusted proxy (login_trusted_networks)
    rename the client with XCLIENT; one sent by a client through moat is
    refused and never forwarded, so the login keeps the real address."""
    tag = uuid.uuid4().hex[:10]
    # This login's line, not one from an earlier test of the module: a
    # match on an old line would let the check below run before Dovecot
    # logged the address it took.
    log = stack.dovecot_log_path
    since = log.stat().st_size if log.exists() else 0
    c = Line(moat.port("pop3plain"))
    try:
        assert c.line().startswith(b"+OK")
        c.send(b"XCLIENT ADDR=192.0.2.77 PORT=4242\r\n")
        assert c.line() == b"-ERR insufficient authorization\r\n"
        c.send(f"USER alice\r\nPASS alicepw\r\nNOOP {tag}\r\nQUIT\r\n".encode())
        assert c.line().startswith(b"+OK")
        assert c.line().startswith(b"+OK Logged in")
        c.line()
        c.line()
    finally:
        c.close()
    m = stack.wait_log(r"pop3-login: Info: Login: user=<alice>.* rip=([0-9.]+)", "dovecot",
                       since=since)
    assert m.group(1) != "192.0.2.77", m.group(0)
    assert "192.0.2.77" not in stack.dovecot_log(), m.group(0)
    ev = wait_events(moat, lambda e: e.get("reason") == "client_xclient" and
                     e.get("listener") == "pop3plain")
    assert [e["event"] for e in ev] == ["protocol"]


def test_blank_tricks_never_reach_backend(stack, moat):
    """Postfix splits a command on tabs and skips leading blanks; moat
    refuses such lines, so that no AUTH, MAIL, XCLIENT or DATA can reach
    Postfix in a form moat would not recognise (found by an audit:
    AUTH<TAB>PLAIN before TLS, XCLIENT<TAB>ADDR=, DATA<TAB>)."""
    tag = uuid.uuid4().hex[:10]
    mark = stack.log_mark("postfix")
    c, _ = greeted(moat, "sub")
    try:
        lines = [f"AUTH\tPLAIN AHJ0LXt0YWd9AHg={tag}",
                 f" AUTH PLAIN AHJ0LXt0YWd9AHg={tag}",
                 f"MAIL\tFROM:<tab-{tag}@example.org>",
                 f"XCLIENT\tADDR=127.0.0.1 NAME=xc-{tag}",
                 "DATA\t"]
        c.send(("".join(l + "\r\n" for l in lines) +
                f"VRFY marker-{tag}\r\n").encode())
        for _ in lines:
            assert c.line() == b"500 5.5.2 Error: bad characters in command\r\n"
        last = c.line()
        assert last[:3] in (b"252", b"550", b"502", b"554"), last
    finally:
        c.close()
    stack.wait_log(rf"VRFY marker-{tag}", "postfix", since=mark)
    log = stack.postfix_log()
    assert tag not in log.replace(f"marker-{tag}", "")


def test_pipelined_burst_larger_than_buffer(stack, moat):
    """800 RCPTs (88 KB) in one write: more than moat's 64 KiB input
    buffer and its 63 awaited replies. moat holds the client back until
    Postfix answers, and every reply comes, in order (RFC 2920); it used
    to drop the session as stuck (filter_stall)."""
    pad = "x" * 60
    c, _ = greeted(moat, "short", timeout=30)
    try:
        burst = ["MAIL FROM:<burst@example.org>"]
        burst += [f"RCPT TO:<alice@example.test> ORCPT=rfc822;a{i}-{pad}@example.test"
                  for i in range(800)]
        burst += ["RSET", "QUIT"]
        data = "".join(l + "\r\n" for l in burst).encode()
        assert len(data) > 80000
        c.send(data)
        replies = [c.smtp_reply()[-1] for _ in burst]
        assert all(r.startswith(b"250") for r in replies[:-1]), \
            [r for r in replies if not r.startswith(b"250")][:3]
        assert replies[-1].startswith(b"221")
    finally:
        c.close()
    assert "filter_stall" not in moat.log()


def test_long_lines(stack, moat):
    c = Line(moat.port("short"))
    try:
        assert c.line().startswith(b"220")
        c.send(b"NOOP " + b"a" * 600 + b"\r\nNOOP\r\n")
        assert c.line() == b"500 5.5.2 Error: line too long\r\n"
        assert c.line().startswith(b"250")
        # Just under the bound passes (512 with CRLF).
        c.send(b"NOOP " + b"b" * 505 + b"\r\n")
        assert c.line().startswith(b"250")
        c.send(b"VRFY " + b"c" * 2000 + b"\r\n")
        assert c.line().startswith(b"500 5.5.2")
        c.send(b"VRFY " + b"d" * 9000 + b"\r\n")
        assert c.line().startswith(b"421 ")
        assert c.pending(2) == b""      # closed
    finally:
        c.close()
