"""[events] syslog = true: each block event goes to /dev/log as one BSD
syslog datagram (or, on a stream socket, a message ended by a NUL), and
a syslog daemon that lags, is absent or restarts never holds up a session
(doc/moat.toml.5, [events]).

/dev/log is not created on the host: moat runs in a mount namespace of its
own (unshare -m) whose /dev is a temporary directory holding null, zero,
urandom and random (bound to the host's) and, where a test wants one, the
test's own AF_UNIX datagram socket at log. The clients are refused by a
deny list holding 127.0.0.1, so no backend is needed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from moatrun import Moat, first_line, free_port, listener

DENY = '[policy]\ndeny = ["127.0.0.1/32"]\n'
DENIED = b"554 5.7.1 Access denied: policy\r\n"
PRI = 2 * 8 + 5                     # LOG_MAIL | LOG_NOTICE
WARNING = "events: syslog (/dev/log) is not keeping up"
ABSENT = "events: syslog (/dev/log) cannot be reached (No such file or directory)"
AGAIN = "events: syslog (/dev/log) takes events again"
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()

# What moat finds under /dev in its namespace. strace -f -e trace=openat
# shows moat itself opens nothing there but /dev/log (OpenSSL takes its
# randomness from getrandom(2)); these are for whatever else may look.
DEV_NODES = ("null", "zero", "urandom", "random")
# $1 is the directory that becomes /dev; the rest is moat's command line.
NAMESPACE = r"""
d=$1; shift
for f in null zero urandom random; do
    mount --bind "/dev/$f" "$d/$f" || exit 111
done
mount --rbind "$d" /dev || exit 111
exec "$@"
"""


@pytest.fixture
def dev():
    """The directory that is /dev for moat (an AF_UNIX path must stay
    under 108 bytes, hence not pytest's long tmp_path)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace")
    if shutil.which("unshare") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but unshare (util-linux) is missing")
        pytest.skip("unshare not found (util-linux)")
    d = Path(tempfile.mkdtemp(prefix="moat-dev-"))
    os.chmod(d, 0o755)
    for name in DEV_NODES:
        (d / name).touch()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start(tmp_path: Path, pki, dev: Path, **opts) -> Moat:
    """moat in its namespace, with /dev/log bound to dev/log. The probe of
    start() that finds the port answering is refused too: its event is the
    first one."""
    backend = ("127.0.0.1", free_port())      # never reached: all denied
    m = Moat(tmp_path, pki, [listener("smtp", backend, tls="none")],
             extra=DENY, events_syslog=True,
             wrap=["unshare", "-m", "--propagation", "private",
                   "sh", "-c", NAMESPACE, "sh", str(dev)], **opts).start()
    assert len(event_lines(m, 1)) == 1
    return m


class Reader:
    """The syslog daemon's end of /dev/log, bound before moat starts."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)

    def recv(self, timeout: float = 5.0) -> dict:
        """The next datagram, split into its BSD syslog parts."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        m = re.fullmatch(rb"<(\d+)>([A-Z][a-z]{2}) ([ 123]\d) "
                         rb"(\d\d):(\d\d):(\d\d) moat\[(\d+)\]: ([^\n]*)",
                         data, re.S)
        assert m, data
        return {"pri": int(m[1]), "date": f"{m[2].decode()} {m[3].decode()}",
                "pid": int(m[7]), "msg": m[8].decode()}

    def drain(self) -> int:
        """Receives what waits, without waiting; returns how many."""
        self.sock.setblocking(False)
        n = 0
        while True:
            try:
                self.sock.recv(65536)
            except BlockingIOError:
                return n
            n += 1

    def close(self) -> None:
        self.sock.close()
        self.path.unlink()


BSD = re.compile(rb"<(\d+)>([A-Z][a-z]{2}) ([ 123]\d) "
                 rb"(\d\d):(\d\d):(\d\d) moat\[(\d+)\]: ([^\n\0]*)", re.S)


class StreamReader:
    """/dev/log as syslog-ng may bind it: a stream listener, where each
    message ends with a NUL."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)
        self.sock.listen(4)
        self.conn = None
        self.buf = b""

    def recv(self, timeout: float = 5.0) -> dict:
        """The next message, split into its BSD syslog parts."""
        if self.conn is None:
            self.sock.settimeout(timeout)
            self.conn, _ = self.sock.accept()
        self.conn.settimeout(timeout)
        while b"\0" not in self.buf:
            data = self.conn.recv(65536)
            assert data, "moat closed the stream"
            self.buf += data
        msg, self.buf = self.buf.split(b"\0", 1)
        m = BSD.fullmatch(msg)
        assert m, msg
        return {"pri": int(m[1]), "pid": int(m[7]), "msg": m[8].decode()}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.sock.close()
        self.path.unlink()


def refused(m: Moat, timeout: float = 5.0) -> bytes:
    """One refused client: the first line moat sends it. A moat that
    stalls fails the read within timeout."""
    with socket.create_connection(m.addr("smtp"), timeout=timeout) as s:
        return first_line(s)


def event_lines(m: Moat, n: int, timeout: float = 10.0) -> list:
    """The events file's lines once it holds at least n."""
    path = m.workdir / "events.jsonl"
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def status(m: Moat) -> dict:
    r = m.ctl("--json", "status")
    assert r.returncode == 0, (r.stdout, r.stderr)
    return json.loads(r.stdout)


