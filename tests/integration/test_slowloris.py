"""Slowloris: thousands of connections that send nothing or a byte at a
time -- before the first command on a plaintext listener, in the middle
of the TLS handshake on an implicit-TLS listener, in the middle of a
command -- must not stop a well-behaved client from being served; the
handshake and idle timeouts fire; policy.rate.concurrent_per_ip holds;
and the global cap ([daemon] max_sessions) keeps a reserve that one
source cannot take.  See issue 9.

Abusers connect from 127.0.0.1 or 127.0.0.3, the good client from
127.0.0.2 (all of 127/8 is local on Linux), so per-address rules can tell
them apart.  The backend is scripted (scripted.py): a real Postfix would
itself run out of smtpd processes long before moat runs out of slots.
"""

from __future__ import annotations

import json
import os
import re
import resource
import selectors
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from moatrun import Moat, free_port, listener
from scripted import ScriptedBackend

ABUSER = "127.0.0.1"
GOOD = "127.0.0.2"
OTHER = "127.0.0.3"
FLOOD = 2000


@pytest.fixture(scope="module", autouse=True)
def nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FLOOD * 2 + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} too low for {FLOOD} connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def backend():
    b = ScriptedBackend("smtp").start()
    yield b
    b.stop()


def with_daemon(m: Moat, text: str) -> Moat:
    """Adds keys to the rendered [daemon] table."""
    cfg = m.config_path.read_text()
    m.config_path.write_text(cfg.replace("[daemon]\n", "[daemon]\n" + text + "\n", 1))
    return m


def open_many(addr, n: int, source: str = ABUSER, first: bytes = b""):
    """n connections from source, each sending first (maybe nothing)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.settimeout(10)
        s.connect(addr)
        if first:
            s.sendall(first)
        s.setblocking(False)
        socks.append(s)
    return socks


def wait_closed(socks, timeout: float) -> int:
    """Reads every socket until moat closes it; returns how many closed
    within timeout (the rest stay open)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed, deadline = 0, time.monotonic() + timeout
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            try:
                d = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            if not d:
                sel.unregister(key.fileobj)
                closed += 1
    sel.close()
    return closed


def close_all(socks):
    for s in socks:
        s.close()


def good_smtp(addr, *, tls_ctx=None, source: str = GOOD) -> None:
    """A well-behaved client sends one message within a few seconds."""
    t0 = time.monotonic()
    if tls_ctx is None:
        c = smtplib.SMTP(addr[0], addr[1], timeout=10, source_address=(source, 0))
    else:
        c = smtplib.SMTP_SSL(addr[0], addr[1], timeout=10, context=tls_ctx,
                             source_address=(source, 0))
    with c:
        c.ehlo("good.example")
        c.sendmail("a@example.org", ["alice@example.test"], b"Subject: hi\r\n\r\nhello\r\n")
    assert time.monotonic() - t0 < 8


def capacity_rejects(m: Moat) -> int:
    """Refusals by the session cap: every one is an event; the log sums
    a flood of them up."""
    try:
        lines = (m.workdir / "events.jsonl").read_text().splitlines()
    except OSError:
        return 0
    n = 0
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue        # a line being written
        if ev["event"] == "reject" and ev["reason"].startswith("capacity"):
            n += 1
    return n


def vm_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User and system time pid has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_flood_plaintext_reserve_and_idle_timeout(pki, backend, tmp_path):
    """2000 silent connections from one address on a plaintext listener
    with max_sessions 1000: the abuser gets the slots below the
    high-water mark and then 421s, the good client still gets one of the
    reserved slots, and the idle timeout ends the silent sessions."""
    m = with_daemon(Moat(tmp_path, pki, [
        listener("smtp", backend.addr, tls="none", idle="8s")], verbose=0),
        "max_sessions = 1000\nreserved_sessions = 100").start()
    try:
        addr = m.addr("smtp")
        t0 = time.monotonic()
        flood = open_many(addr, FLOOD)
        print(f"{FLOOD} connections in {time.monotonic() - t0:.1f}s")
        time.sleep(0.5)
        held = re.findall(r" reject ip=127\.0\.0\.1 reason=capacity_reserve "
                          r"listener=smtp sessions=(\d+) held=(\d+)", m.log())
        assert held and all(int(h) >= 900 for _, h in held), held[:5]
        good_smtp(addr)
        # Those beyond the high-water mark got 421 and were closed, each
        # with an event; the log names the address once per 10 s and
        # worker and sums up the rest.
        refused = capacity_rejects(m)
        assert refused >= FLOOD - 900 - 50, m.log()[-2000:]
        assert len(held) <= 8, held
        closed = wait_closed(flood, timeout=20)
        elapsed = time.monotonic() - t0
        close_all(flood)
        assert closed == FLOOD, f"only {closed} of {FLOOD} closed in {elapsed:.1f}s"
        assert m.log().count("close reason=idle_timeout") >= 800
        m.wait_log("more of reason=capacity_reserve in the last 10 s", timeout=15)
        good_smtp(addr)
        assert m.proc.poll() is None
        assert vm_fds(m.proc.pid) < 50, "descriptors leaked"
    finally:
        assert m.stop() == 0


