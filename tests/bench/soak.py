"""Soak benchmark (never in CI; run through tests/bench/soak.sh): moat in
front of scripted SMTP and POP3 backends for N minutes under a bounded mix
of legitimate clients (SMTPS delivery, STARTTLS delivery, POP3S) and
abusive ones (silent connections, half handshakes, endless lines, and
bursts from rotating addresses that trip the connection rate and get
banned).  Every interval it prints moat's RSS, open descriptors, live
sessions, completed legitimate sessions, failures and bans; at the end it
compares RSS after warm-up with RSS at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import poplib
import random
import resource
import smtplib
import socket
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from certs import make_pki  # noqa: E402
from moatrun import Moat, listener  # noqa: E402
from scripted import ScriptedBackend  # noqa: E402

GOOD = "127.0.0.2"          # abusers never use 127.0.0.0/24


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def add(self, k, n=1):
        with self.lock:
            self.c[k] = self.c.get(k, 0) + n

    def get(self, k):
        with self.lock:
            return self.c.get(k, 0)


def proc_status(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=20,
                    help="legitimate sessions started per second")
    ap.add_argument("--abuse-rate", type=float, default=10,
                    help="abusive connections started per second")
    ap.add_argument("--interval", type=float, default=10, help="seconds between report lines")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = Path(tempfile.mkdtemp(prefix="moat-soak-"))
    pki = make_pki(work / "pki")
    smtp_b = ScriptedBackend("smtp").start()
    pop_b = ScriptedBackend("pop3").start()
    extra = ("[policy]\n"
             # poplib cannot pick a source address: legitimate clients
             # come from 127.0.0.1 and 127.0.0.2, abusers from 127.0.1-3.x.
             'allow = ["127.0.0.0/24"]\n'
             "[policy.rate]\n"
             'connections = { limit = 20, window = "10s" }\n'
             "concurrent_per_ip = 50\n"
             'auth_failures = { limit = 0, window = "1m" }\n'
             "[ban]\n"
             'duration = "20s"\n'
             "escalation = 2.0\n"
             'max_duration = "2m"')
    m = Moat(work / "moat", pki, [
        listener("smtps", smtp_b.addr, handshake="3s", idle="5s"),
        listener("smtp", smtp_b.addr, tls="starttls", handshake="3s", idle="5s"),
        listener("pop3s", pop_b.addr, protocol="pop3", handshake="3s", idle="5s"),
    ], verbose=1, extra=extra)
    cfg = m.config_path.read_text()
    m.config_path.write_text(cfg.replace("[daemon]\n", "[daemon]\nmax_sessions = 2000\n", 1))
    m.start()
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    st = Stats()
    stop = threading.Event()
    rnd = random.Random(9)

    def legit(kind):
        try:
            if kind == 0:
                with smtplib.SMTP_SSL(*m.addr("smtps"), context=ctx, timeout=20,
                                      source_address=(GOOD, 0)) as c:
                    c.sendmail("a@example.org", ["alice@example.test"],
                               b"Subject: soak\r\n\r\n" + b"x" * 2000 + b"\r\n")
            elif kind == 1:
                with smtplib.SMTP(*m.addr("smtp"), timeout=20, source_address=(GOOD, 0)) as c:
                    c.starttls(context=ctx)
                    c.sendmail("a@example.org", ["alice@example.test"], b"Subject: soak\r\n\r\nx\r\n")
            else:
                p = poplib.POP3_SSL(*m.addr("pop3s"), context=ctx, timeout=20)
                p.user("alice")
                p.pass_("alicepw")
                p.stat()
                p.quit()
            st.add("legit_ok")
        except Exception as e:  # noqa: BLE001 - counted, not fatal
            st.add("legit_fail")
            st.add("fail:" + type(e).__name__)

    def abuse(kind, src):
        try:
            s = socket.socket()
            s.bind((src, 0))
            s.settimeout(15)
            s.connect(m.addr("pop3s" if kind == 1 else "smtp"))
            if kind == 0:            # silent: moat's idle timeout ends it
                s.recv(100)
                s.recv(100)
            elif kind == 1:          # half a ClientHello: handshake timeout
                s.sendall(bytes([22, 3, 1, 2, 0, 1]))
                s.recv(100)
            elif kind == 2:          # an endless line
                s.recv(100)
                for _ in range(40):
                    s.sendall(b"z" * 4096)
                s.recv(100)
            else:                    # a quick hello from a rate offender
                s.recv(100)
            s.close()
            st.add("abuse_done")
        except OSError:
            st.add("abuse_done")

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=256)
    pending = set()

    def submit(fn, *args):
        if len(pending) < 600:           # bounded: never more in flight
            f = pool.submit(fn, *args)
            pending.add(f)
            f.add_done_callback(pending.discard)

    t0 = time.monotonic()
    end = t0 + a.minutes * 60
    next_report = t0 + a.interval
    samples = []
    print(f"soak: {a.minutes} min, {a.rate}/s legitimate, {a.abuse_rate}/s abusive; "
          f"moat pid {m.proc.pid}, work dir {work}")
    print(f"{'t_s':>6} {'rss_kB':>8} {'fds':>5} {'sessions':>8} {'legit_ok':>9} "
          f"{'legit_fail':>10} {'abuse':>7} {'bans':>5} {'bans_now':>8}")
    legit_acc = abuse_acc = 0.0
    last = t0
    try:
        while True:
            now = time.monotonic()
            if now >= end:
                break
            legit_acc += (now - last) * a.rate
            abuse_acc += (now - last) * a.abuse_rate
            last = now
            while legit_acc >= 1:
                legit_acc -= 1
                submit(legit, rnd.randrange(3))
            while abuse_acc >= 1:
                abuse_acc -= 1
                kind = rnd.randrange(4)
                if kind == 3:        # a burst of 25 from one of 200 addresses
                    src = f"127.0.{rnd.randrange(1, 3)}.{rnd.randrange(10, 110)}"
                    for _ in range(25):
                        submit(abuse, 3, src)
                else:
                    submit(abuse, kind, f"127.0.3.{rnd.randrange(1, 250)}")
            if now >= next_report:
                next_report += a.interval
                if m.proc.poll() is not None:
                    raise SystemExit(f"moat exited {m.proc.returncode}")
                rss, fds = proc_status(m.proc.pid)
                js = json.loads(m.ctl("--json", "status").stdout)
                row = (now - t0, rss, fds, js["sessions"], st.get("legit_ok"),
                       st.get("legit_fail"), st.get("abuse_done"),
                       js["totals"]["bans"], js["bans_active"])
                samples.append(row)
                print(f"{row[0]:6.0f} {rss:8d} {fds:5d} {row[3]:8d} {row[4]:9d} "
                      f"{row[5]:10d} {row[6]:7d} {row[7]:5d} {row[8]:8d}", flush=True)
            time.sleep(0.05)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        time.sleep(6)                    # idle timeouts end what is left
        rss, fds = proc_status(m.proc.pid)
        js = json.loads(m.ctl("--json", "status").stdout)
        print(f"after load: rss_kB={rss} fds={fds} sessions={js['sessions']}")
        rc = m.stop()
        smtp_b.stop()
        pop_b.stop()
    fails = {k: v for k, v in st.c.items() if k.startswith("fail:")}
    if samples:
        warm = samples[max(0, len(samples) // 5 - 1)][1]
        peak = max(s[1] for s in samples)
        print(f"summary: legit_ok={st.get('legit_ok')} legit_fail={st.get('legit_fail')} "
              f"{fails or ''} bans={samples[-1][7]} rss_after_warmup_kB={warm} "
              f"rss_end_kB={samples[-1][1]} rss_peak_kB={peak} "
              f"growth_after_warmup_kB={samples[-1][1] - warm} moat_exit={rc}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