def events_line(m: Moat) -> str:
    r = m.ctl("status")
    assert r.returncode == 0, (r.stdout, r.stderr)
    return next(l for l in r.stdout.splitlines() if l.startswith("events "))


def syslog_dates() -> set:
    """ "Mmm dd" of the local date now (and a second later, at midnight)."""
    out = set()
    for t in (time.time(), time.time() + 1):
        tm = time.localtime(t)
        out.add(f"{MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d}")
    return out


def test_events_reach_syslog_as_bsd_datagrams(tmp_path, pki, dev):
    reader = Reader(dev / "log")
    m = start(tmp_path, pki, dev)
    try:
        dates = syslog_dates()
        for _ in range(3):
            assert refused(m) == DENIED
        got = [reader.recv() for _ in range(4)]     # start()'s probe's too
        lines = event_lines(m, 4)
        # The same JSON line as in the events file, one per datagram.
        assert [g["msg"] for g in got] == lines
        assert all(json.loads(l)["reason"] == "denylist" for l in lines)
        for g in got:
            assert g["pri"] == PRI and g["pid"] == m.proc.pid, g
            assert g["date"] in dates | syslog_dates(), g
        assert reader.drain() == 0
        st = status(m)
        assert st["events"]["syslog_dropped"] == 0
        assert st["events"]["written"] == 4
        assert ", 0 not sent to syslog;" in events_line(m)
        assert "events: syslog" not in m.log()
    finally:
        assert m.stop() == 0
        reader.close()


def test_events_reach_a_stream_syslog_nul_ended(tmp_path, pki, dev):
    """syslog-ng may bind /dev/log as a stream socket, where a datagram
    connect fails (EPROTOTYPE): moat connects as a stream and ends each
    message with a NUL, as syslog(3) does. A daemon that restarts (as a
    datagram one this time) is connected to again."""
    reader = StreamReader(dev / "log")
    m = start(tmp_path, pki, dev)
    dgram = None
    try:
        for _ in range(3):
            assert refused(m) == DENIED
        got = [reader.recv() for _ in range(4)]     # start()'s probe's too
        assert [g["msg"] for g in got] == event_lines(m, 4)
        assert all(g["pri"] == PRI and g["pid"] == m.proc.pid for g in got)
        assert reader.buf == b""
        assert status(m)["events"]["syslog_dropped"] == 0
        assert "events: syslog" not in m.log()
        # The daemon restarts with a datagram socket at the same path:
        # the next event finds the stream closed and goes to the new one.
        reader.close()
        reader = None
        dgram = Reader(dev / "log")
        time.sleep(1.2)             # a connect is tried at most once a second
        assert refused(m) == DENIED
        assert dgram.recv()["msg"] == event_lines(m, 5)[-1]
        assert status(m)["events"]["syslog_dropped"] == 0
        assert "events: syslog" not in m.log()
    finally:
        assert m.stop() == 0
        for r in (reader, dgram):
            if r is not None:
                r.close()


def test_lagging_syslog_never_holds_up_sessions(tmp_path, pki, dev):
    """A syslog daemon that reads nothing: its queue fills within a few
    events, and glibc's syslog(3) then blocked every worker. Each refusal
    must still come at once, every event reach the file, the events that
    syslog could not take be counted and the log say so once."""
    reader = Reader(dev / "log")
    mport = free_port()
    m = start(tmp_path, pki, dev, metrics=f"127.0.0.1:{mport}")
    n = 2000
    try:
        t0 = time.monotonic()
        for i in range(n):
            assert refused(m) == DENIED, i
        assert time.monotonic() - t0 < 60
        n += 1                              # start()'s probe
        assert len(event_lines(m, n)) == n
        st = status(m)
        lost = st["events"]["syslog_dropped"]
        assert 0 < lost < n and st["events"]["written"] == n
        # The reader has not read since: sending fails now.
        assert f", {lost} not sent to syslog (failing since " in events_line(m)
        assert "syslog is not keeping up (Resource temporarily unavailable))" \
            in events_line(m), events_line(m)
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics",
                                    timeout=10) as r:
            metrics = r.read().decode()
        assert f"\nmoat_events_syslog_dropped_total {lost}\n" in metrics
        assert m.log().count(WARNING) == 1, m.log()[-3000:]
        # Every event either waits in the reader's queue or was counted.
        assert reader.drain() + lost == n
        # Once the reader catches up, events reach it again.
        assert refused(m) == DENIED
        assert reader.recv()["msg"] == event_lines(m, n + 1)[-1]
        m.wait_log(f"{AGAIN} ({lost} not sent to it so far)")
        assert m.log().count(WARNING) == 1
        assert status(m)["events"]["syslog_dropped"] == lost
    finally:
        assert m.stop() == 0
        reader.close()


