"""daemon.user: after start moat runs as that user with CAP_NET_ADMIN only
(or no capability without a firewall writer), no_new_privs and a working
directory it owns, and keeps banning through the firewall writer.

moat runs in a network namespace made here, so its nftables table never
touches the host's ruleset. The control socket is a path, so moatctl
reaches it from the root namespace.
"""
from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from moatrun import free_port, moat_binary, moatctl_binary

USER = "nobody"
CAP_NET_ADMIN = 1 << 12


def _need(cmd: str) -> None:
    if shutil.which(cmd) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{cmd} not found")
        pytest.skip(f"{cmd} not found")


@pytest.fixture
def ns():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    _need("ip")
    name = f"moat-pd-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def base():
    # Outside pytest's 0700 tree: the daemon user must reach its files.
    d = Path(tempfile.mkdtemp(prefix="moat-pd-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def status(pid: int, task: str | None = None) -> dict:
    path = f"/proc/{pid}/task/{task}/status" if task else f"/proc/{pid}/status"
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def write_config(base: Path, firewall: str, run: str = "run",
                 user: str | None = USER) -> Path:
    cfg = base / "moat.toml"
    cfg.write_text(f"""
[daemon]
{f'user = "{user}"' if user else ""}
control_socket = "{base}/{run}/control.sock"
state_file = "{base}/state/moat.state"

[[listener]]
name = "smtp"
listen = ["127.0.0.1:{free_port()}"]
protocol = "smtp"
tls = "none"
backend = "127.0.0.1:9"
backend_proxy = "v1"

[firewall]
backend = "{firewall}"
table = "moatpd"

[events]
file = "{base}/log/events.jsonl"
""")
    return cfg


def start(ns: str, base: Path, firewall: str, run: str = "run",
          env: dict | None = None, wrap: list[str] | None = None,
          cfg: Path | None = None):
    cfg = cfg or write_config(base, firewall, run)
    log = open(base / "moat.log", "wb")
    p = subprocess.Popen(["ip", "netns", "exec", ns, *(wrap or []),
                          str(moat_binary()), "-v", "-c", str(cfg)],
                         stdout=log, stderr=subprocess.STDOUT,
                         env={**os.environ, **(env or {})})
    sock = base / run / "control.sock"
    deadline = time.monotonic() + 15
    try:
        while True:
            assert p.poll() is None, (base / "moat.log").read_text()
            if sock.exists() and ctl(sock, "status").returncode == 0 and \
                    "running as" in (base / "moat.log").read_text():
                return p, sock
            assert time.monotonic() < deadline, (base / "moat.log").read_text()
            time.sleep(0.05)
    except BaseException:
        stop(p)     # a start that failed leaves no moat behind
        raise


def ctl(sock: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(moatctl_binary()), "-s", str(sock), *args],
                          capture_output=True, text=True, timeout=20)


def wait_in_set(ns: str, base: Path, ip: str) -> None:
    """Waits until the kernel's blocked4 set in ns holds ip."""
    deadline = time.monotonic() + 10
    while True:
        r = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "set",
                            "inet", "moatpd", "blocked4"],
                           capture_output=True, text=True)
        if ip in r.stdout:
            return
        assert time.monotonic() < deadline, (r.stdout, r.stderr,
                                             (base / "moat.log").read_text())
        time.sleep(0.1)


