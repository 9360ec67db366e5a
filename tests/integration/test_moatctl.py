"""moatctl against a running moat: every command, human and --json output,
usage errors, refusals and failures (one JSON object each with --json),
and `tail` following bans as they happen.

Clients present their addresses with a PROXY v1 header (accept_proxy from
loopback), so one test host can be many clients.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import make_test_mmdb, require_mailstack
from mailstack import MailStack
from moatrun import (Moat, free_port, listener, moatctl_binary,
                     proxied_hello as hello)

RATE = '[policy.rate]\nconnections = { limit = 2, window = "1m" }\n'


@pytest.fixture(scope="module")
def stack():
    require_mailstack()
    s = MailStack(postfix_proxy="haproxy").start()
    yield s
    s.stop()


def lb(name, backend, **kw):
    return listener(name, backend, backend_proxy="v1", accept_proxy=True,
                    accept_proxy_from=["127.0.0.0/8"], **kw)


@pytest.fixture
def moat(tmp_path, pki, stack):
    m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none"),
                             listener("smtps", stack.smtp_addr, tls="implicit")],
             extra=RATE).start()
    yield m
    assert m.stop() == 0
    assert "runtime error" not in m.log() and "AddressSanitizer" not in m.log()


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout


def js(r: subprocess.CompletedProcess):
    out = ok(r)
    assert out.count("\n") == 1, out          # one object per reply
    return json.loads(out)


class Tail:
    """`moatctl tail` in the background, read line by line."""

    def __init__(self, m: Moat, *args: str):
        self.p = subprocess.Popen([str(moatctl_binary()), "-s", str(m.control_socket),
                                   *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.m = m
        self.buf = b""

    def wait_following(self, n: int = 1, timeout: float = 10.0) -> None:
        """Waits until moat counts n tail clients, so no event is missed."""
        deadline = time.monotonic() + timeout
        while True:
            st = js(self.m.ctl("--json", "status"))
            if st["events"]["tail_clients"] >= n:
                return
            assert self.p.poll() is None, self.p.stderr.read()
            assert time.monotonic() < deadline, "tail never registered"
            time.sleep(0.05)

    def line(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            r, _, _ = select.select([self.p.stdout], [], [], max(left, 0))
            assert r, "no tail line in time"
            chunk = os.read(self.p.stdout.fileno(), 65536)
            assert chunk, f"tail ended: {self.p.stderr.read()}"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode() + "\n"

    def close(self) -> None:
        self.p.kill()
        self.p.wait()


def test_tail_human_lines_keep_free_text_quoted_and_detail(moat):
    """The human tail is key=value: free text (an OpenSSL reason) is
    quoted, and detail (why a protocol event) is shown too."""
    t = Tail(moat, "tail")
    try:
        t.wait_following()
        with socket.create_connection(moat.addr("smtp"), timeout=10) as c:
            c.sendall(b"PROXY TCP4 198.51.100.77 127.0.0.1 40000 25\r\n"
                      b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            c.recv(4096)
        line = t.line()
        assert " protocol 198.51.100.77 " in line and " reason=http " in line, line
        assert line.rstrip("\n").endswith(' detail="foreign protocol"'), line
        with socket.create_connection(moat.addr("smtps"), timeout=10) as c:
            c.sendall(b"EHLO plaintext.example\r\n" * 4)
            c.recv(4096)
        line = t.line()
        assert " tls_fail 127.0.0.1 " in line, line
        assert ' reason="wrong version number" ' in line, line
    finally:
        t.close()


def test_status_human_and_json(moat, stack):
    out = ok(moat.ctl("status"))
    assert out.startswith("moat ")
    host, port = moat.addr("smtp")
    assert f"{host}:{port}" in out and "smtps" in out
    assert "certificates" in out and "default" in out and "expires" in out
    st = js(moat.ctl("--json", "status"))
    assert st["ok"] is True and st["pid"] == moat.proc.pid
    names = {l["name"]: l["address"] for l in st["listeners"]}
    assert names["smtp"] == f"{host}:{port}"
    assert names["smtps"] == "%s:%d" % moat.addr("smtps")
    assert st["sessions"] == 0 and st["bans_active"] == 0
    assert st["firewall"]["backend"] == "none"
    assert st["certificates"][0]["name"] == "default"
    assert st["certificates"][0]["expires_in_s"] > 86400
    assert st["uptime_s"] >= 0
    assert "\ngeo          none\n" in out and st["geo"] is None
    assert "\npolicy       allow 0 ranges, deny 0 ranges\n" in out
    assert st["policy"] == {"allow_ranges": 0, "deny_ranges": 0}
    # syslog is off: nothing said about it, and nothing counted.
    assert re.search(r"\nevents +\d+ written, \d+ dropped; 0 following "
                     r"\(tail\)\n", out), out
    assert st["events"]["syslog_dropped"] == 0
    # Totals move with what clients do.
    assert hello(moat.port("smtp"), "192.0.2.30").startswith(b"220 ")
    st2 = js(moat.ctl("status", "--json"))   # --json after the command too
    assert st2["totals"]["connections"] == st["totals"]["connections"] + 1
    assert st2["totals"]["accepted"] == st["totals"]["accepted"] + 1


def test_status_names_the_geo_database_and_its_age(tmp_path, pki, stack,
                                                   monkeypatch):
    """Which country database is in force and how old it is (a stale one
    places reassigned ranges in their old countries): said at the start,
    in each reload's output and by status; the lists' sizes by status."""
    built = int(time.time()) - 40 * 86400 - 3600
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(built))
    db = make_test_mmdb(tmp_path / "country.mmdb")
    db4 = make_test_mmdb(tmp_path / "country4.mmdb", "--ip-version", "4")
    date = time.strftime("%Y-%m-%d", time.gmtime(built))
    say = f": Moat-Test-Country, built {date} (40 days ago), "
    mport = free_port()
    m = Moat(tmp_path / "moat", pki, [lb("smtp", stack.smtp_addr, tls="none")],
             extra='[policy]\ndeny = ["198.51.100.0/24", "2001:db8:dead::/48"]\n'
                   f'[policy.geo]\ndatabase = "{db}"\n'
                   'deny_countries = ["RU"]\n',
             metrics=f"127.0.0.1:{mport}").start()
    try:
        m.wait_log(f"geo: {db}{say}IPv4 and IPv6")
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics",
                                    timeout=10) as resp:
            text = resp.read().decode()
        assert f"\nmoat_geo_database_build_timestamp_seconds {built}\n" in text
        out = ok(m.ctl("status"))
        assert f"\ngeo          {db}{say}IPv4 and IPv6\n" in out, out
        assert "\npolicy       allow 0 ranges, deny 2 ranges\n" in out, out
        st = js(m.ctl("--json", "status"))
        assert st["geo"] == {"path": str(db), "type": "Moat-Test-Country",
                             "build_epoch": built, "ip_version": 6,
                             "lookup_errors": 0}
        assert st["policy"] == {"allow_ranges": 0, "deny_ranges": 2}
        # A reload onto another database: its output and status say so.
        text = m.config_path.read_text()
        m.config_path.write_text(text.replace(str(db), str(db4)))
        r = m.ctl("reload")
        assert r.returncode == 0, r
        assert f"geo: {db4}{say}IPv4 only" in r.stdout, r.stdout
        assert f"\ngeo          {db4}{say}IPv4 only\n" in ok(m.ctl("status"))
        assert js(m.ctl("--json", "status"))["geo"]["ip_version"] == 4
    finally:
        assert m.stop() == 0


def test_ban_bans_unban(moat):
    port = moat.port("smtp")
    ip = "192.0.2.77"
    assert hello(port, ip).startswith(b"220 ")
    assert "banned 192.0.2.77 for 10m" in ok(moat.ctl("ban", ip, "10m"))
    assert hello(port, ip) == b""                  # banned: not a word
    out = ok(moat.ctl("bans"))
    assert "ADDRESS" in out and ip in out and "manual" in out
    bans = js(moat.ctl("--json", "bans"))
    assert bans["count"] == 1
    (b,) = bans["bans"]
    assert b["ip"] == ip and b["reason"] == "manual" and b["count"] == 1
    assert 590 <= b["remaining_s"] <= 600
    st = js(moat.ctl("--json", "status"))
    assert st["bans_active"] == 1 and st["totals"]["bans"] >= 1
    # The default duration is [ban] duration (1h).
    r = js(moat.ctl("--json", "ban", "2001:db8::5"))
    assert r["ip"] == "2001:db8::5" and 3590 <= r["duration_s"] <= 3600
    assert "unbanned 192.0.2.77" in ok(moat.ctl("unban", ip))
    assert hello(port, ip).startswith(b"220 ")     # unban takes effect
    # Unbanning again is refused: exit 1, the reason on stderr.
    r = moat.ctl("unban", ip)
    assert r.returncode == 1 and "not banned" in r.stderr
    r = moat.ctl("--json", "unban", ip)
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"ok": False, "error": "192.0.2.77 is not banned"}
    assert js(moat.ctl("--json", "unban", "2001:db8::5"))["ok"] is True
    assert "no active bans" in ok(moat.ctl("bans"))


def flood_state(path, n: int) -> None:
    """A state file of n rate bans of 10.0.0.0 on, an hour left each."""
    expiry = int(time.time() * 1000) + 3_600_000
    lines = ["moat-state 1"]
    lines += [f"ban 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} {expiry} 1 rate"
              for i in range(n)]
    lines += [f"end {n}", ""]
    path.write_text("\n".join(lines))


def test_restored_bans_counted_apart_from_ended_ones(tmp_path, pki, stack):
    """A state file keeps ended bans too, so that a repeat offence
    escalates: the start's log line counted them as bans restored (3,
    while status said 2 in force)."""
    now = int(time.time() * 1000)
    (tmp_path / "moat.state").write_text("\n".join([
        "moat-state 1",
        f"ban 192.0.2.1 {now + 3_600_000} 1 manual",
        f"ban 192.0.2.2 {now + 3_600_000} 2 rate",
        f"ban 192.0.2.3 {now - 1_000} 1 rate",
        "end 3", ""]))
    m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none")]).start()
    try:
        m.wait_log(f"state: 2 bans restored from {tmp_path / 'moat.state'} "
                   "(1 ended, kept for escalation)")
        assert js(m.ctl("--json", "status"))["bans_active"] == 2
    finally:
        assert m.stop() == 0


def test_bans_of_a_prefix_when_the_table_is_too_large(tmp_path, pki, stack):
    """A flood leaves more bans than one reply holds (8 MiB): the full
    list is refused with the count and the way out, and a prefix or one
    address still lists."""
    n = 150_000
    flood_state(tmp_path / "moat.state", n)
    m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none")]).start()
    try:
        m.wait_log(f"{n} bans restored")
        r = m.ctl("bans")
        assert r.returncode == 1
        assert f"{n} bans do not fit one reply" in r.stderr, r.stderr
        assert "bans CIDR" in r.stderr
        out = ok(m.ctl("bans", "10.0.1.0/24"))
        assert len(out.splitlines()) == 1 + 256 and "10.0.1.255 " in out
        assert js(m.ctl("--json", "bans", "10.1.0.0/16"))["count"] == 65536
        (b,) = js(m.ctl("--json", "bans", "10.0.7.9"))["bans"]
        assert b["ip"] == "10.0.7.9" and b["reason"] == "rate"
        assert "no active bans in that prefix" in ok(m.ctl("bans", "192.0.2.0/24"))
        r = m.ctl("bans", "10.0.0.0/33")
        assert r.returncode == 2 and "invalid address or prefix" in r.stderr
    finally:
        assert m.stop() == 0


def test_signals_during_the_final_save_are_ignored(tmp_path, pki, stack):
    """SIGTERM again and again while moat drains and then saves a large
    table at exit: once the loop has ended the signals are ignored (they
    used to find their default action and end moat mid-save), so the ban
    made just before is saved and moat exits 0."""
    n = 300_000
    flood_state(tmp_path / "moat.state", n)
    m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none")]).start()
    try:
        m.wait_log(f"{n} bans restored")
        ok(m.ctl("ban", "192.0.2.99", "1h"))
        m.signal(signal.SIGTERM)
        m.wait_log("shutting down")
        deadline = time.monotonic() + 30
        while m.proc.poll() is None and time.monotonic() < deadline:
            m.signal(signal.SIGTERM)
            time.sleep(0.005)
    finally:
        rc = m.stop()
    assert rc == 0, m.log()[-2000:]
    assert "stopped" in m.log()
    assert "\nban 192.0.2.99 " in (tmp_path / "moat.state").read_text()


def test_unread_replies_are_bounded_together(tmp_path, pki, stack):
    """Clients that ask for big ban lists and never read them: together
    they may hold 32 MiB (control.c, CTL_QUEUED_MAX); past that a request
    for more is refused with the reason, and moat still answers."""
    n = 150_000
    flood_state(tmp_path / "moat.state", n)
    m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none")]).start()
    held = []
    try:
        m.wait_log(f"{n} bans restored")
        req = b"bans 10.0.0.0/16\n"
        size = len(ok(m.ctl("bans", "10.0.0.0/16")))
        assert 2 << 20 < size < 8 << 20, size
        fit = (32 << 20) // size
        answers = []
        for _ in range(fit + 3):
            s = socket.socket(socket.AF_UNIX)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(str(m.control_socket))
            s.sendall(req)
            s.settimeout(10)
            answers.append(s.recv(256))
            held.append(s)
        assert all(a.startswith(b"ok\n") for a in answers[:fit - 1]), answers
        refused = [a for a in answers if a.startswith(b"error other clients "
                                                       b"have ")]
        assert refused and b"MiB of replies unread" in refused[0], answers
        r = m.ctl("--json", "status")
        assert r.returncode == 0, r.stderr
    finally:
        for s in held:
            s.close()
        assert m.stop() == 0


def test_tail_sees_rate_ban_as_it_happens(moat):
    port = moat.port("smtp")
    ip = "203.0.113.9"
    t = Tail(moat, "--json", "tail", "--ip", ip)
    t2 = Tail(moat, "tail", "--event", "ban")
    try:
        t.wait_following(2)
        # Another address's events are not shown to --ip.
        assert "banned 198.51.100.1" in ok(moat.ctl("ban", "198.51.100.1", "1m"))
        for _ in range(2):
            assert hello(port, ip).startswith(b"220 ")
        assert hello(port, ip) == b"554 5.7.1 Access denied: rate limit\r\n"
        e = json.loads(t.line())
        assert e["event"] == "reject" and e["ip"] == ip and e["reason"] == "rate"
        e = json.loads(t.line())
        assert e["event"] == "ban" and e["ip"] == ip and e["reason"] == "rate"
        assert e["ban_s"] == 3600 and e["listener"] == "smtp"
        # Human tail, --event ban: both bans, in order, one line each.
        l1, l2 = t2.line(), t2.line()
        assert " ban 198.51.100.1 " in l1 and "reason=manual" in l1
        assert " ban 203.0.113.9 " in l2 and "reason=rate" in l2
        assert l2[:4].isdigit() and "Z ban " in l2
        ok(moat.ctl("unban", ip))
        e = json.loads(t.line())
        assert e["event"] == "unban" and e["ip"] == ip
    finally:
        t.close()
        t2.close()


def test_tail_unban_lets_the_address_in_again(moat):
    port = moat.port("smtp")
    ip = "203.0.113.44"
    # The followers of the test above are gone, so moat stopped following
    # events (it formats none for nobody); this tail starts it again.
    t = Tail(moat, "--json", "tail", "--ip", ip)
    try:
        t.wait_following()
        ok(moat.ctl("ban", ip, "5m"))
        e = json.loads(t.line())
        assert e["event"] == "ban" and e["reason"] == "manual" and e["ban_s"] == 300
        assert hello(port, ip) == b""
        e = json.loads(t.line())
        assert e["event"] == "reject" and e["reason"] == "banned"
        ok(moat.ctl("unban", ip))
        assert json.loads(t.line())["event"] == "unban"
        assert hello(port, ip).startswith(b"220 ")
    finally:
        t.close()


def unit_reload_command(m: Moat) -> list:
    """contrib/systemd/moat.service's ExecReload=, run from this build and
    pointed at this moat's socket."""
    root = Path(os.environ.get("MOAT_SOURCE_ROOT") or
                Path(__file__).resolve().parents[2])
    unit = (root / "contrib" / "systemd" / "moat.service").read_text()
    lines = [l for l in unit.splitlines() if l.startswith("ExecReload=")]
    assert len(lines) == 1, lines
    argv = lines[0].split("=", 1)[1].split()
    assert argv[0] == "/usr/bin/moatctl", argv
    return [str(moatctl_binary()), "-s", str(m.control_socket), *argv[1:]]


