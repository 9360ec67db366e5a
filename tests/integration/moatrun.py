"""Running the moat binary in integration tests: a TOML config in a temp
dir, the process, its log, readiness and shutdown.  Python stdlib only.

    m = Moat(tmpdir, pki, [listener(...), ...]).start()
    ... talk to 127.0.0.1:m.port("smtps") ...
    m.stop()      # SIGTERM, then SIGKILL after a grace period

The binary is $MOAT_BUILD_ROOT/proxy/moat (default: build/ in the tree).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

from ports import free_port

__all__ = ["Moat", "listener", "moat_binary", "moatctl_binary", "wait_port",
           "free_port", "first_line", "proxied_hello", "running", "started"]


def moat_binary() -> Path:
    root = os.environ.get("MOAT_BUILD_ROOT")
    if root:
        return Path(root) / "proxy" / "moat"
    return Path(__file__).resolve().parents[2] / "build" / "proxy" / "moat"


def moatctl_binary() -> Path:
    return moat_binary().parent / "moatctl"


def wait_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        try:
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect((host, port))
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port}")
            time.sleep(0.05)


def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def listener(name: str, backend, *, protocol: str = "smtp", tls: str = "implicit",
             backend_proxy: str = "none", listen: Optional[List[str]] = None,
             accept_proxy: bool = False, accept_proxy_from: Optional[List[str]] = None,
             connect: str = "5s", handshake: str = "10s", idle: str = "60s") -> Dict:
    """A [[listener]] as a dict; listen defaults to one free 127.0.0.1 port.
    backend is "host:port" or a (host, port) tuple."""
    if not isinstance(backend, str):
        h, p = backend
        backend = f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
    if listen is None:
        listen = [f"127.0.0.1:{free_port()}"]
    return {"name": name, "listen": listen, "protocol": protocol, "tls": tls,
            "backend": backend, "backend_proxy": backend_proxy,
            "accept_proxy": accept_proxy, "accept_proxy_from": accept_proxy_from or [],
            "timeouts": {"handshake": handshake, "idle": idle, "connect": connect}}


def render_config(workdir: Path, cert, key, listeners: List[Dict], *,
                  min_version: str = "1.2", sni: Optional[List[Dict]] = None,
                  drain: str = "5s", extra: str = "",
                  metrics: Optional[str] = None, firewall="none",
                  events_syslog: bool = False,
                  log_level: Optional[str] = None) -> str:
    """extra is raw TOML ([policy], [ban], ...) placed after the listeners.
    firewall is the [firewall] backend ("none", "nftables", "ipset") or a
    dict of [firewall] keys (e.g. {"backend": "nftables", "create": False}).
    Unless extra sets [policy.rate], every limit is off: tests of other
    features make many connections from one loopback address and must not
    be throttled or banned by moat's defaults. events_syslog sets [events]
    syslog (events then go to /dev/log too: see test_syslog.py for a
    /dev/log of the test's own). log_level sets daemon.log_level (with
    Moat's verbose=0, or -v keeps info)."""
    out = ["[daemon]",
           *([f"log_level = {_q(log_level)}"] if log_level else []),
           f"control_socket = {_q(workdir / 'moat.sock')}",
           f"state_file = {_q(workdir / 'moat.state')}",
           f"drain_timeout = {_q(drain)}",
           *([f"metrics = {_q(metrics)}"] if metrics else []),
           "", "[tls]",
           f"certificate = {_q(cert)}",
           f"key = {_q(key)}",
           f"min_version = {_q(min_version)}"]
    for s in sni or []:
        out += ["", "[[tls.sni]]",
                "names = [" + ", ".join(_q(n) for n in s["names"]) + "]",
                f"certificate = {_q(s['certificate'])}",
                f"key = {_q(s['key'])}"]
    for l in listeners:
        t = l["timeouts"]
        out += ["", "[[listener]]",
                f"name = {_q(l['name'])}",
                "listen = [" + ", ".join(_q(a) for a in l["listen"]) + "]",
                f"protocol = {_q(l['protocol'])}",
                f"tls = {_q(l['tls'])}",
                f"backend = {_q(l['backend'])}",
                f"backend_proxy = {_q(l['backend_proxy'])}",
                f"accept_proxy = {'true' if l['accept_proxy'] else 'false'}",
                "accept_proxy_from = [" + ", ".join(_q(c) for c in l["accept_proxy_from"]) + "]",
                f"timeouts = {{ handshake = {_q(t['handshake'])}, idle = {_q(t['idle'])}, "
                f"connect = {_q(t['connect'])} }}"]
    if "[policy.rate]" not in extra:
        out += ["", "[policy.rate]",
                'connections = { limit = 0, window = "1m" }',
                "concurrent_per_ip = 0",
                'auth_failures = { limit = 0, window = "1m" }']
    if extra:
        out += ["", extra]
    fw = firewall if isinstance(firewall, dict) else {"backend": firewall}
    out += ["", "[firewall]"]
    for k, v in fw.items():
        out.append(f"{k} = " + (("true" if v else "false") if isinstance(v, bool)
                                 else _q(v)))
    out += ["", "[events]", f"file = {_q(workdir / 'events.jsonl')}",
            *(["syslog = true"] if events_syslog else []), ""]
    return "\n".join(out)


class Moat:
    """One moat process with its own config file and log under workdir."""

    def __init__(self, workdir, pki, listeners: List[Dict], *, verbose: int = 1,
                 wrap: Optional[List[str]] = None, **config_opts):
        """wrap: a command line to run moat under (e.g. valgrind ...)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.listeners = {l["name"]: l for l in listeners}
        self.config_path = self.workdir / "moat.toml"
        self.log_path = self.workdir / "moat.log"
        self.config_path.write_text(render_config(
            self.workdir, pki.server_chain, pki.server_key, listeners, **config_opts))
        self.verbose = verbose
        self.wrap = list(wrap or [])
        self.proc: Optional[subprocess.Popen] = None

    def addr(self, name: str, i: int = 0):
        a = self.listeners[name]["listen"][i]
        host, port = a.rsplit(":", 1)
        return host.strip("[]"), int(port)

    def port(self, name: str) -> int:
        return self.addr(name)[1]

    def _spawn(self) -> int:
        """Starts the process; returns where its lines begin in the log."""
        args = self.wrap + [str(moat_binary()), "-c", str(self.config_path)] + \
            ["-v"] * self.verbose
        self._log = open(self.log_path, "ab")
        offset = self._log.tell()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.workdir)
        return offset

    def start(self, timeout: float = 20.0) -> "Moat":
        """Starts moat and returns once it runs. Its ports answer before
        it has opened everything else (the control socket, the events
        file, the workers), and a moat that fails after binding them
        answers for a moment, so with -v the "moat running" line is what
        says it runs."""
        offset = self._spawn()
        deadline = time.monotonic() + timeout
        probes = 0
        for name in self.listeners:
            for i in range(len(self.listeners[name]["listen"])):
                probes += 1
                host, port = self.addr(name, i)
                while True:
                    self._raise_if_exited()
                    try:
                        wait_port(host, port, timeout=0.5)
                        break
                    except TimeoutError:
                        if time.monotonic() > deadline:
                            raise
        while self.verbose > 0 and b"moat running" not in self._log_from(offset):
            self._raise_if_exited()
            if time.monotonic() > deadline:
                raise TimeoutError(f"moat did not say it runs:\n{self.log()[-4000:]}")
            time.sleep(0.02)
        if self.verbose > 0:
            self._settle(probes)
        return self

    def _settle(self, probes: int, timeout: float = 3.0, strict: bool = False) -> None:
        """Waits until the workers, threads of their own, have accepted the
        readiness probes above and ended their sessions, so that a test's
        first status or metrics reading does not race with them. Best
        effort: a moat that cannot be asked (its control socket moved) or
        does not accept (a test of that) is left as it is; strict raises
        instead, for tests that count exactly."""
        import json
        deadline = time.monotonic() + timeout
        settled = 0
        while time.monotonic() < deadline and settled < 2:
            try:
                r = self.ctl("--json", "status", timeout=5)
            except OSError:     # moat_binary() swapped for a wrapper
                if strict:
                    raise
                return
            if r.returncode != 0:
                if strict:
                    raise RuntimeError(f"moatctl status failed: {r.stderr}")
                return
            st = json.loads(r.stdout)
            done = sum(w["accepted"] for w in st.get("workers", [])) >= probes \
                and st.get("sessions") == 0
            # Counts are published once per loop turn of each worker:
            # twice in a row, a little apart.
            settled = settled + 1 if done else 0
            time.sleep(0.02)
        if strict and settled < 2:
            raise TimeoutError(f"the workers did not serve {probes} readiness "
                               f"probes within {timeout} s:\n{self.log()[-2000:]}")

    def run_until_exit(self, timeout: float = 20.0) -> int:
        """Runs moat where it must refuse to start; returns its exit code
        (start() cannot tell, see there)."""
        self._spawn()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._log.close()

    def _raise_if_exited(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"moat exited {self.proc.returncode}:\n{self.log()}")

    def _log_from(self, offset: int) -> bytes:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return b""

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in moat log:\n{text[-4000:]}")
            time.sleep(0.05)

    def vmhwm_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def sanitized(self) -> bool:
        """Whether this moat runs under AddressSanitizer."""
        with open(f"/proc/{self.proc.pid}/maps") as f:
            return "libasan" in f.read()

    @property
    def control_socket(self) -> Path:
        return self.workdir / "moat.sock"

    def ctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Runs moatctl against this moat's control socket."""
        return subprocess.run([str(moatctl_binary()), "-s", str(self.control_socket),
                               *args], capture_output=True, text=True, timeout=timeout)

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; SIGKILL when it does not exit. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def running(m: "Moat"):
    """For a fixture (`yield from running(Moat(...))`): m started, then
    stopped after its tests, which must end in a clean exit (status 0, so
    an ASan report fails the module). Stopped too when what it wraps
    fails, and then the first failure is the one reported."""
    m.start()
    try:
        yield m
    except BaseException:
        m.stop()
        raise
    assert m.stop() == 0, m.log()[-3000:]


# The same as a with-statement, for a moat that lives within one test.
started = contextlib.contextmanager(running)


def first_line(sock) -> bytes:
    """Reads up to and including the first LF; b"" or a partial line when
    the peer closes or resets first (how a refused client is let go)."""
    import ssl
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = sock.recv(512)
            if not chunk:
                break
            data += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    return data


def read_to_end(sock) -> bytes:
    """Everything sock gives until its end of stream, within the socket's
    own timeout; a TLS socket made with suppress_ragged_eofs=False raises
    at an end without close_notify."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def proxied_hello(port: int, ip: str, tls_ctx=None) -> bytes:
    """Connects to an accept_proxy listener on 127.0.0.1:port as ip (a
    PROXY v1 header), with TLS when tls_ctx is given; returns the first
    line moat or the backend sends (b"" when closed without a word)."""
    import ssl
    from mailstack import proxy_v1_header
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(proxy_v1_header(ip, "127.0.0.1", 40000, 25))
        if tls_ctx is None:
            return first_line(s)
        try:
            s = tls_ctx.wrap_socket(s, server_hostname="localhost")
        except (ssl.SSLError, ConnectionError):
            return b""
        with s:
            return first_line(s)


@contextlib.contextmanager
def netns_moat(workdir: Path, config: str, setup: List[List[str]] = ()):
    """A moat alone in a network namespace of its own (loopback up), for
    tests that change what only a namespace may: addresses, sysctls.
    Each command of setup runs in the namespace first; config is the whole
    TOML text and must name workdir/c.sock as its control socket. Yields
    (run, log): run(argv, **kw) runs argv in the namespace, log is moat's
    output file. Skips without root or ip(8)."""
    import secrets
    import shutil
    import pytest
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8) for a network namespace")
    ns = f"moat-t-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)

    def run(argv, **kw):
        return subprocess.run(["ip", "netns", "exec", ns, *argv], **kw)
    p = None
    try:
        run(["ip", "link", "set", "lo", "up"], check=True)
        for argv in setup:
            run(argv, check=True)
        cfg = workdir / "moat.toml"
        cfg.write_text(config)
        log = workdir / "moat.log"
        with open(log, "wb") as f:
            p = subprocess.Popen(["ip", "netns", "exec", ns, str(moat_binary()),
                                  "-c", str(cfg)], stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not (workdir / "c.sock").exists():
            assert p.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "moat did not start"
            time.sleep(0.05)
        yield run, log
    finally:
        if p is not None:
            p.terminate()
            p.wait(15)
        subprocess.run(["ip", "netns", "del", ns], check=False)
