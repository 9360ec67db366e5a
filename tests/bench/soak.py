"""Soak benchmark (never in CI; run through tests/bench/soak.sh): moat in
front of scripted SMTP and POP3 backends for N minutes under a bounded mix
of legitimate clients (SMTPS delivery, STARTTLS delivery, POP3S) and
abusive ones (silent connections, half handshakes, endless lines, and
bursts from rotating addresses that trip the connection rate and get
banned).  Every interval it prints moat's RSS, open descriptors, threads,
memory mappings, live sessions, completed legitimate sessions, failures,
bans, reloads and the sizes of the state and events files; at the end it
compares RSS, descriptors and mappings after warm-up (the first fifth)
with their values at the end, and the averages of the first and last
thirds.

The operator's side, each off unless asked for (and all on with --ops):
  --workers N     daemon.workers (default 1)
  --reload S      a SIGHUP every S seconds that alternates between two
                  configurations: other policy limits and ban lengths,
                  other allow/deny list files (rewritten each time), a
                  fourth listener only in the second (some legitimate
                  clients use it while it is there), the server
                  certificate re-generated before each one, and, with
                  Debian's libmaxmind-db-writer-perl, one of two copies
                  of the test geo database
  --ctl S         every S seconds moatctl status and bans, a ban and an
                  unban of an address of 127.0.4.0/24 (no client uses
                  it), and every fourth time a moatctl tail that follows
                  for 20 s and goes (every other one never reads what it
                  is sent: a stalled follower)
  --scrape S      a metrics scrape every S seconds (daemon.metrics on)
The run ends with moat's warnings and errors counted from its log, and
fails when moat did not exit 0 or a reload failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import poplib
import random
import resource
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from certs import make_leaf, make_pki  # noqa: E402
from moatrun import Moat, free_port, listener, moatctl_binary, render_config  # noqa: E402
from scripted import ScriptedBackend  # noqa: E402

GOOD = "127.0.0.2"          # abusers never use 127.0.0.0/24
OPS = {"workers": 2, "reload": 30.0, "ctl": 10.0, "scrape": 5.0}


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
    """RSS in kB, open descriptors, threads and memory mappings."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    with open(f"/proc/{pid}/maps") as f:
        maps = sum(1 for _ in f)
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads, maps


def fsize(path):
    try:
        return path.stat().st_size
    except OSError:
        return 0


def policy_toml(variant, lists):
    """[policy] and [ban] of configuration A (0) or B (1)."""
    v = variant
    out = ("[policy]\n"
           # poplib cannot pick a source address: legitimate clients
           # come from 127.0.0.1 and 127.0.0.2, abusers from 127.0.1-3.x.
           'allow = ["127.0.0.0/24"]\n'
           f'allow_files = ["{lists / f"allow{v}.txt"}"]\n'
           f'deny_files = ["{lists / f"deny{v}.txt"}"]\n')
    if lists.joinpath(f"geo{v}.mmdb").exists():
        out += f'[policy.geo]\ndatabase = "{lists / f"geo{v}.mmdb"}"\n'
    out += ("[policy.rate]\n"
            f'connections = {{ limit = {20 + 5 * v}, window = "10s" }}\n'
            f"concurrent_per_ip = {50 - 10 * v}\n"
            'auth_failures = { limit = 0, window = "1m" }\n'
            f"max_tracked = {100000 - 50000 * v}\n"
            "[ban]\n"
            f'duration = "{20 + 10 * v}s"\n'
            f"escalation = {2.0 - 0.5 * v}\n"
            f'max_duration = "{2 + v}m"')
    return out


