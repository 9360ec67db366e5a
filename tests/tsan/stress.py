#!/usr/bin/env python3
"""A bounded concurrency stress of one moat (built with -Db_sanitize=thread)
for ThreadSanitizer: every path that threads share, at once.

Runs in a network namespace of its own (re-executes itself under
`unshare -n`), so the nftables writer may create its table there and all
traffic stays on that namespace's loopback. Starts a private Postfix and
Dovecot (tests/integration/mailstack.py) and moat with `workers` worker
threads, then, until --seconds have passed:

  * client threads: SMTP and POP3 over implicit TLS (resuming with
    session tickets, whose keys rotate every 5 s) and STARTTLS/STLS from
    source addresses 127.0.0.2..127.0.0.31 (good and bad passwords, a
    message now and then, handshakes cut short), and plain SMTP with PROXY
    headers from 192.0.2.x, 198.18.0.0/16 and 2001:db8::x, so that rate,
    concurrency, auth-failure, geo and session-cap limits trip, the
    windows' table evicts, and bans are made on every worker at once;
  * moatctl ban / unban / bans / status / tail in a loop, with bursts
    that fill the ban table;
  * metrics scrapes in a loop;
  * SIGHUP or `moatctl reload` every few seconds with a config that
    changes limits, allow and deny lists, countries, ban lengths and
    table sizes, max_sessions, a listener added or removed, and the
    [firewall] table (which parks the workers); SIGUSR1 now and then
    (events file reopened);
  * the state file is saved as bans come;

and then SIGTERM while the clients still run (drain; with an even seed a
second SIGTERM ends it early). Exits 0 when moat exited 0 (a TSan report
makes it exit 66) and served and reloaded something. ThreadSanitizer
writes its reports where TSAN_OPTIONS says; tests/integration/
test_tsan_stress.py runs this for CI.

  unshare is done for you; as root, from a -Db_sanitize=thread build:
  TSAN_OPTIONS="halt_on_error=0 log_path=/tmp/tsan-moat \\
    suppressions=$PWD/tests/tsan.supp" MOAT_BUILD_ROOT=$PWD/build-tsan \\
    /usr/bin/python3 tests/tsan/stress.py --workers 2 --seconds 300
"""
from __future__ import annotations

import argparse
import base64
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from certs import make_pki  # noqa: E402
from conftest import make_test_mmdb  # noqa: E402
from mailstack import MailStack, proxy_v1_header  # noqa: E402
from moatrun import (Moat, free_port, listener, moatctl_binary,
                     render_config)  # noqa: E402


def lb(name, backend, **kw):
    return listener(name, backend, backend_proxy="v1", accept_proxy=True,
                    accept_proxy_from=["127.0.0.0/8"], **kw)


class Stats:
    def __init__(self):
        self.mu = threading.Lock()
        self.n = {}

    def add(self, k):
        with self.mu:
            self.n[k] = self.n.get(k, 0) + 1


def readline(f) -> bytes:
    return f.readline(4096)


def smtp_reply(f) -> bytes:
    out = b""
    while True:
        line = readline(f)
        out += line
        if len(line) < 4 or line[3:4] != b"-":
            return out


