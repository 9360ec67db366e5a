"""What the backend learns about the client through moat: PROXY v1/v2 to
Postfix and Dovecot, the v2 SSL TLV, Postfix XCLIENT, accept_proxy from a
trusted load balancer, and the open-relay check.  See issue 3.
"""

from __future__ import annotations

import ipaddress
import json
import poplib
import re
import smtplib
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid

import pytest

from conftest import started_stack
from mailstack import proxy_v1_header
from moatrun import Moat, free_port, listener, moat_binary

SENDER = "sender@example.org"


def proxy_v2_header(src: str, dst: str, sport: int, dport: int, local=False) -> bytes:
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    fam = 0x11 if s.version == 4 else 0x21
    addrs = s.packed + d.packed + struct.pack("!HH", sport, dport)
    return sig + bytes([0x20 if local else 0x21, fam]) + struct.pack("!H", len(addrs)) + addrs


def header(version: int, src: str, port: int = 40000) -> bytes:
    dst = "::1" if ":" in src else "127.0.0.1"
    if version == 1:
        return proxy_v1_header(src, dst, port, 465)
    return proxy_v2_header(src, dst, port, 465)


class ProxySMTP_SSL(smtplib.SMTP_SSL):
    """SMTP_SSL that sends a PROXY header (as a load balancer would) before
    the TLS handshake; source binds the client socket to a local address."""

    def __init__(self, hdr: bytes, *a, source=None, **kw):
        self._hdr = hdr
        self._source = source
        super().__init__(*a, **kw)

    def _get_socket(self, host, port, timeout):
        raw = socket.create_connection((host, port), timeout,
                                       (self._source, 0) if self._source else None)
        if self._hdr:
            raw.sendall(self._hdr)
        return self.context.wrap_socket(raw, server_hostname=self._host)


class ProxyPOP3_SSL(poplib.POP3_SSL):
    def __init__(self, hdr: bytes, *a, **kw):
        self._hdr = hdr
        super().__init__(*a, **kw)

    def _create_socket(self, timeout):
        raw = socket.create_connection((self.host, self.port), timeout)
        if self._hdr:
            raw.sendall(self._hdr)
        return self.context.wrap_socket(raw, server_hostname=self.host)


def ctx_for(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_cert))


def lb_listener(name, backend, mode, **kw):
    """A listener behind a 'load balancer' on loopback."""
    return listener(name, backend, backend_proxy=mode, accept_proxy=True,
                    accept_proxy_from=["127.0.0.0/8", "::1/128"], **kw)


@pytest.fixture(scope="module")
def stack():
    yield from started_stack(postfix_proxy="haproxy", dovecot_proxy=True, ipv6=True)


@pytest.fixture(scope="module")
def moat(stack, pki, tmp_path_factory):
    m = Moat(tmp_path_factory.mktemp("moat"), pki, [
        listener("smtps-v1", stack.smtp_addr, backend_proxy="v1"),
        listener("smtps-v2", stack.smtp_addr, backend_proxy="v2"),
        lb_listener("lb-smtps-v1", stack.smtp_addr, "v1"),
        lb_listener("lb-smtps-v2", stack.smtp_addr, "v2"),
        lb_listener("lb-pop3s-v1", stack.pop3_addr, "v1", protocol="pop3"),
        lb_listener("lb-pop3s-v2", stack.pop3_addr, "v2", protocol="pop3"),
        listener("strict-lb", stack.smtp_addr, backend_proxy="v2", accept_proxy=True,
                 accept_proxy_from=["192.0.2.0/24"]),
    ]).start()
    yield m
    assert m.stop() == 0, m.log()[-3000:]


@pytest.mark.parametrize("version", [1, 2])
def test_postfix_sees_the_real_client(stack, moat, pki, version):
    """Without accept_proxy: the address moat's client connected from."""
    src = f"127.0.0.{40 + version}"
    mark = stack.log_mark("postfix")
    with ProxySMTP_SSL(b"", "127.0.0.1", moat.port(f"smtps-v{version}"), source=src,
                       context=ctx_for(pki), timeout=20) as s:
        s.ehlo("client.example.org")
    stack.wait_log(rf"connect from \S+\[{src}\]", "postfix", timeout=20, since=mark)


