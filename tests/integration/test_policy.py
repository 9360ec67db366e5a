"""The policy verdict at accept, seen from clients: deny and allow lists,
geofencing, connection rates, bans that survive a restart, block events.

Clients present their addresses with a PROXY v1 header (moat trusts it from
loopback through accept_proxy), so one test host can be many clients.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import require_mailstack
from mailstack import MailStack, proxy_v1_header
from moatrun import Moat, free_port, listener, proxied_hello as hello
from moatrun import first_line as moatrun_first_line

SHARED = Path(os.environ.get("MOAT_SHARED", Path(__file__).resolve().parents[3]
                             / "shared"))
TEST_COUNTRY_DB = SHARED / "testdata" / "geo" / "test-country.mmdb"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_mailstack()
    s = MailStack(postfix_proxy="haproxy", dovecot_proxy=True).start()
    yield s
    s.stop()


def lb(name, backend, **kw):
    return listener(name, backend, backend_proxy="v1", accept_proxy=True,
                    accept_proxy_from=["127.0.0.0/8"], **kw)


def start(tmp_path, pki, stack, extra, tls="none"):
    return Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls=tls)],
                extra=extra).start()


def events(moat: Moat, kind: str | None = None):
    path = moat.workdir / "events.jsonl"
    if not path.exists():
        return []
    out = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [e for e in out if kind is None or e["event"] == kind]


def wait_event(moat: Moat, kind: str, ip: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        for e in events(moat, kind):
            if e["ip"] == ip:
                return e
        if time.monotonic() > deadline:
            raise AssertionError(f"no {kind} event for {ip}: {events(moat)}")
        time.sleep(0.05)


def test_deny_list_rejected_with_554(tmp_path, pki, stack):
    m = start(tmp_path, pki, stack, '[policy]\ndeny = ["198.51.100.0/24"]\n')
    try:
        assert hello(m.port("smtp"), "198.51.100.7") == \
            b"554 5.7.1 Access denied: policy\r\n"
        # Another client still reaches Postfix.
        assert hello(m.port("smtp"), "192.0.2.44").startswith(b"220 ")
        e = wait_event(m, "reject", "198.51.100.7")
        assert e["reason"] == "denylist" and e["listener"] == "smtp"
        assert e["ts"].endswith("Z") and len(e["ts"]) == 24
    finally:
        assert m.stop() == 0


def test_deny_on_implicit_tls_after_handshake(tmp_path, pki, stack):
    """An implicit-TLS client can only read a reply inside TLS."""
    m = start(tmp_path, pki, stack, '[policy]\ndeny = ["198.51.100.0/24"]\n',
              tls="implicit")
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    try:
        assert hello(m.port("smtp"), "198.51.100.8", ctx) == \
            b"554 5.7.1 Access denied: policy\r\n"
    finally:
        assert m.stop() == 0


DENY = '[policy]\ndeny = ["198.51.100.0/24"]\n'
DENIED = b"554 5.7.1 Access denied: policy\r\n"
BAD_SEQUENCE = b"503 5.5.1 Error: access denied\r\n"
BYE = b"221 2.0.0 Bye\r\n"


class Refused:
    """A client on an accept_proxy listener as ip (a PROXY v1 header),
    inside TLS when ctx is given (tls_ctx()). Over TLS an end without
    close_notify raises ssl.SSLError instead of reading as the end of
    stream."""

    def __init__(self, port: int, ip: str, ctx=None):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(proxy_v1_header(ip, "127.0.0.1", 40000, 25))
        if ctx is not None:
            s = ctx.wrap_socket(s, server_hostname="localhost",
                                suppress_ragged_eofs=False)
        self.sock = s
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        """The next line; b"" at the end of stream."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk
        i = self.buf.index(b"\n") + 1
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def rest(self) -> list:
        """Every line up to the end of stream."""
        out = []
        while line := self.line():
            out.append(line)
        return out

    def __enter__(self) -> "Refused":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()


