"""daemon.workers: several event-loop threads, each with its own
SO_REUSEPORT listening sockets, sharing one policy. Seen from clients and
from moatctl: connections spread over the workers, limits stay exact
across them, reloads and drains reach every worker, and a second moat
cannot join the port.

Clients present their addresses with a PROXY v1 header (accept_proxy from
loopback), so one test host can be many clients. Which worker served a
connection is visible in `moatctl --json status` ("workers": sessions and
accepted per worker) and in the metric moat_worker_connections_total.
"""
from __future__ import annotations

import base64
import json
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from moatrun import Moat, free_port, listener, moat_binary, wait_port
from scripted import ScriptedBackend
from test_moatctl import Tail
from test_policy import events, hello, lb
from test_reload import Smtp, stack  # noqa: F401 (stack is a fixture)


def smtp(backend, **kw):
    """A plaintext SMTP [[listener]] behind a trusted PROXY v1 sender."""
    return lb("smtp", backend, tls="none", **kw)


def with_workers(m: Moat, workers) -> Moat:
    """Sets daemon.workers in m's config (moatrun writes [daemon] itself)."""
    text = m.config_path.read_text()
    m.config_path.write_text(text.replace("[daemon]\n",
                                          f"[daemon]\nworkers = {workers}\n", 1))
    return m


def start(tmp_path, pki, stack, workers=2, extra="", listeners=None):
    ls = listeners or [smtp(stack.smtp_addr)]
    return with_workers(Moat(tmp_path, pki, ls, extra=extra), workers).start()


def greeting(port: int, ip: str) -> bytes:
    """The first line a client from ip gets (b"" for a bare close)."""
    return hello(port, ip)


def rates(connections: int = 0, concurrent: int = 0) -> str:
    return ("[policy.rate]\n"
            f'connections = {{ limit = {connections}, window = "10s" }}\n'
            f"concurrent_per_ip = {concurrent}\n"
            'auth_failures = { limit = 0, window = "1m" }')


def status(m: Moat) -> dict:
    r = m.ctl("--json", "status")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def accepted(m: Moat) -> list:
    return [w["accepted"] for w in status(m)["workers"]]


def wait_sessions(m: Moat, pred, timeout: float = 10.0) -> list:
    """Polls the per-worker session counts until pred(counts) holds."""
    deadline = time.monotonic() + timeout
    while True:
        counts = [w["sessions"] for w in status(m)["workers"]]
        if pred(counts):
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"worker sessions stayed {counts}")
        time.sleep(0.05)


def test_connections_spread_over_both_workers(tmp_path, pki, stack):
    m = start(tmp_path, pki, stack)
    port = m.port("smtp")
    try:
        st = status(m)
        assert len(st["workers"]) == 2
        r = m.ctl("status")
        assert "workers      2 " in r.stdout, r.stdout
        before = accepted(m)  # moatrun's readiness probe
        for i in range(60):
            assert greeting(port, f"198.51.100.{i + 1}").startswith(b"220 ")
        counts = [a - b for a, b in zip(accepted(m), before)]
        assert sum(counts) == 60, counts
        assert all(n > 0 for n in counts), counts
        assert "moat running: 1 listening sockets, 2 workers" in m.log()
    finally:
        assert m.stop() == 0