@pytest.mark.parametrize("version", [1, 2])
def test_postfix_sees_the_load_balancers_client(stack, moat, pki, version):
    src = f"192.0.2.{10 + version}"
    mark = stack.log_mark("postfix")
    before = len(stack.maildir_messages("alice"))
    with ProxySMTP_SSL(header(version, src), "127.0.0.1", moat.port(f"lb-smtps-v{version}"),
                       context=ctx_for(pki), timeout=20) as s:
        s.sendmail(SENDER, ["alice@example.test"], b"Subject: lb\r\n\r\nhello\r\n")
    stack.wait_for_messages("alice", before + 1, timeout=20)
    stack.wait_log(rf"client=\S+\[{src}\]", "postfix", timeout=20, since=mark)


@pytest.mark.parametrize("version", [1, 2])
def test_dovecot_sees_the_load_balancers_client(stack, moat, pki, version):
    src = f"192.0.2.{20 + version}"
    mark = stack.log_mark("dovecot")
    p = ProxyPOP3_SSL(header(version, src), "127.0.0.1", moat.port(f"lb-pop3s-v{version}"),
                      context=ctx_for(pki), timeout=20)
    try:
        p.user("alice")
        p.pass_("alicepw")
        p.stat()
    finally:
        p.quit()
    stack.wait_log(rf"rip={src}\b", "dovecot", timeout=20, since=mark)


@pytest.mark.parametrize("version", [1, 2])
def test_ipv4_mapped_client_reaches_dovecot_as_ipv4(stack, moat, pki, version):
    """A load balancer listening on IPv6 reports an IPv4 client as
    ::ffff:a.b.c.d.  moat knows that client as a.b.c.d (policy, its log,
    XCLIENT), and so must the backend: Dovecot keeps the mapped form, so
    its log (and fail2ban on it) and its per-address settings would see
    another address than moat's."""
    src = f"192.0.2.{60 + version}"
    write = proxy_v1_header if version == 1 else proxy_v2_header
    hdr = write(f"::ffff:{src}", "::ffff:127.0.0.1", 40000, 995)
    mark = stack.log_mark("dovecot")
    p = ProxyPOP3_SSL(hdr, "127.0.0.1", moat.port(f"lb-pop3s-v{version}"),
                      context=ctx_for(pki), timeout=20)
    try:
        p.user("alice")
        p.pass_("alicepw")
    finally:
        p.quit()
    m = stack.wait_log(r"Login: user=<alice>, method=\S+, rip=([^,]+),", "dovecot",
                       timeout=20, since=mark)
    assert m.group(1) == src, m.group(0)
    moat.wait_log(f"ip={src} port=40000")


def test_ipv6_client_through_v2(stack, moat, pki):
    src = "2001:db8::23"
    mark = stack.log_mark("postfix")
    with ProxySMTP_SSL(header(2, src), "127.0.0.1", moat.port("lb-smtps-v2"),
                       context=ctx_for(pki), timeout=20) as s:
        s.ehlo("v6.example.org")
    stack.wait_log(r"connect from \S+\[2001:db8::23\]", "postfix", timeout=20, since=mark)


@pytest.mark.parametrize("version", [1, 2])
def test_no_open_relay(stack, moat, pki, version):
    """A client outside mynetworks must not relay through moat, although
    moat itself connects from loopback (which Postfix trusts)."""
    with ProxySMTP_SSL(header(version, f"192.0.2.{30 + version}"), "127.0.0.1",
                       moat.port(f"lb-smtps-v{version}"), context=ctx_for(pki),
                       timeout=20) as s:
        s.ehlo("relay.example.org")
        assert s.mail(SENDER)[0] == 250
        code, msg = s.rcpt("victim@outside.example.org")
        assert code == 554, msg
        assert b"5.7.1" in msg and b"Relay access denied" in msg
    # The same through a client that Postfix's mynetworks does include.
    with ProxySMTP_SSL(header(version, "127.0.0.9"), "127.0.0.1",
                       moat.port(f"lb-smtps-v{version}"), context=ctx_for(pki),
                       timeout=20) as s:
        s.ehlo("relay.example.org")
        s.mail(SENDER)
        assert s.rcpt("victim@outside.example.org")[0] == 250


def test_proxy_local_keeps_the_connection_address(stack, moat, pki):
    mark = stack.log_mark("postfix")
    hdr = proxy_v2_header("192.0.2.99", "127.0.0.1", 1, 2, local=True)
    with ProxySMTP_SSL(hdr, "127.0.0.1", moat.port("lb-smtps-v2"),
                       context=ctx_for(pki), timeout=20) as s:
        s.ehlo("local.example.org")
    stack.wait_log(r"connect from \S+\[127\.0\.0\.1\]", "postfix", timeout=20, since=mark)


