"""SIGHUP reload with sessions in flight: established sessions finish under
the config they started with, new ones get the new config; a broken
config keeps the running one and says why."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time

import pytest

from conftest import make_test_mmdb, require_mailstack
from mailstack import MailStack, proxy_v1_header
from moatrun import Moat, free_port, listener, render_config
from scripted import ScriptedBackend

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
        # logrotate moved the events file just before: the failed reload
        # reopens it all the same.
        events = tmp_path / "events.jsonl"
        events.rename(tmp_path / "events.jsonl.1")
        m.signal(signal.SIGHUP)
        log = m.wait_log("keeping the running configuration")
        assert 'invalid address or CIDR "10.0.0.300/8"' in log
        assert "daemon.workers must be an integer" in log
        assert "moat.toml:" in log
        m.wait_log("events file was reopened all the same")
        # The old config is in force: the deny list of the last good load.
        c = Smtp(port, "192.0.2.9")
        assert c.reply().startswith(b"554 ")
        c.close()
        deadline = time.monotonic() + 10
        while not (events.exists() and "192.0.2.9" in events.read_text()):
            assert time.monotonic() < deadline, "no reject in the new file"
            time.sleep(0.05)
        c = Smtp(port, "10.1.2.3")
        assert c.reply().startswith(b"220 ")
        c.close()
        # moatctl reload reports the same errors.
        r = m.ctl("reload")
        assert r.returncode == 1
        assert "10.0.0.300/8" in r.stderr and "daemon.workers" in r.stderr
    finally:
        assert m.stop() == 0


def deny_text(text: str, cidr: str) -> str:
    return text.replace(
        "[policy.rate]", f'[policy]\ndeny = ["{cidr}"]\n\n[policy.rate]')


def test_reload_failing_late_changes_nothing(tmp_path, pki, stack):
    """A config whose events file or new listener cannot be opened is
    refused whole: the deny list that came with it is not in force."""
    m = start(tmp_path, pki, stack)
    port = m.port("smtp")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        good = m.config_path.read_text()
        # The events file's directory cannot be made: its parent is
        # missing too (moat makes one level, as at start).
        m.config_path.write_text(deny_text(good, "192.0.2.0/24").replace(
            str(tmp_path / "events.jsonl"),
            str(tmp_path / "gone" / "deeper" / "ev.jsonl")))
        r = m.ctl("reload")
        assert r.returncode == 1, r.stdout
        assert "gone/deeper/ev.jsonl" in r.stderr
        assert "keeping the running configuration" in r.stderr
        c = Smtp(port, "192.0.2.9")
        assert c.reply().startswith(b"220 ")
        c.close()
        # A new listener on an address something else holds.
        taken = "127.0.0.1:%d" % busy.getsockname()[1]
        own = m.listeners["smtp"]["listen"][0]
        m.config_path.write_text(deny_text(good, "192.0.2.0/24").replace(
            f'listen = ["{own}"]', f'listen = ["{own}", "{taken}"]'))
        assert taken in m.config_path.read_text()
        r = m.ctl("reload")
        assert r.returncode == 1, r.stdout
        assert (f"listener 'smtp': cannot listen on {taken}: Address already "
                "in use (another program listens there") in r.stderr, r.stderr
        assert "reload done" not in r.stdout + r.stderr
        # The listener's own port widened to the wildcard: the new socket
        # is opened before the old one closes, which the kernel refuses.
        # The error names moat's own socket, not some other process.
        wide = "0.0.0.0:%d" % port
        m.config_path.write_text(good.replace(f'listen = ["{own}"]',
                                              f'listen = ["{wide}"]'))
        assert wide in m.config_path.read_text()
        r = m.ctl("reload")
        assert r.returncode == 1, r.stdout
        assert (f"listener 'smtp': cannot listen on {wide}: moat's own "
                f"socket on {own} holds the port") in r.stderr \
            and "needs a restart" in r.stderr, r.stderr
        c = Smtp(port, "192.0.2.9")
        assert c.reply().startswith(b"220 ")
        c.close()
        # The same change without the bad parts applies, and events still
        # reach the file the running config names.
        m.config_path.write_text(deny_text(good, "192.0.2.0/24"))
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        c = Smtp(port, "192.0.2.9")
        assert c.reply().startswith(b"554 ")
        c.close()
        m.wait_log("reject ip=192.0.2.9")
        events = (tmp_path / "events.jsonl").read_text()
        assert '"ip":"192.0.2.9"' in events
    finally:
        busy.close()
        assert m.stop() == 0


def test_reload_moves_state_file(tmp_path, pki, stack):
    """A new daemon.state_file gets the bans in force soon after the
    reload, so that a restart finds them."""
    m = start(tmp_path, pki, stack)
    try:
        assert m.ctl("ban", "192.0.2.77", "2h").returncode == 0
        first = tmp_path / "moat.state"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
                first.exists() and "192.0.2.77" in first.read_text()):
            time.sleep(0.2)
        assert "ban 192.0.2.77 " in first.read_text()
        moved = tmp_path / "state2" / "moat.state"
        moved.parent.mkdir()
        m.config_path.write_text(m.config_path.read_text().replace(
            str(tmp_path / "moat.state"), str(moved)))
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 10
        while not moved.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "ban 192.0.2.77 " in moved.read_text()
    finally:
        assert m.stop() == 0


def test_reload_makes_the_directory_of_a_moved_state_or_events_file(tmp_path, pki, stack):
    """As the start does, a reload makes the one missing directory of a
    new daemon.state_file or [events] file, and the bans and events go
    there; a path whose parent is missing too is refused, naming both."""
    m = start(tmp_path, pki, stack)
    try:
        assert m.ctl("ban", "192.0.2.78", "2h").returncode == 0
        text = m.config_path.read_text()
        state = tmp_path / "newstate" / "moat.state"
        events = tmp_path / "newlog" / "events.jsonl"
        assert str(tmp_path / "moat.state") in text
        assert str(tmp_path / "events.jsonl") in text
        m.config_path.write_text(text.replace(
            str(tmp_path / "moat.state"), str(state)).replace(
            str(tmp_path / "events.jsonl"), str(events)))
        r = m.ctl("reload")
        assert r.returncode == 0, r.stdout + r.stderr
        deadline = time.monotonic() + 10
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "ban 192.0.2.78 " in state.read_text()
        assert m.ctl("ban", "192.0.2.79", "1h").returncode == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
                events.exists() and "192.0.2.79" in events.read_text()):
            time.sleep(0.2)
        assert '"ip":"192.0.2.79"' in events.read_text()

        deep = tmp_path / "no" / "such" / "moat.state"
        m.config_path.write_text(m.config_path.read_text().replace(
            str(state), str(deep)))
        r = m.ctl("reload")
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert f"neither {deep.parent} nor {deep.parent.parent} exists" in out, out
        assert "keeping the running configuration" in out, out
        assert not deep.parent.parent.exists()
    finally:
        assert m.stop() == 0


def test_reload_writes_allow_list_unbans_to_its_new_events_file(tmp_path, pki, stack):
    """One reload allow-lists a banned address and moves [events] file:
    the unban is an event of the new configuration, in the new file (the
    old one may be gone, or have been none at all)."""
    m = start(tmp_path, pki, stack)
    try:
        assert m.ctl("ban", "192.0.2.78", "2h").returncode == 0
        old, new = tmp_path / "events.jsonl", tmp_path / "events2.jsonl"
        m.config_path.write_text(m.config_path.read_text().replace(
            "[policy.rate]", '[policy]\nallow = ["192.0.2.78/32"]\n\n[policy.rate]', 1)
            .replace(str(old), str(new)))
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        assert "unban" not in old.read_text()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
                new.exists() and "unban" in new.read_text()):
            time.sleep(0.1)
        lines = [json.loads(x) for x in new.read_text().splitlines()]
        assert [(e["event"], e["ip"], e["reason"]) for e in lines] == \
            [("unban", "192.0.2.78", "allowlist")], lines
        assert "192.0.2.78" not in m.ctl("bans").stdout
    finally:
        assert m.stop() == 0


def test_events_file_deleted_or_moved_without_a_signal_is_made_again(tmp_path, pki, stack):
    """Someone deletes the events file, or moves it with no SIGUSR1 after:
    within a few seconds moat writes to a new file at the path again,
    instead of into a deleted inode until the next reopen."""
    m = start(tmp_path, pki, stack)
    path = tmp_path / "events.jsonl"
    try:
        for n, (ip, gone) in enumerate([("192.0.2.81", "rm"), ("192.0.2.82", "mv")]):
            assert m.ctl("ban", ip, "1h").returncode == 0
            if gone == "rm":
                path.unlink()
            else:
                path.rename(tmp_path / "events.jsonl.1")
            deadline = time.monotonic() + 20
            while not path.exists():
                assert time.monotonic() < deadline, m.log()[-2000:]
                time.sleep(0.1)
            # The file is made just before the line is logged.
            while m.log().count("events.jsonl was moved or deleted; "
                                "writing to a new one") != n + 1:
                assert time.monotonic() < deadline, m.log()[-2000:]
                time.sleep(0.05)
            assert m.ctl("unban", ip).returncode == 0
            deadline = time.monotonic() + 10
            while "unban" not in path.read_text():
                assert time.monotonic() < deadline, path.read_text()
                time.sleep(0.1)
            e = json.loads(path.read_text().splitlines()[0])
            assert (e["event"], e["ip"]) == ("unban", ip)
        # What was written before the move stays in the moved file.
        assert '"ip":"192.0.2.82"' in (tmp_path / "events.jsonl.1").read_text()
    finally:
        assert m.stop() == 0


def test_reload_warns_aggregate_restarts_windows(tmp_path, pki, stack):
    m = start(tmp_path, pki, stack)
    try:
        m.config_path.write_text(m.config_path.read_text().replace(
            "concurrent_per_ip = 0", "concurrent_per_ip = 0\naggregate_ipv4 = 24"))
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        assert "aggregate_ipv6 changed: connection" in r.stdout + r.stderr
        # A reload that leaves it alone says nothing of it (the test's
        # own directory, in other warnings' paths, is named "aggregate").
        r = m.ctl("reload")
        assert "aggregate_ipv" not in r.stdout + r.stderr, r.stdout + r.stderr
    finally:
        assert m.stop() == 0


def test_sessions_from_before_a_new_aggregation_free_no_places(tmp_path, pki, stack):
    """After a reload that changes aggregate_ipv4, the sessions open
    before it no longer count, and their ends must not free the places
    that sessions admitted since hold: the address stays held to
    concurrent_per_ip."""
    m = start(tmp_path, pki, stack)
    held = []
    try:
        m.config_path.write_text(m.config_path.read_text().replace(
            "concurrent_per_ip = 0", "concurrent_per_ip = 2"))
        assert m.ctl("reload").returncode == 0
        old = [Smtp(m.port("smtp"), "192.0.2.30") for _ in range(2)]
        held += old
        for c in old:
            assert c.reply().startswith(b"220")
        m.config_path.write_text(m.config_path.read_text().replace(
            "concurrent_per_ip = 2", "concurrent_per_ip = 2\naggregate_ipv4 = 31"))
        assert m.ctl("reload").returncode == 0
        new = [Smtp(m.port("smtp"), ip) for ip in ("192.0.2.30", "192.0.2.31")]
        held += new
        for c in new:
            assert c.reply().startswith(b"220")
        for c in old:
            assert c.cmd(b"QUIT").startswith(b"221")
            c.close()
        time.sleep(1)
        third = Smtp(m.port("smtp"), "192.0.2.31")
        held.append(third)
        line = third.reply()
        assert line.startswith(b"554") and b"too many connections" in line, line
    finally:
        for c in held:
            c.close()
        assert m.stop() == 0


def test_restart_only_keys_warn_until_the_restart(tmp_path, pki, stack):
    """daemon.control_socket is bound once: each reload that names
    another says it waits for a restart, not only the first, and one
    that names the running socket again says nothing of it."""
    m = start(tmp_path, pki, stack)
    try:
        text = m.config_path.read_text()
        sock = str(m.control_socket)
        assert sock in text
        m.config_path.write_text(text.replace(sock, str(tmp_path / "other.sock")))
        for _ in range(2):
            r = m.ctl("reload")
            assert r.returncode == 0, r.stderr
            assert "warning: daemon.control_socket changes at the next " \
                "restart" in r.stdout + r.stderr, r.stdout + r.stderr
        m.config_path.write_text(text)
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        assert "control_socket" not in r.stdout + r.stderr, r.stdout + r.stderr
    finally:
        assert m.stop() == 0


def test_reload_raising_max_sessions_past_open_files_limit_warns(tmp_path, pki, stack):
    """The start says when the open files limit is below what
    daemon.max_sessions needs; a reload that raises max_sessions says
    so as well (no hard limit reaches 2,000,000 descriptors)."""
    m = start(tmp_path, pki, stack)
    try:
        text = m.config_path.read_text()
        m.config_path.write_text(text.replace(
            "control_socket = ", "max_sessions = 1000000\ncontrol_socket = ", 1))
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        assert "warning: open files limit" in r.stdout + r.stderr, r.stdout + r.stderr
        assert "daemon.max_sessions = 1000000 needs (2000000)" in r.stdout + r.stderr
        m.config_path.write_text(text)
        r = m.ctl("reload")
        assert "open files limit" not in r.stdout + r.stderr, r.stdout + r.stderr
    finally:
        assert m.stop() == 0


def session(m, ip: str) -> None:
    c = Smtp(m.port("smtp"), ip)
    try:
        assert c.reply().startswith(b"220")
        assert c.cmd(b"QUIT").startswith(b"221")
    finally:
        c.close()


def test_log_level_warning_keeps_warnings_and_reload_changes_it(tmp_path, pki, stack):
    """daemon.log_level = "warning" drops the lines written per session
    (a busy site's journal) but keeps warnings, a reload's among them; a
    reload back to "info" brings the session lines back."""
    m = Moat(tmp_path, pki, [listener("smtp", stack.smtp_addr, tls="none",
                                      backend_proxy="v1", accept_proxy=True,
                                      accept_proxy_from=["127.0.0.0/8"])],
             verbose=0, log_level="warning")
    m.start()
    try:
        session(m, "192.0.2.61")
        # The warning a reload writes is a sign that the log is current.
        m.config_path.write_text(m.config_path.read_text().replace(
            "concurrent_per_ip = 0", "concurrent_per_ip = 0\naggregate_ipv4 = 24"))
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        text = m.wait_log("warning: policy.rate.aggregate_ipv4")
        assert "192.0.2.61" not in text
        assert "connect listener=" not in text
        assert "reload: reading" not in text        # info: dropped
        m.config_path.write_text(m.config_path.read_text().replace(
            'log_level = "warning"', 'log_level = "info"'))
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        session(m, "192.0.2.62")
        text = m.wait_log("connect listener=smtp ip=192.0.2.62")
        assert "192.0.2.61" not in text
    finally:
        assert m.stop() == 0


def hup_held(pid: int) -> bool:
    """Whether pid's main thread holds SIGHUP (moat's main() has run)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigBlk:"):
                    return int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)) != 0
    except OSError:
        pass
    return False