def write_lists(lists, variant, rnd):
    """Rewrites the allow and deny list files of a variant: a few hundred
    documentation and benchmark ranges that no client of the soak uses."""
    allow = [f"203.0.113.{rnd.randrange(256)}" for _ in range(50)]
    deny = [f"198.{18 + rnd.randrange(2)}.{rnd.randrange(256)}.0/24" for _ in range(300)]
    deny += [f"2001:db8:{rnd.randrange(65536):x}::/48" for _ in range(100)]
    deny.append("127.0.5.0/24")
    for name, rows in ((f"allow{variant}.txt", allow), (f"deny{variant}.txt", deny)):
        tmp = lists / (name + ".tmp")
        tmp.write_text("# soak\n" + "\n".join(rows) + "\n")
        tmp.replace(lists / name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=20,
                    help="legitimate sessions started per second")
    ap.add_argument("--abuse-rate", type=float, default=10,
                    help="abusive connections started per second")
    ap.add_argument("--interval", type=float, default=10, help="seconds between report lines")
    ap.add_argument("--workers", type=int, default=None, help="daemon.workers (default 1)")
    ap.add_argument("--reload", type=float, default=None,
                    help="seconds between SIGHUP reloads (0: none, the default)")
    ap.add_argument("--ctl", type=float, default=None,
                    help="seconds between moatctl rounds (0: none, the default)")
    ap.add_argument("--scrape", type=float, default=None,
                    help="seconds between metrics scrapes (0: none, the default)")
    ap.add_argument("--ops", action="store_true",
                    help="the operator's side on: " +
                    ", ".join(f"--{k} {v:g}" for k, v in OPS.items()) +
                    " unless given")
    a = ap.parse_args()
    for k, v in OPS.items():
        if getattr(a, k) is None:
            setattr(a, k, v if a.ops else (1 if k == "workers" else 0))

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = Path(tempfile.mkdtemp(prefix="moat-soak-"))
    pki = make_pki(work / "pki")
    lists = work / "lists"
    lists.mkdir()
    rnd = random.Random(9)
    for v in (0, 1):
        write_lists(lists, v, rnd)
        if a.reload and shutil.which("perl") and subprocess.run(
                ["perl", "-MMaxMind::DB::Writer::Tree", "-e", "1"],
                capture_output=True).returncode == 0:
            subprocess.run(["perl", str(HERE.parent / "geo" / "make-test-mmdb.pl"),
                            str(lists / f"geo{v}.mmdb")], check=True, capture_output=True)
    smtp_b = ScriptedBackend("smtp").start()
    pop_b = ScriptedBackend("pop3").start()
    listeners = [
        listener("smtps", smtp_b.addr, handshake="3s", idle="5s"),
        listener("smtp", smtp_b.addr, tls="starttls", handshake="3s", idle="5s"),
        listener("pop3s", pop_b.addr, protocol="pop3", handshake="3s", idle="5s"),
    ]
    # Configuration B adds a listener; A drops it again.
    extra_l = listener("smtps2", smtp_b.addr, handshake="3s", idle="5s")
    metrics = f"127.0.0.1:{free_port()}" if a.scrape else None
    m = Moat(work / "moat", pki, listeners, verbose=1, extra=policy_toml(0, lists),
             metrics=metrics)

    def render(variant):
        text = render_config(m.workdir, pki.server_chain, pki.server_key,
                             listeners + ([extra_l] if variant else []),
                             metrics=metrics, extra=policy_toml(variant, lists))
        return text.replace("[daemon]\n", "[daemon]\nmax_sessions = 2000\n"
                            f"workers = {a.workers}\n", 1)

    m.config_path.write_text(render(0))
    m.start()
    rss, fds, thr, maps = proc_status(m.proc.pid)
    print(f"at start: rss_kB={rss} fds={fds} threads={thr} maps={maps}")
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    st = Stats()
    stop = threading.Event()
    variant = [0]                # the configuration in force

    def legit(kind):
        try:
            if kind == 0:
                if variant[0] == 1 and rnd.random() < 0.3:
                    st.add("legit_smtps2")
                    addr = extra_l["listen"][0].rsplit(":", 1)
                    addr = (addr[0], int(addr[1]))
                else:
                    addr = m.addr("smtps")
                with smtplib.SMTP_SSL(*addr, context=ctx, timeout=20,
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

    def reload():
        """Configuration B after A and A after B, a new certificate each
        time; returns once moat's log says how the reload went."""
        nxt = 1 - variant[0]
        write_lists(lists, nxt, rnd)
        make_leaf(pki.dir, "server", pki.names, "ec", ("127.0.0.1", "::1"))
        tmp = m.config_path.with_suffix(".tmp")
        tmp.write_text(render(nxt))
        tmp.replace(m.config_path)
        text = m.log()
        done, failed = text.count("reload done"), text.count("reload failed")
        if nxt == 0:
            variant[0] = 0           # clients leave B's listener first
        m.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = m.log()
            if text.count("reload done") > done or text.count("reload failed") > failed:
                break
            time.sleep(0.1)
        if text.count("reload done") > done:
            st.add("reloads")
            variant[0] = nxt
        else:
            st.add("reload_failed")

    def ctl(cmd, *args):
        try:
            r = m.ctl(*cmd.split(), *args, timeout=30)
            st.add("ctl_ok" if r.returncode == 0 else "ctl_fail:" + cmd)
            return r
        except subprocess.TimeoutExpired:
            st.add("ctl_fail:" + cmd)
            return None

    tails = []

    def start_tail(stalled):
        """A moatctl tail; a stalled one never reads its pipe."""
        p = subprocess.Popen([str(moatctl_binary()), "-s", str(m.control_socket), "tail"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if not stalled:
            def drain():
                for _ in p.stdout:
                    st.add("tail_lines")
            threading.Thread(target=drain, daemon=True).start()
        tails.append((time.monotonic() + 20, p))
        st.add("tails")

    def end_tails(now, all_=False):
        for t in list(tails):
            if all_ or now >= t[0]:
                t[1].terminate()
                try:
                    t[1].wait(10)
                except subprocess.TimeoutExpired:
                    t[1].kill()
                    t[1].wait()
                t[1].stdout.close()
                tails.remove(t)

    ctl_round = [0]

    def ctl_ops():
        n = ctl_round[0]
        ctl_round[0] += 1
        ctl("status")
        ctl("--json bans")
        ip = f"127.0.4.{n % 8 + 1}"
        ctl("ban", ip, "10m")
        if n >= 4:                   # each ban lives four rounds
            ctl("unban", f"127.0.4.{(n - 4) % 8 + 1}")
        if n % 4 == 0:
            start_tail(stalled=(n // 4) % 2 == 1)

    def scrape():
        try:
            with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as r:
                body = r.read()
            st.add("scrapes")
            with st.lock:
                st.c["scrape_bytes"] = len(body)
                st.c["scrape_lines"] = body.count(b"\n")
        except OSError:
            st.add("scrape_fail")

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=256)
    ops = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    pending = set()

    def submit(fn, *args):
        if len(pending) < 600:           # bounded: never more in flight
            f = pool.submit(fn, *args)
            pending.add(f)
            f.add_done_callback(pending.discard)

    t0 = time.monotonic()
    end = t0 + a.minutes * 60
    next_report = t0 + a.interval
    timers = {"reload": t0 + a.reload, "ctl": t0 + a.ctl, "scrape": t0 + a.scrape}
    busy = {}                            # one of each operation at a time
    samples = []
    print(f"soak: {a.minutes} min, {a.rate}/s legitimate, {a.abuse_rate}/s abusive, "
          f"workers {a.workers}, reload every {a.reload:g} s, moatctl every {a.ctl:g} s, "
          f"scrape every {a.scrape:g} s; moat pid {m.proc.pid}, work dir {work}")
    print(f"{'t_s':>6} {'rss_kB':>8} {'fds':>5} {'thr':>4} {'maps':>5} {'sessions':>8} "
          f"{'legit_ok':>9} {'legit_fail':>10} {'abuse':>7} {'bans':>5} {'bans_now':>8} "
          f"{'reloads':>7} {'state_B':>8} {'events_kB':>9}")
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
            for name, fn, every in (("reload", reload, a.reload), ("ctl", ctl_ops, a.ctl),
                                    ("scrape", scrape, a.scrape)):
                if every and now >= timers[name] and (name not in busy or busy[name].done()):
                    timers[name] = now + every
                    busy[name] = ops.submit(fn)
            end_tails(now)
            if now >= next_report:
                next_report += a.interval
                if m.proc.poll() is not None:
                    raise SystemExit(f"moat exited {m.proc.returncode}")
                rss, fds, thr, maps = proc_status(m.proc.pid)
                js = json.loads(m.ctl("--json", "status").stdout)
                row = (now - t0, rss, fds, js["sessions"], st.get("legit_ok"),
                       st.get("legit_fail"), st.get("abuse_done"),
                       js["totals"]["bans"], js["bans_active"], thr, maps,
                       st.get("reloads"), fsize(m.workdir / "moat.state"),
                       fsize(m.workdir / "events.jsonl") // 1024)
                samples.append(row)
                print(f"{row[0]:6.0f} {rss:8d} {fds:5d} {thr:4d} {maps:5d} {row[3]:8d} "
                      f"{row[4]:9d} {row[5]:10d} {row[6]:7d} {row[7]:5d} {row[8]:8d} "
                      f"{row[11]:7d} {row[12]:8d} {row[13]:9d}", flush=True)
            time.sleep(0.05)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        ops.shutdown(wait=True, cancel_futures=True)
        end_tails(0, all_=True)
        time.sleep(6)                    # idle timeouts end what is left
        if m.proc.poll() is None:
            rss, fds, thr, maps = proc_status(m.proc.pid)
            js = json.loads(m.ctl("--json", "status").stdout)
            print(f"after load: rss_kB={rss} fds={fds} threads={thr} maps={maps} "
                  f"sessions={js['sessions']} tail_clients={js['events']['tail_clients']}")
        rc = m.stop()
        smtp_b.stop()
        pop_b.stop()
    fails = {k: v for k, v in st.c.items() if k.startswith(("fail:", "ctl_fail:"))}
    log = m.log().splitlines()
    warns = [l for l in log if l.startswith(("<4>", "<3>", "<2>"))]
    print(f"log: {len(log)} lines, {len(warns)} warnings or errors")
    seen = {}
    for l in warns:
        key = " ".join(l.split()[:6])
        seen[key] = seen.get(key, 0) + 1
    for k, n in sorted(seen.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {n:6d}  {k}")
    print("ops: " + " ".join(f"{k}={st.get(k)}" for k in
                             ("reloads", "reload_failed", "ctl_ok", "tails", "tail_lines",
                              "scrapes", "scrape_fail", "scrape_lines", "legit_smtps2")))
    if samples:
        warm = samples[max(0, len(samples) // 5 - 1)]
        last_s = samples[-1]
        third = max(1, len(samples) // 3)

        def avg(rows, i):
            return sum(r[i] for r in rows) // len(rows)
        print(f"summary: legit_ok={st.get('legit_ok')} legit_fail={st.get('legit_fail')} "
              f"{fails or ''} bans={last_s[7]} rss_after_warmup_kB={warm[1]} "
              f"rss_end_kB={last_s[1]} rss_peak_kB={max(s[1] for s in samples)} "
              f"growth_after_warmup_kB={last_s[1] - warm[1]} "
              f"rss_first_third_avg_kB={avg(samples[:third], 1)} "
              f"rss_last_third_avg_kB={avg(samples[-third:], 1)} "
              f"fds_after_warmup={warm[2]} fds_end={last_s[2]} "
              f"maps_after_warmup={warm[10]} maps_end={last_s[10]} moat_exit={rc}")
    return 0 if rc == 0 and not st.get("reload_failed") else 1


if __name__ == "__main__":
    sys.exit(main())