@pytest.mark.parametrize("fam,addrlen", [(0x12, 12), (0x22, 36), (0x31, 216)])
def test_proxy_v2_udp_or_unix_reads_as_unspec(stack, moat, pki, fam, addrlen):
    """The protocol has a receiver read a family it does not take as
    UNSPEC: the session goes on with the balancer's own address."""
    mark = stack.log_mark("postfix")
    hdr = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, fam])
           + struct.pack("!H", addrlen) + b"/run/lb.sock".ljust(addrlen, b"\x00"))
    with ProxySMTP_SSL(hdr, "127.0.0.1", moat.port("lb-smtps-v2"),
                       context=ctx_for(pki), timeout=20) as s:
        assert s.ehlo("unix.example.org")[0] == 250
    stack.wait_log(r"connect from \S+\[127\.0\.0\.1\]", "postfix", timeout=20, since=mark)


def test_load_balancer_health_checks_are_outside_policy(stack, pki, tmp_path):
    """HAProxy's check-send-proxy sends PROXY v2 LOCAL (or v1 UNKNOWN)
    for every health check, every 2 s by default. Counted as a client,
    the balancer got banned, and with it everyone behind it. Its own
    connections are outside policy now; its clients are not."""
    m = Moat(tmp_path, pki, [
        lb_listener("lb", stack.smtp_addr, "v2", tls="none")],
        extra='[policy.rate]\nconnections = { limit = 3, window = "1m" }\n'
              'auth_failures = { limit = 2, window = "1m" }\n').start()
    try:
        checks = [proxy_v2_header("192.0.2.99", "127.0.0.1", 1, 2, local=True),
                  b"PROXY UNKNOWN\r\n"] * 5
        for hdr in checks:
            with socket.create_connection(m.addr("lb"), timeout=20) as c:
                c.sendall(hdr)
                assert c.recv(512).startswith(b"220 "), hdr
                # A health check that speaks nonsense is no client's
                # glitch either.
                c.sendall(b"\x00\x01\r\nQUIT\r\n")
        assert "ban ip=127.0.0.1" not in m.log(), m.log()
        # The clients it vouches for still count: the fourth is refused.
        for i in range(4):
            with socket.create_connection(m.addr("lb"), timeout=20) as c:
                c.sendall(header(1, "192.0.2.7"))
                want = b"220 " if i < 3 else b"554 "
                assert c.recv(512).startswith(want), i
        m.wait_log("ban ip=192.0.2.7 reason=rate")
        assert "ban ip=127.0.0.1" not in m.log(), m.log()
    finally:
        assert m.stop() == 0


