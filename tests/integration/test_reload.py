"""SIGHUP reload with sessions in flight: established sessions finish under
the config they started with, new ones get the new config; a broken
config keeps the running one and says why."""
from __future__ import annotations

import signal
import socket

import pytest

from conftest import require_mailstack
from mailstack import MailStack, proxy_v1_header
from moatrun import Moat, listener

N = 20


@pytest.fixture(scope="module")
def stack():
    require_mailstack()
    s = MailStack(postfix_proxy="haproxy").start()
    yield s
    s.stop()


class Smtp:
    """A raw SMTP client behind a PROXY v1 header, one reply at a time."""

    def __init__(self, port: int, ip: str):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.s.sendall(proxy_v1_header(ip, "127.0.0.1", 40000, 25))
        self.buf = b""

    def reply(self) -> bytes:
        """One complete (possibly multi-line) reply."""
        while True:
            lines = self.buf.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if len(line) >= 4 and line[3:4] == b" ":
                    out = b"\r\n".join(lines[:i + 1]) + b"\r\n"
                    self.buf = b"\r\n".join(lines[i + 1:])
                    return out
            chunk = self.s.recv(4096)
            if not chunk:
                return self.buf
            self.buf += chunk

    def cmd(self, line: bytes) -> bytes:
        self.s.sendall(line + b"\r\n")
        return self.reply()

    def close(self):
        self.s.close()


def start(tmp_path, pki, stack):
    return Moat(tmp_path, pki, [listener("smtp", stack.smtp_addr, tls="none",
                                         backend_proxy="v1", accept_proxy=True,
                                         accept_proxy_from=["127.0.0.0/8"])]).start()


def test_sessions_survive_reload_that_denies_them(tmp_path, pki, stack):
    stack.clear_maildir("alice")
    m = start(tmp_path, pki, stack)
    port = m.port("smtp")
    try:
        # 20 sessions from 192.0.2.0/24, greeted and mid-transaction.
        sessions = []
        for i in range(N):
            c = Smtp(port, f"192.0.2.{i + 1}")
            assert c.reply().startswith(b"220 ")
            assert c.cmd(b"EHLO client%d.example" % i).startswith(b"250")
            assert c.cmd(b"MAIL FROM:<s%d@example.org>" % i).startswith(b"250")
            sessions.append(c)
        m.config_path.write_text(m.config_path.read_text().replace(
            "[policy.rate]", '[policy]\ndeny = ["192.0.2.0/24"]\n\n[policy.rate]'))
        m.signal(signal.SIGHUP)
        m.wait_log("reload done")
        # New connections from the range are refused now...
        c = Smtp(port, "192.0.2.200")
        assert c.reply() == b"554 5.7.1 Access denied: policy\r\n"
        c.close()
        # ...but every session already running completes its mail.
        for i, c in enumerate(sessions):
            assert c.cmd(b"RCPT TO:<alice@example.test>").startswith(b"250")
            assert c.cmd(b"DATA").startswith(b"354")
            assert c.cmd(b"Subject: reload %d\r\n\r\nbody %d\r\n." % (i, i)) \
                .startswith(b"250")
            assert c.cmd(b"QUIT").startswith(b"221")
            c.close()
        msgs = stack.wait_for_messages("alice", N, timeout=30)
        subjects = {line for msg in msgs for line in msg.split(b"\n")
                    if line.startswith(b"Subject: reload ")}
        assert len(subjects) == N
        # Others still get through.
        c = Smtp(port, "198.51.100.7")
        assert c.reply().startswith(b"220 ")
        c.close()
    finally:
        assert m.stop() == 0


def test_broken_reload_keeps_running_config(tmp_path, pki, stack):
    m = start(tmp_path, pki, stack)
    port = m.port("smtp")
    try:
        text = m.config_path.read_text().replace(
            "[policy.rate]", '[policy]\ndeny = ["192.0.2.0/24"]\n\n[policy.rate]')
        m.config_path.write_text(text)
        m.signal(signal.SIGHUP)
        m.wait_log("reload done")
        # Broken: an invalid CIDR and a wrong type.
        m.config_path.write_text(text.replace(
            'deny = ["192.0.2.0/24"]', 'deny = ["192.0.2.0/24", "10.0.0.300/8"]')
            .replace("[daemon]\n", "[daemon]\nworkers = \"many\"\n"))
        m.signal(signal.SIGHUP)
        log = m.wait_log("keeping the running configuration")
        assert 'invalid address or CIDR "10.0.0.300/8"' in log
        assert "daemon.workers must be an integer" in log
        assert "moat.toml:" in log
        # The old config is in force: the deny list of the last good load.
        c = Smtp(port, "192.0.2.9")
        assert c.reply().startswith(b"554 ")
        c.close()
        c = Smtp(port, "10.1.2.3")
        assert c.reply().startswith(b"220 ")
        c.close()
        # moatctl reload reports the same errors.
        r = m.ctl("reload")
        assert r.returncode == 1
        assert "10.0.0.300/8" in r.stderr and "daemon.workers" in r.stderr
    finally:
        assert m.stop() == 0
