"""The backend is out of reach: refused, silent (connect timeout), or
refusing XCLIENT.  The client gets a protocol-correct temporary failure
(SMTP 421, POP3 -ERR [SYS/TEMP]) and moat closes; nothing hangs.  Also
handshake timeouts and failures.  See issue 3.
"""

from __future__ import annotations

import poplib
import smtplib
import socket
import ssl

import pytest

from moatrun import Moat, free_port, listener


def ctx_for(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_cert))


@pytest.fixture(scope="module")
def blackhole():
    """A loopback port whose accept queue is full: SYNs to it go
    unanswered, so a connect there hangs until the caller gives up."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(srv.getsockname())
        except BlockingIOError:
            pass
        fillers.append(c)
    yield srv.getsockname()
    for c in fillers:
        c.close()
    srv.close()


@pytest.fixture(scope="module")
def moat(pki, blackhole, tmp_path_factory):
    refused = ("127.0.0.1", free_port())      # nothing listens there
    m = Moat(tmp_path_factory.mktemp("moat"), pki, [
        listener("smtps", refused, connect="2s"),
        listener("pop3s", refused, protocol="pop3", connect="2s"),
        listener("smtp-plain", refused, tls="none", connect="2s"),
        listener("pop3-plain", refused, protocol="pop3", tls="none", connect="2s"),
        listener("smtps-silent", blackhole, connect="1s"),
        listener("pop3s-silent", blackhole, protocol="pop3", connect="1s"),
        listener("slow-handshake", refused, handshake="1s"),
    ]).start()
    yield m
    assert m.stop() == 0, m.log()[-3000:]


def test_smtps_refused_gives_421(moat, pki):
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP_SSL("127.0.0.1", moat.port("smtps"), context=ctx_for(pki), timeout=20)
    assert e.value.smtp_code == 421
    assert e.value.smtp_error == b"4.3.0 smtps service temporarily unavailable"
    moat.wait_log('backend_fail backend=127.0.0.1')


def test_pop3s_refused_gives_err(moat, pki):
    with pytest.raises(poplib.error_proto) as e:
        poplib.POP3_SSL("127.0.0.1", moat.port("pop3s"), context=ctx_for(pki), timeout=20)
    assert e.value.args[0] == b"-ERR [SYS/TEMP] pop3s service temporarily unavailable"


def read_all(sock) -> bytes:
    out = b""
    while True:
        try:
            d = sock.recv(4096)
        except ConnectionError:
            return out
        if not d:
            return out
        out += d


@pytest.mark.parametrize("name,reply", [
    ("smtp-plain", b"421 4.3.0 smtp-plain service temporarily unavailable\r\n"),
    ("pop3-plain", b"-ERR [SYS/TEMP] pop3-plain service temporarily unavailable\r\n"),
])
def test_plaintext_listener_refused(moat, name, reply):
    with socket.create_connection(("127.0.0.1", moat.port(name)), timeout=20) as s:
        s.settimeout(20)
        assert read_all(s) == reply       # then moat closes


def test_tls_reply_then_close_notify(moat, pki):
    with socket.create_connection(("127.0.0.1", moat.port("smtps")), timeout=20) as raw:
        with ctx_for(pki).wrap_socket(raw, server_hostname="localhost") as s:
            s.settimeout(20)
            assert read_all(s) == b"421 4.3.0 smtps service temporarily unavailable\r\n"


@pytest.mark.parametrize("name", ["smtps-silent", "pop3s-silent"])
def test_connect_timeout(moat, pki, name):
    with socket.create_connection(("127.0.0.1", moat.port(name)), timeout=30) as raw:
        with ctx_for(pki).wrap_socket(raw, server_hostname="localhost") as s:
            s.settimeout(30)
            got = read_all(s)
    if name.startswith("smtp"):
        assert got == b"421 4.3.0 smtps-silent service temporarily unavailable\r\n"
    else:
        assert got == b"-ERR [SYS/TEMP] pop3s-silent service temporarily unavailable\r\n"
    moat.wait_log("reason=timeout")


def test_xclient_refused_gives_421(make_mailstack, pki, tmp_path):
    ms = make_mailstack(xclient_hosts="")        # Postfix trusts nobody
    m = Moat(tmp_path, pki, [listener("x", ms.smtp_addr, backend_proxy="xclient")]).start()
    try:
        with pytest.raises(smtplib.SMTPConnectError) as e:
            smtplib.SMTP_SSL("127.0.0.1", m.port("x"), context=ctx_for(pki), timeout=20)
        assert e.value.smtp_code == 421
        m.wait_log("XCLIENT refused: 5")
    finally:
        assert m.stop() == 0


def test_handshake_timeout(moat):
    with socket.create_connection(("127.0.0.1", moat.port("slow-handshake")), timeout=30) as s:
        s.settimeout(30)
        assert read_all(s) == b""         # moat gave up on us
    moat.wait_log("tls_fail reason=timeout")


def test_handshake_failure_is_logged_not_fatal(moat, pki):
    ctx = ssl.create_default_context()           # does not trust the test CA
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", moat.port("smtps")), timeout=20) as raw:
            ctx.wrap_socket(raw, server_hostname="localhost")
    moat.wait_log("tls_fail reason=")
    with pytest.raises(smtplib.SMTPConnectError):
        smtplib.SMTP_SSL("127.0.0.1", moat.port("smtps"), context=ctx_for(pki), timeout=20)
    assert moat.proc.poll() is None
