"""200 concurrent TLS sessions through moat, each moving 1 MiB to a sink
backend and 1 MiB back, every byte checked; moat's peak memory (VmHWM) is
printed and must stay bounded.  A scripted sink stands in for Postfix
here: the point is moat's relay, buffers and backpressure, not SMTP.
See issue 3.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import socketserver
import ssl
import struct
import threading

import pytest

from moatrun import Moat, listener

SESSIONS = 200
SIZE = 1 << 20
RSS_LIMIT_KB = 200 * 1024


def recv_exact(sock, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        d = sock.recv(min(65536, n - got))
        if not d:
            raise ConnectionError(f"EOF after {got} of {n} bytes")
        chunks.append(d)
        got += len(d)
    return b"".join(chunks)


def reply_for(digest: bytes, n: int) -> bytes:
    return random.Random(digest).randbytes(n)


class Sink(socketserver.BaseRequestHandler):
    """Reads an 8-byte length and that many bytes; answers with their
    SHA-256 and then as many bytes derived from it."""

    def handle(self):
        s = self.request
        n = struct.unpack("!Q", recv_exact(s, 8))[0]
        h, left = hashlib.sha256(), n
        while left:
            d = s.recv(min(65536, left))
            if not d:
                return
            h.update(d)
            left -= len(d)
        digest = h.digest()
        s.sendall(digest + reply_for(digest, n))


class SinkServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


@pytest.fixture
def sink():
    srv = SinkServer(("127.0.0.1", 0), Sink)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address
    srv.shutdown()
    srv.server_close()


def test_200_sessions_1mib_each(pki, sink, tmp_path):
    m = Moat(tmp_path, pki, [listener("bulk", sink, protocol="pop3", idle="120s")],
             verbose=0).start()
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    errors, done = [], []
    start = threading.Barrier(SESSIONS, timeout=120)

    def client(i: int):
        try:
            payload = os.urandom(SIZE)
            with socket.create_connection(("127.0.0.1", m.port("bulk")), timeout=120) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    start.wait()           # all 200 handshaken and open at once
                    s.sendall(struct.pack("!Q", SIZE) + payload)
                    digest = recv_exact(s, 32)
                    assert digest == hashlib.sha256(payload).digest(), "upload damaged"
                    back = recv_exact(s, SIZE)
                    assert back == reply_for(digest, SIZE), "download damaged"
            done.append(i)
        except Exception as e:      # noqa: BLE001 - collected and reported
            errors.append(f"session {i}: {e!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(SESSIONS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        hwm = m.vmhwm_kb()
        sanitized = m.sanitized()
        print(f"\nmoat VmHWM after {SESSIONS} x {SIZE >> 20} MiB each way: "
              f"{hwm} kB ({hwm / 1024:.1f} MiB)")
    finally:
        assert m.stop() == 0
    assert not errors, errors[:5]
    assert len(done) == SESSIONS
    # AddressSanitizer's quarantine and shadow memory make RSS meaningless.
    if not sanitized:
        assert hwm < RSS_LIMIT_KB, f"moat used {hwm} kB"