def test_reload_ok_and_broken(moat):
    port = moat.port("smtp")
    good = moat.config_path.read_text()
    moat.config_path.write_text(good.replace(
        "[policy.rate]", '[policy]\ndeny = ["192.0.2.0/24"]\n[policy.rate]'))
    out = ok(moat.ctl("reload"))
    assert "reload done" in out
    assert hello(port, "192.0.2.99") == b"554 5.7.1 Access denied: policy\r\n"
    # A broken file: the errors with their positions, exit 1, old config stays.
    moat.config_path.write_text(moat.config_path.read_text().replace(
        "[daemon]\n", "[daemon]\nworkerz = 3\n"))
    r = moat.ctl("reload")
    assert r.returncode == 1
    assert "reload failed" in r.stderr
    assert "unknown key 'workerz'" in r.stderr and "moat.toml:" in r.stderr
    # The systemd unit's ExecReload= is this command, so `systemctl reload`
    # fails too (a bare SIGHUP would have reported success).
    r = subprocess.run(unit_reload_command(moat), capture_output=True,
                       text=True, timeout=150)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "workerz" in r.stderr
    r = moat.ctl("--json", "reload")
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["ok"] is False
    assert any(m["error"] and "workerz" in m["message"] for m in rep["messages"])
    assert hello(port, "192.0.2.99").startswith(b"554 ")       # still denied
    assert hello(port, "198.51.100.20").startswith(b"220 ")   # still serving
    moat.config_path.write_text(good)
    assert js(moat.ctl("--json", "reload"))["ok"] is True
    assert hello(port, "192.0.2.99").startswith(b"220 ")