def stop(p: subprocess.Popen) -> int:
    p.terminate()
    try:
        return p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def test_runs_as_user_with_net_admin_only(ns, base):
    _need("nft")
    nobody = pwd.getpwnam(USER)
    p, sock = start(ns, base, "nftables")
    try:
        st = status(p.pid)
        assert st["Uid"].split() == [str(nobody.pw_uid)] * 4
        assert st["Gid"].split() == [str(nobody.pw_gid)] * 4
        assert int(st["CapEff"], 16) == CAP_NET_ADMIN
        assert int(st["CapPrm"], 16) == CAP_NET_ADMIN
        assert int(st["CapInh"], 16) == 0
        assert st["NoNewPrivs"] == "1"
        # Every thread (the firewall writer too) has the same.
        for task in os.listdir(f"/proc/{p.pid}/task"):
            t = status(p.pid, task)
            assert int(t["CapEff"], 16) == CAP_NET_ADMIN, task
        cwd = os.readlink(f"/proc/{p.pid}/cwd")
        assert cwd == str(base / "state")
        assert os.stat(cwd).st_uid == nobody.pw_uid
        # Bans still reach the kernel through the writer.
        assert ctl(sock, "ban", "192.0.2.9", "10m").returncode == 0
        wait_in_set(ns, base, "192.0.2.9")
        # The state file is written as the user, in its directory.
        deadline = time.monotonic() + 10
        state = base / "state" / "moat.state"
        while not (state.exists() and "192.0.2.9" in state.read_text()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert state.stat().st_uid == nobody.pw_uid
        assert "192.0.2.9" in (base / "log" / "events.jsonl").read_text()
    finally:
        assert stop(p) == 0
    assert "firewall: " not in (base / "moat.log").read_text() or \
        "cannot" not in (base / "moat.log").read_text()


def test_started_as_user_with_ambient_capabilities_trims_them(ns, base):
    """Under systemd User= with AmbientCapabilities= (the firewall's own
    advice), moat starts as daemon.user already. It used to trim nothing
    and say "with CAP_NET_ADMIN only" whatever it held: every thread kept
    CAP_NET_BIND_SERVICE and the ambient set. It now keeps CAP_NET_ADMIN
    alone, clears the ambient set, and says what it holds."""
    _need("nft")
    _need("setpriv")
    nobody = pwd.getpwnam(USER)
    for d in ("run", "state", "log"):
        (base / d).mkdir()
        os.chown(base / d, nobody.pw_uid, nobody.pw_gid)

    def as_user(caps: str) -> list[str]:
        return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                "--clear-groups", f"--inh-caps={caps}", f"--ambient-caps={caps}"]

    p, sock = start(ns, base, "nftables",
                    wrap=as_user("+net_admin,+net_bind_service"))
    try:
        for task in os.listdir(f"/proc/{p.pid}/task"):
            t = status(p.pid, task)
            assert int(t["CapEff"], 16) == CAP_NET_ADMIN, (task, t)
            assert int(t["CapPrm"], 16) == CAP_NET_ADMIN, (task, t)
            assert int(t["CapAmb"], 16) == 0, (task, t)
        assert "with CAP_NET_ADMIN only" in (base / "moat.log").read_text()
        assert ctl(sock, "ban", "192.0.2.19", "10m").returncode == 0
        wait_in_set(ns, base, "192.0.2.19")
    finally:
        assert stop(p) == 0

    # Not given CAP_NET_ADMIN: it says so, and holds nothing.
    p, sock = start(ns, base, "nftables", wrap=as_user("+net_bind_service"))
    try:
        t = status(p.pid)
        assert int(t["CapEff"], 16) == 0 and int(t["CapAmb"], 16) == 0, t
        log = (base / "moat.log").read_text()
        assert "with no capabilities" in log, log
        assert "the firewall needs CAP_NET_ADMIN, which moat was started " \
            "without" in log, log
    finally:
        assert stop(p) == 0


def test_no_capabilities_without_firewall(ns, base):
    p, sock = start(ns, base, "none")
    try:
        st = status(p.pid)
        assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0
        assert st["NoNewPrivs"] == "1"
        assert ctl(sock, "ban", "192.0.2.10", "1m").returncode == 0
        assert "192.0.2.10" in ctl(sock, "bans").stdout
    finally:
        assert stop(p) == 0


