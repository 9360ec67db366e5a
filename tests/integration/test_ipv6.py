"""IPv6 clients through the policy: aggregate_ipv6 counts a prefix as one
client; IPv6 prefixes in the lists that also cover IPv4, and geo databases
that hold no IPv6 at all, are warned about.

Clients present their addresses with a PROXY v1 header (moat trusts it from
loopback through accept_proxy), so one test host can be a whole /64.
"""
from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest

from conftest import make_test_mmdb, started_stack
from filterutil import events as all_events
from mailstack import proxy_v1_header
from moatrun import Moat, listener, moat_binary, started
from scripted import ScriptedBackend


@pytest.fixture(scope="module")
def stack():
    yield from started_stack(postfix_proxy="haproxy", dovecot_proxy=True)


def lb(name, backend, **kw):
    return listener(name, backend, backend_proxy="v1", accept_proxy=True,
                    accept_proxy_from=["127.0.0.0/8"], **kw)


def events(moat: Moat, kind: str):
    return [e for e in all_events(moat) if e["event"] == kind]


def wait_event(moat: Moat, kind: str, ip: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        for e in events(moat, kind):
            if e["ip"] == ip:
                return e
        if time.monotonic() > deadline:
            raise AssertionError(f"no {kind} event for {ip}")
        time.sleep(0.05)


def pop3_wrong_password(port: int, ip: str) -> bytes:
    """One POP3 login with a wrong password as the IPv6 client ip; returns
    PASS's reply, or moat's refusal in place of the greeting."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(proxy_v1_header(ip, "::1", 40000, 110))
        f = s.makefile("rwb")
        greeting = f.readline()
        if not greeting.startswith(b"+OK"):
            return greeting
        f.write(b"USER alice\r\nPASS wrong\r\n")
        f.flush()
        f.readline()
        return f.readline()


def test_aggregate_ipv6_auth_failures_count_the_whole_prefix(tmp_path, pki,
                                                             stack):
    """With aggregate_ipv6 = 64 the failures of a /64 are one client's: once
    they reach the limit, a fresh address of that /64 gets no guess."""
    extra = ('[policy.rate]\nconnections = { limit = 0, window = "1m" }\n'
             'auth_failures = { limit = 3, window = "10m" }\n'
             'aggregate_ipv6 = 64\n')
    m = Moat(tmp_path, pki, [lb("pop3", stack.pop3_addr, protocol="pop3",
                                tls="none")], extra=extra).start()
    port = m.port("pop3")
    try:
        for i in range(1, 4):
            assert pop3_wrong_password(port, f"2001:db8:5:5::{i}") \
                .startswith(b"-ERR [AUTH]"), i
        ban = wait_event(m, "ban", "2001:db8:5:5::3")
        assert ban["reason"] == "auth" and ban["count"] == 3
        mark = stack.log_mark("dovecot")
        # Rotating to another address of the /64 buys no more guesses.
        for i in range(4, 8):
            assert pop3_wrong_password(port, f"2001:db8:5:5::{i}") == \
                b"-ERR Access denied: too many failures\r\n", i
        e = wait_event(m, "reject", "2001:db8:5:5::4")
        assert e["reason"] == "auth" and e["count"] == 3
        assert wait_event(m, "ban", "2001:db8:5:5::4")["reason"] == "auth"
        # Another /64 is another client, and Dovecot still hears it.
        assert pop3_wrong_password(port, "2001:db8:5:6::1") \
            .startswith(b"-ERR [AUTH]")
        stack.wait_log(r"2001:db8:5:6::1.*Password mismatch", "dovecot",
                       since=mark)
        assert "2001:db8:5:5::4" not in stack.dovecot_log()
    finally:
        assert m.stop() == 0


IPV6_MARTIANS = """\
# A common list of IPv6 martians, as routers filter them.
::/128
::1/128
::ffff:0:0/96
::/96
100::/64
2001:10::/28
2001:db8::/32
fc00::/7
fe80::/10
fec0::/10
ff00::/8
::/8
"""


def test_ipv6_prefix_that_covers_ipv4_is_warned_about(tmp_path, pki, stack):
    """moat keeps IPv4 under ::ffff:0:0/96, so "::ffff:0:0/96" or "::/8" in
    a deny list of IPv6 martians refuses every IPv4 client: moat -t and the
    start say so, naming the file and line."""
    lst = tmp_path / "martians6.txt"
    lst.write_text(IPV6_MARTIANS)
    m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none")],
             extra=f'[policy]\ndeny_files = ["{lst}"]\n')
    p = subprocess.run([str(moat_binary()), "-t", "-c", str(m.config_path)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    for line in (4, 13):
        assert f"{lst}:{line}:1: warning: " in p.stderr, p.stderr
    assert '"::ffff:0:0/96" matches every IPv4 client as well' in p.stderr
    assert '"::/8" matches every IPv4 client as well' in p.stderr
    assert p.stderr.count("matches every IPv4 client") == 2, p.stderr
    m.start()
    try:
        m.wait_log(f"{lst}:4:1: warning: ")
        # What the warning is about: an IPv4 client is refused.
        with socket.create_connection(("127.0.0.1", m.port("smtp")),
                                      timeout=10) as s:
            s.sendall(proxy_v1_header("192.0.2.7", "127.0.0.1", 40000, 25))
            assert s.makefile("rb").readline() == \
                b"554 5.7.1 Access denied: policy\r\n"
    finally:
        assert m.stop() == 0


def pop3_greeting(port: int, ip: str) -> bytes:
    """The first line a POP3 client at ip (a PROXY v1 header) reads."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(proxy_v1_header(ip, "::1" if ":" in ip else "127.0.0.1",
                                  40000, 110))
        return s.makefile("rb").readline()