def test_metrics_count_per_worker(tmp_path, pki, stack):
    mport = free_port()
    m = with_workers(Moat(tmp_path, pki, [smtp(stack.smtp_addr)],
                          metrics=f"127.0.0.1:{mport}"), 2).start()
    try:
        for i in range(30):
            assert greeting(m.port("smtp"), f"198.51.100.{i + 1}") \
                .startswith(b"220 ")
        with socket.create_connection(("127.0.0.1", mport), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            body = b""
            while chunk := s.recv(65536):
                body += chunk
        text = body.decode()
        assert "moat_workers 2\n" in text
        per = [int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("moat_worker_connections_total{")]
        # 30 and the readiness probe of moatrun.
        assert len(per) == 2 and sum(per) == 31 and min(per) > 0, per
        total = [line for line in text.splitlines() if line.startswith(
            'moat_connections_total{listener="smtp",verdict="accepted"}')]
        assert total == ['moat_connections_total{listener="smtp",'
                         'verdict="accepted"} 30'], total
    finally:
        assert m.stop() == 0


def test_rate_limit_is_exact_across_workers(tmp_path, pki, stack):
    m = start(tmp_path, pki, stack, extra=rates(connections=5))
    port = m.port("smtp")
    # Events made on worker threads reach a follower on the main loop.
    t = Tail(m, "--json", "tail", "--ip", "192.0.2.77")
    try:
        t.wait_following()
        replies = [greeting(port, "192.0.2.77") for _ in range(40)]
        admitted = [r for r in replies if r.startswith(b"220 ")]
        assert len(admitted) == 5, replies
        # The sixth trips the limit (and a ban); the banned are then
        # closed without a word.
        assert replies[5:].count(b"554 5.7.1 Access denied: rate limit\r\n") \
            == 1, replies
        assert set(replies[5:]) <= {b"", b"554 5.7.1 Access denied: rate "
                                    b"limit\r\n"}, replies
        counts = accepted(m)
        assert all(n > 0 for n in counts), counts
        tailed = [json.loads(t.line())["event"] for _ in range(36)]
        assert sorted(tailed) == ["ban"] + ["reject"] * 35, tailed
        assert len(events(m, "reject")) == 35
        assert len(events(m, "ban")) == 1
        # Another address is untouched.
        assert greeting(port, "192.0.2.78").startswith(b"220 ")
    finally:
        t.close()
        assert m.stop() == 0


def test_concurrent_per_ip_holds_across_workers(tmp_path, pki, stack):
    m = start(tmp_path, pki, stack, extra=rates(concurrent=3))
    port = m.port("smtp")
    held = []
    try:
        replies = []
        for _ in range(16):
            c = Smtp(port, "192.0.2.50")
            r = c.reply()
            replies.append(r)
            if r.startswith(b"220 "):
                held.append(c)
            else:
                c.close()
        assert len(held) == 3, replies
        assert sum(r.startswith(b"554 ") for r in replies) == 13, replies
        assert all(n > 0 for n in accepted(m)), accepted(m)
        # One ends; its place is free again, whichever worker takes it.
        held.pop().cmd(b"QUIT")
        deadline = time.monotonic() + 10
        while True:
            c = Smtp(port, "192.0.2.50")
            if c.reply().startswith(b"220 "):
                held.append(c)
                break
            c.close()
            assert time.monotonic() < deadline, "the freed place never came"
            time.sleep(0.1)
        assert not greeting(port, "192.0.2.50").startswith(b"220 ")
    finally:
        for c in held:
            c.close()
        assert m.stop() == 0


def ended(c: Smtp, timeout: float = 5.0) -> bool:
    """Whether moat closed c's connection without being asked (nothing
    sent): end of stream or a reset within timeout."""
    c.s.settimeout(timeout)
    try:
        return c.s.recv(4096) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def open_on_both_workers(m: Moat, ip: str) -> list:
    """Greeted sessions from ip until both workers hold some."""
    port = m.port("smtp")
    held = []
    for _ in range(40):
        c = Smtp(port, ip)
        assert c.reply().startswith(b"220 ")
        assert c.cmd(b"EHLO c.example").startswith(b"250")
        held.append(c)
        counts = wait_sessions(m, lambda n: sum(n) == len(held))
        if len(held) >= 4 and min(counts) > 0:
            return held
    raise AssertionError(f"sessions stayed on one worker: {counts}")


def test_ban_ends_open_sessions_in_every_worker(tmp_path, pki, stack):
    """moatctl ban ends the sessions the address has open, whichever
    worker holds them, like the kernel set would; other addresses carry
    on."""
    m = start(tmp_path, pki, stack)
    other = None
    held = []
    try:
        held = open_on_both_workers(m, "192.0.2.5")
        other = Smtp(m.port("smtp"), "192.0.2.99")
        assert other.reply().startswith(b"220 ")
        r = m.ctl("ban", "192.0.2.5", "1h")
        assert r.returncode == 0, r.stderr
        assert [ended(c) for c in held] == [True] * len(held)
        wait_sessions(m, lambda n: sum(n) == 1)
        assert m.log().count("close reason=banned") == len(held)
        assert other.cmd(b"NOOP").startswith(b"250")
    finally:
        for c in held + [other]:
            if c is not None:
                c.close()
        assert m.stop() == 0


def test_auth_ban_ends_the_other_sessions_of_the_address(tmp_path, pki,
                                                        stack):
    """auth_failures counts every worker's failures together, and the ban
    it makes ends the address's other sessions too: they get no more
    guesses than the limit allows."""
    m = start(tmp_path, pki, stack, extra=(
        "[policy.rate]\n"
        'connections = { limit = 0, window = "10s" }\n'
        "concurrent_per_ip = 0\n"
        'auth_failures = { limit = 2, window = "1m" }'))
    held = []
    try:
        held = open_on_both_workers(m, "192.0.2.6")
        bad = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong-pw")
        assert held[0].cmd(bad).startswith(b"535")
        assert held[1].cmd(bad).startswith(b"535")
        # The second failure banned the address: every session of it ends,
        # on both workers, before another password can be tried.
        assert [ended(c) for c in held] == [True] * len(held)
        assert len(events(m, "auth_fail")) == 2
        assert len(events(m, "ban")) == 1
        wait_sessions(m, lambda n: sum(n) == 0)
    finally:
        for c in held:
            c.close()
        assert m.stop() == 0


def test_concurrent_per_ip_exact_after_allow_list_drops_address(tmp_path,
                                                                pki, stack):
    """Sessions the allow list admitted never counted towards
    concurrent_per_ip, so when they end after a reload took the address
    off the list they must not free places that sessions admitted since
    hold."""
    m = start(tmp_path, pki, stack, extra=rates(concurrent=2) +
              '\n[policy]\nallow = ["192.0.2.40"]')
    port = m.port("smtp")
    old, new, late = [], [], []

    def connect(n: int, into: list) -> list:
        replies = []
        for _ in range(n):
            c = Smtp(port, "192.0.2.40")
            replies.append(c.reply()[:4])
            into.append(c)
        return replies

    try:
        assert connect(4, old) == [b"220 "] * 4
        m.config_path.write_text(m.config_path.read_text().replace(
            'allow = ["192.0.2.40"]', "allow = []"))
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        assert sorted(connect(3, new)) == [b"220 ", b"220 ", b"554 "]
        for c in old:
            assert c.cmd(b"QUIT").startswith(b"221")
            c.close()
        # The two admitted since the reload are still open: no place is
        # free, whichever worker the next ones reach.
        wait_sessions(m, lambda n: sum(n) == 2)
        assert connect(3, late) == [b"554 "] * 3
    finally:
        for c in old + new + late:
            c.close()
        assert m.stop() == 0


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def test_reload_adds_and_removes_listener_in_every_worker(tmp_path, pki,
                                                          stack):
    m = start(tmp_path, pki, stack)
    port = m.port("smtp")
    port2 = free_port()
    base = m.config_path.read_text()
    try:
        second = base.replace("[policy.rate]", (
            '[[listener]]\nname = "smtp2"\n'
            f'listen = ["127.0.0.1:{port2}"]\nprotocol = "smtp"\n'
            f'tls = "none"\nbackend = "{stack.smtp_addr[0]}:'
            f'{stack.smtp_addr[1]}"\nbackend_proxy = "v1"\n'
            'accept_proxy = true\naccept_proxy_from = ["127.0.0.0/8"]\n\n'
            "[policy.rate]"), 1)
        m.config_path.write_text(second)
        m.signal(signal.SIGHUP)
        m.wait_log("reload done: 2 listening sockets in each of 2 workers")
        before = accepted(m)
        for i in range(40):
            assert greeting(port2, f"203.0.113.{i + 1}").startswith(b"220 ")
        after = accepted(m)
        assert all(a > b for a, b in zip(after, before)), (before, after)
        assert status(m)["listeners"][1]["name"] == "smtp2"

        m.config_path.write_text(base)
        m.signal(signal.SIGHUP)
        m.wait_log("reload done: 1 listening sockets in each of 2 workers")
        # Had any worker kept its socket of the group, some of these
        # would be accepted.
        assert all(refused(port2) for _ in range(40))
        assert greeting(port, "203.0.113.200").startswith(b"220 ")
        assert [l["name"] for l in status(m)["listeners"]] == ["smtp"]
    finally:
        assert m.stop() == 0


def test_sigterm_drains_sessions_of_every_worker(tmp_path, pki, stack):
    stack.clear_maildir("alice")
    m = start(tmp_path, pki, stack)
    port = m.port("smtp")
    sessions = []
    try:
        # Open sessions until both workers hold some.
        for i in range(40):
            c = Smtp(port, f"192.0.2.{i + 1}")
            assert c.reply().startswith(b"220 ")
            assert c.cmd(b"EHLO c%d.example" % i).startswith(b"250")
            assert c.cmd(b"MAIL FROM:<d%d@example.org>" % i).startswith(b"250")
            sessions.append(c)
            counts = wait_sessions(m, lambda n: sum(n) == len(sessions))
            if len(sessions) >= 4 and min(counts) > 0:
                break
        assert min(counts) > 0, counts
        m.signal(signal.SIGTERM)
        m.wait_log(f"draining {len(sessions)} sessions")
        assert refused(port)
        for i, c in enumerate(sessions):
            assert c.cmd(b"RCPT TO:<alice@example.test>").startswith(b"250")
            assert c.cmd(b"DATA").startswith(b"354")
            assert c.cmd(b"Subject: drain %d\r\n\r\nbody\r\n." % i) \
                .startswith(b"250")
            assert c.cmd(b"QUIT").startswith(b"221")
            c.close()
        assert m.proc.wait(timeout=20) == 0
        msgs = stack.wait_for_messages("alice", len(sessions), timeout=30)
        assert len(msgs) == len(sessions)
        assert "stopped" in m.log()
    finally:
        for c in sessions:
            c.close()
        m.stop()


def test_drain_timeout_ends_sessions_a_worker_took_late(tmp_path, pki):
    """Connections wait in the listen queues of both workers while moat is
    stopped; then SIGTERM and SIGCONT. The main thread may count no session
    while worker threads still accept from their queues before their
    listeners close: those sessions too end with drain_timeout (1 s), not
    with their idle timeout (10 min), so moat exits long before that every
    time (the wait is generous: no timed assertion)."""
    b = ScriptedBackend("smtp").start()
    try:
        for trial in range(4):
            m = with_workers(Moat(tmp_path / str(trial), pki, [
                listener("smtp", b.addr, tls="none", idle="10m")], drain="1s"),
                2).start()
            held = []
            try:
                addr = m.addr("smtp")
                m.signal(signal.SIGSTOP)
                time.sleep(0.1)
                held = [socket.create_connection(addr, timeout=5) for _ in range(40)]
                m.signal(signal.SIGTERM)
                time.sleep(0.05)
                m.signal(signal.SIGCONT)
                try:
                    rc = m.proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    rc = None
                assert rc == 0, \
                    f"trial {trial}: moat outlived drain_timeout:\n{m.log()[-1500:]}"
            finally:
                for c in held:
                    c.close()
                m.stop()
    finally:
        b.stop()


def test_a_worker_that_cannot_start_stops_moat_at_once(tmp_path, pki):
    """Worker 1's thread cannot be made (a full task limit; here a shim
    makes pthread_create fail after 2 s) while worker 0 already serves
    clients. moat must give up at once, closing those sessions, not live
    on until their idle timeout (10 min) while its supervisor waits."""
    shim = Path(os.environ.get("MOAT_BUILD_ROOT", "build")) / "tests" / \
        "integration" / "libfailthread.so"
    assert shim.exists(), f"{shim} missing: build the tree"
    b = ScriptedBackend("smtp").start()
    m = with_workers(Moat(tmp_path, pki, [
        listener("smtp", b.addr, tls="none", idle="10m")]), 2)
    # worker 0's thread is the first this config makes, worker 1's the
    # second (the log line below checks which one failed).
    m.wrap = ["env", f"LD_PRELOAD={shim}", "MOAT_TEST_FAIL_THREAD=2",
              "MOAT_TEST_FAIL_DELAY_MS=2000",
              "ASAN_OPTIONS=" + os.environ.get("ASAN_OPTIONS", "") +
              ":verify_asan_link_order=0"]
    clients = []
    try:
        m._spawn()
        wait_port(*m.addr("smtp"))
        # Both workers' sockets hold connections; worker 0 serves its own.
        clients = [socket.create_connection(m.addr("smtp"), timeout=5)
                   for _ in range(16)]
        greeted = 0
        deadline = time.monotonic() + 1.5
        waiting = list(clients)
        while waiting and time.monotonic() < deadline:
            ready, _, _ = select.select(waiting, [], [], 0.1)
            for c in ready:
                waiting.remove(c)
                greeted += c.recv(512).startswith(b"220 ")
        assert greeted > 0, m.log()
        try:
            rc = m.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rc = None
        assert rc == 1, f"moat outlived its failed start:\n{m.log()[-1500:]}"
        assert "worker 1: cannot start its thread" in m.log()
    finally:
        for c in clients:
            c.close()
        m.stop()
        b.stop()


def test_second_moat_cannot_join_the_port(tmp_path, pki, stack):
    m = start(tmp_path / "first", pki, stack)
    port = m.port("smtp")
    try:
        for workers in (2, 1):
            other = with_workers(Moat(tmp_path / f"second{workers}", pki,
                                      [smtp(stack.smtp_addr, listen=[
                                          f"127.0.0.1:{port}"])]),
                                 workers)
            r = subprocess.run([str(moat_binary()), "-c",
                                str(other.config_path)], capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 1, r.stderr
            assert f"listener 'smtp': cannot listen on 127.0.0.1:{port}: " \
                "Address already in use" in r.stderr, r.stderr
        # The first still gets every connection.
        before = sum(accepted(m))
        for i in range(20):
            assert greeting(port, f"198.51.100.{i + 1}").startswith(b"220 ")
        assert sum(accepted(m)) == before + 20
    finally:
        assert m.stop() == 0


def test_workers_zero_is_one_per_core(tmp_path, pki, stack):
    m = start(tmp_path, pki, stack, workers=0)
    try:
        n = len(os.sched_getaffinity(0))
        assert len(status(m)["workers"]) == n
        assert greeting(m.port("smtp"), "198.51.100.1").startswith(b"220 ")
        # The thread count is fixed at start; a reload says so.
        m.config_path.write_text(m.config_path.read_text().replace(
            "workers = 0", f"workers = {n + 1}"))
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        assert "warning: daemon.workers changes at the next restart" \
            in r.stdout + r.stderr
        assert len(status(m)["workers"]) == n
    finally:
        assert m.stop() == 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to restrict")
def test_workers_zero_follows_the_cpu_affinity(tmp_path, pki, stack):
    """Under taskset or systemd's CPUAffinity= moat may run on fewer cores
    than are online: workers = 0 makes one per core it may use."""
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(mine)})
    try:
        m = start(tmp_path, pki, stack, workers=0)
    finally:
        os.sched_setaffinity(0, mine)
    try:
        assert len(status(m)["workers"]) == 1
        assert greeting(m.port("smtp"), "198.51.100.1").startswith(b"220 ")
        # The affinity widened later (taskset -p): the configuration did
        # not change, and a reload does not say it did.
        os.sched_setaffinity(m.proc.pid, mine)
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        assert "daemon.workers" not in r.stdout + r.stderr
        assert len(status(m)["workers"]) == 1
    finally:
        assert m.stop() == 0


@pytest.mark.parametrize("value,ok", [("0", True), ("1", True), ("256", True),
                                      ("257", False), ("-1", False)])
def test_check_mode_bounds_workers(tmp_path, pki, value, ok):
    m = with_workers(Moat(tmp_path, pki, [listener("smtp", "127.0.0.1:25")]),
                     value)
    r = subprocess.run([str(moat_binary()), "-t", "-c", str(m.config_path)],
                       capture_output=True, text=True, timeout=30)
    if ok:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode != 0
        assert "daemon.workers" in r.stderr, r.stderr
        assert "moat.toml:2:" in r.stderr, r.stderr
