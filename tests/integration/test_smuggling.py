"""SMTP smuggling guard: Postfix in its legacy mode (smtpd_forbid_bare_newline
= no, harness legacy_bare_newline=True) behind moat.  Every malformed
end-of-data variant sent through moat delivers no smuggled message (moat
drops the backend connection, answers 554 and writes a smuggling event);
sent straight to Postfix, at least one variant does deliver one, which
proves the guard is what stops it.  See issue 4.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from conftest import started_stack
from filterutil import Line, client_ctx, events, wait_events
from moatrun import Moat, listener, running

VARIANTS = {
    "lf.lf": b"\n.\n",
    "lf.crlf": b"\n.\r\n",
    "crlf.lf": b"\r\n.\n",
    "cr.cr": b"\r.\r",
    "cr.lf": b"\r.\n",
    "lf.cr": b"\n.\r",
    "crlf.cr": b"\r\n.\r",
    "cr.crlf": b"\r.\r\n",
    "crlf.nul.crlf": b"\r\n\x00.\r\n",
}


@pytest.fixture(scope="module")
def stack():
    yield from started_stack(legacy_bare_newline=True)


@pytest.fixture(scope="module")
def moat(stack, pki, tmp_path_factory):
    m = Moat(tmp_path_factory.mktemp("moat"), pki, [
        listener("plain", stack.smtp_addr, tls="none"),
        listener("smtps", stack.smtp_addr, tls="implicit"),
        listener("mx", stack.smtp_addr, tls="starttls"),
    # Smuggling bans at once; the test client sends every variant from
    # loopback, so loopback is allow-listed here (events are still
    # written). test_smuggling_bans checks the ban itself.
    ], extra='[policy]\nallow = ["127.0.0.0/8"]\n')
    yield from running(m)


def payload(tag: str, ending: bytes) -> bytes:
    """A carrier message whose body ends with a malformed end-of-data,
    followed by a complete second transaction: the smuggled message."""
    return (f"Subject: carrier-{tag}\r\n\r\ncarrier body\r\nsome text".encode()
            + ending
            + b"MAIL FROM:<smuggler@example.org>\r\n"
            + b"RCPT TO:<alice@example.test>\r\n"
            + b"DATA\r\n"
            + f"Subject: smuggled-{tag}\r\n\r\nsmuggled body\r\n".encode()
            + b"\r\n.\r\n")


def smtp_send(sock_line: Line, tag: str, ending: bytes) -> list:
    c = sock_line
    assert c.line().startswith(b"220")
    c.send(b"EHLO client.example.org\r\n")
    c.smtp_reply()
    c.send(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    replies = [c.line(), c.line(), c.line()]
    assert replies[2].startswith(b"354"), replies
    c.send(payload(tag, ending))
    out = []
    try:
        while True:
            out.append(c.line())
    except (EOFError, socket.timeout, ConnectionError, OSError):
        pass
    return out


def smuggled_in(stack, tag: str) -> bool:
    return any(f"smuggled-{tag}".encode() in m for m in stack.maildir_messages("alice"))


def test_variants_through_moat_deliver_nothing(stack, moat, pki):
    tags = {}
    for name, ending in VARIANTS.items():
        tag = f"{name}-{uuid.uuid4().hex[:8]}"
        tags[name] = tag
        c = Line(moat.port("plain"), timeout=5)
        try:
            out = smtp_send(c, tag, ending)
        finally:
            c.close()
        assert out and out[0].startswith(b"554 5.6.0 Message rejected: "), (name, out)
        assert b"SMTP smuggling guard" in out[0]
        assert len(out) == 1, (name, out)   # nothing else answered, then closed
    # The guard writes one smuggling event per attempt.
    wait_events(moat, lambda e: e.get("event") == "smuggling", n=len(VARIANTS))
    reasons = {e["reason"] for e in events(moat) if e.get("event") == "smuggling"}
    assert reasons <= {"bare_lf", "bare_cr", "nul"}, reasons
    assert all(e.get("ip") in ("127.0.0.1", "::ffff:127.0.0.1")
               for e in events(moat) if e.get("event") == "smuggling")

    # Control: the same attack straight at Postfix smuggles at least one
    # message, so an empty Maildir above is the guard's doing.
    direct = {}
    for name in ("lf.lf", "crlf.lf", "lf.crlf"):
        tag = f"direct-{name}-{uuid.uuid4().hex[:8]}"
        direct[name] = tag
        c = Line(stack.smtp_addr[1], timeout=5)
        try:
            smtp_send(c, tag, VARIANTS[name])
        finally:
            c.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(smuggled_in(stack, t) for t in direct.values()):
        time.sleep(0.2)
    assert any(smuggled_in(stack, t) for t in direct.values()), \
        "the direct control did not smuggle: is Postfix really in legacy mode?"
    stack.flush_queue()
    time.sleep(1.5)
    for name, tag in tags.items():
        assert not smuggled_in(stack, tag), name
        assert not any(f"carrier-{tag}".encode() in m
                       for m in stack.maildir_messages("alice")), name


@pytest.mark.parametrize("name", ["smtps", "mx"])
def test_guard_over_tls(stack, moat, pki, name):
    tag = f"tls-{name}-{uuid.uuid4().hex[:8]}"
    sock = socket.create_connection(("127.0.0.1", moat.port(name)), timeout=5)
    c = Line.__new__(Line)
    c.buf = b""
    if name == "smtps":
        c.sock = client_ctx(pki).wrap_socket(sock, server_hostname="localhost")
    else:
        c.sock = sock
        assert c.line().startswith(b"220")
        c.send(b"EHLO c.example\r\n")
        c.smtp_reply()
        c.send(b"STARTTLS\r\n")
        assert c.line().startswith(b"220 2.0.0")
        c.starttls(pki)
        c.buf = b"220 again\r\n"     # smtp_send reads a greeting line
    try:
        out = smtp_send(c, tag, b"\n.\n")
    finally:
        c.close()
    assert out and out[0].startswith(b"554 5.6.0"), out
    stack.flush_queue()
    time.sleep(1)
    assert not smuggled_in(stack, tag)


def test_clean_message_after_dot_lines(stack, moat):
    """Lines that merely start with dots, CRLF everywhere: delivered."""
    tag = uuid.uuid4().hex[:8]
    before = len(stack.maildir_messages("alice"))
    c = Line(moat.port("plain"), timeout=10)
    try:
        assert c.line().startswith(b"220")
        c.send(b"EHLO c.example\r\nMAIL FROM:<s@example.org>\r\n"
               b"RCPT TO:<alice@example.test>\r\nDATA\r\n")
        c.smtp_reply()
        assert c.line().startswith(b"250")
        assert c.line().startswith(b"250")
        assert c.line().startswith(b"354")
        c.send(f"Subject: clean-{tag}\r\n\r\n..x\r\n.y\r\n\r\n.\r\n".encode())
        assert c.line().startswith(b"250")
        c.send(b"QUIT\r\n")
        assert c.line().startswith(b"221")
    finally:
        c.close()
    msgs = stack.wait_for_messages("alice", before + 1, timeout=20)
    assert f"clean-{tag}".encode() in msgs[-1]


def test_smuggling_bans(stack, pki, tmp_path):
    """Without the allow list, one smuggling attempt bans the address."""
    m = Moat(tmp_path, pki, [listener("plain", stack.smtp_addr, tls="none")])
    m.start()
    try:
        c = Line(m.port("plain"), timeout=10)
        try:
            assert c.line().startswith(b"220")
            c.send(b"EHLO c.example\r\nMAIL FROM:<s@example.org>\r\n"
                   b"RCPT TO:<alice@example.test>\r\nDATA\r\n")
            c.smtp_reply()
            assert c.line().startswith(b"250")
            assert c.line().startswith(b"250")
            assert c.line().startswith(b"354")
            c.send(b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<a@b>\r\n")
            assert c.line().startswith(b"554 5.6.0")
        finally:
            c.close()
        ban = wait_events(m, lambda e: e["event"] == "ban")[0]
        assert ban["reason"] == "smuggling" and ban["ip"] == "127.0.0.1"
        # The next connection is closed without a word.
        c = Line(m.port("plain"), timeout=10)
        try:
            assert c.pending(wait=1.0) == b""
        finally:
            c.close()
    finally:
        assert m.stop() == 0
