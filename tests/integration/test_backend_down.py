"""The backend is out of reach: refused, silent (connect timeout), or
refusing XCLIENT; or it accepts and then fails before the client has
seen a byte of it: no greeting within the connect timeout, an end of
stream or a reset before its greeting or during XCLIENT.  The client
gets a protocol-correct temporary failure (SMTP 421, POP3 -ERR
[SYS/TEMP]) and moat closes; nothing hangs.  Also handshake timeouts and
failures.  See issue 3.
"""

from __future__ import annotations

import json
import os
import poplib
import re
import smtplib
import socket
import ssl
import time

import pytest

from moatrun import Moat, free_port, listener, running
from scripted import ScriptedBackend


def ctx_for(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_cert))


@pytest.fixture(scope="module")
def blackhole():
    """A loopback port whose accept queue is full: SYNs to it go
    unanswered, so a connect there hangs until the caller gives up."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(srv.getsockname())
        except BlockingIOError:
            pass
        fillers.append(c)
    yield srv.getsockname()
    for c in fillers:
        c.close()
    srv.close()


@pytest.fixture(scope="module")
def moat(pki, blackhole, tmp_path_factory):
    refused = ("127.0.0.1", free_port())      # nothing listens there
    m = Moat(tmp_path_factory.mktemp("moat"), pki, [
        listener("smtps", refused, connect="2s"),
        listener("pop3s", refused, protocol="pop3", connect="2s"),
        listener("smtp-plain", refused, tls="none", connect="2s"),
        listener("pop3-plain", refused, protocol="pop3", tls="none", connect="2s"),
        listener("smtps-silent", blackhole, connect="1s"),
        listener("pop3s-silent", blackhole, protocol="pop3", connect="1s"),
        listener("slow-handshake", refused, handshake="1s"),
    ]).start()
    yield m
    assert m.stop() == 0, m.log()[-3000:]


def test_smtps_refused_gives_421(moat, pki):
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP_SSL("127.0.0.1", moat.port("smtps"), context=ctx_for(pki), timeout=20)
    assert e.value.smtp_code == 421
    assert e.value.smtp_error == b"4.3.0 smtps service temporarily unavailable"
    moat.wait_log('backend_fail backend=127.0.0.1')


def test_pop3s_refused_gives_err(moat, pki):
    with pytest.raises(poplib.error_proto) as e:
        poplib.POP3_SSL("127.0.0.1", moat.port("pop3s"), context=ctx_for(pki), timeout=20)
    assert e.value.args[0] == b"-ERR [SYS/TEMP] pop3s service temporarily unavailable"


def read_all(sock) -> bytes:
    out = b""
    while True:
        try:
            d = sock.recv(4096)
        except ConnectionError:
            return out
        if not d:
            return out
        out += d


@pytest.mark.parametrize("name,reply", [
    ("smtp-plain", b"421 4.3.0 smtp-plain service temporarily unavailable\r\n"),
    ("pop3-plain", b"-ERR [SYS/TEMP] pop3-plain service temporarily unavailable\r\n"),
])
def test_plaintext_listener_refused(moat, name, reply):
    with socket.create_connection(("127.0.0.1", moat.port(name)), timeout=20) as s:
        s.settimeout(20)
        assert read_all(s) == reply       # then moat closes


def test_tls_reply_then_close_notify(moat, pki):
    with socket.create_connection(("127.0.0.1", moat.port("smtps")), timeout=20) as raw:
        with ctx_for(pki).wrap_socket(raw, server_hostname="localhost") as s:
            s.settimeout(20)
            assert read_all(s) == b"421 4.3.0 smtps service temporarily unavailable\r\n"


@pytest.mark.parametrize("name", ["smtps-silent", "pop3s-silent"])
def test_connect_timeout(moat, pki, name):
    with socket.create_connection(("127.0.0.1", moat.port(name)), timeout=30) as raw:
        with ctx_for(pki).wrap_socket(raw, server_hostname="localhost") as s:
            s.settimeout(30)
            got = read_all(s)
    if name.startswith("smtp"):
        assert got == b"421 4.3.0 smtps-silent service temporarily unavailable\r\n"
    else:
        assert got == b"-ERR [SYS/TEMP] pop3s-silent service temporarily unavailable\r\n"
    moat.wait_log("reason=timeout")


def test_xclient_refused_gives_421(make_mailstack, pki, tmp_path):
    ms = make_mailstack(xclient_hosts="")        # Postfix trusts nobody
    m = Moat(tmp_path, pki, [listener("x", ms.smtp_addr, backend_proxy="xclient")]).start()
    try:
        with pytest.raises(smtplib.SMTPConnectError) as e:
            smtplib.SMTP_SSL("127.0.0.1", m.port("x"), context=ctx_for(pki), timeout=20)
        assert e.value.smtp_code == 421
        m.wait_log("XCLIENT refused: 5")
    finally:
        assert m.stop() == 0


def test_handshake_timeout(moat):
    with socket.create_connection(("127.0.0.1", moat.port("slow-handshake")), timeout=30) as s:
        s.settimeout(30)
        assert read_all(s) == b""         # moat gave up on us
    moat.wait_log("tls_fail reason=timeout")


def test_handshake_failure_is_logged_not_fatal(moat, pki):
    ctx = ssl.create_default_context()           # does not trust the test CA
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", moat.port("smtps")), timeout=20) as raw:
            ctx.wrap_socket(raw, server_hostname="localhost")
    moat.wait_log("tls_fail reason=")
    with pytest.raises(smtplib.SMTPConnectError):
        smtplib.SMTP_SSL("127.0.0.1", moat.port("smtps"), context=ctx_for(pki), timeout=20)
    assert moat.proc.poll() is None


# --- backends that accept, then fail before the client saw a byte ---------

def bye(name: str) -> bytes:
    """backend_fail's reply on listener name (POP3 listeners say pop3)."""
    if "pop3" in name:
        return b"-ERR [SYS/TEMP] %s service temporarily unavailable\r\n" % name.encode()
    return b"421 4.3.0 %s service temporarily unavailable\r\n" % name.encode()