def test_signals_while_loading_are_held_not_fatal(tmp_path, pki, stack):
    """A `systemctl reload` or logrotate's SIGUSR1 right after a start
    came while moat still read its config and lists, before it had its
    handlers: the default action killed it, with nothing logged, and
    systemd does not restart after a death by SIGHUP. Such signals are
    now held until moat runs, then handled."""
    deny = tmp_path / "deny.txt"
    with open(deny, "w") as f:
        for i in range(400000):
            f.write(f"2001:db8:{i >> 16:x}:{i & 0xffff:x}::/64\n")
    m = Moat(tmp_path, pki, [listener("smtp", stack.smtp_addr, tls="none",
                                      backend_proxy="v1")],
             extra=f'[policy]\ndeny_files = ["{deny}"]\n')
    m._spawn()
    try:
        deadline = time.monotonic() + 10
        while not hup_held(m.proc.pid):
            assert m.proc.poll() is None, m.log()
            assert time.monotonic() < deadline, "moat never held SIGHUP"
            time.sleep(0.001)
        m.signal(signal.SIGHUP)
        m.signal(signal.SIGUSR1)
        # The signals came while it was loading, not after.
        assert "moat running" not in m.log()
        m.wait_log("moat running", timeout=30)
        m.wait_log("reload done", timeout=30)
        assert m.proc.poll() is None, m.log()
        with socket.create_connection(m.addr("smtp"), timeout=20) as c:
            assert c.recv(512).startswith(b"220 ")
    finally:
        assert m.stop() == 0