def tls_ctx(pki, tls):
    """For implicit TLS, a context that tells a TLS end of stream
    (close_notify) from a bare close, which Debian's Python 3.11 ignores
    by default."""
    if tls != "implicit":
        return None
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
def test_refused_smtp_client_is_answered_until_quit(tmp_path, pki, stack, tls):
    """RFC 5321 3.1: after a 554 greeting the server waits for QUIT and
    answers other commands with 503; QUIT gets 221 and an orderly close
    (close_notify on TLS). Pipelined commands get one reply each, a line
    that arrives in pieces one reply once whole, and what follows QUIT
    none."""
    m = start(tmp_path, pki, stack, DENY, tls=tls)
    try:
        with Refused(m.port("smtp"), "198.51.100.7", tls_ctx(pki, tls)) as c:
            assert c.line() == DENIED
            c.send(b"EHLO x\r\n")
            assert c.line() == BAD_SEQUENCE
            c.send(b"NOOP\r\nMAIL FROM:<a@example.test>\r\nSTARTTLS\r\nqu")
            assert [c.line() for _ in range(3)] == [BAD_SEQUENCE] * 3
            c.send(b"it\r\nNOOP\r\n")
            assert c.rest() == [BYE]
        # The refusal is reported as before, once.
        e = wait_event(m, "reject", "198.51.100.7")
        assert e["reason"] == "denylist"
        assert len(events(m, "reject")) == 1
    finally:
        assert m.stop() == 0


@pytest.mark.parametrize("tls", ["none", "implicit"])
def test_refused_smtp_client_flood_is_cut_off(tmp_path, pki, stack, tls):
    """A refused client gets ten 503s at most, then moat closes; a line
    too long for a command gets no answer at all, QUIT behind it
    neither."""
    m = start(tmp_path, pki, stack, DENY, tls=tls)
    try:
        with Refused(m.port("smtp"), "198.51.100.8", tls_ctx(pki, tls)) as c:
            assert c.line() == DENIED
            c.send(b"NOOP\r\n" * 1000 + b"QUIT\r\n")
            assert c.rest() == [BAD_SEQUENCE] * 10
        with Refused(m.port("smtp"), "198.51.100.9", tls_ctx(pki, tls)) as c:
            assert c.line() == DENIED
            c.send(b"EHLO " + b"x" * 600 + b"\r\nQUIT\r\n")
            assert c.rest() == []
    finally:
        assert m.stop() == 0


@pytest.mark.parametrize("tls", ["none", "implicit"])
def test_refused_smtp_client_silent_is_closed_after_linger(tmp_path, pki,
                                                          stack, tls):
    """A refused client that says nothing more may still QUIT for the
    whole linger (5 s), then moat closes (with close_notify on TLS)."""
    m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls=tls)],
             extra=DENY, verbose=2).start()
    try:
        with Refused(m.port("smtp"), "198.51.100.10", tls_ctx(pki, tls)) as c:
            assert c.line() == DENIED
            assert c.rest() == []
        sid = wait_event(m, "reject", "198.51.100.10")["session"]
        m.wait_log(f"{sid} close reason=rejected")
        line = [l for l in m.log().splitlines()
                if f"{sid} close reason=rejected" in l][0]
        # The linger timer, not the client, ended it: a lower bound,
        # which a slow machine only makes longer.
        assert int(line.rsplit("duration_ms=", 1)[1]) >= 4500, line
    finally:
        assert m.stop() == 0


def test_refusal_at_accept_names_its_session(tmp_path, pki, stack):
    """Without accept_proxy the policy judges at accept, before the
    session exists; the reject event still carries the id that moat's log
    lines for that connection start with, and so does a ban made there."""
    m = Moat(tmp_path, pki, [listener("smtp", stack.smtp_addr, tls="none")],
             extra='[policy]\ndeny = ["127.0.0.2"]\n'
                   '[policy.rate]\nconnections = { limit = 2, window = "1m" }\n',
             verbose=1).start()
    try:
        with socket.create_connection(m.addr("smtp"), timeout=10,
                                      source_address=("127.0.0.2", 0)) as c:
            assert moatrun_first_line(c) == DENIED
        sid = wait_event(m, "reject", "127.0.0.2")["session"]
        m.wait_log(f"{sid} ")
        for _ in range(3):
            with socket.create_connection(m.addr("smtp"), timeout=10,
                                          source_address=("127.0.0.3", 0)) as c:
                moatrun_first_line(c)
        ban = wait_event(m, "ban", "127.0.0.3")
        m.wait_log(f"{ban['session']} ")
    finally:
        assert m.stop() == 0