def test_mid_handshake_flood_implicit_tls(pki, backend, tmp_path):
    """1500 connections stop after half a ClientHello: the handshake
    timeout ends them while a good SMTPS client is served."""
    m = Moat(tmp_path, pki, [
        listener("smtps", backend.addr, handshake="3s", idle="10s")], verbose=0).start()
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.check_hostname = False
    try:
        addr = m.addr("smtps")
        # A TLS record header announcing 512 bytes, then 5 of them.
        partial = bytes([22, 3, 1, 2, 0, 1, 0, 1, 252, 3])
        flood = open_many(addr, 1500, first=partial)
        good_smtp(addr, tls_ctx=ctx)
        closed = wait_closed(flood, timeout=15)
        close_all(flood)
        assert closed == 1500
        assert m.log().count("tls_fail reason=timeout") >= 1500
        good_smtp(addr, tls_ctx=ctx)
        assert vm_fds(m.proc.pid) < 50
    finally:
        assert m.stop() == 0


def test_byte_at_a_time_mid_command(pki, backend, tmp_path):
    """500 clients drip a command one byte every second (each byte resets
    the idle timer): they hold their sessions, but the global cap's
    reserve keeps room and the good client is served at once."""
    m = with_daemon(Moat(tmp_path, pki, [
        listener("smtp", backend.addr, tls="none", idle="5s")], verbose=0),
        "max_sessions = 600\nreserved_sessions = 60").start()
    try:
        addr = m.addr("smtp")
        flood = open_many(addr, 700, first=b"E")
        t_end = time.monotonic() + 4
        while time.monotonic() < t_end:
            for s in flood:
                try:
                    s.send(b"H")
                except OSError:
                    pass
            time.sleep(1)
        good_smtp(addr)
        assert capacity_rejects(m) >= 700 - 540 - 5, m.log()[-2000:]
        assert "close reason=idle_timeout" not in m.log()    # they kept talking
        close_all(flood)
        good_smtp(addr)
    finally:
        assert m.stop() == 0