def test_reload_with_a_list_file_turned_fifo_fails_at_once(tmp_path, pki):
    """A deny_files entry that became a FIFO (a feed tool writing into a
    named pipe) held the reload's open() for good on the main loop:
    moatctl got no answer and SIGTERM was never handled. Now the reload
    fails at once, naming the file, and moat goes on."""
    feed = tmp_path / "feed.txt"
    feed.write_text("198.51.100.7\n")
    m = Moat(tmp_path, pki, [listener("smtp", ("127.0.0.1", free_port()),
                                      tls="none")],
             extra=f'[policy]\ndeny_files = ["{feed}"]\n').start()
    try:
        feed.unlink()
        os.mkfifo(feed)
        r = m.ctl("reload", timeout=10)
        assert r.returncode == 1, r.stderr
        assert f"list file {feed} is not a regular file" in r.stderr, r.stderr
        assert m.ctl("status", timeout=10).returncode == 0
    finally:
        assert m.stop() == 0


def test_reloads_leave_no_descriptors_or_mappings_behind(tmp_path, pki):
    """A moat that lives for weeks is reloaded hundreds of times: each
    generation's listening sockets, events file and geo database copy (a
    memfd mapping) must go with it, with two workers, a listener added and
    removed, the certificate and the geo database changed each time, and
    a session on the removed listener that outlives its reload."""
    dbs = [make_test_mmdb(tmp_path / f"geo{v}.mmdb") for v in (0, 1)]
    b = ScriptedBackend("smtp").start()
    one = listener("one", b.addr, tls="none")
    two = listener("two", b.addr, tls="none")
    m = Moat(tmp_path, pki, [one])

    def write(v):
        leaf = (pki.server, pki.other)[v]
        text = render_config(tmp_path, leaf.chain, leaf.key, [one, two][:1 + v],
                             extra=f'[policy.geo]\ndatabase = "{dbs[v]}"\n')
        m.config_path.write_text(text.replace("[daemon]\n", "[daemon]\nworkers = 2\n", 1))

    def held():
        pid = m.proc.pid
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read().splitlines()
        if sanitized:
            maps = [l for l in maps if len(l.split()) > 5]
        return (len(os.listdir(f"/proc/{pid}/fd")),
                sum("moat-geo" in l for l in maps), len(maps))

    write(0)
    m.start()
    # ASan's allocator maps memory as it goes (what a reload frees waits
    # in its quarantine), so there only mappings of files are counted,
    # not anonymous ones (thread stacks among them).
    sanitized = m.sanitized()
    try:
        base = None
        for i in range(26):
            write(1 - i % 2)
            r = m.ctl("reload", timeout=30)
            assert r.returncode == 0, r.stderr
            if i == 1:           # after a first round trip (lazy loads)
                time.sleep(0.5)  # moat closes moatctl's connection
                base = held()
                assert base[1] == 1, base
            if i == 12:          # two is there: hold a session on it
                s = socket.create_connection(
                    ("127.0.0.1", int(two["listen"][0].rsplit(":", 1)[1])), timeout=10)
                assert s.recv(100).startswith(b"220")
        # i == 25 wrote configuration A: two is gone, its session is not.
        s.sendall(b"NOOP\r\n")
        assert s.recv(100).startswith(b"250")
        s.close()
        deadline = time.monotonic() + 10
        while held() != base and time.monotonic() < deadline:
            time.sleep(0.1)
        assert held() == base, (base, held(), m.log()[-2000:])
    finally:
        rc = m.stop()
        b.stop()
    assert rc == 0, m.log()[-3000:]