def test_refused_pop3_client_is_not_answered(tmp_path, pki, stack):
    """POP3 has no such rule (RFC 1939): the stream ends right after the
    -ERR, and nothing the client sends is answered."""
    m = Moat(tmp_path, pki, [lb("pop3", stack.pop3_addr, protocol="pop3",
                                tls="none")], extra=DENY).start()
    try:
        with Refused(m.port("pop3"), "198.51.100.11") as c:
            assert c.line() == b"-ERR Access denied: policy\r\n"
            c.send(b"CAPA\r\nQUIT\r\n")
            assert c.rest() == []
    finally:
        assert m.stop() == 0


def test_rate_limit_rejects_sixth_and_allow_list_beats_it(tmp_path, pki, stack):
    m = start(tmp_path, pki, stack,
              '[policy]\nallow = ["192.0.2.10"]\n'
              '[policy.rate]\nconnections = { limit = 5, window = "10s" }\n')
    port = m.port("smtp")
    try:
        for i in range(5):
            assert hello(port, "203.0.113.5").startswith(b"220 "), i
        assert hello(port, "203.0.113.5") == \
            b"554 5.7.1 Access denied: rate limit\r\n"
        # The offender is banned now: no reply at all, no work.
        assert hello(port, "203.0.113.5") == b""
        # Another address is not affected, nor is the allow-listed one.
        assert hello(port, "203.0.113.6").startswith(b"220 ")
        for i in range(8):
            assert hello(port, "192.0.2.10").startswith(b"220 "), i
        e = wait_event(m, "reject", "203.0.113.5")
        assert e["reason"] == "rate" and e["count"] >= 5 and e["window_s"] == 10
        b = wait_event(m, "ban", "203.0.113.5")
        assert b["ban_s"] == 3600
        assert not [e for e in events(m) if e["ip"] == "192.0.2.10"]
    finally:
        assert m.stop() == 0


def test_connecting_at_the_concurrency_limit_counts_and_bans(tmp_path, pki, stack):
    """A client that holds concurrent_per_ip sessions and keeps connecting:
    its refused attempts never reached the connection window, so it was
    refused (554, an event) without end and never banned, while a client
    holding none was banned after its limit. They count now."""
    extra = ('[policy.rate]\nconnections = { limit = 6, window = "1m" }\n'
             'concurrent_per_ip = 2\n')
    m = start(tmp_path, pki, stack, extra)
    port = m.port("smtp")
    held = []
    try:
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(proxy_v1_header("203.0.113.90", "127.0.0.1", 40000, 25))
            assert moatrun_first_line(s).startswith(b"220 ")
            held.append(s)
        # Two held and four refused for concurrency fill the window of 6;
        # the next is refused for the rate, and banned; then closed at
        # accept.
        replies = [hello(port, "203.0.113.90") for _ in range(6)]
        assert all(b"too many connections" in r for r in replies[:4]), replies
        assert replies[4].startswith(b"554 ") and replies[5] == b"", replies
        b = wait_event(m, "ban", "203.0.113.90")
        assert b["reason"] == "rate", b
        assert "203.0.113.90" in m.ctl("bans").stdout
    finally:
        for s in held:
            s.close()
        assert m.stop() == 0


