"""Faults: what a broken backend, a hostile client, a full disk and an
impatient operator do to moat.  Nothing may crash it, grow its memory
without bound, or stop it serving everybody else.  See issue 9.

Backends that stall, close in the middle of DATA or send garbage are
scripted (scripted.py): a real Postfix will not.  The SIGHUP storm runs
against the real Postfix of mailstack.py.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import require_mailstack
from mailstack import MailStack
from moatrun import Moat, listener
from scripted import BIG_RETR, ScriptedBackend


def ctx_for(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_cert))


def read_until_close(sock, timeout: float) -> bytes:
    sock.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            d = sock.recv(65536)
        except (ConnectionError, ssl.SSLError):
            return out
        except socket.timeout:
            break
        if not d:
            return out
        out += d
    raise AssertionError(f"moat did not close within {timeout}s; got {out[:200]!r}")


def serves(m: Moat, name: str) -> None:
    """A plaintext SMTP client gets through listener name."""
    with smtplib.SMTP(*m.addr(name), timeout=10) as c:
        c.ehlo("ok.example")
        c.sendmail("a@example.org", ["alice@example.test"], b"Subject: ok\r\n\r\nok\r\n")


@pytest.fixture(scope="module")
def good():
    b = ScriptedBackend("smtp").start()
    yield b
    b.stop()


def rss_bound_kb(m: Moat) -> int:
    # ASan's shadow memory and quarantine cost far more than moat itself.
    return (400 if m.sanitized() else 64) * 1024


SIOCOUTQ = 0x5411       # linux/sockios.h: bytes not yet acknowledged


class LastWordsBackend:
    """A POP3 backend that answers RETR with more than moat can pass on
    to a client that does not read, then closes: what it sent until moat
    stopped taking it is its last word, and `delivered` counts those
    bytes (sent, minus what the kernel still held when it closed)."""

    def __init__(self):
        self.ls = socket.create_server(("127.0.0.1", 0))
        self.addr = self.ls.getsockname()
        self.delivered = 0
        self.closed = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    @staticmethod
    def _outq(s) -> int:
        return struct.unpack("i", fcntl.ioctl(s.fileno(), SIOCOUTQ, b"\0" * 4))[0]

    def _run(self) -> None:
        # moat's start-up probe (a connection to the port) comes first.
        while not self.closed.is_set():
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s) -> None:
        with s:
            s.sendall(b"+OK ready\r\n")
            got = b""
            while b"RETR 1\r\n" not in got:
                d = s.recv(4096)
                if not d:
                    return
                got += d
            s.sendall(b"+OK message follows\r\n")
            sent = len(b"+OK message follows\r\n")
            chunk = b"x" * 68 + b"\r\n"
            chunk *= 1024
            # Until moat stops reading (its buffers and the client's path
            # full): the unacknowledged bytes stop going down for 1 s.
            s.setblocking(False)
            deadline = time.monotonic() + 60
            stuck_since, last = 0.0, -1
            while time.monotonic() < deadline:
                try:
                    sent += s.send(chunk)
                    last = -1
                    continue
                except BlockingIOError:
                    pass
                q = self._outq(s)
                if q != last:
                    stuck_since, last = time.monotonic(), q
                elif time.monotonic() - stuck_since > 1.0:
                    break
                time.sleep(0.02)
            self.delivered = sent - self._outq(s)
        self.closed.set()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_backend_last_words_reach_the_client(pki, tmp_path, tls):
    """The backend closes while moat still holds what it sent before
    (the client reads slowly) and the client sends another command,
    which the backend's kernel answers with a reset: moat stops writing
    to the backend but not reading it, and the client gets every byte
    the backend sent before it closed, then the end of stream, as it
    would straight from the backend. moat used to end the session at
    the failed write and drop what it held."""
    b = LastWordsBackend()
    m = Moat(tmp_path, pki, [listener("pop", b.addr, protocol="pop3",
                                      tls="implicit" if tls else "none")]).start()
    try:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(m.addr("pop"))
        if tls:
            c = ctx_for(pki).wrap_socket(c, server_hostname="localhost")
        c.settimeout(10)
        got = b""
        while b"\r\n" not in got:
            got += c.recv(100)
        greeting = len(got)
        c.sendall(b"RETR 1\r\n")
        assert b.closed.wait(70), "the backend never saw moat stop reading"
        assert b.delivered > 0
        # The first command meets the closed socket (reset); the second
        # finds the reset (EPIPE).
        for _ in range(2):
            c.sendall(b"NOOP\r\n")
            time.sleep(0.5)
        got += read_until_close(c, 30)
        assert len(got) >= greeting + b.delivered, \
            f"client got {len(got) - greeting} of {b.delivered} bytes"
        c.close()
        log = m.wait_log("close reason=backend_closed")
        assert "backend_error" not in log
        # Over TLS moat reads nothing from a client while a write to it
        # waits (session.c, read_waits_for_write()): the NOOPs come after
        # the backend's end, and meet no reset.
        if not tls:
            assert "backend_closed_writing" in log
        assert m.proc.poll() is None
    finally:
        assert m.stop() == 0
        b.ls.close()


# --- backends that misbehave -----------------------------------------------

def test_backend_stalls_after_accept(pki, good, tmp_path):
    """The backend accepts and never greets: when the connect timeout,
    which bounds the wait for the greeting, fires the client reads the
    backend-failure 421 / -ERR and the session ends, and moat keeps
    serving others."""
    stall = ScriptedBackend("stall").start()
    m = Moat(tmp_path, pki, [
        listener("stall", stall.addr, tls="none", connect="2s"),
        listener("stalls", stall.addr, tls="implicit", connect="2s", protocol="pop3"),
        listener("good", good.addr, tls="none")], verbose=1).start()
    try:
        socks = [socket.create_connection(m.addr("stall"), timeout=10) for _ in range(20)]
        serves(m, "good")
        for s in socks:
            got = read_until_close(s, 10)
            assert got.startswith(b"421 4.3.0 "), got
            s.close()
        # The greeting deadline ended them, not the 5-minute idle timeout.
        assert m.log().count('reason="no greeting within 2s"') >= 20, m.log()
        with socket.create_connection(m.addr("stalls"), timeout=10) as raw:
            with ctx_for(pki).wrap_socket(raw, server_hostname="localhost") as s:
                got = read_until_close(s, 10)
                assert got.startswith(b"-ERR [SYS/TEMP] "), got
        # The last session ends once moat sees this client hang up.
        deadline = time.monotonic() + 5
        while (m.log().count("close reason=backend_unavailable") < 21 and
               time.monotonic() < deadline):
            time.sleep(0.05)
        assert m.log().count("close reason=backend_unavailable") >= 21
        serves(m, "good")
    finally:
        assert m.stop() == 0
        stall.stop()


def test_early_talker_that_half_closes_gets_its_replies(pki, tmp_path):
    """A scripted client (printf ... | nc -N) sends its commands and its
    end of stream before the greeting: moat holds them until the backend
    greets, then passes them on, and the client reads every reply."""
    late = ScriptedBackend("late_smtp").start()
    m = Moat(tmp_path, pki, [listener("late", late.addr, tls="none")]).start()
    try:
        with socket.create_connection(m.addr("late"), timeout=10) as s:
            s.sendall(b"EHLO x.example\r\nQUIT\r\n")
            s.shutdown(socket.SHUT_WR)
            got = read_until_close(s, 10)
        assert got.startswith(b"220 "), got
        assert b"\r\n250-" in got and got.endswith(b"221 bye\r\n"), got
        # Seen as an early talker all the same.
        events = (m.workdir / "events.jsonl").read_text()
        assert '"early_talker"' in events, events
    finally:
        assert m.stop() == 0
        late.stop()


def test_client_reset_before_a_slow_verdict(pki, tmp_path):
    """A client resets while the backend holds a failed PASS back; a STLS
    waits behind the PASS.  The failure is counted when it comes, and no
    handshake is started for the client that is gone."""
    slow = ScriptedBackend("slow_pass").start()
    m = Moat(tmp_path, pki, [listener("p", slow.addr, protocol="pop3",
                                      tls="starttls")]).start()
    try:
        with socket.create_connection(m.addr("p"), timeout=10) as s:
            s.settimeout(10)
            assert s.recv(512).startswith(b"+OK")
            s.sendall(b"USER alice\r\nPASS guess\r\nSTLS\r\n")
            assert s.recv(512).startswith(b"+OK")     # USER's
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
        deadline = time.monotonic() + 10
        while "close reason=client_error" not in m.log():
            assert time.monotonic() < deadline, m.log()
            time.sleep(0.05)
        log = m.log()
        assert "client_reset" in log and "close reason=client_error" in log
        evs = [json.loads(l) for l in
               (m.workdir / "events.jsonl").read_text().splitlines()]
        assert [e["reason"] for e in evs if e["event"] == "auth_fail"] == \
            ["pop3_pass"], evs
        assert not [e for e in evs if e["event"] == "tls_fail"], evs
        assert "handshake" not in log.split("client_reset", 1)[1], log
    finally:
        assert m.stop() == 0
        slow.stop()


def test_client_reset_in_a_download_ends_the_session(pki, tmp_path):
    """A client that resets during a long RETR owes the backend no verdict:
    the session ends at once, instead of reading the whole message from
    the backend for no one."""
    big = ScriptedBackend("big_retr").start()
    m = Moat(tmp_path, pki, [listener("p", big.addr, protocol="pop3",
                                      tls="none")]).start()
    try:
        with socket.create_connection(m.addr("p"), timeout=10) as s:
            s.sendall(b"USER a\r\nPASS b\r\nRETR 1\r\n")
            got = b""
            while len(got) < 100_000:
                chunk = s.recv(65536)
                assert chunk, f"moat closed after {len(got)} bytes"
                got += chunk
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
        m.wait_log("close reason=client_error", timeout=10)
        # The backend's sending stops where the kernel's buffers filled
        # (the old code read all of the message from it).
        time.sleep(0.5)
        stopped = big.sent
        time.sleep(0.5)
        assert big.sent == stopped < BIG_RETR, (stopped, big.sent)
    finally:
        assert m.stop() == 0
        big.stop()


def test_tls_client_close_notify_then_reset_ends_the_session(pki, tmp_path):
    """A TLS client sends close_notify and then resets while moat still
    writes a long RETR to it: OpenSSL reports the failed write as a
    close_notify, and moat used to try it again at every turn of the loop,
    a core at 100 % until the idle timeout."""
    big = ScriptedBackend("big_retr").start()
    m = Moat(tmp_path, pki, [listener("p", big.addr, protocol="pop3",
                                      tls="implicit", idle="60s")]).start()
    try:
        r = subprocess.run([str(keyupdate_tool()), str(m.port("p")),
                            "notify-reset"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        log = m.wait_log("close reason=client_", timeout=10)
        assert "client_reset" in log and "idle_timeout" not in log
    finally:
        assert m.stop() == 0
        big.stop()


def keyupdate_tool() -> Path:
    return Path(os.environ.get("MOAT_BUILD_ROOT", "build")) / "tests" / \
        "integration" / "keyupdate"


@pytest.mark.parametrize("updates", [1, 3, 50])
def test_key_updates_while_moat_waits_to_write(pki, tmp_path, updates):
    """A TLS 1.3 client that asks for new keys during a long RETR it is
    slow to read: OpenSSL holds its answer behind the write that waits,
    and a second request read meanwhile used to end the session with
    "bad length" 4 MB into 20."""
    big = ScriptedBackend("big_retr").start()
    m = Moat(tmp_path, pki, [listener("p", big.addr, protocol="pop3",
                                      tls="implicit")]).start()
    try:
        want = (len(b"+OK scripted POP3 ready\r\n") + 2 * len(b"+OK\r\n") +
                len(b"+OK message follows\r\n") + BIG_RETR + len(b".\r\n") +
                updates * len(b"+OK\r\n"))
        r = subprocess.run([str(keyupdate_tool()), str(m.port("p")), str(want),
                            str(updates)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, (r.stderr, m.log()[-2000:])
        assert "bad length" not in m.log()
    finally:
        assert m.stop() == 0
        big.stop()


def test_backend_closes_mid_data(pki, good, tmp_path):
    """The backend drops the connection after 354 and the first bytes of
    the message: the client is told 421 (never a success), the backend
    commits nothing, and moat serves the next client."""
    cut = ScriptedBackend("close_in_data").start()
    m = Moat(tmp_path, pki, [listener("cut", cut.addr, tls="none"),
                             listener("cuts", cut.addr),
                             listener("good", good.addr, tls="none")]).start()
    body = b"Subject: cut\r\n\r\n" + b"line of a long message\r\n" * 20000
    try:
        for name, tls in (("cut", False), ("cuts", True)):
            c = (smtplib.SMTP_SSL(*m.addr(name), timeout=10, context=ctx_for(pki))
                 if tls else smtplib.SMTP(*m.addr(name), timeout=10))
            c.ehlo("x.example")
            with pytest.raises((smtplib.SMTPDataError, smtplib.SMTPServerDisconnected,
                                smtplib.SMTPResponseException)) as e:
                c.sendmail("a@example.org", ["alice@example.test"], body)
            code = getattr(e.value, "smtp_code", None)
            assert code in (None, 421), e.value
            try:
                c.close()
            except OSError:
                pass
        assert cut.committed == []
        assert cut.partial == 2
        serves(m, "good")
        assert m.proc.poll() is None
    finally:
        assert m.stop() == 0
        cut.stop()


@pytest.mark.parametrize("mode", ["garbage", "endless", "oversized"])
def test_backend_floods(pki, good, tmp_path, mode):
    """The backend sends garbage, a line without end, or 1 MiB lines: the
    session ends, moat's peak memory stays bounded, others are served."""
    bad = ScriptedBackend(mode, limit=16 << 20).start()
    m = Moat(tmp_path, pki, [listener("bad", bad.addr, tls="none", idle="3s"),
                             listener("bads", bad.addr, idle="3s"),
                             listener("good", good.addr, tls="none")], verbose=0).start()
    try:
        def one(i):
            if i % 2:
                raw = socket.create_connection(m.addr("bads"), timeout=10)
                s = ctx_for(pki).wrap_socket(raw, server_hostname="localhost")
            else:
                s = socket.create_connection(m.addr("bad"), timeout=10)
            with s:
                s.sendall(b"EHLO x.example\r\n")
                try:
                    read_until_close(s, 20)
                except AssertionError:
                    return False
            return True
        with concurrent.futures.ThreadPoolExecutor(10) as ex:
            ended = list(ex.map(one, range(20)))
        assert all(ended), "some sessions did not end"
        serves(m, "good")
        hwm = m.vmhwm_kb()
        print(f"{mode}: moat VmHWM {hwm} kB")
        assert hwm < rss_bound_kb(m), hwm
    finally:
        assert m.stop() == 0
        bad.stop()