def closed_without_reply(port: int, data: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        if data:
            try:
                s.sendall(data)
            except ConnectionError:
                return True
        try:
            return s.recv(100) == b""
        except ConnectionError:
            return True


def test_proxy_header_from_untrusted_source_closes(moat):
    """A source outside accept_proxy_from is refused like any other
    refusal: every connection an event, the log one line for the address
    and the rest summed up, not a line each (a flood at the balancer's
    port is a flood of the log too)."""
    events = moat.workdir / "events.jsonl"

    def untrusted():
        n = 0
        for line in events.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev["reason"] == "proxy_untrusted" and ev["listener"] == "strict-lb":
                assert ev["event"] == "reject" and ev["ip"] == "127.0.0.1", ev
                n += 1
        return n

    before = untrusted()
    lines = moat.log().count("reason=proxy_untrusted listener=strict-lb")
    for _ in range(20):
        assert closed_without_reply(moat.port("strict-lb"), header(1, "192.0.2.50"))
    moat.wait_log("reject ip=127.0.0.1 reason=proxy_untrusted listener=strict-lb")
    deadline = time.monotonic() + 10
    while untrusted() < before + 20:
        assert time.monotonic() < deadline, untrusted()
        time.sleep(0.05)
    # One full line per worker and 10 s: the 20 may straddle an interval.
    assert moat.log().count("reason=proxy_untrusted listener=strict-lb") - lines <= 4


@pytest.mark.parametrize("data", [
    b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 465\r\n",
    b"PROXY TCP4 not-an-ip 127.0.0.1 1 465\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,   # a ClientHello
    b"PROXY " + b"x" * 200 + b"\r\n",
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x31\x00\x00",                       # AF_UNIX, no address
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x13\x00\x00",                       # no such family
])
def test_malformed_proxy_header_closes(moat, data):
    assert closed_without_reply(moat.port("lb-smtps-v2"), data)


@pytest.mark.parametrize("parts", [
    [b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 465\r\n"],
    [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40],
    [b"PROXY TCP4 ", b"192.0.2.1 nonsense\r\n"],          # an error after a prefix
    # A ClientHello with a post-quantum key share: past PROXYPROTO_MAX.
    [b"\x16\x03\x01\x07\x00\x01\x00\x06\xfc\x03\x03" + b"\x00" * 1900],
    # A v2 header declaring 1100 bytes, more than moat takes.
    [b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x04\x4c" + b"\x00" * 1100],
])
def test_malformed_proxy_header_ends_in_order(moat, parts):
    """A bad header is read before the close, so the sender (a balancer
    set up without the header, someone testing from its address) reads an
    orderly end of stream, as after a late header, not a reset."""
    with socket.create_connection(("127.0.0.1", moat.port("lb-smtps-v2")), timeout=20) as s:
        for p in parts:
            s.sendall(p)
            time.sleep(0.2)
        assert s.recv(100) == b""       # a reset raises ConnectionResetError


def test_xclient_with_postfix(make_mailstack, pki, tmp_path):
    ms = make_mailstack(xclient_hosts="127.0.0.0/8", ipv6=True)
    m = Moat(tmp_path, pki, [lb_listener("xclient", ms.smtp_addr, "xclient")]).start()
    try:
        mark = ms.log_mark("postfix")
        before = len(ms.maildir_messages("alice"))
        with ProxySMTP_SSL(header(2, "192.0.2.77"), "127.0.0.1", m.port("xclient"),
                           context=ctx_for(pki), timeout=20) as s:
            code, banner = s.ehlo("xclient.example.org")
            assert code == 250
            s.sendmail(SENDER, ["alice@example.test"], b"Subject: xclient\r\n\r\nhi\r\n")
            s.mail(SENDER)
            code, msg = s.rcpt("victim@outside.example.org")
            assert code == 554 and b"Relay access denied" in msg
        ms.wait_for_messages("alice", before + 1, timeout=20)
        ms.wait_log(r"client=\S+\[192\.0\.2\.77\]", "postfix", timeout=20, since=mark)

        mark = ms.log_mark("postfix")
        with ProxySMTP_SSL(header(2, "2001:db8::77"), "127.0.0.1", m.port("xclient"),
                           context=ctx_for(pki), timeout=20) as s:
            s.ehlo("xclient6.example.org")
            s.mail(SENDER)
            assert s.rcpt("alice@example.test")[0] == 250
        ms.wait_log(r"\[2001:db8::77\]", "postfix", timeout=20, since=mark)
    finally:
        assert m.stop() == 0


def smtp_reply(f) -> bytes:
    out = b""
    while True:
        line = f.readline()
        out += line
        if line[3:4] != b"-":
            return out


def test_xclient_leaves_the_protocol_to_the_clients_helo(make_mailstack, pki, tmp_path):
    """XCLIENT goes before the client has said HELO or EHLO, so moat must
    not claim PROTO=ESMTP for it: Postfix records what the client's own
    greeting says ("with SMTP" after HELO), and its reject_unauth_pipelining
    still refuses a HELO client that pipelines."""
    ms = make_mailstack(xclient_hosts="127.0.0.0/8",
                        postconf={"smtpd_data_restrictions": "reject_unauth_pipelining"})
    m = Moat(tmp_path, pki, [listener("x", ms.smtp_addr, backend_proxy="xclient",
                                      tls="none")]).start()
    try:
        tag = uuid.uuid4().hex
        with smtplib.SMTP(*m.addr("x"), timeout=20) as s:
            assert s.helo("helo.example.org")[0] == 250
            s.sendmail(SENDER, ["alice@example.test"], f"Subject: {tag}\r\n\r\nhi\r\n".encode())
        deadline = time.monotonic() + 20
        while not (got := [x for x in ms.maildir_messages("alice") if tag.encode() in x]):
            assert time.monotonic() < deadline, "message not delivered"
            time.sleep(0.1)
        received = got[0].split(b"\nReceived: ", 1)[1].split(b";", 1)[0]
        assert b" with SMTP id " in received, received

        with socket.create_connection(m.addr("x"), timeout=20) as c:
            f = c.makefile("rb")
            assert smtp_reply(f).startswith(b"220 ")
            c.sendall(b"HELO helo.example.org\r\n")
            assert smtp_reply(f).startswith(b"250 ")
            c.sendall(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<alice@example.test>\r\n"
                      "DATA\r\n".encode())
            replies = [smtp_reply(f) for _ in range(3)]
        assert replies[2].startswith(b"503 5.5.0"), replies
        assert b"Improper use of SMTP command pipelining" in replies[2], replies
    finally:
        assert m.stop() == 0


def test_v2_ssl_tlv_lets_dovecot_trust_tls(make_mailstack, pki, tmp_path):
    """disable_plaintext_auth: Dovecot accepts USER/PASS from a remote
    client only if the PROXY v2 header says the client is on TLS."""
    ms = make_mailstack(dovecot_proxy=True, disable_plaintext_auth=True)
    m = Moat(tmp_path, pki, [
        lb_listener("v1", ms.pop3_addr, "v1", protocol="pop3"),
        lb_listener("v2", ms.pop3_addr, "v2", protocol="pop3"),
    ]).start()
    try:
        p = ProxyPOP3_SSL(header(2, "192.0.2.88"), "127.0.0.1", m.port("v2"),
                          context=ctx_for(pki), timeout=20)
        try:
            p.user("alice")
            assert p.pass_("alicepw").startswith(b"+OK")
        finally:
            p.quit()
        # v1 carries no TLS information: Dovecot sees plaintext and refuses.
        p = ProxyPOP3_SSL(header(1, "192.0.2.89"), "127.0.0.1", m.port("v1"),
                          context=ctx_for(pki), timeout=20)
        try:
            with pytest.raises(poplib.error_proto):
                p.user("alice")
                p.pass_("alicepw")
        finally:
            p.close()
    finally:
        assert m.stop() == 0


# --- backend and backend_proxy that disagree ---------------------------------

def talk_until_close(port: int, pki, command: bytes) -> bytes:
    """Over implicit TLS: the greeting, then command, then all until the
    end of stream."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    s = ctx_for(pki).wrap_socket(raw, server_hostname="localhost")
    got = b""
    try:
        while b"\r\n" not in got:
            got += s.recv(4096)
        time.sleep(0.3)     # what comes unasked comes before the command
        s.sendall(command)
        while True:
            d = s.recv(4096)
            if not d:
                return got
            got += d
    except (ConnectionError, ssl.SSLError):
        return got
    finally:
        s.close()


def test_backend_that_does_not_expect_the_header(make_mailstack, pki, tmp_path):
    """A Postfix and a Dovecot set up for no PROXY header, behind moat's
    default backend_proxy = "v2" (and "v1"): they take the header for a
    command and answer it after their greeting. The client gets an error
    and the end, never a reply out of step with its commands; the log
    warns once a minute per listener, with the reply and what to set on
    either side. Dovecot's "-ERR Unknown command." reads like a hang-up
    line, and is taken for the header's answer because it comes right
    after the greeting, before the client said a word."""
    ms = make_mailstack()
    mport = free_port()
    m = Moat(tmp_path, pki, [
        listener("smtps-v2", ms.smtp_addr, backend_proxy="v2"),
        listener("smtps-v1", ms.smtp_addr, backend_proxy="v1"),
        listener("pop3s-v1", ms.pop3_addr, backend_proxy="v1", protocol="pop3"),
        listener("pop3s-v2", ms.pop3_addr, backend_proxy="v2", protocol="pop3"),
    ], metrics=f"127.0.0.1:{mport}").start()
    hint = "smtpd_upstream_proxy_protocol = haproxy"
    try:
        for name, cmd in (("smtps-v2", b"EHLO client.example\r\n"),
                          ("smtps-v1", b"EHLO client.example\r\n"),
                          ("pop3s-v1", b"USER alice\r\n"),
                          ("pop3s-v2", b"USER alice\r\n")):
            for _ in range(3):
                got = talk_until_close(m.port(name), pki, cmd)
                lines = got.split(b"\r\n")
                assert lines[0].startswith(b"220 " if name.startswith("smtp")
                                           else b"+OK"), got
                # No reply after the greeting but an error.
                assert not any(l.startswith((b"250", b"+OK")) for l in lines[1:]), got
                assert lines[1][:1] in (b"4", b"5", b"-"), got
            log = m.wait_log(f"of listener '{name}' sent a reply no command asked for")
            warned = [l for l in log.splitlines()
                      if f"of listener '{name}' sent a reply" in l]
            assert len(warned) == 1, warned
            assert hint in warned[0] and "haproxy_trusted_networks" in warned[0], warned
            h, p = ms.smtp_addr if name.startswith("smtp") else ms.pop3_addr
            assert f"backend {h}:{p} of listener '{name}'" in warned[0], warned
        log = m.log()
        # What each backend said, quoted.
        assert re.search(r'smtps-v1\' sent a reply no command asked for, "5\d\d ', log), log
        assert 'pop3s-v1\' sent a reply no command asked for, "-ERR' in log, log
        assert "backend_stray reply=" in log
        assert "close reason=backend_unsolicited" in log
        assert "close reason=backend_closing" in log
        # moatctl status lists them, with the count and the last reply;
        # the metric counts them.
        st = json.loads(m.ctl("--json", "status").stdout)
        strays = {b["listener"]: b for b in st["backends_stray"]}
        assert sorted(strays) == ["pop3s-v1", "pop3s-v2", "smtps-v1", "smtps-v2"], st
        assert all(b["sessions"] == 3 for b in strays.values()), strays
        assert strays["pop3s-v1"]["reply"] == "-ERR Unknown command.", strays
        assert st["backends_failing"] == [], st
        human = m.ctl("status").stdout
        assert re.search(r"\n(backends)? +smtps-v1 -> 127\.0\.0\.1:\d+ sent replies no "
                         r"command asked for: 3 sessions ended so since \S+Z, the "
                         r"last at \S+Z: \"5\d\d ", human), human
        with socket.create_connection(("127.0.0.1", mport), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            body = b""
            while (d := s.recv(65536)):
                body += d
        for name in strays:
            assert f'moat_backend_stray_replies_total{{listener="{name}"}} 3\n' \
                in body.decode(), body.decode()
    finally:
        assert m.stop() == 0


def test_backend_that_waits_for_a_header(stack, pki, tmp_path):
    """Postfix and Dovecot that want a PROXY header, behind
    backend_proxy = "none": they greet no one. The client hears the
    service is unavailable at the connect timeout; the backend failure
    warning says a backend waiting for a header looks like this."""
    m = Moat(tmp_path, pki, [
        listener("smtps-none", stack.smtp_addr, backend_proxy="none", connect="1s"),
        listener("pop3s-none", stack.pop3_addr, backend_proxy="none", connect="1s",
                 protocol="pop3"),
    ]).start()
    try:
        for name, unavailable in (("smtps-none", b"421 4.3.0 "),
                                  ("pop3s-none", b"-ERR [SYS/TEMP] ")):
            raw = socket.create_connection(m.addr(name), timeout=20)
            s = ctx_for(pki).wrap_socket(raw, server_hostname="localhost")
            assert s.recv(4096).startswith(unavailable)
            s.close()
            log = m.wait_log(f"of listener '{name}' fails")
            line = next(l for l in log.splitlines() if f"of listener '{name}' fails" in l)
            assert "no greeting within 1s" in line and \
                "greets no one without it" in line and 'backend_proxy = "v2"' in line, line
    finally:
        assert m.stop() == 0



# --- moat -T: the backends met before the clients come ------------------------

def probe(m: Moat) -> subprocess.CompletedProcess:
    return subprocess.run([str(moat_binary()), "-T", "-c", str(m.config_path)],
                          capture_output=True, text=True, timeout=60)


def probe_lines(r: subprocess.CompletedProcess) -> dict:
    return {re.match(r"listener '([^']+)'", l).group(1): l
            for l in r.stderr.splitlines() if l.startswith("listener '")}


def test_moat_T_meets_each_backend_as_a_session_would(stack, make_mailstack, pki,
                                                     tmp_path):
    """moat -t says a configuration is sound; whether each backend
    expects what moat sends first shows only once clients come. moat -T
    meets each listener's backend as a session would, real Postfix and
    Dovecot either way, and says which agree (exit 0 only if all do),
    naming the settings for those that do not."""
    plain = make_mailstack(xclient_hosts="127.0.0.0/8")
    dead = free_port()
    listeners = [
        # Postfix and Dovecot that expect a header (the module's stack).
        listener("good-v2", stack.smtp_addr, backend_proxy="v2"),
        listener("good-pop3-v1", stack.pop3_addr, backend_proxy="v1", protocol="pop3"),
        listener("waits", stack.smtp_addr, backend_proxy="none", connect="1s"),
        # Postfix and Dovecot that expect none.
        listener("good-none", plain.pop3_addr, backend_proxy="none", protocol="pop3"),
        listener("good-xclient", plain.smtp_addr, backend_proxy="xclient"),
        listener("unexpected", plain.smtp_addr, backend_proxy="v2"),
        listener("unexpected-pop3", plain.pop3_addr, backend_proxy="v1", protocol="pop3"),
        listener("no-xclient", stack.submission_addr, backend_proxy="xclient",
                 connect="1s"),
        listener("dead", ("127.0.0.1", dead), connect="1s"),
    ]
    m = Moat(tmp_path, pki, listeners)
    r = probe(m)
    lines = probe_lines(r)
    assert r.returncode == 1, r.stderr
    assert "configuration OK" in r.stderr
    assert sorted(lines) == sorted(l["name"] for l in listeners), r.stderr
    for name in ("good-v2", "good-pop3-v1", "good-none", "good-xclient"):
        assert " answers: " in lines[name], lines[name]
    assert '"220 ' in lines["good-v2"] and '"+OK' in lines["good-pop3-v1"]
    assert "FAILS: no greeting within 1s" in lines["waits"] and \
        "waits for a PROXY header" in lines["waits"], lines["waits"]
    assert re.search(r'FAILS: sent a reply no command asked for, "5\d\d ',
                     lines["unexpected"]) and \
        "smtpd_upstream_proxy_protocol = haproxy" in lines["unexpected"], lines["unexpected"]
    assert 'FAILS: sent a reply no command asked for, "-ERR' in \
        lines["unexpected-pop3"], lines["unexpected-pop3"]
    # Behind a header-expecting Postfix, XCLIENT waits in vain for a
    # greeting too.
    assert "FAILS: no greeting within 1s" in lines["no-xclient"], lines["no-xclient"]
    assert "FAILS: cannot connect: Connection refused" in lines["dead"], lines["dead"]

    # All agree: exit 0.
    m2 = Moat(tmp_path / "ok", pki, [l for l in listeners
                                     if l["name"].startswith("good")])
    r = probe(m2)
    assert r.returncode == 0, r.stderr
    assert len(probe_lines(r)) == 4, r.stderr


def test_moat_T_sees_a_postfix_that_refuses_xclient(make_mailstack, pki, tmp_path):
    """A Postfix that does not let moat's address use XCLIENT greets, but
    every session would get 550 for XCLIENT: -T says which setting."""
    ms = make_mailstack()
    m = Moat(tmp_path, pki, [listener("x", ms.smtp_addr, backend_proxy="xclient")])
    r = probe(m)
    assert r.returncode == 1, r.stderr
    line = probe_lines(r)["x"]
    assert "FAILS: does not offer XCLIENT to moat's address (Postfix: " \
        "smtpd_authorized_xclient_hosts)" in line, line


def test_moat_T_names_a_backend_that_speaks_another_protocol(pki, tmp_path):
    """The backend port is an SSH server's (a typo): -T quotes what it
    said instead of a greeting."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)

    def serve():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            with c:
                c.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
                c.recv(100)

    threading.Thread(target=serve, daemon=True).start()
    try:
        m = Moat(tmp_path, pki, [listener("ssh", ls.getsockname()),
                                 listener("ssh-pop3", ls.getsockname(),
                                          protocol="pop3")])
        r = probe(m)
        assert r.returncode == 1, r.stderr
        lines = probe_lines(r)
        assert 'FAILS: its greeting is no SMTP reply: "SSH-2.0-OpenSSH_9.2p1 ' \
            'Debian-2"' in lines["ssh"], lines
        assert 'FAILS: its greeting is no POP3 reply: "SSH-2.0-' in lines["ssh-pop3"], lines
    finally:
        ls.close()


class OtherServer:
    """A server of another protocol where the mail server's plaintext port
    belongs: "ssh" greets with an SSH banner; "http" is Python's HTTP
    server, which answers the PROXY header as a request; "tls" is a TLS
    server (Python's ssl, OpenSSL), like a mail server's port 465 or 995,
    which waits silently for a ClientHello."""

    def __init__(self, kind: str, pki=None):
        self.kind = kind
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.addr = self.ls.getsockname()
        self.ctx = None
        if kind == "tls":
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, peer = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c, peer), daemon=True).start()

    def _one(self, c, peer) -> None:
        import http.server
        c.settimeout(10)
        try:
            if self.kind == "ssh":
                c.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
                c.recv(100)
            elif self.kind == "http":
                class Quiet(http.server.BaseHTTPRequestHandler):
                    def log_message(self, *args):
                        pass
                Quiet(c, peer, None)
            else:
                self.ctx.wrap_socket(c, server_side=True)
        except (OSError, ValueError):
            pass
        finally:
            c.close()

    def close(self) -> None:
        self.ls.close()


@pytest.mark.parametrize("kind,proto,bp,want", [
    ("ssh", "smtp", "none", 'greeting is no SMTP reply: "SSH-2.0-OpenSSH_9.2p1 Debian-2"'),
    ("ssh", "pop3", "v2", 'greeting is no POP3 reply: "SSH-2.0-OpenSSH_9.2p1 Debian-2"'),
    # It takes "PROXY TCP4 ..." for an HTTP/0.9 request: no status line.
    ("http", "smtp", "v1", 'greeting is no SMTP reply: "<!DOCTYPE HTML>"'),
])
def test_backend_of_another_protocol_is_a_backend_failure(pki, tmp_path, kind, proto,
                                                          bp, want):
    """The backend address is an SSH or HTTP server's (a typo): each client
    got the filter's protocol error and the log a close reason alone,
    backend_bad_reply, while status, the failure metric and the warnings
    said every backend was fine. The greeting is now a backend failure,
    quoted, with where the backend should point."""
    srv = OtherServer(kind)
    mport = free_port()
    m = Moat(tmp_path, pki, [listener("sub", srv.addr, protocol=proto, tls="none",
                                      backend_proxy=bp)],
             metrics=f"127.0.0.1:{mport}")
    try:
        m.start()
        for _ in range(2):
            with socket.create_connection(m.addr("sub"), timeout=20) as c:
                got = c.recv(4096)
            assert got in (b"421 4.3.0 Error: backend protocol error, closing "
                           b"connection\r\n",
                           b"-ERR [SYS/TEMP] backend protocol error, closing "
                           b"connection\r\n"), got
        line = m.wait_log("of listener 'sub' fails: ")
        line = next(l for l in line.splitlines() if "of listener 'sub' fails" in l)
        assert want in line, line
        assert "backend must be the mail server's plaintext port (SMTP 25 or " \
            "587, POP3 110)" in line, line
        assert "backend_bad_greeting greeting=" in m.log()
        st = json.loads(m.ctl("--json", "status").stdout)
        [b] = st["backends_failing"]
        assert want in b["error"] and b["sessions"] >= 2, b
        with socket.create_connection(("127.0.0.1", mport), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            body = b""
            while (d := s.recv(65536)):
                body += d
        n = re.search(rb'^moat_backend_connect_failures_total\{listener="sub"\} (\d+)$',
                      body, re.M)
        assert n and int(n.group(1)) >= 2, body[-2000:]
        if kind == "ssh" and proto == "smtp":
            r = probe(m)
            assert r.returncode == 1, r.stderr
            assert "backend must be the mail server's plaintext port" in \
                probe_lines(r)["sub"], r.stderr
    finally:
        m.stop()
        srv.close()


def test_backend_on_a_tls_port_is_hinted(pki, tmp_path):
    """backend = the mail server's port 465: a TLS server waits silently
    for a ClientHello (no greeting), or closes on the PROXY header. Both
    failure warnings name the TLS port among the causes."""
    srv = OtherServer("tls", pki)
    m = Moat(tmp_path, pki, [listener("none", srv.addr, tls="none", connect="1s"),
                             listener("v2", srv.addr, tls="none", backend_proxy="v2")])
    try:
        m.start()
        for name in ("none", "v2"):
            with socket.create_connection(m.addr(name), timeout=20) as c:
                assert c.recv(4096).startswith(b"421 4.3.0 ")
            log = m.wait_log(f"of listener '{name}' fails: ")
            line = next(l for l in log.splitlines() if f"of listener '{name}' fails" in l)
            assert "a TLS port (465, 995)" in line and \
                "backend must be the plaintext one" in line, line
    finally:
        m.stop()
        srv.close()
