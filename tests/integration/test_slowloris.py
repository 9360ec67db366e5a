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

import re
import resource
import selectors
import smtplib
import socket
import ssl
import time

import pytest

from moatrun import Moat, listener
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
    return len(re.findall(r" reject ip=\S+ reason=capacity", m.log()))


def vm_fds(pid: int) -> int:
    import os
    return len(os.listdir(f"/proc/{pid}/fd"))


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
                          r"sessions=(\d+) held=(\d+)", m.log())
        assert held and all(int(h) >= 900 for _, h in held), held[:5]
        good_smtp(addr)
        # Those beyond the high-water mark got 421 and were closed.
        refused = capacity_rejects(m)
        assert refused >= FLOOD - 900 - 50, m.log()[-2000:]
        closed = wait_closed(flood, timeout=20)
        elapsed = time.monotonic() - t0
        close_all(flood)
        assert closed == FLOOD, f"only {closed} of {FLOOD} closed in {elapsed:.1f}s"
        assert m.log().count("close reason=idle_timeout") >= 800
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