def test_ipv4_only_geo_database_is_warned_about(tmp_path, pki):
    """An IPv4-only country database (ip_version 4) finds no IPv6 client,
    so [policy.geo] unknown decides for every one of them: the start and
    each reload onto such a database say so, naming the file, while IPv6
    clients can come (here through PROXY headers)."""
    v4 = make_test_mmdb(tmp_path / "v4.mmdb", "--ip-version", "4")
    v6 = make_test_mmdb(tmp_path / "v6.mmdb")
    warning = (f"warning: policy.geo.database: {v4}: an IPv4-only "
               "database (ip_version 4), but listener 'pop3' takes client addresses from PROXY headers: "
               "IPv6 clients are never found in it and get the policy for "
               "unknown countries: [policy.geo] unknown = \"deny\" refuses "
               "them all")
    backend = ScriptedBackend("pop3").start()
    try:
        m = Moat(tmp_path / "moat", pki,
                 [listener("pop3", backend.addr, protocol="pop3", tls="none",
                           accept_proxy=True,
                           accept_proxy_from=["127.0.0.0/8"])],
                 extra=f'[policy.geo]\ndatabase = "{v4}"\n'
                       'allow_countries = ["CA", "NL"]\nunknown = "deny"\n')
        with started(m):
            port = m.port("pop3")
            m.wait_log(warning)
            # The log line also names where the config set the database.
            assert re.search(rf"{re.escape(str(m.config_path))}:\d+:\d+: "
                             + re.escape(warning), m.log()), m.log()
            # What it warns of: 2001:db8:a::/48 is Canadian in the IPv6
            # database, unknown in this one.
            assert pop3_greeting(port, "192.0.2.1").startswith(b"+OK")
            assert pop3_greeting(port, "2001:db8:a::1") == \
                b"-ERR Access denied: policy\r\n"
            text = m.config_path.read_text()
            m.config_path.write_text(text.replace(str(v4), str(v6)))
            r = m.ctl("reload")
            assert r.returncode == 0 and "reload done" in r.stdout, r
            assert "IPv4-only" not in r.stdout
            assert pop3_greeting(port, "2001:db8:a::1").startswith(b"+OK")
            # Back onto the IPv4-only one: moatctl and the log say it.
            m.config_path.write_text(text)
            r = m.ctl("reload")
            assert r.returncode == 0 and warning in r.stdout, r
            assert m.log().count(warning) == 2, m.log()
    finally:
        backend.stop()