def test_reopen(moat):
    ev = moat.workdir / "events.jsonl"
    ok(moat.ctl("ban", "192.0.2.200", "1m"))
    os.rename(ev, moat.workdir / "events.jsonl.1")
    assert "reopened" in ok(moat.ctl("reopen"))
    ok(moat.ctl("unban", "192.0.2.200"))
    deadline = time.monotonic() + 5
    while not (ev.exists() and "unban" in ev.read_text()):
        assert time.monotonic() < deadline, "no event in the new file"
        time.sleep(0.05)
    assert js(moat.ctl("--json", "reopen")) == {"ok": True}


def test_reopen_failure_is_an_error(tmp_path, pki, stack):
    """The events directory moved away (logrotate gone wrong): moat goes on
    writing to the old file, and moatctl says so and exits 1 rather than
    reporting a reopen that did not happen."""
    evdir = tmp_path / "events"
    evdir.mkdir()
    m = Moat(tmp_path / "m", pki, [lb("smtp", stack.smtp_addr, tls="none")])
    m.config_path.write_text(m.config_path.read_text().replace(
        str(m.workdir / "events.jsonl"), str(evdir / "events.jsonl")))
    m.start()
    try:
        ok(m.ctl("ban", "192.0.2.201", "1m"))
        moved = tmp_path / "events.old"
        os.rename(evdir, moved)
        r = m.ctl("reopen")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert r.stdout == ""
        assert "still writes to the old file" in r.stderr
        assert str(evdir / "events.jsonl") in r.stderr
        r = m.ctl("--json", "reopen")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert r.stdout.count("\n") == 1
        rep = json.loads(r.stdout)
        assert rep["ok"] is False and "still writes to the old file" in rep["error"]
        m.wait_log("cannot reopen")
        # No event is lost: they go on into the old file.
        ok(m.ctl("unban", "192.0.2.201"))
        deadline = time.monotonic() + 5
        while "unban" not in (moved / "events.jsonl").read_text():
            assert time.monotonic() < deadline, "no event in the old file"
            time.sleep(0.05)
        # With a directory there again, reopen works and says so.
        evdir.mkdir()
        assert js(m.ctl("--json", "reopen")) == {"ok": True}
        ok(m.ctl("ban", "192.0.2.202", "1m"))
        deadline = time.monotonic() + 5
        while not ((evdir / "events.jsonl").exists() and
                   "192.0.2.202" in (evdir / "events.jsonl").read_text()):
            assert time.monotonic() < deadline, "no event in the new file"
            time.sleep(0.05)
    finally:
        assert m.stop() == 0
    assert "runtime error" not in m.log() and "AddressSanitizer" not in m.log()