def test_syslog_that_keeps_catching_up_is_not_a_log_flood(tmp_path, pki,
                                                         dev):
    """A daemon that reads, but slower than refusals come (journald in a
    flood): each datagram it takes makes room for one more, so sending
    fails, works, fails again every few events. Each of those turns was
    a log line, one for every few refusals, into the journal that was
    already behind; the log says at most one warning in 10 s."""
    reader = Reader(dev / "log")
    m = start(tmp_path, pki, dev)
    got = 0
    stop = threading.Event()

    def slow():
        nonlocal got
        reader.sock.settimeout(0.2)
        while not stop.is_set():
            try:
                reader.sock.recv(65536)
                got += 1
            except OSError:
                pass
            # Slower than moat sends, even under ASan.
            time.sleep(0.002)

    t = threading.Thread(target=slow)
    t.start()
    t0 = time.monotonic()
    try:
        for i in range(1500):
            assert refused(m) == DENIED, i
    finally:
        stop.set()
        t.join()
    try:
        held = 1 + int((time.monotonic() - t0) // 10)
        lost = status(m)["events"]["syslog_dropped"]
        # The reader fell behind and caught up again, many times.
        assert lost > 0 and got > 10, (lost, got)
        log = m.log()
        assert 1 <= log.count(WARNING) <= held, log[-3000:]
        assert log.count(AGAIN) <= held, log[-3000:]
        assert lost + got + reader.drain() == 1501
    finally:
        assert m.stop() == 0
        reader.close()


def test_syslog_started_late_and_restarted(tmp_path, pki, dev):
    """No /dev/log at start (not an error), a syslog daemon that comes up
    later, and one that restarts: moat connects again, at most once a
    second, and a restart costs no event."""
    m = start(tmp_path, pki, dev)
    reader = None
    try:
        assert refused(m) == DENIED
        assert len(event_lines(m, 2)) == 2
        m.wait_log(ABSENT)
        assert status(m)["events"]["syslog_dropped"] == 2
        # Failing now: since when and why, in status.
        down = status(m)["events"]["syslog_failing"]
        assert down["error"] == "cannot be reached (No such file or directory)", down
        assert f"(failing since {down['since']}: syslog cannot be reached (No such " \
            "file or directory))" in events_line(m), events_line(m)
        reader = Reader(dev / "log")
        time.sleep(1.2)             # a connect is tried at most once a second
        assert refused(m) == DENIED
        assert reader.recv()["msg"] == event_lines(m, 3)[-1]
        m.wait_log(f"{AGAIN} (2 not sent to it so far)")
        assert "syslog_failing" not in status(m)["events"]
        assert "failing" not in events_line(m)
        # The daemon restarts: a new socket at the same path.
        reader.close()
        reader = Reader(dev / "log")
        time.sleep(1.2)
        assert refused(m) == DENIED
        assert reader.recv()["msg"] == event_lines(m, 4)[-1]
        assert m.log().count("events: syslog") == 2, m.log()[-3000:]
        assert status(m)["events"]["syslog_dropped"] == 2
    finally:
        assert m.stop() == 0
        if reader is not None:
            reader.close()


def test_reload_turns_syslog_off_and_on(tmp_path, pki, dev):
    """A reload that changes [events] syslog opens a new sink and closes
    the old one (with its socket): off, events stop reaching syslog;
    on again, they come back."""
    reader = Reader(dev / "log")
    m = start(tmp_path, pki, dev)
    on = m.config_path.read_text()
    assert "\nsyslog = true\n" in on
    try:
        assert reader.recv()["msg"] == event_lines(m, 1)[-1]    # the probe
        for text, sent in ((on.replace("\nsyslog = true\n", "\n"), False),
                           (on, True)):
            m.config_path.write_text(text)
            r = m.ctl("reload")
            assert r.returncode == 0, (r.stdout, r.stderr)
            before = len(event_lines(m, 0))
            assert refused(m) == DENIED
            line = event_lines(m, before + 1)[-1]
            if sent:
                assert reader.recv()["msg"] == line
            else:
                # Sent before the line is written, under the same lock.
                assert reader.drain() == 0
            assert ("not sent to syslog" in events_line(m)) == sent
        assert status(m)["events"]["syslog_dropped"] == 0
    finally:
        assert m.stop() == 0
        reader.close()