def test_firewall_turned_on_by_reload_says_it_needs_a_restart(ns, base):
    """Started with backend "none", moat gives up CAP_NET_ADMIN for good
    when it becomes daemon.user. A reload that turns nftables on used to
    say "reload done" and then tell the operator to grant the capability
    moat itself had dropped; it now says the change needs a restart."""
    p, sock = start(ns, base, "none")
    try:
        cfg = base / "moat.toml"
        cfg.write_text(cfg.read_text().replace('backend = "none"',
                                               'backend = "nftables"'))
        r = ctl(sock, "reload")
        assert r.returncode == 0, r.stdout + r.stderr
        assert ('firewall.backend = "nftables" takes effect at the next '
                'restart') in r.stdout + r.stderr
        assert "takes effect at the next restart" in (base / "moat.log").read_text()
    finally:
        assert stop(p) == 0


def test_reload_makes_a_new_state_directory_as_the_daemon_user(ns, base):
    """After the drop, a reload that moves daemon.state_file to a
    directory not made yet makes it as the daemon user where that user
    may, and the bans go there; where only root may, the reload is
    refused and says why, instead of "reload done" and bans that would
    not survive a restart."""
    nobody = pwd.getpwnam(USER)
    p, sock = start(ns, base, "none")
    try:
        assert ctl(sock, "ban", "192.0.2.80", "2h").returncode == 0
        (base / "mine").mkdir()
        os.chown(base / "mine", nobody.pw_uid, nobody.pw_gid)
        cfg = base / "moat.toml"
        text = cfg.read_text()
        cfg.write_text(text.replace(f"{base}/state/moat.state",
                                    f"{base}/mine/state/moat.state"))
        r = ctl(sock, "reload")
        assert r.returncode == 0, r.stdout + r.stderr
        made = base / "mine" / "state"
        assert made.stat().st_uid == nobody.pw_uid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (made / "moat.state").exists():
            time.sleep(0.1)
        assert "ban 192.0.2.80 " in (made / "moat.state").read_text()

        cfg.write_text(text.replace(f"{base}/state/moat.state",
                                    f"{base}/rootonly/moat.state"))
        r = ctl(sock, "reload")
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert f"cannot create {base}/rootonly: Permission denied" in out, out
        assert f"moat runs as '{USER}' now" in out, out
        assert not (base / "rootonly").exists()
    finally:
        assert stop(p) == 0


def root_dirs(base: Path, *names: str) -> None:
    """Directories as systemd's StateDirectory= and LogsDirectory= leave
    them for a unit without User=: root's, mode 0750, with a root-owned
    file from an earlier start inside."""
    for n in names:
        (base / n).mkdir(mode=0o750)
        os.chown(base / n, 0, 0)
    (base / "state" / "moat.state").write_text("moat-state 1\nend 0\n")


def test_takes_over_systemd_directories(ns, base):
    nobody = pwd.getpwnam(USER)
    root_dirs(base, "state", "log")
    p, sock = start(ns, base, "none", env={
        "STATE_DIRECTORY": f"{base}/state",
        "LOGS_DIRECTORY": f"/nonexistent:{base}/log"})
    try:
        for d in ("state", "log", "state/moat.state"):
            assert (base / d).stat().st_uid == nobody.pw_uid, d
        assert ctl(sock, "ban", "192.0.2.11", "1h").returncode == 0
        state = base / "state" / "moat.state"
        deadline = time.monotonic() + 10
        while "192.0.2.11" not in state.read_text():
            assert time.monotonic() < deadline, (base / "moat.log").read_text()
            time.sleep(0.1)
        assert "192.0.2.11" in (base / "log" / "events.jsonl").read_text()
    finally:
        assert stop(p) == 0