# --- clients that misbehave -------------------------------------------------

@pytest.mark.parametrize("kind", ["endless", "oversized"])
def test_client_long_lines(pki, good, tmp_path, kind):
    """A client sends one line that never ends, or many 64 KiB lines:
    moat answers 500/421 and closes, memory stays bounded, and the
    backend never sees the line."""
    m = Moat(tmp_path, pki, [listener("smtp", good.addr, tls="none"),
                             listener("smtps", good.addr)], verbose=0).start()
    try:
        def one(i):
            if i % 2:
                raw = socket.create_connection(m.addr("smtps"), timeout=10)
                s = ctx_for(pki).wrap_socket(raw, server_hostname="localhost")
            else:
                s = socket.create_connection(m.addr("smtp"), timeout=10)
            got = b""
            with s:
                s.settimeout(10)
                got += s.recv(200)            # greeting
                chunk = (b"x" * 65536 if kind == "endless"
                         else b"NOOP " + b"y" * 65530 + b"\r\n")
                try:
                    for _ in range(256):      # at most 16 MiB
                        s.sendall(chunk)
                except (ConnectionError, ssl.SSLError, socket.timeout):
                    pass
                try:
                    got += read_until_close(s, 15)
                except (ConnectionError, ssl.SSLError):
                    pass
            return got
        with concurrent.futures.ThreadPoolExecutor(10) as ex:
            replies = list(ex.map(one, range(20)))
        for r in replies:
            assert r.startswith(b"220 "), r[:100]
            assert b"500 5.5.2" in r or b"421 " in r, r[:300]
        serves(m, "smtp")
        hwm = m.vmhwm_kb()
        print(f"client {kind}: moat VmHWM {hwm} kB")
        assert hwm < rss_bound_kb(m), hwm
    finally:
        assert m.stop() == 0


