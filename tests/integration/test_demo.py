"""The README's first command: scripts/demo (after its package install and
build, which .ci/run does anyway) prints and checks the built-in
configuration, puts one message through moat to a private Postfix, reads
it back through moat from a private Dovecot, and stops cleanly when told
to. The built-in configuration's fixed ports (10025, 10110, 10465, 10587,
10995) are below every port slice of ports.py."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import require_mailstack

TOP = Path(__file__).resolve().parents[2]


def test_demo_puts_a_message_through_and_stops(tmp_path):
    require_mailstack()
    env = dict(os.environ, MOAT_DEMO_DIR=str(tmp_path / "demo"))
    p = subprocess.Popen([sys.executable, str(TOP / "scripts" / "demo.py")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=env, text=True, start_new_session=True)
    lines: "queue.Queue[str]" = queue.Queue()
    out = []

    def reader():
        for line in p.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=reader, daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("demo not ready in 90 s:\n" + "".join(out))
            out.append(line)
            assert line, "demo ended early:\n" + "".join(out)
            if line.startswith("== moat keeps running"):
                break
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0, "".join(out)
        while True:
            line = lines.get(timeout=10)
            if not line:
                break
            out.append(line)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    text = "".join(out)
    assert "<built-in configuration>: configuration OK" in text, text
    assert "== the message arrived\n" in text, text
    # The demo's own readiness check leaves no trace: no event, no
    # connection that did not send a message.
    assert '"event"' not in text, text
    assert text.count(" connect listener=") == 2, text
    assert "auth_ok reason=pop3_pass" in text, text
    assert "<6>moat: stopped\n" in text, text
    # The certificate the built-in configuration names was made in place.
    assert (tmp_path / "demo" / "cert.pem").exists()
    assert not list(Path("/tmp").glob(f"moat-demo-{p.pid}"))


def test_demo_that_cannot_start_its_servers_says_why_and_leaves_nothing(tmp_path):
    """Port 10025 taken: Postfix cannot start; the demo exits non-zero
    with Postfix's reason and leaves no directory or server behind."""
    require_mailstack()
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 10025))
        busy.listen()
        p = subprocess.Popen([sys.executable, str(TOP / "scripts" / "demo.py")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=dict(os.environ, MOAT_DEMO_DIR=str(tmp_path / "demo")),
                             text=True, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert p.returncode != 0, out
    assert "port 10025: Address already in use" in out, out
    assert not list(Path("/tmp").glob(f"moat-demo-{p.pid}"))
    assert subprocess.run(["pgrep", "-f", f"moat-demo-{p.pid}"]).returncode == 1
