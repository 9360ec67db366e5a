"""TLS 1.3 session resumption with rotating ticket keys ([tls]
session_tickets, ticket_rotation): off by default; when on, SMTPS and POP3S
clients resume, a ticket works only on the listener that issued it and
under a name that picks its certificate, stops working once its key has
rotated out, and survives a SIGHUP reload.
See issue 8.
"""

from __future__ import annotations

import signal
import socket
import ssl
import time

import pytest

from moatrun import Moat, listener, started


@pytest.fixture(scope="module")
def stack(mailstack):
    return mailstack


def tickets_on(m: Moat, rotation: str) -> Moat:
    """Turns tickets on in m's config (the [tls] table comes first)."""
    text = m.config_path.read_text()
    marker = 'min_version = "1.2"'
    assert marker in text
    m.config_path.write_text(text.replace(
        marker, f'{marker}\nsession_tickets = true\n'
                f'ticket_rotation = "{rotation}"', 1))
    return m


def client_ctx(pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def visit(m: Moat, name: str, ctx: ssl.SSLContext, session=None,
          host: str = "localhost"):
    """One greeting through listener name, offering session; returns
    (whether it was resumed, the session to offer next time)."""
    with socket.create_connection(m.addr(name), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host,
                             session=session) as s:
            greeting = s.recv(512)
            assert greeting.startswith((b"220 ", b"+OK")), greeting
            s.sendall(b"QUIT\r\n")
            s.recv(512)     # the reply; any ticket arrived before it
            return s.session_reused, s.session


def both_listeners(stack):
    return [listener("smtps", stack.smtp_addr),
            listener("pop3s", stack.pop3_addr, protocol="pop3")]


def test_default_issues_no_tickets(stack, pki, tmp_path):
    m = Moat(tmp_path, pki, both_listeners(stack))
    ctx = client_ctx(pki)
    with started(m):
        for name in ("smtps", "pop3s"):
            reused, sess = visit(m, name, ctx)
            assert not reused
            assert sess is None or not sess.has_ticket
            reused, _ = visit(m, name, ctx, sess)
            assert not reused


def test_tickets_resume_on_their_own_listener(stack, pki, tmp_path):
    m = tickets_on(Moat(tmp_path, pki, both_listeners(stack)), "1h")
    ctx = client_ctx(pki)
    with started(m):
        for name, other in (("smtps", "pop3s"), ("pop3s", "smtps")):
            reused, sess = visit(m, name, ctx)
            assert not reused and sess.has_ticket
            reused, again = visit(m, name, ctx, sess)
            assert reused, name
            # The resumed session's own ticket works too.
            assert visit(m, name, ctx, again)[0]
            # Never across listeners (another protocol, another backend).
            assert not visit(m, other, ctx, sess)[0]
        assert "tls version=TLSv1.3" in m.log()


def test_ticket_resumes_only_where_its_certificate_is_served(stack, pki, tmp_path):
    """[[tls.sni]] serves another tenant's certificate for other names: a
    ticket made under one certificate does not resume under a name that
    picks another (the client would be authenticated by a certificate it
    was never shown for that name); names that pick the same one do."""
    m = tickets_on(Moat(tmp_path, pki, both_listeners(stack), sni=[{
        "names": ["other.example.test", "*.wild.example.test"],
        "certificate": pki.other.chain, "key": pki.other.key}]), "1h")
    ctx = client_ctx(pki)
    with started(m):
        _, own = visit(m, "smtps", ctx)
        assert not visit(m, "smtps", ctx, own, host="other.example.test")[0]
        assert visit(m, "smtps", ctx, own)[0]
        _, other = visit(m, "smtps", ctx, host="other.example.test")
        assert visit(m, "smtps", ctx, other, host="a.wild.example.test")[0]
        assert not visit(m, "smtps", ctx, other)[0]
        # Refused, a ticket costs a full handshake and brings a new one.
        _, fresh = visit(m, "smtps", ctx, own, host="other.example.test")
        assert visit(m, "smtps", ctx, fresh, host="other.example.test")[0]


def test_ticket_expires_after_two_rotations(stack, pki, tmp_path):
    m = tickets_on(Moat(tmp_path, pki, both_listeners(stack)), "3s")
    ctx = client_ctx(pki)
    with started(m):
        t0 = time.monotonic()
        _, sess = visit(m, "smtps", ctx)
        # One rotation later a new key encrypts; the old one still opens
        # the ticket (moat renews it).
        time.sleep(max(0.0, t0 + 3.5 - time.monotonic()))
        reused, renewed = visit(m, "smtps", ctx, sess)
        assert reused
        # Two rotations after it was made, the first key is gone.
        time.sleep(max(0.0, t0 + 6.5 - time.monotonic()))
        assert not visit(m, "smtps", ctx, sess)[0]
        assert not visit(m, "pop3s", ctx, sess)[0]
        # A fresh handshake gets a fresh ticket that works.
        _, fresh = visit(m, "smtps", ctx)
        assert visit(m, "smtps", ctx, fresh)[0]


def test_reload_keeps_ticket_keys(stack, pki, tmp_path):
    m = tickets_on(Moat(tmp_path, pki, both_listeners(stack)), "1h")
    ctx = client_ctx(pki)
    with started(m):
        _, smtp_sess = visit(m, "smtps", ctx)
        _, pop3_sess = visit(m, "pop3s", ctx)
        m.signal(signal.SIGHUP)
        m.wait_log("reload done")
        assert visit(m, "smtps", ctx, smtp_sess)[0]
        assert visit(m, "pop3s", ctx, pop3_sess)[0]


def test_tickets_turned_off_by_reload_wipe_the_keys(stack, pki, tmp_path):
    """With tickets off no resumption state outlives a connection: a
    reload that turns them off erases the keys, so a ticket from before
    does not resume even once they are turned on again."""
    m = tickets_on(Moat(tmp_path, pki, both_listeners(stack)), "1h")
    ctx = client_ctx(pki)
    with started(m):
        _, sess = visit(m, "smtps", ctx)
        assert visit(m, "smtps", ctx, sess)[0]
        on = m.config_path.read_text()
        m.config_path.write_text(on.replace("session_tickets = true",
                                            "session_tickets = false"))
        m.signal(signal.SIGHUP)
        m.wait_log("reload done")
        assert not visit(m, "smtps", ctx, sess)[0]
        m.config_path.write_text(on)
        m.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while m.log().count("reload done") < 2:
            assert time.monotonic() < deadline, m.log()
            time.sleep(0.05)
        assert not visit(m, "smtps", ctx, sess)[0]
        _, fresh = visit(m, "smtps", ctx)
        assert visit(m, "smtps", ctx, fresh)[0]


def test_rotation_shortened_by_reload_retires_old_keys(stack, pki, tmp_path):
    """The client still holds a ticket it believes good for two hours;
    after a reload to a 1s rotation its key is erased within two seconds
    and moat refuses the ticket itself."""
    m = tickets_on(Moat(tmp_path, pki, both_listeners(stack)), "1h")
    ctx = client_ctx(pki)
    with started(m):
        _, sess = visit(m, "smtps", ctx)
        assert sess.timeout >= 3600
        m.config_path.write_text(m.config_path.read_text().replace(
            'ticket_rotation = "1h"', 'ticket_rotation = "1s"'))
        m.signal(signal.SIGHUP)
        m.wait_log("reload done")
        time.sleep(2.5)
        assert not visit(m, "smtps", ctx, sess)[0]


def test_failed_reload_keeps_ticket_rotation(stack, pki, tmp_path):
    """A reload that fails keeps the running configuration, the ticket
    rotation included: a 1s rotation in a file whose certificate does not
    match its key must not retire the keys of the running 1h one."""
    m = tickets_on(Moat(tmp_path, pki, both_listeners(stack)), "1h")
    ctx = client_ctx(pki)
    with started(m):
        _, sess = visit(m, "smtps", ctx)
        text = m.config_path.read_text()
        assert str(pki.server_chain) in text
        m.config_path.write_text(text.replace(
            'ticket_rotation = "1h"', 'ticket_rotation = "1s"').replace(
            str(pki.server_chain), str(pki.other.chain)))
        m.signal(signal.SIGHUP)
        m.wait_log("reload failed: TLS setup has errors")
        time.sleep(2.5)
        assert visit(m, "smtps", ctx, sess)[0]


def test_starttls_after_a_reload_takes_the_new_tls_settings(pki, tmp_path):
    """A client connected before a reload that starts TLS after it: its
    handshake used the contexts of its accept, so a reload meant to
    replace a certificate, or to turn tickets off, still gave it the old
    certificate and a ticket (whose fresh key then lived on for up to two
    rotations). It now takes the running ones, as a new client does."""
    import smtplib
    from scripted import ScriptedBackend
    b = ScriptedBackend("smtp").start()
    m = tickets_on(Moat(tmp_path, pki, [listener("sub", b.addr, tls="starttls")]),
                   "1h")
    ctx = client_ctx(pki)
    ctx.check_hostname = False      # "other" names other.example.test
    try:
        with started(m):
            before = smtplib.SMTP("127.0.0.1", m.port("sub"), timeout=20)
            before.ehlo("before.example.org")
            text = m.config_path.read_text()
            m.config_path.write_text(
                text.replace(str(pki.server_chain), str(pki.other.chain))
                .replace(str(pki.server_key), str(pki.other.key))
                .replace("session_tickets = true", "session_tickets = false"))
            m.signal(signal.SIGHUP)
            m.wait_log("reload done")
            before.starttls(context=ctx)
            before.ehlo("before.example.org")   # a ticket would have come
            cert = before.sock.getpeercert()
            cn = dict(x[0] for x in cert["subject"])["commonName"]
            assert cn == "other.example.test", cert
            assert not before.sock.session.has_ticket
            before.quit()
    finally:
        b.stop()