@pytest.mark.parametrize("args", [
    [], ["frobnicate"], ["status", "extra"], ["ban"], ["ban", "not-an-ip"],
    ["ban", "192.0.2.1", "ten minutes"], ["ban", "192.0.2.1", "10m", "x"],
    ["ban", "192.0.2.0/24"], ["unban"], ["tail", "--bogus"],
    ["tail", "--ip", "nope"], ["tail", "--event"], ["--wat", "status"],
    ["-s"], ["bans", "notanip"], ["bans", "192.0.2.0/33"], ["bans", "fe80::1%lo"],
])
def test_usage_errors_exit_2(moat, args):
    r = subprocess.run([str(moatctl_binary()), "-s", str(moat.control_socket), *args],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "usage: moatctl" in r.stderr


def test_ban_longer_than_ten_years_is_refused(moat):
    """A "permanent" ban such as 99999w passed, and nftables refused its
    timeout, so the kernel never dropped the address; ten years is the
    limit, in moatctl and in moat itself (another client may not check)."""
    r = moat.ctl("ban", "192.0.2.57", "99999w")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "a ban lasts at most 3650d (ten years); for good, list it in " \
        "policy.deny" in r.stderr
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(moat.control_socket))
        s.sendall(b"ban 192.0.2.57 3651d\n")
        assert s.recv(4096).startswith(b"error invalid duration '3651d': a "
                                       b"ban lasts at most 3650d")
    assert "192.0.2.57" not in moat.ctl("bans").stdout
    assert "banned 192.0.2.57 for 3650d" in ok(moat.ctl("ban", "192.0.2.57",
                                                        "3650d"))
    ok(moat.ctl("unban", "192.0.2.57"))


def test_bans_argument_cannot_smuggle_a_command(moat):
    """Regression: the bans argument went into the request line as it was,
    so "bans '192.0.2.0/24<LF>unban IP'" (an address taken from a log line,
    say) also ran the unban, and moatctl exited 0. An argument that is not
    one word is a usage error now, and nothing reaches moat."""
    ok(moat.ctl("ban", "192.0.2.55", "1h"))
    for arg in ("192.0.2.0/24\nunban 192.0.2.55", "192.0.2.0/24 x",
                "192.0.2.0/24\r"):
        r = moat.ctl("bans", arg)
        assert r.returncode == 2, (arg, r.stdout, r.stderr)
        assert "holds a space or a control character" in r.stderr
    assert "192.0.2.55" in ok(moat.ctl("bans", "192.0.2.55"))
    assert "unban ip=192.0.2.55" not in moat.log()


def test_bans_of_an_ipv6_prefix_list_no_ipv4(moat):
    """IPv4 addresses live under ::ffff:0:0/96 inside moat, which ::/0
    covers too; "bans ::/0" lists the IPv6 bans only, and IPv4 ones are
    found as IPv4 or under ::ffff:0:0/96."""
    ok(moat.ctl("ban", "192.0.2.56", "1h"))
    ok(moat.ctl("ban", "2001:db8:5::1", "1h"))
    try:
        for prefix in ("::/0", "::/1", "2001:db8::/32"):
            out = ok(moat.ctl("bans", prefix))
            assert "2001:db8:5::1" in out and "192.0.2.56" not in out, (prefix, out)
        for prefix in ("0.0.0.0/0", "192.0.2.0/24", "::ffff:0:0/96"):
            out = ok(moat.ctl("bans", prefix))
            assert "192.0.2.56" in out and "2001:db8:5::1" not in out, (prefix, out)
    finally:
        ok(moat.ctl("unban", "192.0.2.56"))
        ok(moat.ctl("unban", "2001:db8:5::1"))