def test_ban_ends_sessions_policy_no_longer_counts(tmp_path, pki):
    """A session admitted before a reload that changed aggregate_ipv4 is
    no longer in policy's window table; a rate ban of its address then
    left it running (moat.toml(5): a new ban ends every session the
    address has open). The session cap's count finds it now."""
    from scripted import ScriptedBackend
    b = ScriptedBackend("smtp").start()
    rate = ('[policy.rate]\nconnections = { limit = 3, window = "1m" }\n'
            'concurrent_per_ip = 0\n')
    m = Moat(tmp_path, pki, [listener("smtp", b.addr, tls="none")], extra=rate)

    def conn() -> socket.socket:
        s = socket.socket()
        s.bind(("127.0.5.77", 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", m.port("smtp")))
        return s
    held = None
    try:
        m.start()
        held = conn()
        assert moatrun_first_line(held).startswith(b"220 ")
        m.config_path.write_text(m.config_path.read_text().replace(
            "concurrent_per_ip = 0", "concurrent_per_ip = 0\naggregate_ipv4 = 24"))
        assert m.ctl("reload").returncode == 0
        # Three sessions counted under the new aggregation, each ended
        # (so policy counts none open), then one too many: banned.
        for _ in range(3):
            with conn() as c:
                assert moatrun_first_line(c).startswith(b"220 ")
                c.sendall(b"QUIT\r\n")
                while c.recv(4096):
                    pass
        time.sleep(0.3)
        with conn() as c:
            assert moatrun_first_line(c).startswith(b"554 ")
        wait_event(m, "ban", "127.0.5.77")
        # The held session is ended: EOF (or a reset) within the wait.
        held.sendall(b"NOOP\r\n")
        got = b""
        try:
            while (d := held.recv(4096)):
                got += d
        except ConnectionResetError:
            pass
        assert b"250" not in got, got
    finally:
        if held is not None:
            held.close()
        assert m.stop() == 0
        b.stop()


def test_ban_survives_restart(tmp_path, pki, stack):
    extra = '[policy.rate]\nconnections = { limit = 2, window = "1m" }\n'
    m = start(tmp_path, pki, stack, extra)
    port = m.port("smtp")
    try:
        for _ in range(2):
            assert hello(port, "203.0.113.77").startswith(b"220 ")
        assert hello(port, "203.0.113.77").startswith(b"554 ")
        wait_event(m, "ban", "203.0.113.77")
    finally:
        assert m.stop() == 0
    state = (tmp_path / "moat.state").read_text()
    assert "203.0.113.77" in state
    m2 = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none",
                                  listen=[f"127.0.0.1:{port}"])],
              extra=extra).start()
    try:
        m2.wait_log("bans restored")
        assert hello(port, "203.0.113.77") == b""
        assert hello(port, "203.0.113.78").startswith(b"220 ")
    finally:
        assert m2.stop() == 0