def test_concurrent_per_ip_holds(pki, backend, tmp_path):
    """concurrent_per_ip = 30: the 31st silent session from one address is
    refused with a protocol-correct 554, other addresses are not."""
    m = Moat(tmp_path, pki, [listener("smtp", backend.addr, tls="none", idle="30s")],
             verbose=0, extra="[policy.rate]\n"
             'connections = { limit = 0, window = "1m" }\n'
             "concurrent_per_ip = 30\n"
             'auth_failures = { limit = 0, window = "1m" }').start()
    try:
        addr = m.addr("smtp")
        flood = open_many(addr, 30, source=OTHER)
        more = open_many(addr, 20, source=OTHER)
        time.sleep(0.5)
        replies = []
        for s in more:
            s.setblocking(True)
            s.settimeout(5)
            replies.append(s.recv(200))
        assert all(r.startswith(b"554 5.7.1 Access denied: too many connections")
                   for r in replies), replies[:3]
        good_smtp(addr)
        close_all(flood + more)
        time.sleep(0.5)
        # Slots are given back: the address may connect again.
        again = open_many(addr, 1, source=OTHER)
        again[0].setblocking(True)
        assert again[0].recv(200).startswith(b"220 "), "slot not given back"
        close_all(again)
    finally:
        assert m.stop() == 0


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_out_of_descriptors_pauses_accept_and_logs_once(pki, backend, tmp_path):
    """With an open-files limit of 40 (hard, so moat cannot raise it),
    40 silent clients leave most of them in the listen queue: accept
    fails with EMFILE again and again. moat neither spins nor writes a
    line per retry (one when it starts, one when the queue is empty
    again), and serves a newcomer once the sessions end. The same holds
    for a metrics scrape and a moatctl waiting meanwhile (those two
    spun at full CPU with a log line per retry)."""
    mport = free_port()
    # The held clients go to an implicit-TLS listener: silent, they never
    # finish a handshake, so no session opens a backend connection that
    # fails and frees a descriptor now and then for another accept.
    m = Moat(tmp_path, pki, [listener("smtp", backend.addr, tls="none", idle="30s"),
                             listener("smtps", backend.addr, handshake="30s")],
             wrap=["prlimit", "--nofile=40:40"],
             metrics=f"127.0.0.1:{mport}").start()
    try:
        addr = m.addr("smtp")
        # Moat.start() connected to each listener to see it answer: once
        # those sessions have closed, no descriptor comes free by itself.
        deadline = time.monotonic() + 10
        while m.log().count(" close reason=") < 2:
            assert time.monotonic() < deadline, m.log()[-2000:]
            time.sleep(0.05)
        held = open_many(m.addr("smtps"), 40)
        tls = "listener %s:%d" % m.addr("smtps")
        m.wait_log(f"{tls}: accept, pausing")
        # The metrics endpoint and the control socket accept on the main
        # loop too: a scrape and a moatctl while descriptors are out.
        scrape = socket.create_connection(("127.0.0.1", mport), timeout=10)
        ctl = socket.socket(socket.AF_UNIX)
        ctl.connect(str(m.control_socket))
        time.sleep(0.5)
        cpu0 = cpu_seconds(m.proc.pid)
        time.sleep(3)
        assert cpu_seconds(m.proc.pid) - cpu0 < 0.5, "accept spins on EMFILE"
        assert vm_fds(m.proc.pid) >= 39      # at the limit
        log = m.log()
        for who in (tls, "metrics", "control"):
            assert log.count(f"{who}: accept, pausing") == 1, (who, log[-2000:])
        close_all(held)
        scrape.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        ctl.sendall(b"status\n")
        for who in (tls, "metrics", "control"):
            deadline = time.monotonic() + 60
            while f"{who}: accepting again after" not in m.log():
                assert time.monotonic() < deadline, (who, m.log()[-2000:])
                time.sleep(0.1)
        scrape.settimeout(10)
        assert scrape.recv(64).startswith(b"HTTP/1."), "the scrape waited"
        ctl.settimeout(10)
        assert ctl.recv(64).startswith(b"ok"), "moatctl waited"
        scrape.close()
        ctl.close()
        good_smtp(addr)
        for who in (tls, "metrics", "control"):
            assert m.log().count(f"{who}: accept, pausing") == 1
        assert m.proc.poll() is None
    finally:
        assert m.stop() == 0


# LD_PRELOAD'ed into moat: CLOCK_REALTIME (and gettimeofday(), which
# libev's ev_now() reads) jumps by MOAT_CLOCK_STEP seconds once the file
# MOAT_CLOCK_STEP_FILE exists, as an NTP step would move it: the test
# steps the clock when it is ready, however long moat took to start. The
# monotonic clock is left alone.
CLOCK_STEP_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);
static const char *trigger;
static volatile int stepped;
static double step;

__attribute__((constructor)) static void
init(void)
{
	const char *s = getenv("MOAT_CLOCK_STEP");

	real_clock_gettime = (int (*)(clockid_t, struct timespec *))
	    dlsym(RTLD_NEXT, "clock_gettime");
	trigger = getenv("MOAT_CLOCK_STEP_FILE");
	step = s ? atof(s) : 0;
}

int
clock_gettime(clockid_t id, struct timespec *ts)
{
	int rc = real_clock_gettime(id, ts);

	if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
		if (!stepped && trigger != NULL && access(trigger, F_OK) == 0)
			stepped = 1;
		if (stepped)
			ts->tv_sec += (time_t)step;
	}
	return rc;
}