@pytest.fixture(scope="module")
def scripted():
    bs = {mode: ScriptedBackend(mode).start()
          for mode in ("stall", "hangup", "reset", "reset_in_xclient",
                       "late_hangup", "late_reset")}
    yield bs
    for b in bs.values():
        b.stop()


@pytest.fixture(scope="module")
def failing(pki, scripted, tmp_path_factory):
    """A 1 s connect timeout and a 10 min idle timeout: a reply within the
    tests' generous waits can only come from the connect timeout."""
    st, hup, rst = (scripted[m].addr for m in ("stall", "hangup", "reset"))
    xrst = scripted["reset_in_xclient"].addr
    t = dict(connect="1s", idle="10m")
    metrics = free_port()
    m = Moat(tmp_path_factory.mktemp("moat"), pki, [
        listener("smtps-mute", st, **t),
        listener("pop3s-mute", st, protocol="pop3", **t),
        listener("smtp-mute", st, tls="none", **t),
        listener("pop3-mute", st, protocol="pop3", tls="none", **t),
        listener("smtp-starttls-mute", st, tls="starttls", **t),
        listener("pop3-starttls-mute", st, protocol="pop3", tls="starttls", **t),
        listener("smtp-v1-mute", st, tls="none", backend_proxy="v1", **t),
        listener("pop3s-v2-mute", st, protocol="pop3", backend_proxy="v2", **t),
        listener("smtp-hangup", hup, tls="none", **t),
        listener("pop3s-hangup", hup, protocol="pop3", **t),
        listener("pop3s-v2-hangup", hup, protocol="pop3", backend_proxy="v2", **t),
        listener("smtps-reset", rst, **t),
        listener("pop3-reset", rst, protocol="pop3", tls="none", **t),
        listener("smtps-xclient-reset", xrst, backend_proxy="xclient", **t),
        listener("smtp-xclient-reset", xrst, tls="none", backend_proxy="xclient", **t),
        listener("smtp-late-hangup", scripted["late_hangup"].addr, tls="none", **t),
        listener("pop3-late-reset", scripted["late_reset"].addr, protocol="pop3",
                 tls="none", **t),
    ], metrics=f"127.0.0.1:{metrics}")
    m.metrics_port = metrics
    yield from running(m)


