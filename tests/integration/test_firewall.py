"""Kernel blocking (issue 6): bans reach nftables/ipset sets and the kernel
drops the offender's next SYN, proven in network namespaces.

Topology (made here, removed at the end, also on failure):

    att-NS (10.66.1.2, fd00:66:1::2) --veth-- srv-NS (10.66.1.1, fd00:66:1::1)
    cli-NS (10.66.2.2, fd00:66:2::2) --veth-- srv-NS (10.66.2.1, fd00:66:2::1)

srv-NS runs the private Postfix/Dovecot (MailStack on its loopback) and
moat, which listens on all addresses and relays POP3 in plaintext to
Dovecot. The test process enters a namespace with setns(2) around the
code that must run there (sockets keep their namespace afterwards); the
root namespace's ruleset and ipsets are never touched.

Bans are triggered by the connection rate (limit 3 per 2 s: the fourth
connection is rejected and bans). The POP3 auth-failure variant runs
only once moat's POP3 filter reports auth_fail events.
"""
from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import secrets
import signal
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import require_mailstack
from mailstack import MailStack
import moatrun
from moatrun import Moat, listener

ROOT = Path(__file__).resolve().parents[2]
MOAT_NFT = ROOT / "contrib" / "nftables" / "moat.nft"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

ATT4, CLI4 = "10.66.1.2", "10.66.2.2"
ATT6, CLI6 = "fd00:66:1::2", "fd00:66:2::2"
SRV4, SRV6 = "10.66.1.1", "fd00:66:1::1"
SRV4_CLI, SRV6_CLI = "10.66.2.1", "fd00:66:2::1"

RATE = ('[policy.rate]\nconnections = { limit = 3, window = "2s" }\n'
        'concurrent_per_ip = 0\nauth_failures = { limit = 0, window = "1m" }\n'
        '[ban]\nduration = "3s"\nescalation = 1.0\n')


def _sh(*args, check=True, ns=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.returncode}\n{p.stdout}{p.stderr}")
    return p