EVENTS = ["reject", "ban", "unban", "auth_fail", "tls_fail", "smuggling",
          "protocol", "firewall_error", "firewall_recovered"]


def test_tail_unknown_event_is_refused(moat):
    """A mistyped event name (`bans`, `auth`) would follow nothing, silently,
    for as long as the operator waits: moatctl names the events instead,
    and moat refuses the name too. Every event moat writes is accepted."""
    r = subprocess.run([str(moatctl_binary()), "-s", str(moat.control_socket),
                        "tail", "--event", "bans"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"unknown event 'bans' (events: {', '.join(EVENTS)})" in r.stderr
    for name, reply in [("bans", b"error unknown event 'bans'\n"),
                        *((n, b"ok\n") for n in EVENTS)]:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(moat.control_socket))
            s.sendall(b"tail --event %s\n" % name.encode())
            assert s.recv(4096).startswith(reply), name


def test_help_and_connection_failure(tmp_path):
    r = subprocess.run([str(moatctl_binary()), "--help"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0 and "usage: moatctl" in r.stdout
    # moat's own "unknown command ...; try help" leads here too.
    r = subprocess.run([str(moatctl_binary()), "help"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0 and "usage: moatctl" in r.stdout, r.stderr
    missing = tmp_path / "nope.sock"
    r = subprocess.run([str(moatctl_binary()), "-s", str(missing), "status"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert str(missing) in r.stderr and "No such file" in r.stderr
    # With --json the same message comes as moat's refusals do.
    r = subprocess.run([str(moatctl_binary()), "-s", str(missing), "--json",
                        "status"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1, (r.stdout, r.stderr)
    rep = json.loads(r.stdout)
    assert rep["ok"] is False and list(rep) == ["ok", "error"]
    assert str(missing) in rep["error"] and "No such file" in rep["error"]
    # A -s that names a file or a directory: not "is moat running?".
    plain = tmp_path / "moat.toml"
    plain.write_text("")
    for path, kind in ((plain, "file"), (tmp_path, "directory")):
        r = subprocess.run([str(moatctl_binary()), "-s", str(path), "status"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 1
        assert f"{path}: it is a {kind}, not a socket" in r.stderr, r.stderr
        assert "running" not in r.stderr


def as_nobody() -> list:
    """The command prefix that runs a program as nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run moatctl as another user")
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv not found (util-linux)")
    return [setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
            "--clear-groups"]


def test_refusal_permission_denied_json(pki, stack):
    """Another user reaches the socket (its mode loosened by hand): moat
    refuses before reading a word, and moatctl shows why in both forms."""
    nobody = as_nobody()
    # A directory and a moatctl that nobody can reach, unlike tmp_path.
    pub = Path(tempfile.mkdtemp(prefix="moatctl-"))
    try:
        pub.chmod(0o755)
        ctl = pub / "moatctl"
        shutil.copy(moatctl_binary(), ctl)
        ctl.chmod(0o755)
        sock = pub / "c.sock"
        m = Moat(pub / "m", pki, [lb("smtp", stack.smtp_addr, tls="none")])
        m.config_path.write_text(m.config_path.read_text().replace(
            str(m.workdir / "moat.sock"), str(sock)))
        m.start()
        try:
            sock.chmod(0o666)
            r = subprocess.run([*nobody, str(ctl), "-s", str(sock), "status"],
                               capture_output=True, text=True, timeout=10)
            assert r.returncode == 1, (r.stdout, r.stderr)
            assert r.stdout == "" and "moatctl: permission denied" in r.stderr
            r = subprocess.run([*nobody, str(ctl), "-s", str(sock), "--json",
                                "status"], capture_output=True, text=True,
                               timeout=10)
            assert r.returncode == 1, (r.stdout, r.stderr)
            assert json.loads(r.stdout) == {"ok": False, "error": "permission denied"}
            assert r.stdout.count("\n") == 1
            # Root still gets in.
            r = subprocess.run([str(ctl), "-s", str(sock), "--json", "status"],
                               capture_output=True, text=True, timeout=10)
            assert json.loads(r.stdout)["ok"] is True
        finally:
            assert m.stop() == 0
    finally:
        shutil.rmtree(pub, ignore_errors=True)


def test_refusal_too_many_clients_json(moat):
    """Every client slot taken: moat says so before reading the request,
    and moatctl passes it on, as JSON with --json."""
    path = str(moat.control_socket)
    held = []
    try:
        # One by one, each answered before the next: the listen backlog
        # is shorter than CTL_CLIENTS_MAX (64, control.c).
        for _ in range(64):
            s = socket.socket(socket.AF_UNIX)
            held.append(s)
            s.connect(path)
            s.settimeout(10)
            s.sendall(b"help\n")
            data = b""
            while b"\n.\n" not in data:
                chunk = s.recv(4096)
                assert chunk
                data += chunk
            assert data.startswith(b"ok\n")
        r = moat.ctl("status")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "moatctl: too many clients" in r.stderr
        r = moat.ctl("--json", "status")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert json.loads(r.stdout) == {"ok": False, "error": "too many clients"}
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while moat.ctl("status").returncode != 0:
        assert time.monotonic() < deadline, "slots never freed"
        time.sleep(0.05)


def fake_moat(path, reply: bytes, read_request: bool = True):
    """A control socket that answers one client with reply and hangs up:
    what a real moat says only when it breaks."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)

    def serve():
        c, _ = srv.accept()
        with c:
            c.settimeout(5)
            if read_request:
                c.recv(2048)
            c.sendall(reply)
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("reply,read_request,why", [
    (b"", True, "without a reply"),
    (b'ok\n{"ok":true,"bans":[', True, "reply cut short"),
    (b"hello\n", True, "unexpected reply 'hello'"),
    (b"error\n.\n", True, "moat refused the request"),
    (b"error too many clients\n.\n", False, "too many clients"),
])
def test_json_output_on_every_failure(tmp_path, reply, read_request, why):
    """However a reply goes wrong, --json prints one JSON object, never
    nothing and never half an object."""
    sock = tmp_path / "fake.sock"
    t = fake_moat(sock, reply, read_request)
    r = subprocess.run([str(moatctl_binary()), "-s", str(sock), "--json",
                        "bans"], capture_output=True, text=True, timeout=10)
    t.join(5)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout.count("\n") == 1, r.stdout
    rep = json.loads(r.stdout)
    assert rep["ok"] is False and why in rep["error"], rep


def test_connect_to_a_stuck_moat_is_bounded(tmp_path):
    """moat stuck, its queue of connections not yet accepted full (earlier
    moatctl runs that gave up stay in it): connect() on a unix socket
    waits for room, and only a send timeout set before it bounds the
    wait; set after, every later moatctl hung for ever. The 120 s are
    too long to wait for here: strace shows the timeout is in place when
    connect() starts waiting."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace not found")
    sock = tmp_path / "stuck.sock"
    trace = tmp_path / "trace"
    with socket.socket(socket.AF_UNIX) as srv, \
            socket.socket(socket.AF_UNIX) as queued:
        srv.bind(str(sock))
        srv.listen(0)               # room for one, never accepted
        queued.connect(str(sock))
        p = subprocess.Popen([strace, "-f", "-o", str(trace), "-e",
                              "trace=setsockopt,connect",
                              str(moatctl_binary()), "-s", str(sock),
                              "status"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            while f'connect(3, {{sa_family=AF_UNIX, sun_path="{sock}"}}' \
                    not in (trace.read_text() if trace.exists() else ""):
                assert p.poll() is None, p.communicate()
                assert time.monotonic() < deadline, "moatctl never connected"
                time.sleep(0.05)
        finally:
            p.kill()
            p.wait()
    calls = [l for l in trace.read_text().splitlines()
             if "setsockopt(" in l or "connect(" in l]
    first = next(i for i, l in enumerate(calls) if "connect(" in l)
    assert any("SO_SNDTIMEO" in l for l in calls[:first]), calls


@pytest.mark.parametrize("json_out", [False, True])
def test_tail_cut_mid_line_prints_no_half_line(tmp_path, json_out):
    """A tail stream that breaks off inside an event: the whole events
    before it are printed, the half one is not, and the exit is 1 with
    the reason on its own line."""
    sock = tmp_path / "fake.sock"
    whole = '{"ts":"t","event":"reject","ip":"192.0.2.1"}\n'
    t = fake_moat(sock, b"ok\n" + whole.encode() + b'{"ts":"t","event":"rej')
    r = subprocess.run([str(moatctl_binary()), "-s", str(sock), "tail",
                        *(["--json"] if json_out else [])],
                       capture_output=True, text=True, timeout=10)
    t.join(5)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert lines[0] == whole.strip()
    assert "rej\"" not in r.stdout and '"event":"rej{' not in r.stdout
    if json_out:
        assert len(lines) == 2 and "end mark" in json.loads(lines[1])["error"]
    else:
        assert len(lines) == 1 and "end mark" in r.stderr


def test_tail_into_a_full_disk_is_an_error(moat):
    """Events that cannot be written (stdout on a full disk) end moatctl
    with exit 1 instead of being dropped for ever."""
    with open("/dev/full", "w") as full:
        p = subprocess.Popen([str(moatctl_binary()), "-s",
                              str(moat.control_socket), "tail"],
                             stdout=full, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 10
            while js(moat.ctl("--json", "status"))["events"]["tail_clients"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert moat.ctl("ban", "192.0.2.77", "1h").returncode == 0
            assert p.wait(timeout=10) == 1
        finally:
            p.kill()
            p.wait()
    assert "cannot write" in p.stderr.read()


def test_socket_mode_stale_and_second_moat(moat, tmp_path, pki, stack):
    st = os.stat(moat.control_socket)
    assert st.st_mode & 0o777 == 0o600
    # A second moat on the same socket refuses to start, before it
    # listens on its port.
    m2 = Moat(tmp_path / "second", pki, [lb("smtp", stack.smtp_addr, tls="none")])
    m2.config_path.write_text(m2.config_path.read_text().replace(
        str(m2.workdir / "moat.sock"), str(moat.control_socket)))
    assert m2.run_until_exit(timeout=10) == 1
    assert "control socket: another moat answers on " + str(moat.control_socket) in m2.log()
    assert "listening on" not in m2.log()
    # The first still answers.
    ok(moat.ctl("status"))


def test_stale_socket_replaced_and_dir_created(tmp_path, pki, stack):
    sockdir = tmp_path / "run" / "moat"
    m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none")])
    sock = sockdir / "control.sock"
    m.config_path.write_text(m.config_path.read_text().replace(
        str(tmp_path / "moat.sock"), str(sock)))
    # A stale socket: bound, then its owner gone.
    sockdir.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()
    m.start()
    try:
        r = subprocess.run([str(moatctl_binary()), "-s", str(sock), "status"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
    finally:
        assert m.stop() == 0
    assert not sock.exists()          # removed at exit
    # A missing directory is created with mode 0750 (only the socket's
    # own: the one above it must exist).
    fresh = tmp_path / "fresh" / "sub"
    fresh.parent.mkdir()
    m3 = Moat(tmp_path / "m3", pki, [lb("smtp", stack.smtp_addr, tls="none")])
    m3.config_path.write_text(m3.config_path.read_text().replace(
        str(m3.workdir / "moat.sock"), str(fresh / "c.sock")))
    m3.start()
    try:
        assert os.stat(fresh).st_mode & 0o777 == 0o750
    finally:
        assert m3.stop() == 0


def replies(sock, n: int, timeout: float = 30.0) -> bytes:
    """Reads until n whole replies (each ends with a "." line) are in."""
    sock.settimeout(timeout)
    data, seen = b"", 0
    while seen < n:
        chunk = sock.recv(1 << 20)
        assert chunk, (seen, data[-200:])
        # A reply's end may straddle two chunks: count from just before.
        start = max(len(data) - 2, 0)
        data += chunk
        seen += data.count(b"\n.\n", start)
    return data


def test_raw_protocol_many_clients_and_limits(moat):
    """The wire protocol itself: pipelined requests, many clients at once,
    an over-long line, and a client that never reads does not stall moat."""
    path = str(moat.control_socket)
    socks = []
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        socks.append(s)
    for s in socks:
        s.sendall(b"help\njson bans\n")
    for s in socks:
        data = replies(s, 2, 10)
        first, second = data.split(b"\n.\n")[:2]
        assert first.startswith(b"ok\nstatus\n")
        assert second.startswith(b"\nok\n") or second.startswith(b"ok\n")
        s.close()
    # Requests, then the end of input (printf ... | nc -U): every one
    # is answered before moat closes.
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b"help\nstatus\nhelp")
    s.shutdown(socket.SHUT_WR)
    s.settimeout(10)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    assert data.count(b"\n.\n") == 3 and data.count(b"ok\n") == 3, data
    s.close()
    # moat checks what moatctl checks: nc users get the same answer.
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b"bans 10.0.0.0/33\n")
    assert replies(s, 1, 10).startswith(b"error invalid address or prefix")
    s.close()
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b"x" * 5000)
    s.settimeout(10)
    data = s.recv(4096)
    assert data.startswith(b"error request longer than")
    s.close()
    # A tail client that never reads while events pour in: moat drops
    # events for it (and says how many once it reads again), never stalls.
    stuck = socket.socket(socket.AF_UNIX)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(path)
    stuck.sendall(b"tail\n")
    deadline = time.monotonic() + 10
    while js(moat.ctl("--json", "status"))["events"]["tail_clients"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    n = 12000
    req = b"".join(b"ban 198.18.%d.%d 1m\n" % (i // 250, i % 250 + 1)
                   for i in range(n))
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(30)
    # moat reads a request once the last reply has been read: send from
    # another thread while this one reads.
    sender = threading.Thread(target=s.sendall, args=(req,))
    sender.start()
    data = replies(s, n)
    sender.join()
    assert data.count(b"ok\nbanned ") == n
    s.close()
    st = js(moat.ctl("--json", "status"))       # moat still answers
    assert st["bans_active"] >= n
    stuck.settimeout(10)
    got = b""
    while True:
        try:
            chunk = stuck.recv(1 << 20)
        except socket.timeout:
            break
        got += chunk
        if len(got) > 200_000 and b"198.18.0.1 " in got:
            stuck.settimeout(0.5)
    assert got.startswith(b"ok\n")
    assert got.count(b" ban ") < n                   # some were dropped
    # The count of those comes once the follower has read the rest,
    # without waiting for another event; the next one is shown.
    ok(moat.ctl("ban", "198.19.0.1", "1m"))
    stuck.settimeout(10)
    more = b""
    while b"198.19.0.1" not in more:
        more += stuck.recv(65536)
    assert (got + more).count(b"events dropped") == 1, (got + more)[-500:]
    stuck.close()


def ctl_socket(moat, rcvbuf: int = 4096) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(str(moat.control_socket))
    return s


def test_client_that_never_reads_holds_one_reply(moat):
    """Control clients that send many requests and read nothing: moat
    answers one request at a time, so each holds one reply, not one per
    line (an audit saw 64 such clients take moat to 820 MB). Every
    request is still answered, in order, once the client reads."""
    before = moat.vmhwm_kb()
    n = 5000
    clients = [ctl_socket(moat) for _ in range(20)]
    for c in clients:
        c.sendall(b"status\n" * n)
    time.sleep(2)
    grown = moat.vmhwm_kb() - before
    assert grown < 10 * 1024, f"VmHWM grew {grown} kB"
    data = replies(clients[0], n, 20)
    assert data.count(b"ok\n") == n
    for c in clients:
        c.close()
    ok(moat.ctl("status"))


def stop_thread(tid: int):
    """Stops one thread of a process (ptrace stops only the thread it is
    attached to); returns the function that lets it run again."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    PTRACE_ATTACH, PTRACE_DETACH, WALL = 16, 17, 0x40000000
    if libc.ptrace(PTRACE_ATTACH, tid, None, None) != 0:
        pytest.skip(f"ptrace: {os.strerror(ctypes.get_errno())}")
    os.waitpid(tid, WALL)
    return lambda: libc.ptrace(PTRACE_DETACH, tid, None, None)


def test_tail_counts_events_lost_while_moat_was_busy(moat):
    """Events wait for moat's main thread, which serves tail; while it is
    busy (a reload, a large save, here stopped) the 4097th and later are
    lost before it sees them. The follower is told of those too: what it
    is shown plus what it is told it missed is every event made (they
    reached only moat's log before)."""
    ip, n = "127.0.0.5", 6000
    ok(moat.ctl("ban", ip, "1h"))
    t = ctl_socket(moat, 1 << 20)
    t.sendall(b"json tail\n")
    deadline = time.monotonic() + 10
    while js(moat.ctl("--json", "status"))["events"]["tail_clients"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    events = moat.workdir / "events.jsonl"
    resume = stop_thread(moat.proc.pid)
    try:
        # Refused at accept by a worker, each with a reject event.
        for _ in range(n):
            with socket.socket() as c:
                c.bind((ip, 0))
                try:
                    c.connect(("127.0.0.1", moat.port("smtps")))
                except OSError:
                    pass
        deadline = time.monotonic() + 30
        while events.read_text().count(f'"reject","ip":"{ip}"') < n:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        resume()
    ok(moat.ctl("ban", "192.0.2.201", "1m"))    # one event more, after
    t.settimeout(20)
    data = b""
    while b"192.0.2.201" not in data:
        chunk = t.recv(1 << 20)
        assert chunk, data[-300:]
        data += chunk
    t.close()
    shown = dropped = 0
    for line in data.splitlines()[1:]:
        ev = json.loads(line)
        if ev["event"] == "tail_dropped":
            dropped += ev["count"]
        elif ev["event"] == "reject":
            assert ev["ip"] == ip
            shown += 1
    assert shown + dropped == n, (shown, dropped)
    assert "not shown to moatctl tail" in moat.log()


def test_stalled_tail_follower_is_closed(moat):
    """A follower that reads nothing while events wait for it gives its
    slot back after 60 s (64 of them locked every moatctl out); one that
    has nothing to read stays."""
    stalled = ctl_socket(moat)
    stalled.sendall(b"tail\n")
    quiet = ctl_socket(moat)
    quiet.sendall(b"tail --ip 192.0.2.250\n")
    # moatctl itself, stopped: it reads nothing either.
    t = Tail(moat, "tail")
    t.wait_following(3)
    t.p.send_signal(signal.SIGSTOP)
    # 2 x 1500 ban and unban events, more than the kernel's buffer and
    # moat's queue for one follower can hold.
    w = ctl_socket(moat, 1 << 20)
    reqs = b"".join(b"ban 2001:db8::%x 1m\nunban 2001:db8::%x\n" % (i, i)
                    for i in range(1500))
    sender = threading.Thread(target=w.sendall, args=(reqs,))
    sender.start()
    got = replies(w, 3000, 60)
    sender.join()
    w.close()
    assert b"error" not in got
    # Nothing read from the stalled follower for 60 s: moat closes it.
    time.sleep(65)
    stalled.settimeout(10)
    while True:
        chunk = stalled.recv(1 << 20)   # a timeout here: still open
        if not chunk:
            break
    # The quiet one (nothing for it) is still there.
    assert js(moat.ctl("--json", "status"))["events"]["tail_clients"] == 1
    quiet.close()
    stalled.close()
    moat.wait_log("control: closing a tail reader that read nothing for "
                  "60 s while events waited")
    # moatctl, let go on, prints what it had and says that the stream
    # was cut off, not ended: a wrapper script must not take it for a
    # normal end.
    t.p.send_signal(signal.SIGCONT)
    out, err = t.p.communicate(timeout=30)
    assert t.p.returncode == 1, err
    assert b" ban 2001:db8::" in out
    assert b"the stream ended without moat's end mark: moat was killed, " \
        b"or it dropped this reader for reading nothing for 60 s while " \
        b"events waited" in err, err


def test_tail_end_says_how_it_ended(tmp_path, pki, stack):
    """moat ends every tail when it stops, and moatctl then exits 0; a
    tail cut off without that end (moat killed) is a failure, human and
    --json (one error object after the events)."""
    for how in ("stop", "kill"):
        m = Moat(tmp_path / how, pki, [lb("smtp", stack.smtp_addr, tls="none")])
        m.start()
        human = Tail(m, "tail")
        machine = Tail(m, "--json", "tail")
        try:
            human.wait_following(2)
            ok(m.ctl("ban", "192.0.2.7", "1m"))
            assert " ban 192.0.2.7 " in human.line()
            assert json.loads(machine.line())["event"] == "ban"
            if how == "stop":
                assert m.stop() == 0
            else:
                m.proc.kill()
                m.proc.wait()
                m.stop()
            for t in (human, machine):
                out, err = t.p.communicate(timeout=15)
                t.out = t.buf + out
                t.err = err.decode()
        finally:
            for t in (human, machine):
                if t.p.poll() is None:
                    t.close()
            m.stop()
        if how == "stop":
            assert human.p.returncode == 0, human.err
            assert machine.p.returncode == 0, machine.err
            assert human.err == "" and machine.err == ""
        else:
            assert human.p.returncode == 1
            assert "moatctl: " in human.err and "end mark" in human.err
            assert machine.p.returncode == 1
            last = json.loads(machine.out.decode().splitlines()[-1])
            assert last["ok"] is False and "end mark" in last["error"]


def _tail_count(data: bytes, prefix: str) -> tuple:
    """Events of addresses under prefix shown in a JSON tail's data, and
    those it was told it missed; whether the end mark came."""
    shown = dropped = 0
    ended = False
    for line in data.splitlines():
        if line == b".":
            ended = True
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "tail_dropped":
            dropped += ev["count"]
        elif str(ev.get("ip", "")).startswith(prefix):
            shown += 1
    return shown, dropped, ended


def _ban_unban_burst(moat, base: int, n: int) -> None:
    """n ban and n unban events, pipelined, answered before it returns."""
    w = ctl_socket(moat, 1 << 20)
    reqs = b"".join(b"ban 2001:db8::%x 1m\nunban 2001:db8::%x\n" % (i, i)
                    for i in range(base, base + n))
    sender = threading.Thread(target=w.sendall, args=(reqs,))
    sender.start()
    got = replies(w, 2 * n, 60)
    sender.join()
    w.close()
    assert b"error" not in got


def test_tail_says_what_it_missed_at_once_and_at_the_end(moat):
    """A follower that fell behind in a burst was told how many events it
    missed only in front of the next event it was shown: with none to
    come (the burst over, or moat stopping) the count never came, and
    moatctl tail ended with exit 0 as if it had seen everything. The count
    now comes once the follower has read what it was sent, and before the
    end mark."""
    t = ctl_socket(moat)
    t.sendall(b"json tail\n")
    deadline = time.monotonic() + 10
    while js(moat.ctl("--json", "status"))["events"]["tail_clients"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _ban_unban_burst(moat, 0, 1500)         # 3,000 events, nobody reading
    t.settimeout(20)
    data = b""
    while sum(_tail_count(data, "2001:db8:")[:2]) < 3000:
        chunk = t.recv(1 << 20)             # a timeout: the count never came
        assert chunk, data[-300:]
        data += chunk
    shown, dropped, _ = _tail_count(data, "2001:db8:")
    assert dropped > 0 and shown + dropped == 3000, (shown, dropped)
    # Behind again; read to the end of what was sent, then moat stops:
    # the count came before the end mark, and the stream ends with it.
    _ban_unban_burst(moat, 2000, 1500)
    rest = b""
    while sum(_tail_count(rest, "2001:db8::")[:2]) < 3000:
        chunk = t.recv(1 << 20)
        assert chunk, rest[-300:]
        rest += chunk
    moat.signal(signal.SIGTERM)
    assert moat.proc.wait(timeout=30) == 0
    while (chunk := t.recv(1 << 20)):
        rest += chunk
    t.close()
    shown, dropped, ended = _tail_count(rest, "2001:db8::")
    assert ended and rest.endswith(b"\n.\n"), rest[-300:]
    assert dropped > 0 and shown + dropped == 3000, (shown, dropped)