# --- the events file on a full disk ----------------------------------------

@pytest.fixture
def tiny_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "tiny"
    d.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {p.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def fill(fs: Path) -> None:
    """Takes what is left of the tiny filesystem fs (fs/filler; removing
    it gives the room back)."""
    with open(fs / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_events_on_full_filesystem(pki, good, tmp_path, tiny_fs):
    """The events file lives on a 64 KiB tmpfs that fills up: moat keeps
    rejecting and serving, says so once, counts dropped events in moatctl
    status and moat_events_dropped_total, and leaves no partial line."""
    from moatrun import free_port
    mport = free_port()
    m = Moat(tmp_path / "m", pki, [listener("smtp", good.addr, tls="none")],
             metrics=f"127.0.0.1:{mport}",
             extra='[policy]\ndeny = ["127.0.0.5"]')
    cfg = m.config_path.read_text()
    m.config_path.write_text(cfg.replace(str(tmp_path / "m" / "events.jsonl"),
                                         str(tiny_fs / "events.jsonl")))
    m.start()
    try:
        def denied(n):
            for _ in range(n):
                with socket.socket() as s:
                    s.bind(("127.0.0.5", 0))
                    s.settimeout(10)
                    s.connect(m.addr("smtp"))
                    assert s.recv(200).startswith(b"554 ")
        denied(3)
        assert (tiny_fs / "events.jsonl").stat().st_size > 0
        fill(tiny_fs)
        denied(40)
        serves(m, "smtp")
        m.wait_log("events: cannot write to")
        assert m.log().count("events: cannot write to") == 1
        st = m.ctl("--json", "status")
        assert st.returncode == 0, st.stderr
        ev = json.loads(st.stdout)["events"]
        dropped = ev["dropped"]
        # The events file's last page may still take a few lines.
        assert dropped >= 5 and ev["written"] + dropped >= 43, st.stdout
        # Failing now, since when, and why: in status and as a gauge.
        # A write cut short, or none at all.
        full = ("short write (disk full?)", "No space left on device")
        assert ev["file_failing"]["error"] in full, ev
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                            ev["file_failing"]["since"]), ev
        human = m.ctl("status").stdout
        assert re.search(r"\nevents +\d+ written, \d+ dropped \(failing since "
                         r"\S+Z: (short write \(disk full\?\)|No space left on "
                         r"device)\)", human), human

        def metrics():
            with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                return read_until_close(s, 5).decode()
        text = metrics()
        line = [l for l in text.splitlines() if l.startswith("moat_events_dropped_total ")]
        assert line and int(float(line[0].split()[1])) >= dropped, line
        assert 'moat_events_failing{sink="file"} 1\n' in text
        # Space again: events flow again and moat says so.
        os.unlink(tiny_fs / "filler")
        denied(1)
        m.wait_log("events: writing to")
        assert "file_failing" not in json.loads(m.ctl("--json", "status").stdout)["events"]
        assert "failing" not in m.ctl("status").stdout
        assert 'moat_events_failing{sink="file"} 0\n' in metrics()
        lines = (tiny_fs / "events.jsonl").read_text().splitlines()
        assert json.loads(lines[-1])["event"] == "reject"
        # No half line is left where the disk filled up: every line is
        # one whole event, as a JSON Lines reader (jq, a shipper) needs.
        assert [json.loads(l)["event"] for l in lines] == \
            ["reject"] * len(lines)
    finally:
        assert m.stop() == 0


def test_events_full_disk_cured_by_a_new_file_is_said(pki, good, tmp_path, tiny_fs):
    """The full events file is moved away (off the full disk) and moat
    reopens: the warning about the full disk is followed by a line that
    writing works again; the reopen used to forget the failure, so the
    log's last word on the events file stayed "cannot write". That line
    is a warning too: at log_level "warning" it is there."""
    m = Moat(tmp_path / "m", pki, [listener("smtp", good.addr, tls="none")],
             extra='[policy]\ndeny = ["127.0.0.5"]', verbose=0,
             log_level="warning")
    m.config_path.write_text(m.config_path.read_text().replace(
        str(tmp_path / "m" / "events.jsonl"), str(tiny_fs / "events.jsonl")))
    m.start()
    try:
        def denied():
            with socket.socket() as s:
                s.bind(("127.0.0.5", 0))
                s.settimeout(10)
                s.connect(m.addr("smtp"))
                assert s.recv(200).startswith(b"554 ")
        denied()
        fill(tiny_fs)
        for _ in range(40):
            denied()
        m.wait_log("events: cannot write to")
        shutil.move(str(tiny_fs / "events.jsonl"), str(tmp_path / "events.old"))
        os.unlink(tiny_fs / "filler")
        assert m.ctl("reopen").returncode == 0
        denied()
        m.wait_log("events: writing to %s again (" % (tiny_fs / "events.jsonl"))
    finally:
        assert m.stop() == 0


def test_events_fifo_reader_that_keeps_catching_up(pki, good, tmp_path):
    """An events FIFO whose reader reads, but slower than refusals come:
    writes fail, work, fail again every few events. Each turn was a log
    line, so the log grew with the flood the events file could not keep
    up with; it says at most one warning in 10 s, and every line the
    reader got is one whole event."""
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    fcntl.fcntl(reader, 1031, 4096)          # F_SETPIPE_SZ: one page
    m = Moat(tmp_path / "m", pki, [listener("smtp", good.addr, tls="none")],
             extra='[policy]\ndeny = ["127.0.0.5"]')
    cfg = m.config_path.read_text()
    m.config_path.write_text(cfg.replace(
        str(tmp_path / "m" / "events.jsonl"), str(fifo)))
    got = bytearray()
    stop = threading.Event()

    def slow():
        while not stop.is_set():
            try:
                got.extend(os.read(reader, 300))
            except BlockingIOError:
                pass
            # Slower than moat writes, even under ASan.
            time.sleep(0.002)

    t = threading.Thread(target=slow)
    m.start()
    t.start()
    t0 = time.monotonic()
    try:
        try:
            for _ in range(1500):
                with socket.socket() as s:
                    s.bind(("127.0.0.5", 0))
                    s.settimeout(10)
                    s.connect(m.addr("smtp"))
                    assert s.recv(200).startswith(b"554 ")
        finally:
            stop.set()
            t.join()
        held = 1 + int((time.monotonic() - t0) // 10)
        st = m.ctl("--json", "status")
        assert st.returncode == 0, st.stderr
        dropped = json.loads(st.stdout)["events"]["dropped"]
        lines = bytes(got).splitlines()
        # The reader fell behind and caught up again, many times.
        assert dropped > 0 and len(lines) > 10, (dropped, len(lines))
        assert all(json.loads(l)["event"] == "reject" for l in lines[:-1])
        log = m.log()
        assert 1 <= log.count("events: cannot write to") <= held, log[-3000:]
        assert log.count("events: writing to") <= held, log[-3000:]
    finally:
        assert m.stop() == 0
        os.close(reader)


# --- SIGHUP storm under load ------------------------------------------------

def test_sighup_storm_during_load(pki, tmp_path):
    """50 SIGHUPs while 50 SMTPS sessions deliver mail to a real Postfix:
    every message arrives, moat stays up, and (under ASan) exits clean."""
    require_mailstack()
    ms = MailStack(postfix_proxy="haproxy")
    ms.start()
    m = Moat(tmp_path, pki, [listener("smtps", ms.smtp_addr, backend_proxy="v2")]).start()
    try:
        tag = uuid.uuid4().hex[:8]

        # All 50 go out even when the mail is through sooner (a fast run
        # was over after 7): the reloads counted below must not depend on
        # how quickly Postfix answers.
        def storm():
            for _ in range(50):
                m.signal(signal.SIGHUP)
                time.sleep(0.04)

        def send(i):
            body = (f"Subject: storm {tag} {i}\r\n\r\n" + "line\r\n" * 2000).encode()
            with smtplib.SMTP_SSL(*m.addr("smtps"), timeout=30, context=ctx_for(pki)) as c:
                c.ehlo("storm.example")
                for _ in range(3):
                    c.noop()
                c.sendmail("a@example.org", ["alice@example.test"], body)
            return True

        before = len(ms.maildir_messages("alice"))
        t = threading.Thread(target=storm)
        t.start()
        with concurrent.futures.ThreadPoolExecutor(50) as ex:
            results = list(ex.map(send, range(50)))
        t.join()
        assert all(results)
        ms.wait_for_messages("alice", before + 50, timeout=60)
        got = [x for x in ms.maildir_messages("alice") if tag.encode() in x]
        assert len(got) == 50
        assert m.proc.poll() is None
        assert m.log().count("reload done") >= 10, m.log()[-2000:]
    finally:
        rc = m.stop()
        ms.stop()
        shutil.rmtree(ms.workdir, ignore_errors=True)
    log = m.log()
    assert "Sanitizer" not in log, log[-5000:]
    assert rc == 0, log[-3000:]


# --- client edge cases ---------------------------------------------------------

class BioClient:
    """A TLS client over ssl.MemoryBIO, so a test decides which encrypted
    bytes go to moat and in how many writes."""

    def __init__(self, m: Moat, name: str, pki):
        self.sock = socket.create_connection(m.addr(name), timeout=10)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx_for(pki).wrap_bio(self.inc, self.out,
                                         server_hostname="localhost")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.out.read())
                self._more()
        self.sock.sendall(self.out.read())

    def _more(self) -> None:
        d = self.sock.recv(65536)
        assert d, "moat closed early"
        self.inc.write(d)

    def reply(self) -> bytes:
        got = b""
        while True:
            try:
                got += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._more()
                continue
            lines = got.split(b"\r\n")
            if got.endswith(b"\r\n") and lines[-2][3:4] == b" ":
                return got

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.sock.sendall(self.out.read())

    def to_data(self) -> None:
        assert self.reply().startswith(b"220")
        for cmd, code in ((b"EHLO burst.example", b"250"),
                          (b"MAIL FROM:<a@example.org>", b"250"),
                          (b"RCPT TO:<alice@example.test>", b"250"),
                          (b"DATA", b"354")):
            self.send(cmd + b"\r\n")
            assert self.reply().startswith(code)


def wait_log(m: Moat, text: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while text not in m.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert text in m.log(), m.log()[-2000:]


def burst_body() -> bytes:
    return b"".join(b"line %06d of a message sent in one burst\r\n" % i
                    for i in range(25000))


def test_message_quit_and_close_notify_in_one_burst(pki, good, tmp_path):
    """A client writes the rest of a 1 MiB message, QUIT and its TLS
    close_notify in one go. moat takes the records OpenSSL read ahead
    several at a time; the end of stream right behind them must not cost a
    byte: the backend commits the whole message, and the session ends
    as closed by the client."""
    m = Moat(tmp_path, pki, [listener("burst", good.addr)]).start()
    body = burst_body()
    before = len(good.committed)
    c = None
    try:
        c = BioClient(m, "burst", pki)
        c.to_data()
        c.tls.write(body + b".\r\nQUIT\r\n")
        try:
            c.tls.unwrap()                  # queues close_notify
        except ssl.SSLWantReadError:
            pass
        c.sock.sendall(c.out.read())        # all of it in one write
        deadline = time.monotonic() + 15
        while len(good.committed) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(good.committed) == before + 1
        assert good.committed[-1] == body
        read_until_close(c.sock, 10)
        wait_log(m, "reason=client_closed")
    finally:
        if c is not None:
            c.sock.close()
        assert m.stop() == 0


def test_forged_record_after_good_ones_in_one_burst(pki, good, tmp_path):
    """Good records, then one whose authentication tag fails, in one
    write: what came before the forged record is relayed, the session
    ends as a client error, and the close line keeps OpenSSL's reason
    even though the failure surfaced while records were taken in a
    batch. The backend never sees the message end."""
    m = Moat(tmp_path, pki, [listener("forged", good.addr)]).start()
    # Two records and the forged one: one read of moat's takes them all.
    body = burst_body()[:30000]
    before = len(good.committed)
    c = None
    try:
        c = BioClient(m, "forged", pki)
        c.to_data()
        c.tls.write(body)
        data = c.out.read()
        c.tls.write(b".\r\n")
        forged = bytearray(c.out.read())
        forged[-1] ^= 0x01                  # the tag's last byte
        c.sock.sendall(data + bytes(forged))
        read_until_close(c.sock, 10)
        wait_log(m, "reason=client_error")
        close = [l for l in m.log().splitlines() if "reason=client_error" in l]
        assert "bad record mac" in close[-1] or "decrypt" in close[-1], close
        n = int(close[-1].split("client_in=")[1].split()[0])
        assert n >= len(body), close        # the good records were relayed
        assert len(good.committed) == before
    finally:
        if c is not None:
            c.sock.close()
        assert m.stop() == 0


# --- TLS abuse ----------------------------------------------------------------

def test_huge_client_hello(pki, good, tmp_path):
    """A ClientHello announcing 16 MiB, sent as a stream of full records:
    OpenSSL refuses it early, the session ends as a TLS failure, memory
    stays bounded and the next client is served."""
    m = Moat(tmp_path, pki, [listener("smtps", good.addr),
                             listener("good", good.addr, tls="none")]).start()
    try:
        hello = bytes([1, 0xFF, 0xFF, 0xFF]) + b"\x03\x03" + b"\0" * (16384 - 6)
        filler = b"\0" * 16384
        for _ in range(10):
            s = socket.create_connection(m.addr("smtps"), timeout=10)
            try:
                for i in range(64):              # at most 1 MiB
                    body = hello if i == 0 else filler
                    s.sendall(bytes([22, 3, 1]) + len(body).to_bytes(2, "big") + body)
            except (ConnectionError, socket.timeout):
                pass
            try:
                read_until_close(s, 10)
            except ConnectionError:
                pass
            s.close()
        m.wait_log("tls_fail reason=")
        serves(m, "good")
        with socket.create_connection(m.addr("smtps"), timeout=10) as raw:
            with ctx_for(pki).wrap_socket(raw, server_hostname="localhost") as s:
                assert s.recv(100).startswith(b"220 ")
        assert m.vmhwm_kb() < rss_bound_kb(m)
    finally:
        assert m.stop() == 0


def hello_records(declared: int, split: bool) -> bytes:
    """The start of a ClientHello declaring declared bytes, in one
    record, or with its 4-byte header spread over three records."""
    head = bytes([1]) + declared.to_bytes(3, "big")
    body = b"\x03\x03" + b"\0" * 20
    parts = [head[:1], head[1:3], head[3:] + body] if split else [head + body]
    return b"".join(bytes([22, 3, 1]) + len(p).to_bytes(2, "big") + p
                    for p in parts)


def tls_fail_events(m: Moat) -> list:
    return [e for e in (json.loads(l) for l in
                        (m.workdir / "events.jsonl").read_text().splitlines())
            if e["event"] == "tls_fail"]


@pytest.mark.parametrize("split", [False, True], ids=["one_record", "split"])
def test_client_hello_over_16k_refused_at_once(pki, good, tmp_path, split):
    """A ClientHello header declaring 128 KiB made OpenSSL allocate and
    zero that much at once, then wait for the rest until the handshake
    timeout: 35 bytes held about 170 KB for 10 s. moat refuses a declared
    length over 16 KiB before OpenSSL sees it, however the header is cut
    into records, on implicit-TLS and STARTTLS listeners alike, and ends
    the session as a TLS failure saying why. A partial hello of an
    ordinary size still waits for its rest, and full handshakes work."""
    m = Moat(tmp_path, pki, [listener("smtps", good.addr),
                             listener("mx", good.addr, tls="starttls")]).start()
    try:
        for name in ("smtps", "mx"):
            s = socket.create_connection(m.addr(name), timeout=10)
            if name == "mx":
                for cmd, reply in ((None, b"\r\n"), (b"EHLO client", b"250 "),
                                   (b"STARTTLS", b"220 2.0.0")):
                    if cmd:
                        s.sendall(cmd + b"\r\n")
                    got = b""
                    while reply not in got:
                        d = s.recv(4096)
                        assert d, got
                        got += d
            t0 = time.monotonic()
            s.sendall(hello_records(131000, split))
            read_until_close(s, 9)
            took = time.monotonic() - t0
            s.close()
            assert took < 2, f"{name}: closed after {took:.1f}s"
        m.wait_log('tls_fail reason="client hello too large"')
        fails = tls_fail_events(m)     # (start() probes smtps: an eof)
        assert [e["listener"] for e in fails
                if e["reason"] == "client hello too large"] == ["smtps", "mx"], fails

        # 8 KiB declared: under the bound, so moat waits for the rest.
        with socket.create_connection(m.addr("smtps"), timeout=10) as s:
            s.sendall(hello_records(8192, split))
            s.settimeout(1.5)
            with pytest.raises(socket.timeout):
                s.recv(100)
        # TLS 1.2 (whose Finished travels in a handshake record) and 1.3.
        for top in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = ctx_for(pki)
            ctx.maximum_version = top
            with socket.create_connection(m.addr("smtps"), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    assert s.version() == top.name.replace("v1_", "v1.")
                    assert s.recv(100).startswith(b"220 ")
    finally:
        assert m.stop() == 0


HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891"
                           "c2a211167abb8c5e079e09e2c8a8339c")


def hello_asking_for_retry() -> bytes:
    """A TLS 1.3 ClientHello record with no key share, which a server
    answers with a HelloRetryRequest for X25519."""
    def ext(kind: int, data: bytes) -> bytes:
        return kind.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
    sigalgs = bytes.fromhex("0403080408050806050306010401")
    exts = (ext(0x2b, b"\x02\x03\x04") + ext(0x0a, b"\x00\x02\x00\x1d") +
            ext(0x33, b"\x00\x00") +
            ext(0x0d, len(sigalgs).to_bytes(2, "big") + sigalgs))
    body = (b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32) +
            b"\x00\x02\x13\x01" + b"\x01\x00" +
            len(exts).to_bytes(2, "big") + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


def test_second_client_hello_over_16k_refused_at_once(pki, good, tmp_path):
    """After a HelloRetryRequest the client sends a second ClientHello,
    which OpenSSL would take up to 128 KiB as well: the same bound holds
    for it, whether or not a ChangeCipherSpec comes first, and when the
    client sends it before the HelloRetryRequest has gone out."""
    m = Moat(tmp_path, pki, [listener("smtps", good.addr)]).start()
    ccs = b"\x14\x03\x03\x00\x01\x01"
    try:
        for ahead, with_ccs in ((False, False), (False, True), (True, True)):
            second = (ccs if with_ccs else b"") + hello_records(131000, False)
            s = socket.create_connection(m.addr("smtps"), timeout=10)
            s.sendall(hello_asking_for_retry() + (second if ahead else b""))
            got = b""
            while len(got) < 43:
                d = s.recv(4096)
                assert d, got
                got += d
            assert got[0] == 22 and got[5] == 2 and got[11:43] == HRR_RANDOM, got
            t0 = time.monotonic()
            if not ahead:
                s.sendall(second)
            read_until_close(s, 9)
            took = time.monotonic() - t0
            s.close()
            assert took < 2, f"closed after {took:.1f}s"
        m.wait_log('tls_fail reason="client hello too large"')
        fails = tls_fail_events(m)
        assert [e["listener"] for e in fails
                if e["reason"] == "client hello too large"] == ["smtps"] * 3, fails
        # A real client asked to retry (its first key share is for a
        # group moat does not take) still gets through.
        r = subprocess.run(["openssl", "s_client", "-connect",
                            "127.0.0.1:%d" % m.port("smtps"), "-tls1_3",
                            "-groups", "ffdhe2048:X25519", "-CAfile",
                            str(pki.ca_cert), "-verify_return_error",
                            "-servername", "localhost", "-msg", "-ign_eof",
                            "-crlf"],
                           input="QUIT\n", capture_output=True, text=True,
                           timeout=20)
        assert r.stdout.count(", ClientHello") == 2, r.stdout[:3000]
        assert "220 " in r.stdout and "Verify return code: 0" in r.stdout, \
            r.stdout[-2000:] + r.stderr[-1000:]
    finally:
        assert m.stop() == 0


def starttls_before(pki, tmp_path, mode: str):
    """A scripted backend in mode, and a moat with a STARTTLS listener
    "x" in front of it, for the protocol the mode ends with."""
    b = ScriptedBackend(mode).start()
    m = Moat(tmp_path, pki, [listener("x", b.addr, protocol=mode.split("_")[-1],
                                      tls="starttls")]).start()
    return b, m


def noop_then_starttls(m, smtp: bool):
    """A plaintext client that sends NOOP and STARTTLS (STLS) in one
    write, after the greeting (and EHLO); returns it and what it read."""
    c = socket.create_connection(m.addr("x"), timeout=10)
    got = b""
    while b"\r\n" not in got:
        got += c.recv(4096)
    if smtp:
        c.sendall(b"EHLO client\r\n")
        while b"250 " not in got:
            got += c.recv(4096)
    c.sendall(b"NOOP\r\nSTARTTLS\r\n" if smtp else b"NOOP\r\nSTLS\r\n")
    return c, got


@pytest.mark.parametrize("proto", ["smtp", "pop3"])
def test_unsolicited_backend_reply_ends_the_session(pki, tmp_path, proto):
    """A backend reply no command asked for would be read as the reply to
    the client's next command, and after STARTTLS/STLS it would follow the
    plaintext "ready" line (the injection pattern, from the backend's
    side). Sent with the reply to a command pipelined before STARTTLS, it
    ends the session without a byte after the ready line; at any other
    time with moat's own protocol error line. The backend's 421 or -ERR as
    it hangs up still goes on (test_backend_last_words...)."""
    b, m = starttls_before(pki, tmp_path, "extra_" + proto)
    smtp = proto == "smtp"
    try:
        c, got = noop_then_starttls(m, smtp)
        after = read_until_close(c, 10)
        c.close()
        ready = b"220 2.0.0 Ready to start TLS\r\n" if smtp else \
            b"+OK Begin TLS negotiation\r\n"
        assert after.endswith(ready), after
        assert b"unsolicited" not in after
        m.wait_log("close reason=backend_unsolicited")

        # Outside STARTTLS: moat's protocol error line, not the stray.
        c = socket.create_connection(m.addr("x"), timeout=10)
        got = b""
        while b"\r\n" not in got:
            got += c.recv(4096)
        c.sendall(b"NOOP\r\n")
        after = read_until_close(c, 10)
        c.close()
        assert b"unsolicited" not in after, after
        assert b"backend protocol error" in after, after
    finally:
        assert m.stop() == 0
        b.stop()


@pytest.mark.parametrize("proto", ["smtp", "pop3"])
def test_unsolicited_reply_during_the_handshake_is_not_an_answer(pki, tmp_path,
                                                                 proto):
    """The stray reply comes while the STARTTLS/STLS handshake runs, when
    moat reads nothing from the backend. Read only after the client's
    first command over TLS, it was taken for that command's reply (for
    SMTP, moat's own RSET swallowed it, and the client's EHLO got the
    RSET's "250 ok"). moat reads the backend first once the handshake is
    done, and the session ends instead."""
    b, m = starttls_before(pki, tmp_path, "late_extra_" + proto)
    smtp = proto == "smtp"
    try:
        c, got = noop_then_starttls(m, smtp)
        ready = b"Ready to start TLS\r\n" if smtp else b"Begin TLS negotiation\r\n"
        while ready not in got:
            got += c.recv(4096)
        time.sleep(0.4)     # the stray reaches moat during the handshake
        # The client's first command goes in one write with its last
        # handshake message, so that moat has both when the handshake
        # ends: the race a real client may win.
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        t = ctx_for(pki).wrap_bio(inc, out, server_hostname="localhost")
        while True:
            try:
                t.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out.pending:
                    c.sendall(out.read())
                inc.write(c.recv(65536))
        t.write(b"EHLO client\r\n" if smtp else b"CAPA\r\n")
        c.sendall(out.read())
        after = b""
        c.settimeout(10)
        while True:
            data = c.recv(65536)
            if not data:
                break
            inc.write(data)
            try:
                while (chunk := t.read(65536)):
                    after += chunk
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                pass
        c.close()
        assert b"unsolicited" not in after, after
        assert b"250 ok" not in after and b"scripted" not in after, after
        assert b"backend protocol error" in after, after
        m.wait_log("close reason=backend_unsolicited")
    finally:
        assert m.stop() == 0
        b.stop()