@contextmanager
def netns(name: str):
    """Runs the block with this thread in network namespace name."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        yield
    finally:
        _libc.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)


class Net:
    def __init__(self):
        tag = secrets.token_hex(3)
        self.srv, self.att, self.cli = (f"moat-{r}-{tag}" for r in ("srv", "att", "cli"))

    def up(self):
        for ns in (self.srv, self.att, self.cli):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        for peer, n in ((self.att, 1), (self.cli, 2)):
            a, b = f"v{n}s", f"v{n}p"
            _sh("ip", "link", "add", a, "netns", self.srv, "type", "veth",
                "peer", "name", b, "netns", peer)
            _sh("ip", "-n", self.srv, "addr", "add", f"10.66.{n}.1/24", "dev", a)
            _sh("ip", "-n", peer, "addr", "add", f"10.66.{n}.2/24", "dev", b)
            _sh("ip", "-n", self.srv, "addr", "add", f"fd00:66:{n}::1/64", "dev", a, "nodad")
            _sh("ip", "-n", peer, "addr", "add", f"fd00:66:{n}::2/64", "dev", b, "nodad")
            _sh("ip", "-n", self.srv, "link", "set", a, "up")
            _sh("ip", "-n", peer, "link", "set", b, "up")

    def down(self):
        for ns in (self.srv, self.att, self.cli):
            _sh("ip", "netns", "del", ns, check=False)

    # The sets in srv-NS.
    def nft(self, *args, check=True):
        return _sh("nft", *args, ns=self.srv, check=check)

    def reset_nft(self, load=True):
        self.nft("delete", "table", "inet", "moat", check=False)
        if load:
            self.nft("-f", MOAT_NFT)

    def nft_elems(self, set_name):
        p = self.nft("-j", "list", "set", "inet", "moat", set_name, check=False)
        if p.returncode != 0:
            return {}
        out = {}
        for obj in json.loads(p.stdout)["nftables"]:
            for e in obj.get("set", {}).get("elem", []):
                if isinstance(e, dict) and "elem" in e:
                    out[e["elem"]["val"]] = e["elem"]
                else:
                    out[e] = {"val": e}
        return out

    def ipset_list(self, name):
        p = _sh("ipset", "list", name, ns=self.srv, check=False)
        return p.stdout if p.returncode == 0 else ""


@pytest.fixture(scope="module")
def net():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    for tool in ("ip", "nft", "ipset"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found (apt-get install iproute2 nftables ipset)")
    n = Net()
    try:
        n.up()
        yield n
    finally:
        n.down()


@pytest.fixture(scope="module")
def stack(net):
    require_mailstack()
    with netns(net.srv):
        s = MailStack().start()
    try:
        yield s
    finally:
        with netns(net.srv):
            s.stop()


def start_moat(tmp_path, pki, net, stack, firewall, extra=RATE, wrapper=None):
    with netns(net.srv):
        port = moatrun.free_port("0.0.0.0")
        lis = listener("pop3", stack.pop3_addr, protocol="pop3", tls="none",
                       listen=[f"0.0.0.0:{port}", f"[::]:{port}"])
        m = Moat(tmp_path, pki, [lis], extra=extra, firewall=firewall)
        if wrapper is None:
            m.start()
        else:
            real = moatrun.moat_binary
            moatrun.moat_binary = lambda: wrapper
            try:
                m.start()
            finally:
                moatrun.moat_binary = real
    m.pop3_port = port
    return m


def first_line(ns, host, port, timeout=3.0):
    """Connects from ns; returns the first line (b"" if closed without a
    word); raises socket.timeout when the SYN gets no answer."""
    with netns(ns):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
    with s:
        s.settimeout(timeout)
        s.connect((host, port))
        return moatrun.first_line(s)


def syn_dropped(ns, host, port) -> bool:
    try:
        first_line(ns, host, port, timeout=1.0)
    except socket.timeout:
        return True
    except OSError:
        return False
    return False


def events(m, kind=None):
    path = m.workdir / "events.jsonl"
    if not path.exists():
        return []
    out = [json.loads(l) for l in path.read_text().splitlines() if l]
    return [e for e in out if kind is None or e["event"] == kind]


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def trigger_rate_ban(ns, host, port):
    """Three admitted connections, the fourth is rejected and bans."""
    for _ in range(3):
        assert first_line(ns, host, port).startswith(b"+OK")
    assert first_line(ns, host, port).startswith(b"-ERR Access denied")


@pytest.mark.parametrize("v", [4, 6])
def test_nftables_ban_drops_syn_then_expires(tmp_path, pki, net, stack, v):
    att, cli = (ATT4, CLI4) if v == 4 else (ATT6, CLI6)
    srv, srv_cli = (SRV4, SRV4_CLI) if v == 4 else (SRV6, SRV6_CLI)
    set_name = f"blocked{v}"
    net.reset_nft()
    # A ban long enough that a busy machine still sees it in force.
    m = start_moat(tmp_path, pki, net, stack, "nftables",
                   extra=RATE.replace('duration = "3s"', 'duration = "8s"'))
    try:
        trigger_rate_ban(net.att, srv, m.pop3_port)
        el = wait_for(lambda: net.nft_elems(set_name).get(att), 5.0,
                      f"{att} in {set_name}")
        assert "timeout" in el and 1 <= el["timeout"] <= 8, el
        assert syn_dropped(net.att, srv, m.pop3_port)
        assert first_line(net.cli, srv_cli, m.pop3_port).startswith(b"+OK")
        ban = wait_for(lambda: [e for e in events(m, "ban") if e["ip"] == att],
                       5.0, "ban event")[0]
        assert ban["firewall"] == "nftables" and ban["reason"] == "rate"
        # The kernel forgets the element when the ban ends; the attacker
        # connects again (the rate window of 2 s has passed by then). The
        # kernel keeps timeouts in clock ticks, rounded down, so the
        # element may go up to two ticks (8 ms at HZ=250) before moat's
        # own ban ends, and a connection in between is refused by moat
        # (seen once in CI): allow those milliseconds, not more.
        wait_for(lambda: att not in net.nft_elems(set_name), 12.0,
                 f"{att} to expire from {set_name}")
        wait_for(lambda: first_line(net.att, srv, m.pop3_port).startswith(b"+OK"),
                 0.5, f"{att} admitted once its ban ended")
        assert not events(m, "firewall_error"), events(m, "firewall_error")
    finally:
        assert m.stop() == 0


def test_unban_removes_element(tmp_path, pki, net, stack):
    ctl = moatrun.moat_binary().parent / "moatctl"
    if not ctl.exists():
        pytest.skip("moatctl is not built yet (control socket pending)")
    net.reset_nft()
    extra = RATE.replace('duration = "3s"', 'duration = "1h"')
    m = start_moat(tmp_path, pki, net, stack, "nftables", extra=extra)
    try:
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        wait_for(lambda: ATT4 in net.nft_elems("blocked4"), 5.0, "element")
        p = subprocess.run([str(ctl), "-s", str(m.workdir / "moat.sock"), "unban",
                            ATT4], capture_output=True, text=True, timeout=10)
        if p.returncode != 0 and "unknown" in (p.stdout + p.stderr).lower():
            pytest.skip(f"moatctl unban not available: {p.stdout}{p.stderr}")
        assert p.returncode == 0, p.stdout + p.stderr
        wait_for(lambda: ATT4 not in net.nft_elems("blocked4"), 5.0,
                 "element removed")
        # Past the rate window, the attacker is served again.
        time.sleep(2.5)
        assert first_line(net.att, SRV4, m.pop3_port).startswith(b"+OK")
    finally:
        assert m.stop() == 0


def test_pop3_auth_failures_ban(tmp_path, pki, net, stack):
    net.reset_nft()
    extra = ('[policy.rate]\nconnections = { limit = 0, window = "1m" }\n'
             'concurrent_per_ip = 0\nauth_failures = { limit = 3, window = "1m" }\n'
             '[ban]\nduration = "1h"\n')
    m = start_moat(tmp_path, pki, net, stack, "nftables", extra=extra)

    def wrong_login():
        with netns(net.att):
            s = socket.create_connection((SRV4, m.pop3_port), timeout=5)
        with s:
            f = s.makefile("rwb")
            f.readline()
            for line in (b"USER alice\r\n", b"PASS wrong\r\n"):
                f.write(line)
                f.flush()
                f.readline()
    try:
        wrong_login()
        time.sleep(0.5)
        if not events(m, "auth_fail"):
            pytest.skip("moat's POP3 filter does not report auth_fail yet "
                        "(issue 4); the connection-rate tests cover the ban path")
        wrong_login()
        wrong_login()
        try:
            wait_for(lambda: events(m, "ban"), 5.0, "ban event")
        except AssertionError:
            # The lead flips this on by feeding FILTER_SIG_AUTH_FAIL to
            # guard_note() in session.c's session_signal().
            pytest.skip("auth_fail events are not fed to the policy yet "
                        "(session_signal in proxy/session.c); no ban after "
                        "auth_failures.limit failures")
        wait_for(lambda: ATT4 in net.nft_elems("blocked4"), 5.0, "element")
        assert syn_dropped(net.att, SRV4, m.pop3_port)
        assert first_line(net.cli, SRV4_CLI, m.pop3_port).startswith(b"+OK")
        assert any(e["ip"] == ATT4 and e.get("firewall") == "nftables"
                   for e in events(m, "ban"))
    finally:
        assert m.stop() == 0


def test_ipset_ban_element_with_timeout(tmp_path, pki, net, stack):
    net.reset_nft()     # no nftables ban of an earlier test may linger
    for s in ("blocked4", "blocked6"):
        _sh("ipset", "destroy", s, ns=net.srv, check=False)
    m = start_moat(tmp_path, pki, net, stack, "ipset")
    try:
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        listing = wait_for(lambda: (lambda t: t if ATT4 + " timeout" in t else "")(
            net.ipset_list("blocked4")), 5.0, "ipset element")
        assert "Type: hash:ip" in listing and "family inet " in listing
        secs = int(listing.split(ATT4 + " timeout ")[1].split()[0])
        assert 1 <= secs <= 3
        trigger_rate_ban(net.att, SRV6, m.pop3_port)
        wait_for(lambda: ATT6 + " timeout" in net.ipset_list("blocked6"), 5.0,
                 "ipset v6 element")
        ban = [e for e in events(m, "ban") if e["ip"] == ATT4][0]
        assert ban["firewall"] == "ipset"
        assert not events(m, "firewall_error")
    finally:
        assert m.stop() == 0
        for s in ("blocked4", "blocked6"):
            _sh("ipset", "destroy", s, ns=net.srv, check=False)


def test_ipset_sets_made_for_the_ban_table_and_swapped_type_named(
        tmp_path, pki, net, stack):
    """The sets moat creates hold as many addresses as [ban] max_entries
    (libipset's default of 65536 filled long before the ban table in a
    flood). A set re-created with the other family while moat runs is
    named as such, not taken for a kernel without ipset, and the other
    family's bans still land."""
    net.reset_nft()
    for s in ("blocked4", "blocked6"):
        _sh("ipset", "destroy", s, ns=net.srv, check=False)
    m = start_moat(tmp_path, pki, net, stack,
                   {"backend": "ipset", "create": True},
                   extra=RATE.replace("[ban]\n", "[ban]\nmax_entries = 200000\n"))
    try:
        m.wait_log("created set blocked4", timeout=5)
        assert "maxelem 200000" in net.ipset_list("blocked4")
        assert "maxelem 200000" in net.ipset_list("blocked6")
        _sh("ipset", "destroy", "blocked4", ns=net.srv)
        _sh("ipset", "create", "blocked4", "hash:ip", "family", "inet6",
            "timeout", "0", ns=net.srv)
        assert m.ctl("ban", "10.66.2.9", "1h").returncode == 0
        err = wait_for(lambda: events(m, "firewall_error"), 5.0,
                       "firewall_error")
        assert err[0]["reason"] == "wrong_set_type", err
        assert "blocked4" in err[0]["detail"] and "inet6" in err[0]["detail"]
        assert "ip_set_hash_ip" not in m.log()      # not "load the module"
        assert m.ctl("ban", "2001:db8:66::9", "1h").returncode == 0
        wait_for(lambda: "2001:db8:66::9" in net.ipset_list("blocked6"), 5.0,
                 "v6 element")
        # The IPv6 write worked, the IPv4 set is still wrong: no "works
        # again" in between.
        time.sleep(0.5)
        assert "writes work again" not in m.log()
    finally:
        assert m.stop() == 0
        for s in ("blocked4", "blocked6"):
            _sh("ipset", "destroy", s, ns=net.srv, check=False)


