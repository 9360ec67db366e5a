"""The daemon's life as an operator and the OS see it: how it starts with
odd descriptors and limits, and how it stops.  A scripted backend
(scripted.py) stands behind moat; no mail stack is needed."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from types import SimpleNamespace

import pytest

from certs import make_leaf
from moatrun import Moat, listener, moatctl_binary, read_to_end
from scripted import ScriptedBackend
from test_faults import fill, tiny_fs  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def good():
    b = ScriptedBackend("smtp").start()
    yield b
    b.stop()


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_final_save_on_a_full_disk_says_what_is_lost(pki, good, tmp_path,
                                                      tiny_fs):  # noqa: F811
    """The state file's filesystem fills up while moat runs: the periodic
    save says so once, and the last save at stop, which has no retry,
    says again that it failed and what that costs, not that moat will
    retry. It used to be silent when the error had not changed."""
    m = Moat(tmp_path / "m", pki, [listener("smtp", good.addr, tls="none")])
    state = tiny_fs / "moat.state"
    cfg = m.config_path.read_text()
    m.config_path.write_text(cfg.replace(str(tmp_path / "m" / "moat.state"),
                                         str(state)))
    m.start()
    try:
        ok(m.ctl("ban", "192.0.2.1", "1h"))
        deadline = time.monotonic() + 10
        while "192.0.2.1" not in (state.read_text() if state.exists() else ""):
            assert time.monotonic() < deadline, m.log()[-2000:]
            time.sleep(0.05)
        fill(tiny_fs)
        ok(m.ctl("ban", "192.0.2.2", "1h"))
        m.wait_log("cannot write state file")
        ok(m.ctl("ban", "192.0.2.3", "1h"))
    finally:
        rc = m.stop()
    assert rc == 0, m.log()[-2000:]
    tail = m.log().split("shutting down", 1)[1]
    assert "cannot write state file" in tail, tail
    assert "lost to the next start" in tail, tail
    assert "retrying" not in tail, tail
    # The file of the last good save is still whole.
    text = state.read_text()
    assert "\nban 192.0.2.1 " in text and "192.0.2.3" not in text, text


def test_closed_stdio_becomes_dev_null(pki, good, tmp_path):
    """Started with standard input, output and error closed (>&- 2>&-),
    moat puts /dev/null there before it opens anything: the event loops'
    descriptors used to take 0, 1 and 2, and every log line was written
    into the main loop's eventfd."""
    from moatrun import moat_binary, wait_port
    m = Moat(tmp_path, pki, [listener("smtp", good.addr, tls="none")])

    def close_stdio():
        for fd in (0, 1, 2):
            os.close(fd)
    p = subprocess.Popen([str(moat_binary()), "-c", str(m.config_path), "-v"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, preexec_fn=close_stdio)
    try:
        wait_port(*m.addr("smtp"))
        deadline = time.monotonic() + 10
        while m.ctl("status").returncode != 0:
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        fds = {fd: os.readlink(f"/proc/{p.pid}/fd/{fd}") for fd in (0, 1, 2)}
        assert fds == {0: "/dev/null", 1: "/dev/null", 2: "/dev/null"}, fds
    finally:
        p.terminate()
        assert p.wait(15) == 0


@pytest.mark.parametrize("abstract", [False, True])
def test_systemd_hears_ready_and_stopping(pki, good, tmp_path, monkeypatch,
                                         abstract):
    """Under systemd's Type=notify (contrib/systemd/moat.service) moat
    says READY=1 once its ports and control socket answer, so that
    `systemctl start` waits for them and fails with a start that fails,
    and STOPPING=1 when SIGTERM starts the drain. $NOTIFY_SOCKET may name
    a path or an abstract socket (@)."""
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"@moat-test-{os.getpid()}-{time.monotonic_ns()}"
        n.bind("\0" + name[1:])
    else:
        name = str(tmp_path / "notify")
        n.bind(name)
    n.settimeout(15)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    m = Moat(tmp_path / "m", pki, [listener("smtp", good.addr, tls="none")])
    m._spawn()
    try:
        assert n.recv(4096) == b"READY=1", m.log()
        # Ready means serving: the port and the control socket answer.
        with socket.create_connection(m.addr("smtp"), timeout=10) as c:
            assert c.recv(100).startswith(b"220 ")
        ok(m.ctl("status"))
        m.signal(15)
        assert n.recv(4096) == b"STOPPING=1", m.log()
    finally:
        assert m.stop() == 0, m.log()
        n.close()


def _client(m: Moat, name: str, pki, tls: str):
    """A connection to listener name; on implicit TLS one that raises at
    an end of stream without close_notify, so that read_to_end() tells
    an orderly end from a cut."""
    c = socket.create_connection(m.addr(name), timeout=10)
    if tls != "implicit":
        return c
    return ssl.create_default_context(cafile=str(pki.ca_cert)).wrap_socket(
        c, server_hostname="localhost", suppress_ragged_eofs=False)


def _stopped_by_drain(m: Moat, second: bool = False, sig: int = 15) -> None:
    """SIGTERM (or sig); moat exits once drain_timeout (1 s) is over, or
    at once on a second signal (second)."""
    m.signal(sig)
    if second:
        m.wait_log("draining ")
        m.signal(sig)
        m.wait_log("second signal: closing")
    else:
        m.wait_log("drain: grace period over, closing")
    assert m.proc.wait(timeout=20) == 0, m.log()[-3000:]


@pytest.mark.parametrize("workers,second", [(1, False), (2, False), (2, True)])
def test_drain_end_tells_idle_smtp_clients_421(pki, good, tmp_path, workers,
                                               second):
    """RFC 5321 3.8: a server that shuts down should say 421 first. An
    SMTP client between commands when drain_timeout runs out (or a second
    SIGTERM comes) reads the 421 and then an orderly end, on TLS with
    close_notify (it used to read nothing: "unexpected eof"). Each worker
    says it to its own sessions."""
    from test_workers import with_workers
    m = Moat(tmp_path, pki, [listener("smtp", good.addr, tls="none"),
                             listener("smtps", good.addr, tls="implicit")],
             drain="1m" if second else "1s")
    if workers > 1:
        with_workers(m, workers)
    m.start()
    clients = []
    try:
        for i in range(4):
            clients.append(_client(m, "smtp", pki, "none"))
            clients.append(_client(m, "smtps", pki, "implicit"))
        for c in clients:
            f = c.makefile("rb")
            assert f.readline().startswith(b"220 "), m.log()[-2000:]
            c.sendall(b"EHLO drain.example.org\r\n")
            while True:
                line = f.readline()
                assert line.startswith(b"250"), line
                if line[3:4] == b" ":
                    break
            f.close()
        _stopped_by_drain(m, second)
        for c in clients:
            assert read_to_end(c) == \
                b"421 4.3.2 Service shutting down, closing connection\r\n"
    finally:
        for c in clients:
            c.close()
        m.stop()


@pytest.mark.parametrize("tls", ["none", "implicit"])
def test_drain_end_tells_idle_pop3_clients_err(pki, tmp_path, tls):
    """A POP3 client between commands reads -ERR before the end."""
    b = ScriptedBackend("pop3").start()
    m = Moat(tmp_path, pki, [listener("pop3", b.addr, protocol="pop3",
                                      tls=tls)], drain="1s").start()
    try:
        with _client(m, "pop3", pki, tls) as c:
            f = c.makefile("rb")
            assert f.readline().startswith(b"+OK")
            c.sendall(b"NOOP\r\n")
            assert f.readline() == b"+OK\r\n"
            f.close()
            _stopped_by_drain(m)
            assert read_to_end(c) == b"-ERR Service shutting down\r\n"
    finally:
        m.stop()
        b.stop()


def test_control_socket_own_directory_is_made(pki, good, tmp_path):
    """The control socket's own directory (/run/moat by default) is made,
    mode 0750, when missing; only that level (tests/cli shows a deeper
    typo refused)."""
    m = Moat(tmp_path, pki, [listener("smtp", good.addr, tls="none")])
    sock = tmp_path / "run" / "ctl.sock"
    m.config_path.write_text(m.config_path.read_text().replace(
        str(m.control_socket), str(sock)))
    m.start()
    try:
        assert (os.stat(sock.parent).st_mode & 0o777) == 0o750
        assert f"created {sock.parent}" in m.log()
        r = subprocess.run([str(moatctl_binary()), "-s", str(sock), "status"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "sessions" in r.stdout, r
    finally:
        assert m.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGINT])
def test_sigquit_and_sigint_drain_like_sigterm(pki, good, tmp_path, sig):
    """SIGQUIT (nginx's graceful stop, Ctrl-\\ in a terminal) used to keep
    its default action: a core dump that cut every session and the bans
    of the last two seconds. It drains as SIGTERM does, then saves."""
    m = Moat(tmp_path, pki, [listener("smtp", good.addr, tls="none")],
             drain="1s").start()
    try:
        ok(m.ctl("ban", "192.0.2.7", "1h"))
        with _client(m, "smtp", pki, "none") as c:
            f = c.makefile("rb")
            assert f.readline().startswith(b"220 ")
            f.close()
            _stopped_by_drain(m, sig=sig)
            assert read_to_end(c) == \
                b"421 4.3.2 Service shutting down, closing connection\r\n"
    finally:
        m.stop()
    assert m.proc.returncode == 0, m.log()[-2000:]
    assert "stopped" in m.log()
    assert "\nban 192.0.2.7 " in (tmp_path / "moat.state").read_text()


def test_drain_end_adds_nothing_to_a_reply_half_relayed(pki, tmp_path):
    """A client that asked for a large message and does not read it holds
    part of the reply in moat's buffers when drain_timeout runs out: moat
    still exits at once (its one goodbye try does not wait), and what
    the client reads is a byte-exact prefix of the backend's reply. (Its
    socket is full, so a wrongly added line could not be written here
    anyway: the half-reply test below is the one that catches that.)"""
    from scripted import BIG_RETR
    b = ScriptedBackend("big_retr").start()
    m = Moat(tmp_path, pki, [listener("pop3", b.addr, protocol="pop3",
                                      tls="none")], drain="1s").start()
    try:
        with socket.create_connection(m.addr("pop3"), timeout=10) as c:
            f = c.makefile("rb")
            assert f.readline().startswith(b"+OK")
            f.close()
            c.sendall(b"RETR 1\r\n")
            time.sleep(1)           # moat's buffer and the sockets fill up
            _stopped_by_drain(m)
            got = read_to_end(c)
        want = b"+OK message follows\r\n"
        n = 0
        while len(want) < len(got):
            want += b"".join(b"%08d " % j + b"x" * 89 + b"\r\n"
                             for j in range(n, n + 1000))
            n += 1000
        assert 0 < len(got) < BIG_RETR
        assert got == want[:len(got)], \
            f"not a prefix of the reply; its end: {got[-120:]!r}"
    finally:
        m.stop()
        b.stop()


@pytest.mark.parametrize("tls", ["none", "implicit"])
def test_drain_end_says_421_before_the_backend_greets(pki, tmp_path, tls):
    """A client still waiting for the backend's greeting has read nothing:
    the 421 stands in for the greeting, as when the backend fails."""
    b = ScriptedBackend("stall").start()
    m = Moat(tmp_path, pki, [listener("smtp", b.addr, tls=tls,
                                      connect="1m")], drain="1s").start()
    try:
        with _client(m, "smtp", pki, tls) as c:
            # Start's readiness probe has a connect line of its own,
            # logged maybe after this client connected: wait for both.
            deadline = time.monotonic() + 10
            while m.log().count("connect listener=smtp") < 2:
                assert time.monotonic() < deadline, m.log()[-3000:]
                time.sleep(0.02)
            _stopped_by_drain(m)
            assert read_to_end(c) == \
                b"421 4.3.2 Service shutting down, closing connection\r\n"
    finally:
        m.stop()
        b.stop()


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
@pytest.mark.parametrize("end", ["drain", "idle"])
def test_drain_end_adds_nothing_to_a_reply_the_backend_left_half(
        pki, tmp_path, protocol, end):
    """The backend sent part of a reply (lines of a multi-line EHLO reply,
    the status line and a few lines of a RETR) and then nothing: the
    client has read them all when drain_timeout (or the idle timeout)
    runs out, and a line of moat's would read as the rest of that reply.
    It gets none, only the end of stream."""
    from scripted import HALF_LINES
    b = ScriptedBackend("half_" + protocol).start()
    m = Moat(tmp_path, pki, [listener("x", b.addr, protocol=protocol,
                                      tls="none",
                                      idle="2s" if end == "idle" else "60s")],
             drain="1s").start()
    try:
        with socket.create_connection(m.addr("x"), timeout=10) as c:
            f = c.makefile("rb")
            f.readline()            # the greeting
            if protocol == "smtp":
                c.sendall(b"EHLO drain.example.org\r\n")
                # moat holds an EHLO reply's last line back while it
                # rewrites the reply.
                want = b"".join(b"250-line %d\r\n" % j
                                for j in range(HALF_LINES - 1))
            else:
                c.sendall(b"RETR 1\r\n")
                want = b"+OK message follows\r\n" + b"".join(
                    b"line %d\r\n" % j for j in range(HALF_LINES))
            got = b""
            while len(got) < len(want):
                got += f.read1(65536)
            assert got == want
            f.close()
            if end == "drain":
                _stopped_by_drain(m)
            assert read_to_end(c) == b""
            if end == "idle":
                m.wait_log("reason=idle_timeout")
    finally:
        m.stop()
        b.stop()


def test_certificate_that_expires_while_moat_runs_is_warned_of(pki, tmp_path):
    """The start warns of a certificate with less than a day left; when
    it then expires, with moat running, the log says so (it used to say
    nothing until the next reload), naming the file. Once, and a day at a
    time before: test_certwatch.c."""
    now = time.time()
    stamp = lambda t: time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t))  # noqa: E731
    leaf = make_leaf(pki.dir, "soon", pki.names, pki.key_type, ["127.0.0.1"],
                     startdate=stamp(now - 3600), enddate=stamp(now + 6))
    soon = SimpleNamespace(server_chain=leaf.chain, server_key=leaf.key)
    b = ScriptedBackend("smtp").start()
    m = Moat(tmp_path, soon, [listener("smtps", b.addr)]).start()
    try:
        m.wait_log("in less than a day")
        log = m.wait_log("expired on", timeout=30)
        line = next(l for l in log.splitlines() if "expired on" in l)
        assert f"certificate 'default' ({leaf.chain})" in line, line
        assert "renew it and reload moat" in line, line
    finally:
        assert m.stop() == 0
        b.stop()