def test_reload_naming_a_user_gives_nothing_away_before_the_restart(ns, base):
    """Running as root under systemd's directories, a reload that adds
    daemon.user says it takes effect at the restart, and until then
    gives no directory or file to that user: the root process must go on
    saving bans there, so that they survive the restart it asks for."""
    root_dirs(base, "state", "log", "run")
    cfg = write_config(base, "none", user=None)
    p, sock = start_as_unit(ns, base, cfg)
    try:
        cfg.write_text(f'[daemon]\nuser = "{USER}"\n' +
                       cfg.read_text().replace("[daemon]\n", "", 1))
        r = ctl(sock, "reload")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "daemon.user changes at the next restart" in r.stdout + r.stderr
        for d in ("state", "log", "log/events.jsonl"):
            assert (base / d).stat().st_uid == 0, d
        assert ctl(sock, "ban", "192.0.2.12", "1h").returncode == 0
        state = base / "state" / "moat.state"
        deadline = time.monotonic() + 10
        while not state.exists() or "192.0.2.12" not in state.read_text():
            assert time.monotonic() < deadline, (base / "moat.log").read_text()
            time.sleep(0.1)
        assert "192.0.2.12" in (base / "log" / "events.jsonl").read_text()
    finally:
        assert stop(p) == 0


SOURCE = Path(os.environ.get("MOAT_SOURCE_ROOT", "."))