def test_ipset_with_a_netmask_is_refused(tmp_path, pki, net, stack):
    """A hash:ip set with netmask 24 stores networks: a ban of one address
    would drop its /24, and the unban of another lift it."""
    net.reset_nft()
    for s in ("blocked4", "blocked6"):
        _sh("ipset", "destroy", s, ns=net.srv, check=False)
    _sh("ipset", "create", "blocked4", "hash:ip", "family", "inet", "timeout",
        "0", "netmask", "24", ns=net.srv)
    m = start_moat(tmp_path, pki, net, stack, "ipset")
    try:
        assert m.ctl("ban", "10.66.3.9", "1h").returncode == 0
        err = wait_for(lambda: events(m, "firewall_error"), 5.0,
                       "firewall_error")
        assert err[0]["reason"] == "wrong_set_type", err
        assert "netmask 24" in err[0]["detail"], err
        assert "10.66.3.0" not in net.ipset_list("blocked4")
    finally:
        assert m.stop() == 0
        for s in ("blocked4", "blocked6"):
            _sh("ipset", "destroy", s, ns=net.srv, check=False)


def test_ruleset_loads_again_without_doubling(net):
    """contrib/nftables/moat.nft loaded a second time (by hand, or an
    include without "flush ruleset" before it) keeps the sets' elements
    and leaves one drop rule per family, not two."""
    net.reset_nft()
    net.nft("add", "element", "inet", "moat", "blocked4",
            "{ 192.0.2.77 timeout 1h }")
    net.nft("-f", MOAT_NFT)
    net.nft("-f", MOAT_NFT)
    chain = net.nft("-j", "list", "chain", "inet", "moat", "input").stdout
    rules = [o for o in json.loads(chain)["nftables"] if "rule" in o]
    assert len(rules) == 2, chain
    assert "192.0.2.77" in net.nft_elems("blocked4")
    net.reset_nft()


def test_missing_sets_are_created(tmp_path, pki, net, stack):
    net.reset_nft(load=False)
    m = start_moat(tmp_path, pki, net, stack, "nftables")
    try:
        m.wait_log("created set inet moat blocked4", timeout=5)
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        wait_for(lambda: ATT4 in net.nft_elems("blocked4"), 5.0, "element")
        listing = net.nft("list", "set", "inet", "moat", "blocked4").stdout
        assert "type ipv4_addr" in listing and "flags timeout" in listing
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_missing_sets_not_created_when_told(tmp_path, pki, net, stack):
    net.reset_nft(load=False)
    m = start_moat(tmp_path, pki, net, stack,
                   {"backend": "nftables", "create": False})
    try:
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        err = wait_for(lambda: events(m, "firewall_error"), 5.0, "firewall_error")[0]
        assert err["reason"] == "missing_set" and err["firewall"] == "nftables"
        assert "contrib/nftables/moat.nft" in err["detail"]
        assert net.nft("list", "table", "inet", "moat", check=False).returncode != 0
        # Userspace still rejects the banned address (closed, no reply).
        assert first_line(net.att, SRV4, m.pop3_port) == b""
    finally:
        assert m.stop() == 0
        net.reset_nft()