@contextlib.contextmanager
def scripted_moat(tmp_path, pki, extra: str = ""):
    """A running moat with one plaintext SMTP listener on a scripted
    backend."""
    b = ScriptedBackend("smtp").start()
    try:
        m = Moat(tmp_path, pki, [listener("smtp", b.addr, tls="none")],
                 extra=extra).start()
        try:
            yield m
        finally:
            assert m.stop() == 0
    finally:
        b.stop()


def reload_after(m, old: str, new: str) -> str:
    """The reply of `moatctl reload` once old is new in m's config."""
    m.config_path.write_text(m.config_path.read_text().replace(old, new))
    r = m.ctl("reload")
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


def test_reload_lowering_ban_max_entries_drops_the_surplus_and_says_so(tmp_path, pki):
    """A reload that lowered ban.max_entries below the bans in force
    said nothing and kept them all, until the next ban dropped the whole
    surplus at once, silently. It is applied with the reload now, whose
    reply says how many went."""
    with scripted_moat(tmp_path, pki, "[ban]\nmax_entries = 2000\n") as m:
        for i in range(1100):
            r = m.ctl("ban", f"10.{i // 250}.{i % 250}.1", "1h")
            assert r.returncode == 0, r.stderr
        assert "1100 active" in m.ctl("status").stdout
        out = reload_after(m, "max_entries = 2000", "max_entries = 1000")
        assert "warning: ban.max_entries = 1000: 100 ban records dropped " \
            "to fit, 100 of them bans in force" in out, out
        assert "1000 active" in m.ctl("status").stdout
        # The next ban makes room for itself alone.
        assert m.ctl("ban", "192.0.2.9", "1h").returncode == 0
        assert "1000 active" in m.ctl("status").stdout
        out = reload_after(m, "", "")
        assert "max_entries" not in out, out