class Run:
    def __init__(self, args, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.stop = threading.Event()
        self.stats = Stats()
        self.rng = random.Random(args.seed)

    # ----------------------------------------------------------- config
    def start(self):
        self.stack = MailStack(postfix_proxy="haproxy",
                               dovecot_proxy=True).start()
        self.pki = make_pki(self.workdir / "pki")
        s, p = self.stack.smtp_addr, self.stack.pop3_addr
        self.ls = [
            listener("smtps", s, backend_proxy="v1", tls="implicit"),
            listener("smtp", s, backend_proxy="v1", tls="starttls"),
            listener("pop3s", p, backend_proxy="v1", tls="implicit",
                     protocol="pop3"),
            listener("pop3", p, backend_proxy="v1", tls="starttls",
                     protocol="pop3"),
            lb("lb", s, tls="none"),
        ]
        self.extra_ls = lb("lb2", s, tls="none",
                           listen=[f"127.0.0.1:{free_port()}"])
        self.mmdb = make_test_mmdb(self.workdir / "geo.mmdb")
        for l in self.ls + [self.extra_ls]:
            l["timeouts"]["idle"] = "10m"
            l["listen"] = [l["listen"][0].replace("127.0.0.1", "0.0.0.0")]
        self.mport = free_port()
        self.ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        self.ctx.check_hostname = False
        self.sessions = {}      # listener -> a TLS session to resume
        self.variant = 0
        self.moat = Moat(self.workdir / "moat", self.pki, self.ls,
                         extra=self.extra(0), metrics=f"127.0.0.1:{self.mport}",
                         firewall=self.fw(0), drain="3s")
        self.set_workers()
        self.moat.start(timeout=60)

    def tweak(self, text, v=0):
        """daemon.workers, a session cap that the clients reach, the log
        level and TLS session tickets (keys shared by every worker,
        rotated quickly) in a config moatrun rendered."""
        text = text.replace("[daemon]\n", "[daemon]\n"
                            f"workers = {self.args.workers}\n"
                            f"max_sessions = {40 + 20 * (v % 2)}\n"
                            "reserved_sessions = 8\n"
                            f'log_level = "{"info" if v % 5 else "warning"}"\n',
                            1)
        return text.replace('min_version = "1.2"\n', 'min_version = "1.2"\n'
                            'session_tickets = true\n'
                            'ticket_rotation = "5s"\n', 1)

    def set_workers(self):
        t = self.moat.config_path.read_text()
        self.moat.config_path.write_text(self.tweak(t))

    def fw(self, v):
        if self.args.firewall == "none":
            return "none"
        return {"backend": self.args.firewall,
                "table": "moat" if v % 4 < 2 else "moat2",
                "set4": "b4" if v % 4 < 2 else "c4",
                "set6": "b6" if v % 4 < 2 else "c6"}

    def extra(self, v):
        # Sources that an allow list admits, then a reload no longer does
        # (and the other way round): sessions outlive their verdict.
        allow = ['"127.0.0.0/29"'] if v % 2 else ['"127.0.0.8/29"',
                                                   '"192.0.2.200/30"']
        deny = ['"127.0.0.9"', '"192.0.2.64/28"'] if v % 3 == 0 else []
        return (
            "[policy]\n"
            f"allow = [{', '.join(allow)}]\n"
            f"deny = [{', '.join(deny)}]\n\n"
            "\n[policy.geo]\n"
            f'database = "{self.mmdb}"\n'
            f'deny_countries = ["{"JP" if v % 2 else "BR"}"]\n\n'
            "[policy.rate]\n"
            f'connections = {{ limit = {12 + 6 * (v % 3)}, window = "5s" }}\n'
            f"concurrent_per_ip = {4 + v % 3}\n"
            f'auth_failures = {{ limit = {2 + v % 2}, window = "30s" }}\n'
            f"max_tracked = {1000 + 500 * (v % 2)}\n\n"
            "[ban]\n"
            f'duration = "{2 + v % 3}s"\n'
            'max_duration = "20s"\n'
            'forget_after = "30s"\n'
            f"max_entries = {1000 + 500 * (v % 2)}\n")

    def reload(self):
        self.variant += 1
        v = self.variant
        ls = list(self.ls) + ([self.extra_ls] if v % 2 else [])
        text = render_config(self.moat.workdir, self.pki.server_chain,
                             self.pki.server_key, ls, extra=self.extra(v),
                             metrics=f"127.0.0.1:{self.mport}",
                             firewall=self.fw(v), drain="3s")
        text = self.tweak(text, v)
        tmp = self.moat.config_path.with_suffix(".new")
        tmp.write_text(text)
        os.replace(tmp, self.moat.config_path)
        if v % 3 == 0:
            self.ctl("reload", timeout=60)
        else:
            self.moat.signal(signal.SIGHUP)
        self.stats.add("reload")

    def ctl(self, *a, timeout=30):
        try:
            return self.moat.ctl(*a, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stats.add("ctl-timeout")
            return None

    # ---------------------------------------------------------- clients
    def src(self, rng):
        return f"127.0.0.{rng.randint(2, 31)}"

    def conn(self, name, rng):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(15)
        s.bind((self.src(rng), 0))
        s.connect(("127.0.0.1", self.moat.port(name)))
        return s

    def smtp_session(self, s, rng):
        f = s.makefile("rb")
        if not smtp_reply(f).startswith(b"220"):
            return "refused"
        s.sendall(b"EHLO c.example\r\n")
        smtp_reply(f)
        r = rng.random()
        if r < 0.4:
            pw = b"wrong" if rng.random() < 0.6 else b"alicepw"
            s.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0" + pw) +
                      b"\r\n")
            smtp_reply(f)
        elif r < 0.6:
            s.sendall(b"MAIL FROM:<x@example.org>\r\n")
            smtp_reply(f)
            s.sendall(b"RCPT TO:<bob@example.test>\r\n")
            if smtp_reply(f).startswith(b"250"):
                s.sendall(b"DATA\r\n")
                if smtp_reply(f).startswith(b"354"):
                    s.sendall(b"Subject: t\r\n\r\n" + b"x" * 2000 +
                              b"\r\n.\r\n")
                    smtp_reply(f)
        if rng.random() < 0.8:
            s.sendall(b"QUIT\r\n")
            smtp_reply(f)
        return "ok"

    def pop3_session(self, s, rng):
        f = s.makefile("rb")
        if not readline(f).startswith(b"+OK"):
            return "refused"
        pw = b"wrong" if rng.random() < 0.5 else b"alicepw"
        s.sendall(b"USER alice\r\n")
        readline(f)
        s.sendall(b"PASS " + pw + b"\r\n")
        readline(f)
        s.sendall(b"QUIT\r\n")
        readline(f)
        return "ok"

    def one(self, rng):
        kind = rng.choice(["smtps", "smtp", "pop3s", "pop3", "lb", "lb",
                           "cut"])
        if kind == "lb":
            port = self.moat.port("lb")
            r = rng.random()
            if r < 0.5:
                ip = f"192.0.2.{rng.randint(1, 254)}"
            elif r < 0.8:
                # Many addresses: the windows' table fills and evicts.
                ip = f"198.18.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            else:
                ip = f"2001:db8::{rng.randint(1, 400):x}"
            with socket.create_connection(("127.0.0.1", port),
                                          timeout=15) as s:
                s.sendall(proxy_v1_header(
                    ip, "::1" if ":" in ip else "127.0.0.1", 40000, 25))
                return "lb-" + self.smtp_session(s, rng)
        if kind == "cut":
            with self.conn(rng.choice(["smtps", "pop3s"]), rng) as s:
                s.sendall(b"\x16\x03\x01\x00\x05hello")
                time.sleep(rng.random() * 0.05)
                return "cut"
        with self.conn(kind, rng) as raw:
            if kind in ("smtps", "pop3s"):
                sess = self.sessions.get(kind) if rng.random() < 0.5 \
                    else None
                s = self.ctx.wrap_socket(raw, server_hostname="localhost",
                                         session=sess)
                if s.session_reused:
                    self.stats.add("resumed")
            else:
                s = raw
                f = s.makefile("rb")
                if kind == "smtp":
                    if not smtp_reply(f).startswith(b"220"):
                        return "refused"
                    s.sendall(b"EHLO c.example\r\n")
                    smtp_reply(f)
                    s.sendall(b"STARTTLS\r\n")
                    if not smtp_reply(f).startswith(b"220"):
                        return "no-starttls"
                    s = self.ctx.wrap_socket(raw, server_hostname="localhost")
                    s.sendall(b"EHLO c.example\r\n")
                    smtp_reply(s.makefile("rb"))
                    s.sendall(b"QUIT\r\n")
                    return "starttls"
                if not readline(f).startswith(b"+OK"):
                    return "refused"
                s.sendall(b"STLS\r\n")
                if not readline(f).startswith(b"+OK"):
                    return "no-stls"
                s = self.ctx.wrap_socket(raw, server_hostname="localhost")
                s.sendall(b"USER alice\r\n")
                readline(s.makefile("rb"))
                s.sendall(b"QUIT\r\n")
                return "stls"
            try:
                if kind == "smtps":
                    return self.smtp_session(s, rng)
                return self.pop3_session(s, rng)
            finally:
                if s.session is not None and s.session.has_ticket:
                    self.sessions[kind] = s.session

    def client(self, i):
        rng = random.Random(self.args.seed * 1000 + i)
        while not self.stop.is_set():
            try:
                self.stats.add(self.one(rng))
            except (OSError, ssl.SSLError, ValueError) as e:
                self.stats.add("err-" + type(e).__name__)
                time.sleep(0.01)

    def hold(self, i):
        """Sessions held open a while: bans and the drain must end them."""
        rng = random.Random(self.args.seed * 7000 + i)
        while not self.stop.is_set():
            try:
                with socket.create_connection(
                        ("127.0.0.1", self.moat.port("lb")), timeout=15) as s:
                    s.sendall(proxy_v1_header(
                        f"192.0.2.{rng.randint(1, 40)}", "127.0.0.1", 4000,
                        25))
                    f = s.makefile("rb")
                    if smtp_reply(f).startswith(b"220"):
                        s.sendall(b"EHLO h.example\r\n")
                        smtp_reply(f)
                        s.settimeout(rng.uniform(0.5, 3))
                        try:
                            s.recv(1)
                            self.stats.add("held-ended")
                        except socket.timeout:
                            self.stats.add("held")
            except OSError:
                time.sleep(0.05)

    # --------------------------------------------------------- operators
    def ctl_loop(self):
        rng = random.Random(self.args.seed + 1)
        while not self.stop.is_set():
            ip = rng.choice([f"192.0.2.{rng.randint(1, 40)}",
                             f"198.19.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                             f"198.19.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                             f"127.0.0.{rng.randint(2, 31)}",
                             f"2001:db8::{rng.randint(1, 40):x}"])
            op = rng.random()
            if op < 0.05:
                # A burst of operator bans: the ban table fills and drops
                # the bans that end soonest (and their kernel elements).
                for _ in range(40):
                    self.ctl("ban", f"198.19.{rng.randint(0, 255)}."
                             f"{rng.randint(1, 254)}", "30s")
            elif op < 0.3:
                self.ctl("ban", ip, rng.choice(["2s", "5s", "1m"]))
            elif op < 0.55:
                self.ctl("unban", ip)
            elif op < 0.7:
                self.ctl("--json", "bans")
            elif op < 0.8:
                self.ctl("bans")
            elif op < 0.9:
                self.ctl("--json", "status")
            else:
                self.ctl("status")
            self.stats.add("ctl")
            time.sleep(0.02)

    def tail_loop(self):
        rng = random.Random(self.args.seed + 2)
        while not self.stop.is_set():
            args = ["--json", "tail"] if rng.random() < 0.5 else ["tail"]
            p = subprocess.Popen(
                [str(moatctl_binary()), "-s", str(self.moat.control_socket),
                 *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            t0 = time.monotonic()
            while time.monotonic() - t0 < rng.uniform(0.5, 4) and \
                    not self.stop.is_set():
                time.sleep(0.1)
            # Never read: a follower that falls behind, whose events moat
            # must drop rather than queue without end.
            p.terminate()
            p.wait()
            p.stdout.close()
            self.stats.add("tail")

    def metrics_loop(self):
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.mport),
                                              timeout=15) as s:
                    s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                    while s.recv(65536):
                        pass
                self.stats.add("scrape")
            except OSError:
                self.stats.add("scrape-err")
            time.sleep(0.05)

    def reload_loop(self):
        rng = random.Random(self.args.seed + 3)
        while not self.stop.is_set():
            time.sleep(rng.uniform(1.5, 4))
            if self.stop.is_set():
                break
            self.reload()
            if rng.random() < 0.3:
                self.moat.signal(signal.SIGUSR1)

    # --------------------------------------------------------------- run
    def run(self):
        self.start()
        threads = [threading.Thread(target=self.client, args=(i,))
                   for i in range(self.args.clients)]
        threads += [threading.Thread(target=self.hold, args=(i,))
                    for i in range(4)]
        threads += [threading.Thread(target=f) for f in (
            self.ctl_loop, self.tail_loop, self.metrics_loop,
            self.reload_loop)]
        for t in threads:
            t.daemon = True
            t.start()
        deadline = time.monotonic() + self.args.seconds
        rc = None
        try:
            while time.monotonic() < deadline:
                time.sleep(5)
                if self.moat.proc.poll() is not None:
                    print("moat exited early", self.moat.proc.returncode)
                    break
                print(f"{int(deadline - time.monotonic())}s left", dict(
                    sorted(self.stats.n.items())), flush=True)
            # SIGTERM under load: the drain; with an even seed a second
            # SIGTERM cuts it short.
            self.moat.signal(signal.SIGTERM)
            if self.args.seed % 2 == 0:
                time.sleep(1)
                self.moat.signal(signal.SIGTERM)
            try:
                rc = self.moat.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                rc = "hung"
            print("moat exit:", rc)
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=20)
            self.moat.stop()
            if rc == 0:
                self.stack.cleanup()
            else:
                self.stack.stop()
        print("stats:", dict(sorted(self.stats.n.items())))
        log = self.moat.log()
        print("log lines:", log.count("\n"), "reload done:",
              log.count("reload done"), "ban:", log.count(" ban ip="),
              "warnings:", log.count("warning"))
        served = sum(self.stats.n.get(k, 0) for k in (
            "ok", "lb-ok", "starttls", "stls"))
        if served == 0 or self.stats.n.get("reload", 0) == 0:
            print("nothing was served or reloaded: the run proves nothing")
            return 1
        return rc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--clients", type=int, default=12)
    ap.add_argument("--firewall", default="nftables",
                    choices=["none", "nftables", "ipset"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/moat-tsan-stress")
    args = ap.parse_args()
    if os.environ.get("MOAT_STRESS_NETNS") != "1":
        env = dict(os.environ, MOAT_STRESS_NETNS="1")
        os.execvpe("unshare", ["unshare", "-n", "sh", "-c",
                               'ip link set lo up && exec "$0" "$@"',
                               sys.executable, *sys.argv], env)
    wd = Path(args.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    rc = Run(args, wd).run()
    sys.exit(0 if rc == 0 else 1)


if __name__ == "__main__":
    main()