def until_closed(sock, timeout: float = 30) -> bytes:
    """What sock reads until moat closes it; fails after timeout."""
    sock.settimeout(timeout)
    try:
        return read_all(sock)
    except socket.timeout:
        raise AssertionError(f"no reply and no close within {timeout}s") from None


def reply(m: Moat, pki, name: str) -> bytes:
    """Connects to listener name (over TLS on implicit ones), says
    nothing and returns all moat sends before it closes."""
    with socket.create_connection(m.addr(name), timeout=30) as raw:
        if m.listeners[name]["tls"] != "implicit":
            return until_closed(raw)
        with ctx_for(pki).wrap_socket(raw, server_hostname="localhost") as s:
            return until_closed(s)


def backend_failures(m: Moat, name: str) -> int:
    with socket.create_connection(("127.0.0.1", m.metrics_port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        body = read_all(s).decode()
    got = re.search(r'^moat_backend_connect_failures_total\{listener="%s"\} (\d+)$'
                    % re.escape(name), body, re.M)
    return int(got.group(1)) if got else 0


@pytest.mark.parametrize("name", [
    "smtps-mute", "pop3s-mute", "smtp-mute", "pop3-mute",
    "smtp-starttls-mute", "pop3-starttls-mute", "smtp-v1-mute", "pop3s-v2-mute"])
def test_silent_backend_times_out_as_backend_failure(failing, pki, name):
    """The backend accepts and never greets: the connect timeout bounds
    the wait for its greeting, whatever the listener's TLS mode or PROXY
    header, and the client reads the backend-failure reply, not the
    idle timeout's ten minutes later."""
    assert reply(failing, pki, name) == bye(name)
    failing.wait_log('reason="no greeting within 1s"')


def test_silent_backend_is_logged_and_counted(failing, pki, scripted):
    """Like any backend failure: a backend_fail line and the metric."""
    before = backend_failures(failing, "smtps-mute")
    assert reply(failing, pki, "smtps-mute") == bye("smtps-mute")
    assert backend_failures(failing, "smtps-mute") == before + 1
    failing.wait_log('backend_fail backend=127.0.0.1:%d reason="no greeting within 1s" '
                     'ip=127.0.0.1' % scripted["stall"].addr[1])
    failing.wait_log('close reason=backend_unavailable error="no greeting within 1s"')


@pytest.mark.parametrize("name,line", [
    ("smtp-mute", b"EHLO early.example\r\n"),
    ("smtp-starttls-mute", b"STARTTLS\r\n"),
    ("pop3-starttls-mute", b"STLS\r\n"),
    ("pop3-mute", b"CAPA\r\n"),
])
def test_talking_before_greeting_does_not_extend_it(failing, name, line):
    """A client that keeps sending commands before the greeting (STARTTLS
    too: moat answers it only after the greeting) still reads the
    backend-failure reply once the connect timeout has passed."""
    got = b""
    with socket.create_connection(failing.addr(name), timeout=30) as s:
        s.settimeout(0.2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                s.sendall(line)
                got = s.recv(4096)
            except socket.timeout:
                continue
            except ConnectionError:
                break
            if got:
                got += until_closed(s)
                break
    assert got == bye(name)


@pytest.mark.parametrize("name", ["smtp-hangup", "pop3s-hangup", "smtps-reset", "pop3-reset"])
def test_backend_gone_before_greeting(failing, pki, name):
    """The backend accepts and closes, or resets, before its greeting:
    the client reads the backend-failure reply, not a silent close."""
    assert reply(failing, pki, name) == bye(name)


@pytest.mark.parametrize("name,early,why", [
    ("smtp-late-hangup", b"EHLO early.example.org\r\n", "closed before greeting"),
    ("pop3-late-reset", b"CAPA\r\n", "Connection reset by peer before greeting"),
])
def test_backend_gone_before_greeting_of_a_half_closed_early_talker(failing, name,
                                                                    early, why):
    """A client that sends its command before the greeting and half-closes
    (printf ... | nc -N) still waits for the reply, which moat holds until
    the greeting. Its backend closing or resetting first used to give it
    a bare end of stream: the close as the greeting timeout later, the
    reset as backend_error, neither counted or warned of as the backend's."""
    before = backend_failures(failing, name)
    with socket.create_connection(failing.addr(name), timeout=30) as c:
        c.sendall(early)
        c.shutdown(socket.SHUT_WR)
        assert until_closed(c, timeout=20) == bye(name)
    failing.wait_log(f'backend_fail backend={failing.listeners[name]["backend"]} '
                     f'reason="{why}"')
    assert backend_failures(failing, name) == before + 1


def test_client_that_left_before_greeting_does_not_blame_the_backend(failing):
    """A client that connects and closes at once (a port scan, a health
    check): moat passes its end of stream on, and the backend that then
    closes may close because of it, so that is no backend failure."""
    name = "smtp-late-hangup"
    before = backend_failures(failing, name)
    with socket.create_connection(failing.addr(name), timeout=30) as c:
        c.shutdown(socket.SHUT_WR)
        assert until_closed(c, timeout=20) == b""
    time.sleep(0.3)
    assert backend_failures(failing, name) == before


def test_backend_hangup_is_logged(failing, pki):
    assert reply(failing, pki, "pop3s-hangup") == bye("pop3s-hangup")
    failing.wait_log('reason="closed before greeting"')


def warning_of(m: Moat, name: str) -> str:
    log = m.wait_log(f"of listener '{name}' fails")
    return next(l for l in log.splitlines() if f"of listener '{name}' fails" in l)


def test_failure_warning_names_a_header_mismatch(failing, pki):
    """A backend that closes before its greeting, behind a listener that
    sends a PROXY header, may be refusing the header from moat's address
    (Dovecot outside haproxy_trusted_networks says "Client not trusted" and
    closes); behind one that sends none, silent or closing, it may be
    waiting for a header. The first failure warning says so; a silent
    backend behind a header is not put down to the header."""
    for name in ("pop3s-v2-hangup", "pop3s-hangup", "smtp-v1-mute"):
        assert reply(failing, pki, name) == bye(name)
    line = warning_of(failing, "pop3s-v2-hangup")
    # Closed, or reset: the header it never read was still queued.
    assert "before greeting" in line and \
        "does not take PROXY headers from moat's address" in line and \
        "haproxy_trusted_networks" in line, line
    line = warning_of(failing, "pop3s-hangup")
    assert "waits for a PROXY header" in line and \
        'backend_proxy = "v2" or "v1" sends one' in line, line
    line = warning_of(failing, "smtp-v1-mute")
    assert "no greeting within 1s" in line and "PROXY" not in line, line


def test_backend_reset_during_xclient_gives_421(failing, pki):
    """The backend resets after reading moat's EHLO: the SMTPS client
    reads 421, as for a refused XCLIENT."""
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP_SSL(*failing.addr("smtps-xclient-reset"), context=ctx_for(pki),
                         timeout=30)
    assert e.value.smtp_code == 421
    assert e.value.smtp_error == b"4.3.0 smtps-xclient-reset service temporarily unavailable"
    failing.wait_log('reason="Connection reset by peer during XCLIENT"')
    failing.wait_log('close reason=backend_unavailable '
                     'error="Connection reset by peer during XCLIENT"')
    assert reply(failing, pki, "smtp-xclient-reset") == bye("smtp-xclient-reset")


def moat_fds(m: Moat) -> int:
    return len(os.listdir(f"/proc/{m.proc.pid}/fd"))


def settled_fds(m: Moat) -> int:
    """moat's descriptor count once it has closed what it was closing."""
    last, since = moat_fds(m), time.monotonic()
    while time.monotonic() - since < 0.3:
        time.sleep(0.02)
        n = moat_fds(m)
        if n != last:
            last, since = n, time.monotonic()
    return last


def test_out_of_descriptors_is_moat_s_shortage_not_the_backend_s(pki, tmp_path):
    """moat has one descriptor left when a plaintext client arrives: the
    accept takes it and the backend's socket cannot be made. The client
    hears the usual temporary failure; the log says moat is short of
    descriptors and the backend was not tried, and the backend-failure
    metric stays put (the backend is fine; blaming it sends the on-call
    person to the wrong server)."""
    refused = ("127.0.0.1", free_port())
    metrics = free_port()
    m = Moat(tmp_path, pki, [listener("smtps", refused),
                             listener("smtp-plain", refused, tls="none")],
             metrics=f"127.0.0.1:{metrics}")
    m.metrics_port = metrics
    limit = 64
    # moat raises its soft limit to the hard one: both are set here.
    m.wrap = ["prlimit", f"--nofile={limit}:{limit}", "--"]
    fillers = []
    try:
        m.start()
        before = backend_failures(m, "smtp-plain")
        # A TLS client that has not begun its handshake holds one
        # descriptor in moat (the backend comes after the handshake).
        settled_fds(m)
        while moat_fds(m) < limit - 1:
            n = moat_fds(m)
            fillers.append(socket.create_connection(m.addr("smtps"), timeout=10))
            deadline = time.monotonic() + 10
            while moat_fds(m) == n:
                assert time.monotonic() < deadline, "moat did not accept"
                time.sleep(0.01)
        assert moat_fds(m) == limit - 1
        seen = len(m.log())
        assert reply(m, pki, "smtp-plain") == bye("smtp-plain")
        m.wait_log("cannot open a connection to the backend: Too many open files "
                   "(moat's own shortage; the backend was not tried) ip=127.0.0.1")
        m.wait_log('close reason=no_resources error="Too many open files"')
        assert "backend_fail" not in m.log()[seen:]
        # Descriptors for the scrape.
        for c in fillers[:4]:
            c.close()
        assert backend_failures(m, "smtp-plain") == before
    finally:
        for c in fillers:
            c.close()
        m.stop()


PORTS_CLIENT = r"""
import socket, sys, threading, time
backend = socket.socket()
backend.bind(("127.0.0.1", 2600))
backend.listen(16)
held = []
def serve():
    while True:
        c, _ = backend.accept()
        held.append(c)
        c.sendall(b"220 held ESMTP\r\n")
threading.Thread(target=serve, daemon=True).start()
got = []
clients = []
def connect(port):
    # moat makes its control socket before it binds: retry a refusal.
    deadline = time.monotonic() + 10
    while True:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.bind(("127.0.0.1", port))    # not from the tiny port range
        c.settimeout(10)
        try:
            c.connect(("127.0.0.1", 2525))
            return c
        except ConnectionRefusedError:
            c.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
for i in range(3):
    c = connect(50000 + i)
    clients.append(c)
    got.append(c.recv(200).decode().strip())
print("\n".join(got))
"""


def test_no_local_port_is_moat_s_shortage_not_the_backend_s(tmp_path):
    """In a network namespace whose ip_local_port_range holds two ports,
    the third session cannot get a local port for its backend connection
    (EADDRNOTAVAIL): the client hears the usual temporary failure, and
    the log says moat is short and the backend was not tried."""
    import sys
    from moatrun import netns_moat
    with netns_moat(tmp_path, f"""
[daemon]
control_socket = "{tmp_path}/c.sock"
state_file = "{tmp_path}/state"
[[listener]]
name = "smtp"
listen = ["127.0.0.1:2525"]
protocol = "smtp"
tls = "none"
backend = "127.0.0.1:2600"
""", [["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40001"]]) as (run, log):
        r = run([sys.executable, "-c", PORTS_CLIENT], capture_output=True,
                text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:3] == [
            "220 held ESMTP", "220 held ESMTP",
            "421 4.3.0 smtp service temporarily unavailable"], r.stdout
        text = log.read_text()
        assert ("cannot open a connection to the backend: Cannot assign requested "
                "address (moat's own shortage, no local port free: see "
                "net.ipv4.ip_local_port_range; the backend was not tried)") in text, text
        assert "backend_fail" not in text, text


def greeted_once(m: Moat, port: int) -> None:
    """A backend on port that greets one session of listener sub."""
    with socket.create_server(("127.0.0.1", port)) as srv, \
            socket.create_connection(("127.0.0.1", m.port("sub")), timeout=20) as c:
        b, _ = srv.accept()
        b.sendall(b"220 back\r\n")
        assert c.recv(100) == b"220 back\r\n"
        b.close()


def test_dead_backend_is_a_warning_in_status_until_it_answers(pki, tmp_path):
    """At log_level "warning" the per-session backend_fail lines are gone:
    the first failure is still a warning naming the listener, backend and
    error, later ones add no line, moatctl status shows the backend
    failing since when and how many sessions, and its return is a
    warning too, so that the log does not end on the failure."""
    port = free_port()
    mport = free_port()
    m = Moat(tmp_path, pki, [listener("sub", ("127.0.0.1", port), tls="none")],
             verbose=0, log_level="warning", metrics=f"127.0.0.1:{mport}")
    m.start()

    def gauge() -> int:
        with socket.create_connection(("127.0.0.1", mport), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            body = read_all(s).decode()
        return int(re.search(r"^moat_backends_failing (\d+)$", body, re.M).group(1))
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", m.port("sub")), timeout=20) as s:
                assert read_all(s) == bye("sub")
        text = m.wait_log("backend 127.0.0.1:%d of listener 'sub' fails: "
                          "Connection refused; its clients are told the service "
                          "is temporarily unavailable until it answers again" % port)
        assert text.count("of listener 'sub'") == 1, text
        assert "backend_fail" not in text
        # Readiness probes of the start count too: as many as the metric.
        j = json.loads(m.ctl("--json", "status").stdout)
        n = j["totals"]["backend_failures"]
        assert n >= 3
        assert [(b["listener"], b["backend"], b["sessions"], b["error"])
                for b in j["backends_failing"]] == \
            [("sub", "127.0.0.1:%d" % port, n, "Connection refused")]
        r = m.ctl("status")
        assert r.returncode == 0, r.stderr
        line = [l for l in r.stdout.splitlines() if l.startswith("backends")]
        assert re.fullmatch(r"backends +sub -> 127\.0\.0\.1:%d failing since "
                            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, %d sessions: "
                            r"Connection refused" % (port, n), line[0]), r.stdout
        assert gauge() == 1

        greeted_once(m, port)
        m.wait_log("backend 127.0.0.1:%d of listener 'sub' answers again after " % port)
        assert "%d sessions failed meanwhile" % n in m.log()
        assert "backends" not in m.ctl("status").stdout
        assert gauge() == 0
        assert json.loads(m.ctl("--json", "status").stdout)["backends_failing"] == []

        # Flapping within the minute: status shows it, the log adds
        # no pair of warnings per failure.
        with socket.create_connection(("127.0.0.1", m.port("sub")), timeout=20) as s:
            assert read_all(s) == bye("sub")
        assert "sub -> 127.0.0.1:%d failing since" % port in m.ctl("status").stdout
        greeted_once(m, port)
        assert "backends" not in m.ctl("status").stdout
        text = m.log()
        assert text.count("of listener 'sub' fails") == 1, text
        assert text.count("of listener 'sub' answers again") == 1, text

        # Failing, then moved by a reload: status does not keep listing
        # a backend the listener no longer has.
        with socket.create_connection(("127.0.0.1", m.port("sub")), timeout=20) as s:
            assert read_all(s) == bye("sub")
        assert "sub -> 127.0.0.1:%d failing since" % port in m.ctl("status").stdout
        other = free_port()
        m.config_path.write_text(m.config_path.read_text().replace(
            "127.0.0.1:%d" % port, "127.0.0.1:%d" % other))
        r = m.ctl("reload")
        assert r.returncode == 0, r.stderr
        assert "backends" not in m.ctl("status").stdout
        assert json.loads(m.ctl("--json", "status").stdout)["backends_failing"] == []
    finally:
        assert m.stop() == 0, m.log()[-3000:]