def test_state_file_larger_than_the_table_is_not_counted_as_evictions(tmp_path, pki):
    """Records the start drops because the state file holds more than
    ban.max_entries are said in the start's warning, and (moatctl(8)) not
    counted in moat_bans_evicted_total, which counts a flood pushing bans
    out while moat runs: they were counted there too."""
    expiry = int(time.time() * 1000) + 3_600_000
    (tmp_path / "moat.state").write_text("\n".join(
        ["moat-state 1"] +
        [f"ban 10.1.{i // 250}.{i % 250 + 1} {expiry} 1 rate" for i in range(1100)] +
        ["end 1100", ""]))
    mport = free_port()
    b = ScriptedBackend("smtp").start()
    m = Moat(tmp_path, pki, [listener("smtp", b.addr, tls="none")],
             extra="[ban]\nmax_entries = 1000\n", metrics=f"127.0.0.1:{mport}")

    def evicted() -> bytes:
        with socket.create_connection(("127.0.0.1", mport), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            body = b""
            while (d := s.recv(65536)):
                body += d
        return body.split(b"\nmoat_bans_evicted_total ", 1)[1].split(b"\n")[0]
    try:
        m.start()
        m.wait_log("1100 records, more than ban.max_entries = 1000: kept 1000, "
                   "dropped 100")
        assert evicted() == b"0"
        # While moat runs, a ban that makes room for itself is counted.
        assert m.ctl("ban", "192.0.2.9", "1h").returncode == 0
        assert evicted() == b"1"
    finally:
        assert m.stop() == 0
        b.stop()


def test_reload_reply_names_listeners_opened_closed_and_changed(tmp_path, pki):
    """`moatctl reload` said only how many sockets listen: a listener
    added, removed, or serving new sessions otherwise (tls, backend) is
    named in the reply now. The session on the removed one carries on;
    new ones on the changed one get its new tls mode."""
    b = ScriptedBackend("smtp").start()
    b2 = ScriptedBackend("smtp").start()
    m = Moat(tmp_path, pki, [listener("a", b.addr, tls="none"),
                             listener("b", b.addr, tls="none")]).start()
    held = None
    try:
        pa, pb, pc = m.port("a"), m.port("b"), free_port()
        held = socket.create_connection(("127.0.0.1", pb), timeout=10)
        assert held.recv(4096).startswith(b"220 ")
        text = m.config_path.read_text()
        at = text.index("[[listener]]", text.index('name = "b"') - 40)
        end = text.index("[policy.rate]")
        text = text[:at] + text[at:end].replace('name = "b"', 'name = "c"').replace(
            f"127.0.0.1:{pb}", f"127.0.0.1:{pc}") + text[end:]
        text = text.replace('tls = "none"', 'tls = "starttls"', 1).replace(
            f'backend = "127.0.0.1:{b.addr[1]}"', f'backend = "127.0.0.1:{b2.addr[1]}"', 1)
        m.config_path.write_text(text)
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        out = r.stdout + r.stderr
        assert f"listening on 127.0.0.1:{pc} (listener 'c')" in out, out
        assert f"stopped listening on 127.0.0.1:{pb} (listener 'b'; its " \
            "sessions carry on)" in out, out
        assert f"listener 'a' on 127.0.0.1:{pa}, for new sessions: tls none " \
            f"-> starttls, backend 127.0.0.1:{b.addr[1]} -> 127.0.0.1:" \
            f"{b2.addr[1]}" in out, out
        assert "reload done: 2 listening sockets, 1 sessions carry on" in out
        held.sendall(b"NOOP\r\n")
        assert held.recv(4096).startswith(b"250")
        with socket.create_connection(("127.0.0.1", pa), timeout=10) as c:
            assert c.recv(4096).startswith(b"220 ")
            c.sendall(b"EHLO x\r\nSTARTTLS\r\n")
            got = b""
            while b"Ready to start TLS" not in got:
                chunk = c.recv(4096)
                assert chunk, got
                got += chunk
        # Nothing changed: nothing named.
        r = m.ctl("reload")
        assert "listening on" not in r.stdout, r.stdout
        assert "for new sessions" not in r.stdout, r.stdout
    finally:
        if held is not None:
            held.close()
        assert m.stop() == 0
        b.stop()
        b2.stop()


def test_reload_reply_counts_bans_the_allow_list_lifts(tmp_path, pki):
    """Bans of addresses a new allow list covers are lifted, each in the
    log and the events; the reply of `moatctl reload` said only "reload
    done", so the operator who allowed a banned customer could not tell
    from it that the ban went. It says how many now."""
    with scripted_moat(tmp_path, pki) as m:
        for ip in ("192.0.2.5", "192.0.2.6", "198.51.100.1"):
            assert m.ctl("ban", ip, "1h").returncode == 0
        out = reload_after(m, "[policy.rate]",
                           '[policy]\nallow = ["192.0.2.0/24"]\n\n[policy.rate]')
        assert "2 bans lifted: the allow list covers their addresses now" \
            in out, out
        assert "1 active" in m.ctl("status").stdout
        out = reload_after(m, "", "")
        assert "lifted" not in out, out