def first_read(port: int, src: str):
    """What a client from src (a loopback address, no PROXY header) reads
    first: bytes, b"" for an orderly close, or "reset"."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5,
                                      source_address=(src, 0)) as c:
            return c.recv(4096)
    except ConnectionResetError:
        return "reset"


def test_banned_address_flood_is_reset_others_close_in_order(tmp_path, pki,
                                                             stack):
    """Judged at accept (no PROXY header): a banned address's first
    connection is closed in order, its repeats are reset without a word
    (the kernel frees them at once); everyone else's session still ends
    with every reply delivered and an orderly close."""
    m = Moat(tmp_path, pki, [listener("smtp", stack.smtp_addr, tls="none",
                                      backend_proxy="v1")]).start()
    port = m.port("smtp")
    try:
        r = m.ctl("ban", "127.0.0.2", "10m")
        assert r.returncode == 0, r.stderr
        assert first_read(port, "127.0.0.2") == b""
        assert [first_read(port, "127.0.0.2") for _ in range(3)] == \
            ["reset"] * 3
        with socket.create_connection(("127.0.0.1", port), timeout=10,
                                      source_address=("127.0.0.3", 0)) as c, \
                c.makefile("rb") as f:
            assert f.readline().startswith(b"220 ")
            c.sendall(b"QUIT\r\n")
            assert f.readline().startswith(b"221 ")
            assert f.read() == b""          # end of stream, not a reset
        deadline = time.monotonic() + 5
        while "close reason=backend_closed" not in m.log():
            assert time.monotonic() < deadline, m.log()
            time.sleep(0.05)
    finally:
        assert m.stop() == 0


def need_country_db():
    """The shared test database: a skip that says so, or under CI a
    failure."""
    if not TEST_COUNTRY_DB.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared test data missing: {TEST_COUNTRY_DB}")
        pytest.skip(f"shared test data missing: {TEST_COUNTRY_DB}")


def test_geofence_allow_countries(tmp_path, pki, stack):
    need_country_db()
    m = start(tmp_path, pki, stack,
              f'[policy.geo]\ndatabase = "{TEST_COUNTRY_DB}"\n'
              'allow_countries = ["DE", "US"]\n')
    port = m.port("smtp")
    try:
        assert hello(port, "198.51.100.9") == \
            b"554 5.7.1 Access denied: policy\r\n"            # CN
        assert hello(port, "192.0.2.1").startswith(b"220 ")   # DE
        assert hello(port, "203.0.113.9").startswith(b"220 ")  # US
        e = wait_event(m, "reject", "198.51.100.9")
        assert e["reason"] == "geo" and e["country"] == "CN"
    finally:
        assert m.stop() == 0


def test_reload_adds_deny_and_keeps_bans(tmp_path, pki, stack):
    extra = '[policy.rate]\nconnections = { limit = 1, window = "1m" }\n'
    m = start(tmp_path, pki, stack, extra)
    port = m.port("smtp")
    try:
        assert hello(port, "203.0.113.20").startswith(b"220 ")
        assert hello(port, "203.0.113.20").startswith(b"554 ")
        text = m.config_path.read_text().replace(
            "[policy.rate]", '[policy]\ndeny = ["192.0.2.0/24"]\n[policy.rate]')
        m.config_path.write_text(text)
        m.signal(signal.SIGHUP)
        m.wait_log("reload done")
        assert hello(port, "192.0.2.50").startswith(b"554 ")
        assert hello(port, "203.0.113.20") == b""       # still banned
    finally:
        assert m.stop() == 0


def test_broken_geo_database_keeps_old_on_reload(tmp_path, pki, stack):
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"not a maxmind database")
    m = start(tmp_path, pki, stack, '[policy]\ndeny = ["198.51.100.0/24"]\n')
    try:
        text = m.config_path.read_text().replace(
            "[policy]", f'[policy.geo]\ndatabase = "{bad}"\n[policy]')
        m.config_path.write_text(text)
        m.signal(signal.SIGHUP)
        m.wait_log("reload failed")
        assert "bad.mmdb" in m.log()
        assert hello(m.port("smtp"), "198.51.100.7").startswith(b"554 ")
        assert hello(m.port("smtp"), "192.0.2.7").startswith(b"220 ")
    finally:
        assert m.stop() == 0


def test_geo_database_rewritten_in_place_keeps_serving(tmp_path, pki, stack):
    """cp or curl -o over the database truncates and rewrites the file
    moat has open: lookups must keep the copy that was loaded, not read
    the file under it (SIGBUS past its new end), and a reload reads the
    new one."""
    need_country_db()
    db = tmp_path / "country.mmdb"
    db.write_bytes(TEST_COUNTRY_DB.read_bytes())
    m = start(tmp_path, pki, stack,
              f'[policy.geo]\ndatabase = "{db}"\ndeny_countries = ["CN"]\n')
    port = m.port("smtp")
    try:
        assert hello(port, "198.51.100.9").startswith(b"554 ")   # CN
        with open(db, "r+b") as f:       # what cp does first
            f.truncate(0)
        assert hello(port, "198.51.100.10").startswith(b"554 ")
        assert hello(port, "192.0.2.1").startswith(b"220 ")       # DE
        db.write_bytes(TEST_COUNTRY_DB.read_bytes())
        m.signal(signal.SIGHUP)
        m.wait_log("reload done")
        assert hello(port, "198.51.100.11").startswith(b"554 ")
        assert hello(port, "192.0.2.2").startswith(b"220 ")
    finally:
        assert m.stop() == 0


def damaged_copy(src: Path, dst: Path) -> Path:
    """src with its data section overwritten, metadata and search tree
    intact: libmaxminddb opens it, and every lookup that finds a record
    fails to decode it. The tree's size comes from the metadata's
    node_count (uint32) and record_size (uint16)."""
    d = bytearray(src.read_bytes())
    meta_at = d.rfind(b"\xab\xcd\xefMaxMind.com")
    meta = bytes(d[meta_at:])

    def number(key: bytes, kind: int) -> int:
        i = meta.index(key) + len(key)
        assert meta[i] >> 5 == kind, (key, meta[i])
        return int.from_bytes(meta[i + 1:i + 1 + (meta[i] & 0x1f)], "big")

    tree = number(b"node_count", 6) * number(b"record_size", 5) * 2 // 8
    data_at = tree + 16
    assert 0 < data_at < meta_at
    d[data_at:meta_at] = b"\xff" * (meta_at - data_at)
    dst.write_bytes(bytes(d))
    return dst


def test_damaged_geo_database_is_warned_of_and_counted(tmp_path, pki, stack):
    """A database damaged past its header opens (moat -t and the start
    pass), and then every lookup fails: those clients count as unknown,
    so with deny_countries and unknown = "allow" everyone gets in. The
    log says so, moatctl status and the metrics count it, and a good copy
    and a reload end it."""
    need_country_db()
    db = damaged_copy(TEST_COUNTRY_DB, tmp_path / "country.mmdb")
    mport = free_port()
    m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none")],
             extra=f'[policy.geo]\ndatabase = "{db}"\n'
             'deny_countries = ["CN"]\n',
             metrics=f"127.0.0.1:{mport}").start()
    port = m.port("smtp")

    def failed() -> float:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("moat_geo_lookup_errors_total "):
                    return float(line.split()[1])
        raise AssertionError("no moat_geo_lookup_errors_total")

    try:
        assert failed() == 0
        assert hello(port, "198.51.100.9").startswith(b"220 ")   # CN
        assert hello(port, "192.0.2.1").startswith(b"220 ")      # DE
        assert failed() == 2
        # Said at the next 2 s tick: "1 lookup" or "2 lookups", as it
        # falls between the two or after them.
        m.wait_log("the database looks damaged")
        line = [l for l in m.log().splitlines() if "looks damaged" in l][0]
        assert str(db) in line and " failed: " in line, line
        st = m.ctl("--json", "status")
        assert json.loads(st.stdout)["geo"]["lookup_errors"] == 2
        assert "2 lookups failed" in m.ctl("status").stdout
        # More failures within 10 minutes are counted, not logged again.
        assert hello(port, "198.51.100.10").startswith(b"220 ")
        time.sleep(2.5)
        assert m.log().count("the database looks damaged") == 1
        damaged_log = m.log()
        db.write_bytes(TEST_COUNTRY_DB.read_bytes())
        m.signal(signal.SIGHUP)
        m.wait_log("reload done")
        assert hello(port, "198.51.100.11").startswith(b"554 ")  # CN
        assert failed() == 3             # a counter: the past stays
        st = m.ctl("--json", "status")
        assert json.loads(st.stdout)["geo"]["lookup_errors"] == 0
        assert m.log().count("the database looks damaged") == \
            damaged_log.count("the database looks damaged")
    finally:
        assert m.stop() == 0


def outpaces_reader(m: Moat, reader: int) -> None:
    """600 refusals write more events than a pipe holds (64 KiB) to a
    reader that reads none: moat keeps serving, says so, and what the
    pipe got is whole events."""
    port = m.port("smtp")
    for i in range(600):
        assert hello(port, f"198.51.100.{i % 250 + 1}") == \
            b"554 5.7.1 Access denied: policy\r\n", i
    assert hello(port, "192.0.2.1").startswith(b"220 ")
    m.wait_log("its reader is not keeping up")
    lines = os.read(reader, 1 << 20).splitlines()
    assert 300 < len(lines) < 600
    assert all(json.loads(l)["event"] == "reject" for l in lines)


def test_events_fifo_never_stops_moat(tmp_path, pki, stack):
    """An events file that is a FIFO (a log shipper's): with no reader moat
    says so and does not start, instead of hanging in open(2); a reader
    that falls behind costs dropped events, never the service."""
    fifo = tmp_path / "events.jsonl"
    os.mkfifo(fifo)
    m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none")],
             extra='[policy]\ndeny = ["198.51.100.0/24"]\n')
    try:
        m.start()
    except RuntimeError:
        pass
    try:
        assert m.proc.wait(10) == 1
    finally:
        m.stop()
    assert "a FIFO that no process reads" in m.log()
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # never reads
    try:
        m = start(tmp_path, pki, stack, '[policy]\ndeny = ["198.51.100.0/24"]\n')
        try:
            outpaces_reader(m, reader)
        finally:
            assert m.stop() == 0
    finally:
        os.close(reader)


def test_events_on_stdout_pipe_never_stop_moat(tmp_path, pki, stack):
    """Regression: with file = "-" and standard output a pipe whose reader
    has stopped reading (a container's log collector, a shipper), the
    write blocked once the pipe was full, under the lock every worker
    takes to emit: moat answered nobody. A lagging reader costs dropped
    events, as with a FIFO for file, and moat keeps serving."""
    fifo = tmp_path / "stdout.pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # never reads
    try:
        m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none")],
                 extra='[policy]\ndeny = ["198.51.100.0/24"]\n')
        text = m.config_path.read_text()
        events_line = f'file = "{m.workdir / "events.jsonl"}"'
        assert events_line in text
        m.config_path.write_text(text.replace(events_line, 'file = "-"'))
        # moat itself (exec), with standard output the pipe; stderr stays
        # the log.
        m.wrap = ["sh", "-c", 'exec "$@" > "$0"', str(fifo)]
        m.start()
        try:
            outpaces_reader(m, reader)
        finally:
            assert m.stop() == 0
    finally:
        os.close(reader)


def pop3_wrong_password(port: int, ip: str) -> bytes:
    """One POP3 login with a wrong password as ip; returns PASS's reply
    (b"" when moat closed the connection without a word)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(proxy_v1_header(ip, "127.0.0.1", 40000, 110))
        f = s.makefile("rwb")
        if not f.readline().startswith(b"+OK"):
            return b""
        f.write(b"USER alice\r\nPASS wrong\r\n")
        f.flush()
        f.readline()
        return f.readline()


def test_five_wrong_pop3_passwords_ban_across_restart(tmp_path, pki, stack):
    extra = ('[policy.rate]\nconnections = { limit = 0, window = "1m" }\n'
             'auth_failures = { limit = 5, window = "10m" }\n')
    lis = lb("pop3", stack.pop3_addr, protocol="pop3", tls="none")
    m = Moat(tmp_path, pki, [lis], extra=extra).start()
    port = m.port("pop3")
    try:
        for i in range(5):
            assert pop3_wrong_password(port, "203.0.113.55").startswith(
                b"-ERR"), i
        ban = wait_event(m, "ban", "203.0.113.55")
        assert ban["reason"] == "auth" and ban["count"] == 5
        assert len(events(m, "auth_fail")) == 5
        assert pop3_wrong_password(port, "203.0.113.55") == b""
        # Another address is still served.
        assert pop3_wrong_password(port, "203.0.113.56").startswith(b"-ERR")
    finally:
        assert m.stop() == 0
    m2 = Moat(tmp_path, pki, [lis], extra=extra).start()
    try:
        m2.wait_log("bans restored")
        assert pop3_wrong_password(port, "203.0.113.55") == b""
    finally:
        assert m2.stop() == 0
