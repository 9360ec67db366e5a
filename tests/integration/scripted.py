"""A small scripted backend for what a real Postfix or Dovecot will not do
(STYLE.md section 9): stall after accepting, close in the middle of DATA,
send garbage, endless or oversized lines, or hold thousands of idle
connections at once.  Python stdlib only (asyncio in a thread).

    b = ScriptedBackend("smtp").start()      # or "pop3", "stall", ...
    ... listener("x", b.addr) ...
    b.committed        # messages whose DATA ended with <CRLF>.<CRLF>
    b.stop()

Modes:
  smtp          greeting, 250 to everything, DATA until <CRLF>.<CRLF> then
                "250 queued" (the message is committed), QUIT -> 221
  pop3          +OK greeting, +OK to everything, QUIT -> +OK and close
  slow_pass     like pop3, but a PASS fails, after a second (as Dovecot
                holds failures back)
  batch_pass    like pop3, but a PASS fails unless its password is
                "right", and the replies to pipelined commands go out in
                one write (as a server that checks passwords at once may)
  big_retr      like pop3, but RETR sends a message of BIG_RETR bytes
  half_pop3     like pop3, but RETR sends +OK and HALF_LINES lines of the
                message, then nothing more
  half_smtp     like smtp, but EHLO gets the first HALF_LINES lines of a
                multi-line reply, then nothing more
  stall         accepts and never sends a byte
  hangup        accepts and closes at once, without a byte
  reset         accepts and resets at once (SO_LINGER 0), without a byte
  late_hangup, late_reset  the same after half a second
  reset_in_xclient  greeting, reads one line (moat's EHLO), then resets
  late_smtp     like smtp, but greets only after half a second
  close_in_data like smtp, but closes after 354 and the first DATA bytes,
                never committing the message
  extra_smtp    like smtp, but NOOP gets a second, unsolicited reply
  extra_pop3    like pop3, but NOOP gets a second, unsolicited +OK
  late_extra_smtp, late_extra_pop3  the same, the second a tenth of a
                second after the first
  garbage       greeting, then random bytes (no CR/LF structure) forever
  endless       greeting, then one line that never ends
  oversized     greeting, then lines of 1 MiB each with CRLF, forever
The flooding modes send at most `limit` bytes per connection (default
64 MiB) so a broken proxy cannot make a test run forever.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
from typing import List, Optional, Tuple

__all__ = ["ScriptedBackend", "BIG_RETR", "HALF_LINES"]

# The message big_retr sends for RETR: lines of 100 bytes, CRLF included.
BIG_RETR = 20 * 1000 * 1000
# What half_pop3 and half_smtp send of a reply before they stall.
HALF_LINES = 3


class ScriptedBackend:
    def __init__(self, mode: str = "smtp", host: str = "127.0.0.1",
                 limit: int = 64 << 20):
        self.mode = mode
        self.host = host
        self.limit = limit
        self.committed: List[bytes] = []
        self.partial = 0            # DATA phases that ended without the dot
        self.connections = 0
        self.open = 0
        self.sent = 0
        self.addr: Tuple[str, int] = (host, 0)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._server = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._lock = threading.Lock()

    # --- life cycle --------------------------------------------------
    def start(self) -> "ScriptedBackend":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("scripted backend did not start")
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, self.host, 0, backlog=4096,
                                 limit=1 << 20))
        self.addr = self._server.sockets[0].getsockname()[:2]
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        self._loop.run_until_complete(self._server.wait_closed())
        for t in asyncio.all_tasks(self._loop):
            t.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # --- sessions ----------------------------------------------------
    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter):
        with self._lock:
            self.connections += 1
            self.open += 1
        try:
            await getattr(self, "_mode_" + self.mode)(r, w)
        except (ConnectionError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            with self._lock:
                self.open -= 1
            w.close()

    async def _send(self, w, data: bytes) -> None:
        w.write(data)
        self.sent += len(data)
        await w.drain()

    async def _extra(self, w, reply: bytes, stray: bytes, late: float) -> None:
        """reply, then stray: in one write, or late seconds after."""
        if late == 0:
            await self._send(w, reply + stray)
            return
        await self._send(w, reply)
        await asyncio.sleep(late)
        await self._send(w, stray)

    async def _mode_stall(self, r, w):
        while await r.read(65536):
            pass

    @staticmethod
    def _reset(w) -> None:
        """Drops the connection with SO_LINGER 0: the peer reads a reset
        (ECONNRESET), not an end of stream."""
        w.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()

    async def _mode_hangup(self, r, w):
        return                      # _handle closes: an end of stream

    async def _mode_reset(self, r, w):
        self._reset(w)

    async def _mode_late_hangup(self, r, w):
        await asyncio.sleep(0.5)

    async def _mode_late_reset(self, r, w):
        await asyncio.sleep(0.5)
        self._reset(w)

    async def _mode_reset_in_xclient(self, r, w):
        await self._send(w, b"220 scripted ESMTP ready\r\n")
        await r.readline()          # EHLO
        self._reset(w)

    async def _stall(self, r, w, data: bytes) -> None:
        """Sends data, then nothing more while the peer stays."""
        await self._send(w, data)
        while await r.read(65536):
            pass

    async def _mode_pop3(self, r, w, slow_pass: bool = False,
                         big_retr: bool = False, extra: bool = False,
                         late: float = 0.0, half: bool = False):
        await self._send(w, b"+OK scripted POP3 ready\r\n")
        while True:
            line = await r.readline()
            if not line:
                return
            if slow_pass and line.upper().startswith(b"PASS"):
                await asyncio.sleep(1.0)
                await self._send(w, b"-ERR [AUTH] Authentication failed.\r\n")
            elif line.upper().startswith(b"QUIT"):
                await self._send(w, b"+OK bye\r\n")
                return
            elif half and line.upper().startswith(b"RETR"):
                await self._stall(r, w, b"+OK message follows\r\n" + b"".join(
                    b"line %d\r\n" % j for j in range(HALF_LINES)))
                return
            elif big_retr and line.upper().startswith(b"RETR"):
                await self._send(w, b"+OK message follows\r\n")
                for i in range(0, BIG_RETR // 100, 1000):
                    await self._send(w, b"".join(
                        b"%08d " % j + b"x" * 89 + b"\r\n"
                        for j in range(i, i + 1000)))
                await self._send(w, b".\r\n")
            elif line.upper().startswith(b"STAT"):
                await self._send(w, b"+OK 0 0\r\n")
            elif extra and line.upper().startswith(b"NOOP"):
                await self._extra(w, b"+OK\r\n", b"+OK unsolicited\r\n", late)
            else:
                await self._send(w, b"+OK\r\n")

    async def _mode_batch_pass(self, r, w):
        await self._send(w, b"+OK scripted POP3 ready\r\n")
        buf = b""
        while True:
            data = await r.read(65536)
            if not data:
                return
            buf += data
            out = b""
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.upper().startswith(b"PASS"):
                    out += b"+OK\r\n"
                elif line.rstrip() == b"PASS right":
                    out += b"+OK Logged in.\r\n"
                else:
                    out += b"-ERR [AUTH] Authentication failed.\r\n"
            await self._send(w, out)

    async def _mode_slow_pass(self, r, w):
        await self._mode_pop3(r, w, slow_pass=True)

    async def _mode_big_retr(self, r, w):
        await self._mode_pop3(r, w, big_retr=True)

    async def _mode_half_pop3(self, r, w):
        await self._mode_pop3(r, w, half=True)

    async def _mode_extra_pop3(self, r, w):
        await self._mode_pop3(r, w, extra=True)

    async def _mode_late_extra_pop3(self, r, w):
        await self._mode_pop3(r, w, extra=True, late=0.1)

    async def _smtp(self, r, w, close_in_data: bool, extra: bool = False,
                    late: float = 0.0, half: bool = False):
        await self._send(w, b"220 scripted ESMTP ready\r\n")
        while True:
            line = await r.readline()
            if not line:
                return
            cmd = line.upper()
            if cmd.startswith(b"QUIT"):
                await self._send(w, b"221 bye\r\n")
                return
            if half and cmd.startswith(b"EHLO"):
                await self._stall(r, w, b"".join(
                    b"250-line %d\r\n" % j for j in range(HALF_LINES)))
                return
            if cmd.startswith(b"EHLO"):
                await self._send(w, b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif cmd.startswith(b"DATA"):
                await self._send(w, b"354 go ahead\r\n")
                if close_in_data:
                    await r.read(1)          # the first bytes of the message
                    with self._lock:
                        self.partial += 1
                    return                  # drop the connection: no commit
                body = []
                while True:
                    l2 = await r.readline()
                    if not l2:
                        with self._lock:
                            self.partial += 1
                        return
                    if l2 == b".\r\n":
                        break
                    body.append(l2)
                with self._lock:
                    self.committed.append(b"".join(body))
                await self._send(w, b"250 2.0.0 queued\r\n")
            elif extra and cmd.startswith(b"NOOP"):
                await self._extra(w, b"250 ok\r\n", b"250 unsolicited\r\n", late)
            else:
                await self._send(w, b"250 ok\r\n")

    async def _mode_smtp(self, r, w):
        await self._smtp(r, w, False)

    async def _mode_half_smtp(self, r, w):
        await self._smtp(r, w, False, half=True)

    async def _mode_extra_smtp(self, r, w):
        await self._smtp(r, w, False, extra=True)

    async def _mode_late_extra_smtp(self, r, w):
        await self._smtp(r, w, False, extra=True, late=0.1)

    async def _mode_late_smtp(self, r, w):
        await asyncio.sleep(0.5)
        await self._smtp(r, w, False)

    async def _mode_close_in_data(self, r, w):
        await self._smtp(r, w, True)

    async def _flood(self, w, chunk_fn):
        await self._send(w, b"220 scripted ESMTP ready\r\n")
        sent = 0
        while sent < self.limit:
            c = chunk_fn()
            await self._send(w, c)
            sent += len(c)

    async def _mode_garbage(self, r, w):
        def chunk():
            return bytes(b for b in os.urandom(65536) if b not in (10, 13))
        await self._flood(w, chunk)

    async def _mode_endless(self, r, w):
        await self._flood(w, lambda: b"x" * 65536)

    async def _mode_oversized(self, r, w):
        await self._flood(w, lambda: b"250-" + b"y" * ((1 << 20) - 6) + b"\r\n")