def _ban_while_sets_missing(tmp_path, pki, net, stack):
    """moat with no ruleset loaded and create = false, after a one-minute
    ban that the kernel did not take."""
    net.reset_nft(load=False)
    m = start_moat(tmp_path, pki, net, stack,
                   {"backend": "nftables", "create": False},
                   extra=RATE.replace('duration = "3s"', 'duration = "1m"'))
    try:
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        wait_for(lambda: events(m, "firewall_error"), 5.0, "firewall_error")
    except BaseException:
        m.stop()
        net.reset_nft()
        raise
    return m


def test_recovery_is_an_event(tmp_path, pki, net, stack):
    """Whoever saw firewall_error in the events at night learns there too
    that writes work again, and which problem ended."""
    m = _ban_while_sets_missing(tmp_path, pki, net, stack)
    try:
        assert not events(m, "firewall_recovered")
        net.nft("-f", MOAT_NFT)
        # Both sets were missing, so both must take a write first: the
        # failed IPv4 add is retried 2 s after it failed, IPv6 is new.
        assert m.ctl("ban", "2001:db8:66::9", "1h").returncode == 0
        ok = wait_for(lambda: events(m, "firewall_recovered"), 10.0,
                      "firewall_recovered")
        assert len(ok) == 1, ok
        assert ok[0]["reason"] == "missing_set", ok
        assert ok[0]["firewall"] == "nftables" and ok[0]["ip"] is None, ok
        assert "writes work again" in ok[0]["detail"], ok
        assert ATT4 in net.nft_elems("blocked4")
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_unban_while_set_missing_stays_unbanned(tmp_path, pki, net, stack):
    """A ban whose write failed (the ruleset is not loaded yet) waits to
    be tried again; an unban in the meantime must cancel it, so loading
    the ruleset afterwards does not put the address back in the set."""
    m = _ban_while_sets_missing(tmp_path, pki, net, stack)
    try:
        p = m.ctl("unban", ATT4)
        assert p.returncode == 0, p.stdout + p.stderr
        net.nft("-f", MOAT_NFT)
        # The failed add's first retry was due 2 s after it failed.
        time.sleep(4.0)
        assert ATT4 not in net.nft_elems("blocked4"), net.nft_elems("blocked4")
        assert first_line(net.att, SRV4, m.pop3_port).startswith(b"+OK")
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_unban_deletes_element_moat_does_not_know(tmp_path, pki, net, stack):
    """The kernel set holds an address moat has no ban for (its state file
    was lost): moatctl unban says it is not banned, and lets it in all the
    same."""
    net.reset_nft()
    net.nft("add", "element", "inet", "moat", "blocked4",
            f"{{ {ATT4} timeout 1h }}")
    m = start_moat(tmp_path, pki, net, stack, "nftables")
    try:
        assert syn_dropped(net.att, SRV4, m.pop3_port)
        p = m.ctl("unban", ATT4)
        assert p.returncode != 0
        assert "not banned; deleted from the firewall set" in p.stdout + p.stderr
        wait_for(lambda: ATT4 not in net.nft_elems("blocked4"), 5.0,
                 "element deleted")
        assert first_line(net.att, SRV4, m.pop3_port).startswith(b"+OK")
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_full_set_reported_userspace_still_rejects(tmp_path, pki, net, stack):
    """A set at its size limit: the kernel answers ENFILE, which must read
    as a full set, not as "Too many open files in system"."""
    net.reset_nft(load=False)
    net.nft("add", "table", "inet", "moat")
    net.nft("add", "set", "inet", "moat", "blocked4",
            "{ type ipv4_addr; flags timeout; size 1; }")
    net.nft("add", "set", "inet", "moat", "blocked6",
            "{ type ipv6_addr; flags timeout; }")
    m = start_moat(tmp_path, pki, net, stack, "nftables")
    try:
        assert m.ctl("ban", "10.66.1.9", "1h").returncode == 0
        wait_for(lambda: "10.66.1.9" in net.nft_elems("blocked4"), 5.0, "element")
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        err = wait_for(lambda: events(m, "firewall_error"), 5.0, "firewall_error")
        assert len(err) == 1 and "the set is full" in err[0]["detail"], err
        assert "Too many open files" not in m.log()
        assert ATT4 not in net.nft_elems("blocked4")
        assert first_line(net.att, SRV4, m.pop3_port) == b""
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_wrong_set_type_reported_userspace_still_rejects(tmp_path, pki, net, stack):
    net.reset_nft(load=False)
    net.nft("add", "table", "inet", "moat")
    net.nft("add", "set", "inet", "moat", "blocked4", "{ type inet_service; }")
    net.nft("add", "set", "inet", "moat", "blocked6",
            "{ type ipv6_addr; flags timeout; }")
    m = start_moat(tmp_path, pki, net, stack, "nftables")
    try:
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        err = wait_for(lambda: events(m, "firewall_error"), 5.0, "firewall_error")
        assert len(err) == 1, err
        assert err[0]["reason"] == "wrong_set_type"
        assert "blocked4" in err[0]["detail"] and "wrong type" in err[0]["detail"]
        assert m.log().count("wrong type") == 1
        assert first_line(net.att, SRV4, m.pop3_port) == b""
        assert first_line(net.cli, SRV4_CLI, m.pop3_port).startswith(b"+OK")
        # The IPv6 set is fine and still gets its elements.
        trigger_rate_ban(net.att, SRV6, m.pop3_port)
        wait_for(lambda: ATT6 in net.nft_elems("blocked6"), 5.0, "v6 element")
        status = lambda: json.loads(m.ctl("--json", "status").stdout)["firewall"]
        assert status()["state"].startswith("failing since "), status()
        since = status()["failing_since"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", since), since
        human = m.ctl("status").stdout
        assert f"failing since {since} (wrong_set_type)" in human, human
        # Pointed at a good set: the new writer's status is its own.
        net.nft("add", "set", "inet", "moat", "good4",
                "{ type ipv4_addr; flags timeout; }")
        m.config_path.write_text(m.config_path.read_text().replace(
            "[firewall]\n", '[firewall]\nset4 = "good4"\n'))
        assert m.ctl("reload").returncode == 0
        assert status()["state"].startswith("ok"), status()
        assert "failing_since" not in status()
        # The event stream that had the error learns of the fix at the
        # new writer's first write.
        assert m.ctl("ban", "10.66.1.7", "1h").returncode == 0
        wait_for(lambda: "10.66.1.7" in net.nft_elems("good4"), 5.0,
                 "element in the new set")
        ok = wait_for(lambda: events(m, "firewall_recovered"), 5.0,
                      "firewall_recovered")
        assert len(ok) == 1 and ok[0]["reason"] == "wrong_set_type", ok
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_tail_shows_a_firewall_error_whole(tmp_path, pki, net, stack):
    """A set replaced by one of the wrong type while moat runs: the
    human tail line carries the error's whole detail, its fix at the end
    (it was cut at 255 bytes)."""
    net.reset_nft(load=False)        # moat makes the sets, no rule holds them
    m = start_moat(tmp_path, pki, net, stack, "nftables")
    tail = subprocess.Popen([str(moatrun.moatctl_binary()), "-s", str(m.control_socket),
                             "tail", "--event", "firewall_error"],
                            stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: json.loads(m.ctl("--json", "status").stdout)
                 ["events"]["tail_clients"] == 1, 5.0, "tail following")
        net.nft("delete", "set", "inet", "moat", "blocked4")
        net.nft("add", "set", "inet", "moat", "blocked4", "{ type inet_service; }")
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        err = wait_for(lambda: events(m, "firewall_error"), 5.0, "firewall_error")
        assert len(err[0]["detail"]) > 255, err
        line = tail.stdout.readline()
        assert line.endswith(' detail="%s"\n' % err[0]["detail"]), line
    finally:
        tail.kill()
        tail.wait()
        assert m.stop() == 0
        net.reset_nft()


def test_both_sets_broken_each_reported_once(tmp_path, pki, net, stack):
    """blocked4 of the wrong type and blocked6 missing (create = false):
    two problems to fix, each reported once, at start and not again at
    the writes of an IPv4 and an IPv6 ban (whichever is staged last)."""
    net.reset_nft(load=False)
    net.nft("add", "table", "inet", "moat")
    net.nft("add", "set", "inet", "moat", "blocked4",
            "{ type ipv6_addr; flags timeout; }")
    m = start_moat(tmp_path, pki, net, stack,
                   {"backend": "nftables", "create": False})
    try:
        reasons = lambda: sorted(e["reason"]
                                 for e in events(m, "firewall_error"))
        wait_for(lambda: len(reasons()) >= 2, 5.0, "two firewall_errors")
        assert m.ctl("ban", "10.66.1.9", "1h").returncode == 0
        assert m.ctl("ban", "2001:db8:66::9", "1h").returncode == 0
        # The first retry of both adds is due 2 s after they failed.
        time.sleep(4.0)
        err = events(m, "firewall_error")
        assert reasons() == ["missing_set", "wrong_set_type"], err
        by = {e["reason"]: e["detail"] for e in err}
        assert "blocked4" in by["wrong_set_type"], err
        assert "blocked6" in by["missing_set"], err
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_no_cap_net_admin_reported_still_serving(tmp_path, pki, net, stack):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not found (util-linux)")
    net.reset_nft()
    wrapper = tmp_path / "moat-nocap"
    wrapper.write_text("#!/bin/sh\nexec setpriv --inh-caps=-net_admin "
                       "--bounding-set=-net_admin -- "
                       f"{moatrun.moat_binary()} \"$@\"\n")
    wrapper.chmod(0o755)
    m = start_moat(tmp_path, pki, net, stack, "nftables", wrapper=wrapper)
    try:
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        err = wait_for(lambda: events(m, "firewall_error"), 5.0, "firewall_error")
        assert err[0]["reason"] == "permission"
        assert "CAP_NET_ADMIN" in err[0]["detail"]
        assert ATT4 not in net.nft_elems("blocked4")
        assert first_line(net.att, SRV4, m.pop3_port) == b""
        assert first_line(net.cli, SRV4_CLI, m.pop3_port).startswith(b"+OK")
        assert m.log().count("Operation not permitted") == 1
    finally:
        assert m.stop() == 0


BAN_1H = RATE.replace('duration = "3s"', 'duration = "1h"')


def _reload(m, net, needle="reload done"):
    n = m.log().count(needle)
    m.signal(signal.SIGHUP)
    wait_for(lambda: m.log().count(needle) > n, 15.0, "reload")


def test_allowlist_lifts_kernel_ban_on_reload_and_restart(tmp_path, pki, net, stack):
    """The allow list beats bans, the kernel's copy included: a reload that
    allow-lists a banned address takes it out of the set, and so does a
    restart whose state file still holds its ban."""
    net.reset_nft()
    m = start_moat(tmp_path, pki, net, stack, "nftables", extra=BAN_1H)
    plain = m.config_path.read_text()
    allowed = plain.replace("[policy.rate]", f'[policy]\nallow = ["{ATT4}"]\n\n'
                            "[policy.rate]", 1)
    try:
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        wait_for(lambda: ATT4 in net.nft_elems("blocked4"), 5.0, "element")
        m.config_path.write_text(allowed)
        _reload(m, net)
        wait_for(lambda: ATT4 not in net.nft_elems("blocked4"), 5.0,
                 "allow-listed element removed")
        assert first_line(net.att, SRV4, m.pop3_port).startswith(b"+OK")
        lift = [e for e in events(m, "unban") if e["ip"] == ATT4]
        assert lift and lift[0]["reason"] == "allowlist", events(m, "unban")
        assert "no active bans" in m.ctl("bans").stdout
        # A ban in the state file and the kernel, then a restart with the
        # address allow-listed.
        m.config_path.write_text(plain)
        _reload(m, net)
        assert m.ctl("ban", ATT4, "1h").returncode == 0
        wait_for(lambda: ATT4 in net.nft_elems("blocked4"), 5.0, "element")
        assert m.stop() == 0
        assert ATT4 in net.nft_elems("blocked4")
        m.config_path.write_text(allowed)
        with netns(net.srv):
            m.start()
        wait_for(lambda: ATT4 not in net.nft_elems("blocked4"), 5.0,
                 "allow-listed element removed at start")
        assert first_line(net.att, SRV4, m.pop3_port).startswith(b"+OK")
    finally:
        assert m.stop() == 0


def test_allowlist_lifts_kernel_elements_moat_forgot(tmp_path, pki, net, stack):
    """The kernel drops an address moat holds no ban for (its state file
    was lost or set aside): allow-listing it, at start or by a reload,
    takes it out of the set too, and the log says so."""
    net.reset_nft()
    net.nft("add", "element", "inet", "moat", "blocked4",
            f"{{ {ATT4} timeout 1h }}")
    net.nft("add", "element", "inet", "moat", "blocked4",
            "{ 10.66.9.9 timeout 1h }")
    assert ATT4 in net.nft_elems("blocked4"), net.nft_elems("blocked4")
    m = start_moat(tmp_path, pki, net, stack, "nftables",
                   extra=f'[policy]\nallow = ["{ATT4}"]\n' + BAN_1H)
    try:
        wait_for(lambda: ATT4 not in net.nft_elems("blocked4"), 5.0,
                 "allow-listed element removed at start")
        assert "10.66.9.9" in net.nft_elems("blocked4")
        m.wait_log("deleting 1 element the allow list covers")
        assert first_line(net.att, SRV4, m.pop3_port).startswith(b"+OK")
        m.config_path.write_text(m.config_path.read_text().replace(
            f'allow = ["{ATT4}"]', f'allow = ["{ATT4}", "10.66.9.0/24"]'))
        _reload(m, net)
        wait_for(lambda: "10.66.9.9" not in net.nft_elems("blocked4"), 5.0,
                 "allow-listed element removed by a reload")
        assert not events(m, "firewall_error")
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_operator_ban_shortens_kernel_timeout(tmp_path, pki, net, stack):
    """moatctl ban IP DURATION replaces the ban in force, a shorter one too;
    the kernel element gets the same timeout, so the address is let in
    again when moat says the ban is over."""
    net.reset_nft()
    m = start_moat(tmp_path, pki, net, stack, "nftables", extra=BAN_1H)
    try:
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        el = wait_for(lambda: net.nft_elems("blocked4").get(ATT4), 5.0, "element")
        assert el["timeout"] > 3000, el
        # Long enough that a busy machine still sees the element before
        # it expires; the kernel's timeout then says which ban it holds.
        p = m.ctl("ban", ATT4, "20s")
        assert p.returncode == 0, p.stdout + p.stderr
        el = wait_for(lambda: (lambda e: e if e and e["timeout"] <= 20 else None)(
            net.nft_elems("blocked4").get(ATT4)), 15.0, "timeout of 20 s")
        wait_for(lambda: ATT4 not in net.nft_elems("blocked4"), 60.0, "expiry")
        # moat's own ban ends with the kernel's: once moat says so too, the
        # address is served (no sleep that a busy machine could outlast).
        wait_for(lambda: "no active bans" in m.ctl("bans", ATT4).stdout, 30.0,
                 "moat's ban to end")
        assert first_line(net.att, SRV4, m.pop3_port).startswith(b"+OK")
    finally:
        assert m.stop() == 0


def test_loopback_ban_stays_out_of_the_kernel_sets(tmp_path, pki, net, stack):
    """A ban of 127.0.0.1 or ::1 (a local webmail over the rate limit, or
    a moatctl ban) in the kernel sets would drop the host's own loopback
    traffic, the replies of a backend on loopback to moat among it: moat
    keeps such a ban to itself, and says so once; its events name no
    firewall."""
    net.reset_nft()
    m = start_moat(tmp_path, pki, net, stack, "nftables", extra=BAN_1H)
    try:
        for a in ("127.0.0.1", "::1", "127.3.2.1", "10.66.1.9"):
            assert m.ctl("ban", a, "1h").returncode == 0, a
        wait_for(lambda: "10.66.1.9" in net.nft_elems("blocked4"), 5.0,
                 "the other ban's element")
        assert set(net.nft_elems("blocked4")) == {"10.66.1.9"}
        assert net.nft_elems("blocked6") == {}
        m.wait_log("127.0.0.1 is banned by moat alone", timeout=5)
        assert m.log().count("is banned by moat alone") == 1
        assert "127.0.0.1" in m.ctl("bans", "127.0.0.1").stdout
        for a in ("127.0.0.1", "10.66.1.9"):
            assert m.ctl("unban", a).returncode == 0, a
        fws = {(e["event"], e["ip"]): e.get("firewall")
               for e in events(m) if e["event"] in ("ban", "unban")}
        assert fws == {("ban", "127.0.0.1"): None, ("ban", "::1"): None,
                       ("ban", "127.3.2.1"): None,
                       ("ban", "10.66.1.9"): "nftables",
                       ("unban", "127.0.0.1"): None,
                       ("unban", "10.66.1.9"): "nftables"}, fws
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_bans_written_again_after_table_deleted_or_flushed(tmp_path, pki, net, stack):
    """An operator deletes the table (moat re-creates it at its next write)
    or reloads the ruleset, which empties the sets: the bans in force go
    back into them, at the next write or at the next reload."""
    net.reset_nft()
    m = start_moat(tmp_path, pki, net, stack, "nftables", extra=BAN_1H)
    try:
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        wait_for(lambda: ATT4 in net.nft_elems("blocked4"), 5.0, "element")
        net.reset_nft(load=False)
        assert m.ctl("ban", "10.66.1.9", "1h").returncode == 0
        elems = wait_for(lambda: (lambda e: e if "10.66.1.9" in e else None)(
            net.nft_elems("blocked4")), 5.0, "set re-created")
        wait_for(lambda: ATT4 in net.nft_elems("blocked4"), 5.0,
                 f"{ATT4} written again into the re-created set: {elems}")
        m.wait_log("writing the 2 bans in force again", timeout=5)
        # A warning (<4>): the kernel went without those bans meanwhile.
        assert re.search(r"^<4>moat: firewall: .*; writing the 2 bans in "
                         r"force again$", m.log(), re.M), m.log()[-2000:]
        # The ruleset is loaded again (nft -f): sets exist, but empty.
        net.reset_nft()
        assert net.nft_elems("blocked4") == {}
        _reload(m, net)
        el = wait_for(lambda: net.nft_elems("blocked4").get(ATT4), 5.0,
                      "element back after the reload")
        assert 3500 <= el["timeout"] <= 3600, el
        assert "10.66.1.9" in net.nft_elems("blocked4")
        assert syn_dropped(net.att, SRV4, m.pop3_port)
        assert not events(m, "firewall_error"), events(m, "firewall_error")
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_table_deleted_under_both_sets_names_each(tmp_path, pki, net, stack):
    """The operator deletes the table (create = false) and a reload writes
    the IPv4 and the IPv6 ban in force in one commit: both sets are
    missing, and each is named, once, at that commit (not one of them,
    nor one at a retry that hash order may never bring)."""
    net.reset_nft()
    m = start_moat(tmp_path, pki, net, stack,
                   {"backend": "nftables", "create": False}, extra=BAN_1H)
    try:
        assert m.ctl("ban", "10.66.1.9", "1h").returncode == 0
        assert m.ctl("ban", "2001:db8:66::9", "1h").returncode == 0
        wait_for(lambda: "10.66.1.9" in net.nft_elems("blocked4") and
                 "2001:db8:66::9" in net.nft_elems("blocked6"), 5.0,
                 "elements")
        net.reset_nft(load=False)
        _reload(m, net)
        # Failed adds are retried 2 s later: both must be said before.
        err = wait_for(lambda: (lambda e: e if len(e) >= 2 else None)(
            events(m, "firewall_error")), 1.5, "two firewall_errors")
        time.sleep(3.0)
        err = events(m, "firewall_error")
        assert sorted(e["reason"] for e in err) == ["missing_set"] * 2, err
        assert sorted("blocked4" in e["detail"] for e in err) == \
            [False, True], err
        assert sorted("blocked6" in e["detail"] for e in err) == \
            [False, True], err
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_reload_changing_firewall_takes_bans_out_of_the_old_sets(tmp_path, pki,
                                                                net, stack):
    """A reload that changes [firewall] (here to backend "none") takes the
    bans in force out of the old sets: the drop rule names them, so an
    address unbanned afterwards would stay dropped for its whole ban."""
    net.reset_nft()
    m = start_moat(tmp_path, pki, net, stack, "nftables", extra=BAN_1H)
    try:
        trigger_rate_ban(net.att, SRV4, m.pop3_port)
        assert m.ctl("ban", ATT6, "1h").returncode == 0
        wait_for(lambda: ATT4 in net.nft_elems("blocked4")
                 and ATT6 in net.nft_elems("blocked6"), 5.0, "elements")
        text = m.config_path.read_text()
        assert 'backend = "nftables"' in text, text
        m.config_path.write_text(text.replace('backend = "nftables"',
                                              'backend = "none"'))
        _reload(m, net)
        assert ATT4 not in net.nft_elems("blocked4"), net.nft_elems("blocked4")
        assert ATT6 not in net.nft_elems("blocked6"), net.nft_elems("blocked6")
        m.wait_log("removed 2 elements of the bans in force from the old "
                   "nftables sets", timeout=5)
        # The kernel lets it through; moat still turns it away itself
        # until the unban, and serves it after.
        assert not first_line(net.att, SRV4, m.pop3_port).startswith(b"+OK")
        p = m.ctl("unban", ATT4)
        assert p.returncode == 0 and "unbanned" in p.stdout, p.stdout + p.stderr
        time.sleep(2.5)		# past the rate window
        assert first_line(net.att, SRV4, m.pop3_port).startswith(b"+OK")
        assert not events(m, "firewall_error"), events(m, "firewall_error")
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_reload_keeps_elements_of_a_set_the_new_writer_shares(tmp_path, pki,
                                                              net, stack):
    """A reload that changes [firewall] but keeps a set (here: set6 renamed,
    set4 and the table kept) leaves that set's elements where they are and
    moves the others: nothing is deleted that the new writer would have
    to write again, and nothing stays behind in the set it no longer
    writes."""
    net.reset_nft()
    m = start_moat(tmp_path, pki, net, stack, "nftables", extra=BAN_1H)
    try:
        assert m.ctl("ban", ATT4, "1h").returncode == 0
        assert m.ctl("ban", ATT6, "1h").returncode == 0
        wait_for(lambda: ATT4 in net.nft_elems("blocked4")
                 and ATT6 in net.nft_elems("blocked6"), 5.0, "elements")
        text = m.config_path.read_text()
        m.config_path.write_text(text.replace(
            'backend = "nftables"',
            'backend = "nftables"\nset6 = "moved6"\ncreate = true'))
        _reload(m, net)
        wait_for(lambda: ATT6 in net.nft_elems("moved6"), 5.0,
                 "element in the new set6")
        assert ATT6 not in net.nft_elems("blocked6"), net.nft_elems("blocked6")
        m.wait_log("removed 1 element of the bans in force from the old "
                   "nftables sets", timeout=5)
        el = net.nft_elems("blocked4").get(ATT4)
        assert el is not None and el["timeout"] > 3000, net.nft_elems("blocked4")
        assert syn_dropped(net.att, SRV4, m.pop3_port)
        assert not events(m, "firewall_error"), events(m, "firewall_error")
    finally:
        assert m.stop() == 0
        net.reset_nft()


def test_reload_from_ipset_to_nftables_moves_the_bans(tmp_path, pki, net, stack):
    """ipset and nftables sets of the same names are different sets: a
    reload from one backend to the other moves the bans in force."""
    net.reset_nft()
    for s in ("blocked4", "blocked6"):
        _sh("ipset", "destroy", s, ns=net.srv, check=False)
    m = start_moat(tmp_path, pki, net, stack, "ipset", extra=BAN_1H)
    try:
        assert m.ctl("ban", ATT4, "1h").returncode == 0
        wait_for(lambda: ATT4 + " timeout" in net.ipset_list("blocked4"), 5.0,
                 "ipset element")
        text = m.config_path.read_text()
        m.config_path.write_text(text.replace('backend = "ipset"',
                                              'backend = "nftables"'))
        _reload(m, net)
        assert ATT4 not in net.ipset_list("blocked4"), net.ipset_list("blocked4")
        wait_for(lambda: ATT4 in net.nft_elems("blocked4"), 5.0, "nft element")
        m.wait_log("removed 1 element of the bans in force from the old "
                   "ipset sets", timeout=5)
        assert not events(m, "firewall_error"), events(m, "firewall_error")
    finally:
        assert m.stop() == 0
        net.reset_nft()
        for s in ("blocked4", "blocked6"):
            _sh("ipset", "destroy", s, ns=net.srv, check=False)


def test_aggregated_ipv6_failures_ban_each_address_of_the_prefix(tmp_path, pki,
                                                                 net, stack):
    """aggregate_ipv6 = 64: the failures of fd00:66:1::2 count for its /64,
    so fd00:66:1::3 gets no guess of its own; it is refused and banned at
    its first connection. Bans and kernel elements name single addresses
    (the sets hold addresses, not prefixes)."""
    att6b = "fd00:66:1::3"
    net.reset_nft()
    _sh("ip", "-n", net.att, "addr", "add", f"{att6b}/64", "dev", "v1p", "nodad")
    extra = ('[policy.rate]\nconnections = { limit = 0, window = "1m" }\n'
             'concurrent_per_ip = 0\nauth_failures = { limit = 2, window = "1m" }\n'
             'aggregate_ipv6 = 64\n[ban]\nduration = "1h"\n')
    m = start_moat(tmp_path, pki, net, stack, "nftables", extra=extra)

    def login(src, dst=SRV6, password=b"wrong"):
        """Greeting, USER, PASS from src; returns the last line read."""
        with netns(net.att):
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        with s:
            s.settimeout(5)
            s.bind((src, 0))
            s.connect((dst, m.pop3_port))
            f = s.makefile("rwb")
            line = f.readline()
            if not line.startswith(b"+OK"):
                return line
            for cmd in (b"USER alice\r\n", b"PASS " + password + b"\r\n"):
                f.write(cmd)
                f.flush()
                line = f.readline()
            return line
    try:
        for _ in range(2):
            assert login(ATT6).startswith(b"-ERR [AUTH]")
        wait_for(lambda: ATT6 in net.nft_elems("blocked6"), 5.0, "element")
        assert login(att6b) == b"-ERR Access denied: too many failures\r\n"
        wait_for(lambda: att6b in net.nft_elems("blocked6"), 5.0,
                 f"{att6b} in blocked6")
        assert syn_dropped(net.att, SRV6, m.pop3_port)
        assert sorted(net.nft_elems("blocked6")) == [ATT6, att6b]
        ban = [e for e in events(m, "ban") if e["ip"] == att6b]
        assert ban and ban[0]["reason"] == "auth", events(m)
        # Another /64 is another client.
        assert first_line(net.cli, SRV6_CLI, m.pop3_port).startswith(b"+OK")
    finally:
        assert m.stop() == 0
        _sh("ip", "-n", net.att, "addr", "del", f"{att6b}/64", "dev", "v1p",
            check=False)
        net.reset_nft()


def _ban_many(m, addrs, duration="1h"):
    """moatctl ban for each address, pipelined on one control connection."""
    req = b"".join(b"ban %s %s\n" % (a.encode(), duration.encode())
                   for a in addrs)
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(m.control_socket))
    with s:
        # moat reads a request once the last reply has been read: send
        # from another thread while this one reads.
        sender = threading.Thread(target=s.sendall, args=(req,))
        sender.start()
        s.settimeout(60)
        data, seen = b"", 0
        while seen < len(addrs):
            chunk = s.recv(1 << 20)
            assert chunk, (seen, data[-200:])
            start = max(len(data) - 2, 0)
            data += chunk
            seen += data.count(b"\n.\n", start)
        sender.join()
    assert data.count(b"ok\nbanned ") == len(addrs), data[-300:]


