"""The daemon's life as an operator and the OS see it: how it starts with
odd descriptors and limits, and how it stops.  A scripted backend
(scripted.py) stands behind moat; no mail stack is needed."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from moatrun import Moat, listener
from scripted import ScriptedBackend
from test_faults import tiny_fs  # noqa: F401  (a fixture)


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
        with open(tiny_fs / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
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
    import socket as so
    n = so.socket(so.AF_UNIX, so.SOCK_DGRAM)
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
        with so.create_connection(m.addr("smtp"), timeout=10) as c:
            c.settimeout(10)
            assert c.recv(100).startswith(b"220 ")
        ok(m.ctl("status"))
        m.signal(15)
        assert n.recv(4096) == b"STOPPING=1", m.log()
    finally:
        assert m.stop() == 0, m.log()
        n.close()
