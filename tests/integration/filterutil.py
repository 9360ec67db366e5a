"""Helpers for the SMTP/POP3 filter tests (issue 4): a moat with extra
listener keys (require_tls, max_line), STARTTLS clients, event reading."""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path
from typing import Dict, List

from moatrun import Moat


def moat_with(workdir, pki, listeners: List[Dict], extra: Dict[str, Dict] = None,
              **opts) -> Moat:
    """A Moat whose listeners get extra keys, e.g. {"sub": {"require_tls": True}}."""
    m = Moat(workdir, pki, listeners, **opts)
    text = m.config_path.read_text()
    for name, keys in (extra or {}).items():
        needle = f'name = "{name}"\n'
        assert needle in text, name
        add = "".join(f"{k} = {'true' if v is True else 'false' if v is False else v}\n"
                      for k, v in keys.items())
        text = text.replace(needle, needle + add, 1)
    m.config_path.write_text(text)
    return m


def client_ctx(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_cert))


class Line:
    """A tiny line client over a socket that can switch to TLS."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        i = self.buf.index(b"\n") + 1
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def smtp_reply(self) -> List[bytes]:
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return lines

    def pop3_multi(self) -> List[bytes]:
        first = self.line()
        lines = [first]
        if first.startswith(b"+OK"):
            while lines[-1] != b".\r\n":
                lines.append(self.line())
        return lines

    def starttls(self, pki) -> None:
        assert self.buf == b"", f"unexpected bytes before the handshake: {self.buf!r}"
        self.sock = client_ctx(pki).wrap_socket(self.sock, server_hostname="localhost")

    def pending(self, wait: float = 0.5) -> bytes:
        """Whatever arrives within wait seconds (nothing expected)."""
        self.sock.settimeout(wait)
        data = self.buf
        self.buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, ssl.SSLError, TimeoutError):
            pass
        finally:
            self.sock.settimeout(10)
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def events(m: Moat) -> List[Dict]:
    p = Path(m.workdir) / "events.jsonl"
    if not p.exists():
        return []
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]


def wait_events(m: Moat, pred, n: int = 1, timeout: float = 10.0) -> List[Dict]:
    deadline = time.monotonic() + timeout
    while True:
        got = [e for e in events(m) if pred(e)]
        if len(got) >= n:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{n} matching events not seen: {events(m)}\n"
                                 f"moat log:\n{m.log()[-3000:]}")
        time.sleep(0.1)