def test_bans_dropped_for_room_leave_the_kernel_set(tmp_path, pki, net, stack):
    """A full ban table (ban.max_entries) drops bans in force to make room
    for new ones; their kernel elements go with them, so that a flood from
    many addresses (IPv6 /128s) holds no more bans in the kernel, nor in
    the writer's tables, than moat does."""
    net.reset_nft()
    m = start_moat(tmp_path, pki, net, stack, "nftables",
                   extra=BAN_1H.replace("[ban]\n", "[ban]\nmax_entries = 1000\n"))
    addrs = [str(ipaddress.IPv6Address("2001:db8:77::") + i)
             for i in range(1, 3001)]
    try:
        _ban_many(m, addrs)
        held = {b["ip"] for b in json.loads(m.ctl("--json", "bans").stdout)["bans"]}
        assert len(held) == 1000, len(held)
        # The last ban made is in force; the first ones were dropped.
        assert addrs[-1] in held and addrs[0] not in held
        want = {str(ipaddress.ip_address(a)) for a in held}
        try:
            wait_for(lambda: set(net.nft_elems("blocked6")) == want, 15.0,
                     "blocked6 to hold the bans moat holds")
        except AssertionError:
            elems = set(net.nft_elems("blocked6"))
            raise AssertionError(f"blocked6 holds {len(elems)} elements, "
                                 f"{len(elems - want)} of them no ban in moat")
        assert not events(m, "firewall_error")
    finally:
        assert m.stop() == 0
        net.reset_nft()