int
gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
	struct timespec ts;

	(void)tz;
	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return -1;
	tv->tv_sec = ts.tv_sec;
	tv->tv_usec = ts.tv_nsec / 1000;
	return 0;
}
"""


@pytest.fixture(scope="module")
def clock_step_shim(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler for the clock shim")
    d = tmp_path_factory.mktemp("clockshim")
    (d / "step.c").write_text(CLOCK_STEP_SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(d / "step.so"),
                    str(d / "step.c"), "-ldl"], check=True)
    return d / "step.so"


def test_wall_clock_step_back_changes_no_timeout(pki, backend, tmp_path,
                                                 clock_step_shim, monkeypatch):
    """The wall clock steps back an hour while a session is idle (NTP, a
    VM restored from a snapshot): the session still ends at its 3 s idle
    timeout, not an hour later, and its close line gives the time it
    really lasted. Bounds are far from both (no timed assertion)."""
    trigger = tmp_path / "step-now"
    monkeypatch.setenv("LD_PRELOAD", str(clock_step_shim))
    monkeypatch.setenv("MOAT_CLOCK_STEP_FILE", str(trigger))
    monkeypatch.setenv("MOAT_CLOCK_STEP", "-3600")
    # A sanitizer build wants its runtime first; the shim is harmless.
    monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "") +
                       ":verify_asan_link_order=0")
    m = Moat(tmp_path, pki, [listener("smtp", backend.addr, tls="none", idle="3s")])
    m.start()
    monkeypatch.delenv("LD_PRELOAD")
    try:
        idle = open_many(m.addr("smtp"), 1)
        # Relayed, so the session is past its last activity before the
        # wall clock steps back under it.
        idle[0].settimeout(30)
        assert idle[0].recv(512).startswith(b"220 ")
        idle[0].setblocking(False)
        trigger.touch()
        # An hour is the failure; a minute is plenty for a 3 s timeout.
        closed = wait_closed(idle, timeout=60)
        close_all(idle)
        assert closed == 1, "the idle session outlived its timeout"
        d = re.search(r"close reason=idle_timeout .*duration_ms=(\d+)",
                      m.wait_log("close reason=idle_timeout"))
        assert d and 2900 <= int(d.group(1)) <= 60_000, d
    finally:
        assert m.stop() == 0


def vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_memory_given_back_after_a_flood(pki, backend, tmp_path):
    """1500 TLS sessions grow moat by tens of MB; once they have closed,
    moat gives that memory back to the system at a tick of its heap timer
    (10 s), instead of holding its peak for good. The wait allows a busy
    machine several ticks."""
    m = Moat(tmp_path, pki, [listener("smtps", backend.addr, tls="implicit",
                                      idle="5m")]).start()
    try:
        if m.sanitized():
            pytest.skip("AddressSanitizer's allocator keeps freed memory "
                        "quarantined; the gcc build runs this test")
        base = vm_rss_kb(m.proc.pid)
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        held = []
        for _ in range(1500):
            s = ctx.wrap_socket(socket.create_connection(m.addr("smtps"), timeout=10),
                                server_hostname="localhost")
            assert s.recv(64).startswith(b"220 ")
            held.append(s)
        peak = vm_rss_kb(m.proc.pid)
        assert peak - base > 15_000, (base, peak)
        close_all(held)
        deadline = time.monotonic() + 90
        while True:
            rss = vm_rss_kb(m.proc.pid)
            if rss < base + (peak - base) // 4:
                break
            assert time.monotonic() < deadline, \
                f"still {rss} kB after the flood (before {base}, peak {peak})"
            time.sleep(0.5)
    finally:
        assert m.stop() == 0


def test_trickle_after_the_backend_hung_up_ends_with_the_linger(pki, tmp_path):
    """Postfix times a client out (smtpd_timeout) and closes; moat relays
    its 421 and end of stream (a 421 that no command asked for is a
    server's last word: moat ends the session behind it). A client that goes on trickling a byte a
    second used to keep the session (each byte re-armed the idle timer),
    with its slot and per-address count, for as long as it liked; it now
    gets the 5 s linger to hang up, as a client of Postfix itself would
    have been cut off."""
    from conftest import require_mailstack
    from mailstack import MailStack
    require_mailstack()
    stack = MailStack(postconf={"smtpd_timeout": "2s"}).start()
    try:
        m = Moat(tmp_path, pki, [listener("smtp", stack.smtp_addr, tls="none",
                                          idle="30s")]).start()
        try:
            s = socket.create_connection(m.addr("smtp"), timeout=10)
            s.settimeout(0.2)
            got = b""
            start = time.monotonic()
            eof_at = closed_at = None
            while time.monotonic() - start < 20 and closed_at is None:
                try:
                    s.send(b"X")
                except OSError:
                    closed_at = time.monotonic()
                    break
                try:
                    d = s.recv(4096)
                    if d:
                        got += d
                    elif eof_at is None:
                        eof_at = time.monotonic()
                except socket.timeout:
                    pass
                st = json.loads(m.ctl("--json", "status").stdout)
                if eof_at is not None and st["sessions"] == 0:
                    closed_at = time.monotonic()
                time.sleep(0.8)
            s.close()
            assert b"421" in got, got
            assert eof_at is not None, got
            assert closed_at is not None, m.log()[-1500:]
            assert closed_at - eof_at < 10, (closed_at - eof_at, m.log()[-1500:])
            assert "close reason=backend_closing" in m.log()
        finally:
            assert m.stop() == 0
    finally:
        stack.stop()


def attempt(addr, source: str) -> bytes:
    """One connection from source: what moat sent before it closed (b""
    for a bare close, also one whose reset beat the connect's return)."""
    got = b""
    with socket.socket() as s:
        s.bind((source, 0))
        s.settimeout(5)
        try:
            s.connect(addr)
            while d := s.recv(512):
                got += d
        except OSError:
            pass
    return got


def test_policy_comes_before_a_full_cap(pki, backend, tmp_path):
    """max_sessions = 10 (reserve 2). An allowed address that holds two
    sessions still gets one of the reserved slots; once the cap is full a
    banned address is closed without a word (a `banned` event, not
    `capacity`), and a flood is still counted in its connection-rate
    window and banned. Capacity refusals are closed at once: they leave
    no session behind."""
    m = with_daemon(Moat(tmp_path, pki, [
        listener("smtp", backend.addr, tls="none", idle="30s")], verbose=0,
        extra='[policy]\nallow = ["127.0.0.4"]\n\n[policy.rate]\n'
              'connections = { limit = 5, window = "1m" }\n'
              'concurrent_per_ip = 0\n'
              'auth_failures = { limit = 0, window = "1m" }'),
        "max_sessions = 10\nreserved_sessions = 2").start()
    held = []
    try:
        addr = m.addr("smtp")
        wait_sessions(m, 0)     # start()'s own probes have ended
        for src in [f"127.0.1.{i + 1}" for i in range(6)] + ["127.0.0.4"] * 2:
            held += open_many(addr, 1, source=src)
            assert reply_of_line(held[-1]).startswith(b"220"), f"{src} below the mark"
        # 8 of 10: the reserve. The allowed address holds 2 already.
        third = open_many(addr, 1, source="127.0.0.4")[0]
        assert reply_of_line(third).startswith(b"220"), "allowed address refused in the reserve"
        held.append(third)
        held += open_many(addr, 1, source="127.0.1.7")
        assert reply_of_line(held[-1]).startswith(b"220")

        # The cap is full.
        assert m.ctl("ban", "127.0.0.66").returncode == 0
        assert [attempt(addr, "127.0.0.66") for _ in range(3)] == [b"", b"", b""]
        replies = [attempt(addr, "127.0.0.77") for _ in range(8)]
        assert all(r.startswith(b"421 4.7.0 smtp too many connections") for r in replies[:5]), replies
        assert replies[5].startswith(b"554 5.7.1 Access denied"), replies
        assert replies[6:] == [b"", b""], replies
        bans = m.ctl("bans").stdout
        assert "127.0.0.77" in bans, bans
        # Allowed or not, the cap itself holds.
        assert attempt(addr, "127.0.0.4").startswith(b"421 ")

        events = [json.loads(x) for x in
                  (m.workdir / "events.jsonl").read_text().splitlines()]
        of66 = [e["reason"] for e in events if e.get("ip") == "127.0.0.66" and e["event"] == "reject"]
        assert of66 == ["banned"] * 3, of66
        # Nothing lingers: the refused connections left no session.
        wait_sessions(m, 10)
    finally:
        close_all(held)
        assert m.stop() == 0


def wait_sessions(m: Moat, n: int, timeout: float = 10.0) -> None:
    """Until moat holds n sessions in all (moatctl status)."""
    deadline = time.monotonic() + timeout
    while True:
        st = json.loads(m.ctl("--json", "status").stdout)
        held = sum(w["sessions"] for w in st["workers"])
        if held == n:
            return
        assert time.monotonic() < deadline, f"{held} sessions, not {n}"
        time.sleep(0.05)


def reply_of_line(s) -> bytes:
    s.setblocking(True)
    s.settimeout(5)
    return s.recv(512)
