"""Loopback ports for the servers a test starts (moat, Postfix, Dovecot).

A port that bind(0) reports free stays free only until something else takes
it. Integration tests run two at a time (tests/integration/meson.build), and
an outgoing connection of one test can be given, as its local port, a port
that the other test picked for a server that has not bound it yet. So ports
come from below the kernel's ephemeral range, where no outgoing connection
lands, and each test process has a slice of that range to itself: it claims
slice N by holding a lock on a file in the temp directory for as long as it
runs, so the slice is given back even when the process is killed.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from typing import Optional

__all__ = ["free_port"]

_BASE = 20000
_SLICES = 8

_slice: Optional[range] = None     # claimed at the first free_port()
_next = 0


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _claim_slice() -> range:
    """The lock file stays open (the descriptor is never closed) for as
    long as the process runs: that is what holds the slice."""
    size = (_ephemeral_low() - _BASE) // _SLICES
    if size < 64:
        return range(0)     # an unusual port range: bind(0) it is
    for n in range(_SLICES):
        path = os.path.join(tempfile.gettempdir(), f"moat-test-ports.{n}.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            continue        # another user's lock file: not ours to use
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return range(_BASE + n * size, _BASE + (n + 1) * size)
    raise RuntimeError(f"more than {_SLICES} test processes hold a port slice")


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free and that no other test process
    hands out; not the same port twice in one process while others are
    left in its slice."""
    global _slice, _next
    if _slice is None:
        _slice = _claim_slice()
    if len(_slice) == 0:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return s.getsockname()[1]
    for _ in range(len(_slice)):
        port = _slice[_next % len(_slice)]
        _next += 1
        if _bindable(host, port):
            return port
    raise RuntimeError(f"no free port left in {_slice.start}-{_slice.stop - 1}")
