"""STARTTLS command injection (the CVE-2011-0411 class) through moat: plaintext
pipelined after STARTTLS/STLS in the same write is discarded, never forwarded
and never answered.  The backends' own logs prove what they received: Postfix
logs every command of a debug_peer_list client, Dovecot logs every login
attempt (auth_verbose).  See issue 4.
"""

from __future__ import annotations

import uuid

import pytest

from conftest import started_stack
from filterutil import Line
from moatrun import Moat, listener, running


@pytest.fixture(scope="module")
def stack():
    yield from started_stack(postfix_proxy="haproxy", dovecot_proxy=True,
                             postconf={"debug_peer_list": "127.0.0.0/8", "debug_peer_level": "2"})


@pytest.fixture(scope="module")
def moat(stack, pki, tmp_path_factory):
    m = Moat(tmp_path_factory.mktemp("moat"), pki, [
        listener("mx", stack.smtp_addr, tls="starttls", backend_proxy="v2"),
        listener("pop3", stack.pop3_addr, protocol="pop3", tls="starttls",
                 backend_proxy="v2"),
    ])
    yield from running(m)


def smtp_session(moat, pki, injected: bytes, tag: str):
    """STARTTLS with injected bytes in the same write; then a clean EHLO and
    a marker command that must reach Postfix."""
    c = Line(moat.port("mx"))
    try:
        assert c.line().startswith(b"220 ")
        c.send(b"EHLO client.example.org\r\n")
        c.smtp_reply()
        c.send(b"STARTTLS\r\n" + injected)
        assert c.line() == b"220 2.0.0 Ready to start TLS\r\n"
        assert c.buf == b""
        c.starttls(pki)
        # Nothing the client did not ask for.
        assert c.pending(0.7) == b""
        c.send(b"EHLO client.example.org\r\n")
        ehlo = c.smtp_reply()
        assert ehlo[0].startswith(b"250"), ehlo
        c.send(f"VRFY marker-{tag}\r\n".encode())
        c.line()
        c.send(b"QUIT\r\n")
        assert c.line().startswith(b"221")
        assert c.pending(0.3) == b""
    finally:
        c.close()


@pytest.mark.parametrize("template", [
    "NOOP inject-{tag}\r\n",
    "MAIL FROM:<inject-{tag}@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n",
])
def test_smtp_starttls_injection(stack, moat, pki, template):
    tag = uuid.uuid4().hex[:12]
    mark = stack.log_mark("postfix")
    smtp_session(moat, pki, template.format(tag=tag).encode(), tag)
    # The marker after TLS shows up, so the log does show commands...
    stack.wait_log(rf"< unknown\[127\.0\.0\.1\]: VRFY marker-{tag}", "postfix",
                   timeout=10, since=mark)
    # ...and the injected one never does.
    log = stack.postfix_log()
    assert f"inject-{tag}" not in log, log[-3000:]


def pop3_session(moat, pki, injected: bytes, tag: str):
    c = Line(moat.port("pop3"))
    try:
        assert c.line().startswith(b"+OK")
        c.send(b"STLS\r\n" + injected)
        assert c.line() == b"+OK Begin TLS negotiation\r\n"
        c.starttls(pki)
        assert c.pending(0.7) == b""
        c.send(b"CAPA\r\n")
        capa = c.pop3_multi()
        assert capa[0].startswith(b"+OK") and capa[-1] == b".\r\n"
        # A marker login that Dovecot must log.
        c.send(f"USER marker-{tag}\r\nPASS wrong\r\n".encode())
        assert c.line().startswith(b"+OK")
        assert c.line().startswith(b"-ERR")
        assert c.pending(0.3) == b""
    finally:
        c.close()


@pytest.mark.parametrize("template", [
    "CAPA\r\n",
    "USER inject-{tag}\r\nPASS b\r\n",
])
def test_pop3_stls_injection(stack, moat, pki, template):
    tag = uuid.uuid4().hex[:12]
    mark = stack.log_mark("dovecot")
    pop3_session(moat, pki, template.format(tag=tag).encode(), tag)
    stack.wait_log(rf"marker-{tag}", "dovecot", timeout=10, since=mark)
    log = stack.dovecot_log()
    assert f"inject-{tag}" not in log, log[-3000:]


def test_starttls_pipelined_behind_ehlo(moat, pki):
    """EHLO, STARTTLS and an injected command in one write: the EHLO reply
    and the 220 come in order, the injected command is dropped."""
    c = Line(moat.port("mx"))
    try:
        c.line()
        c.send(b"EHLO a.example\r\nSTARTTLS\r\nNOOP\r\n")
        assert c.smtp_reply()[-1] == b"250 STARTTLS\r\n"
        assert c.line() == b"220 2.0.0 Ready to start TLS\r\n"
        c.starttls(pki)
        assert c.pending(0.5) == b""
    finally:
        c.close()