def start_as_unit(ns: str, base: Path, cfg: Path):
    """moat as the shipped unit starts it: root within the unit's
    capability bounding set (no CAP_DAC_OVERRIDE), umask 027, with
    systemd's state, logs and runtime directories base/state, log, run."""
    log = open(base / "moat.log", "wb")
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns, *as_unit(), str(moat_binary()), "-c",
         str(cfg)], stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.umask(0o027),
        env={**os.environ, "STATE_DIRECTORY": f"{base}/state",
             "LOGS_DIRECTORY": f"{base}/log",
             "RUNTIME_DIRECTORY": f"{base}/run"})
    sock = base / "run" / "control.sock"
    try:
        deadline = time.monotonic() + 15
        while not (sock.exists() and ctl(sock, "status").returncode == 0):
            assert p.poll() is None, (base / "moat.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
    except BaseException:
        stop(p)
        raise
    return p, sock


def unit_bounding_set() -> str:
    """The shipped unit's CapabilityBoundingSet= in setpriv's spelling."""
    unit = (SOURCE / "contrib" / "systemd" / "moat.service").read_text()
    caps = next(line.split("=", 1)[1].split() for line in unit.splitlines()
                if line.startswith("CapabilityBoundingSet="))
    return "-all," + ",".join("+" + c.lower().removeprefix("cap_")
                              for c in caps)


def as_unit() -> list[str]:
    """Start moat as the shipped unit does: root, but within its capability
    bounding set (no CAP_DAC_OVERRIDE nor CAP_DAC_READ_SEARCH), with
    no_new_privs."""
    _need("setpriv")
    return ["setpriv", "--no-new-privs", "--bounding-set",
            unit_bounding_set()]


def test_takes_over_systemd_directories_under_unit_capabilities(ns, base):
    """A restart under the systemd unit: systemd has given the directories
    and the files from the last run back to root, and moat, without
    CAP_DAC_OVERRIDE, gives them to the daemon user again and starts."""
    nobody = pwd.getpwnam(USER)
    root_dirs(base, "state", "log")
    (base / "log" / "events.jsonl").write_text("")
    (base / "log" / "events.jsonl").chmod(0o640)
    (base / "state" / "moat.state").chmod(0o600)
    p, sock = start(ns, base, "none", wrap=as_unit(), env={
        "STATE_DIRECTORY": f"{base}/state",
        "LOGS_DIRECTORY": f"{base}/log"})
    try:
        for d in ("state", "log", "state/moat.state", "log/events.jsonl"):
            assert (base / d).stat().st_uid == nobody.pw_uid, d
        assert ctl(sock, "ban", "192.0.2.12", "1h").returncode == 0
        assert "192.0.2.12" in (base / "log" / "events.jsonl").read_text()
    finally:
        assert stop(p) == 0


def test_root_owned_directory_named_in_error(ns, base):
    """Outside systemd's own directories moat changes no owner: it stops
    and says which directory and what to do."""
    root_dirs(base, "state", "log")
    cfg = write_config(base, "none")
    r = subprocess.run(["ip", "netns", "exec", ns, str(moat_binary()), "-c",
                        str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert f"{USER} cannot write in {base}/state (owner uid 0, mode 0750)" \
        in r.stderr, r.stderr
    assert f"chown {USER} {base}/state" in r.stderr
    assert (base / "state").stat().st_uid == 0
    assert not (base / "run" / "control.sock").exists()
    # moat -t sees it too, and changes nothing either.
    t = subprocess.run([str(moat_binary()), "-t", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=20)
    assert t.returncode == 1
    assert f"{USER} cannot write in {base}/state" in t.stderr, t.stderr
    # ...at the line that names the file.
    at = 1 + cfg.read_text().splitlines().index(
        f'state_file = "{base}/state/moat.state"')
    assert f"{cfg}:{at}:14: daemon.state_file: privileges: {USER} cannot " \
        "write in" in t.stderr, t.stderr
    # Under systemd, which names the directories as the unit's own, the
    # same check passes: the start gives them to the user.
    t = subprocess.run([str(moat_binary()), "-t", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=20,
                       env={**os.environ, "STATE_DIRECTORY": f"{base}/state",
                            "LOGS_DIRECTORY": f"{base}/log"})
    assert t.returncode == 0, t.stderr
    assert (base / "state").stat().st_uid == 0


def test_check_finds_unmakeable_directory(base):
    """An events file below a regular file: moat -t says so, instead of
    passing a configuration that cannot start."""
    cfg = write_config(base, "none")
    (base / "log").write_text("not a directory\n")
    t = subprocess.run([str(moat_binary()), "-t", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=20)
    assert t.returncode == 1
    at = 1 + cfg.read_text().splitlines().index(
        f'file = "{base}/log/events.jsonl"')
    assert (f"{cfg}:{at}:8: events.file: {base}/log/events.jsonl: {base}/log "
            "is not a directory") in t.stderr, t.stderr


def test_files_only_root_can_read_are_said(ns, base):
    """Files moat reads again as daemon.user (the config file and list
    files at each reload, the geo database at start) but only root can
    read: moat -t warns about the first and refuses the second, and a
    start warns too, instead of "configuration OK" and a failing SIGHUP
    or start."""
    from conftest import make_test_mmdb
    cfg = write_config(base, "none")
    deny = base / "deny.txt"
    deny.write_text("192.0.2.0/24\n")
    geo = make_test_mmdb(base / "geo.mmdb")
    cfg.write_text(cfg.read_text() + f"""
[policy]
deny_files = ["{deny}"]
[policy.geo]
database = "{geo}"
deny_countries = ["CN"]
""")
    for f in (cfg, deny, geo):
        f.chmod(0o600)

    def check():
        return subprocess.run([str(moat_binary()), "-t", "-c", str(cfg)],
                              capture_output=True, text=True, timeout=20)

    t = check()
    assert t.returncode == 1, t.stderr
    # Each said where the config names it; the config file as a whole.
    lines = cfg.read_text().splitlines()
    at_geo = 1 + next(i for i, x in enumerate(lines) if x.startswith("database"))
    at_deny = 1 + next(i for i, x in enumerate(lines) if x.startswith("deny_files"))
    assert (f"{cfg}:{at_geo}:12: policy.geo.database: {USER} cannot read {geo}: "
            "Permission denied; moat opens it after becoming that user, so "
            "it would not start") in t.stderr, t.stderr
    assert (f"{cfg}:{at_deny}:15: warning: policy.deny_files: {USER} cannot read "
            f"{deny}: Permission denied; moat reads it again as that user "
            "at each reload") in t.stderr, t.stderr
    assert (f"{cfg}: warning: {USER} cannot read {cfg}: Permission denied; "
            "moat reads it again as that user at each reload") in t.stderr
    geo.chmod(0o644)
    t = check()
    assert t.returncode == 0 and "configuration OK" in t.stderr, t.stderr
    assert f"{USER} cannot read {cfg}" in t.stderr
    assert f"{USER} cannot read {geo}" not in t.stderr

    p, sock = start(ns, base, "none", cfg=cfg)
    try:
        log = (base / "moat.log").read_text()
        assert f"{USER} cannot read {cfg}: Permission denied" in log, log
        assert f"{USER} cannot read {deny}: Permission denied" in log, log
        # The reload that then fails says as whom it read, since ls as
        # root shows a readable file.
        cfg.chmod(0o644)
        r = ctl(sock, "reload")
        assert r.returncode != 0, r.stdout + r.stderr
        assert (f"cannot read list file {deny}: Permission denied (read as user "
                f"'{USER}')") in r.stdout + r.stderr, r.stdout + r.stderr
        cfg.chmod(0o600)
        r = ctl(sock, "reload")
        assert (f"cannot open: Permission denied (read as user '{USER}')"
                in r.stdout + r.stderr), r.stdout + r.stderr
    finally:
        assert stop(p) == 0

    # Started without the check, the geo database it cannot read stops
    # it, and the message says whose eyes it was opened with.
    geo.chmod(0o600)
    r = subprocess.run(["ip", "netns", "exec", ns, str(moat_binary()), "-c",
                        str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1, r.stderr
    assert f"(opened as daemon.user '{USER}')" in r.stderr, r.stderr


def test_control_socket_beside_state_file(ns, base):
    """The control socket in the state file's directory, which neither
    exists yet: moat makes it for the daemon user before binding there."""
    nobody = pwd.getpwnam(USER)
    p, sock = start(ns, base, "none", run="state")
    try:
        assert (base / "state").stat().st_uid == nobody.pw_uid
        assert ctl(sock, "status").returncode == 0
    finally:
        assert stop(p) == 0


@pytest.mark.parametrize("user", [None, USER], ids=["root", "daemon-user"])
def test_shipped_logrotate_under_unit_capabilities(ns, base, user):
    """contrib/logrotate/moat as shipped (paths and the signal aside, its
    user the one the unit's comment creates) rotates the events file of a
    moat started as the unit starts it (its capability bounding set, so
    root without CAP_DAC_OVERRIDE; systemd's directories), with and without
    daemon.user, and the next event lands in the new file."""
    _need("logrotate")
    group = grp.getgrgid(pwd.getpwnam(USER).pw_gid).gr_name
    root_dirs(base, "state", "log", "run")
    cfg = write_config(base, "none", user=user)
    p, sock = start_as_unit(ns, base, cfg)
    events = base / "log" / "events.jsonl"
    try:
        assert ctl(sock, "ban", "192.0.2.21", "1h").returncode == 0
        assert "192.0.2.21" in events.read_text()

        conf = (SOURCE / "contrib" / "logrotate" / "moat").read_text()
        conf = conf.replace("/var/log/moat/events.jsonl", str(events))
        conf = re.sub(r"systemctl kill .*", f"kill -USR1 {p.pid}", conf)
        conf = re.sub(r"create (\d+) moat moat",
                      rf"create \1 {USER} {group}", conf)
        (base / "logrotate.conf").write_text(conf)
        r = subprocess.run(["logrotate", "-f", "-s", str(base / "lr.state"),
                            str(base / "logrotate.conf")],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert "192.0.2.21" in (base / "log" / "events.jsonl.1").read_text()

        # The reopen happens on the signal, in moat's own time.
        deadline = time.monotonic() + 10
        while "reopening the events file" not in \
                (base / "moat.log").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ctl(sock, "ban", "192.0.2.22", "1h").returncode == 0
        deadline = time.monotonic() + 10
        while not (events.exists() and "192.0.2.22" in events.read_text()):
            assert time.monotonic() < deadline, (base / "moat.log").read_text()
            time.sleep(0.05)
        want = pwd.getpwnam(user).pw_uid if user else 0
        assert events.stat().st_uid == want
        assert "cannot reopen" not in (base / "moat.log").read_text()
    finally:
        assert stop(p) == 0
