"""/metrics scraped during a run: the counters match what the test did
(connections, TLS handshakes, rejects, bans), the format is Prometheus
text, and anything but GET /metrics is refused."""
from __future__ import annotations

import re
import socket
import ssl
import time

import pytest

from conftest import require_mailstack
from mailstack import MailStack
from moatrun import Moat, free_port, listener, proxied_hello as hello, read_to_end

# Loopback itself (the TLS clients below) is never limited.
RATE = ('[policy]\nallow = ["127.0.0.1"]\n'
        '[policy.rate]\nconnections = { limit = 2, window = "1m" }\n')
SAMPLE = re.compile(r'^([a-z_:][a-z0-9_:]*)(\{([a-z_]+="(?:[^"\\\n]|\\.)*"'
                    r'(?:,[a-z_]+="(?:[^"\\\n]|\\.)*")*)\})? (-?[0-9.e+]+|\+Inf)$')


@pytest.fixture(scope="module")
def stack():
    require_mailstack()
    s = MailStack(postfix_proxy="haproxy").start()
    yield s
    s.stop()


def lb(name, backend, **kw):
    return listener(name, backend, backend_proxy="v1", accept_proxy=True,
                    accept_proxy_from=["127.0.0.0/8"], **kw)


def http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        return read_to_end(s)


def scrape(port: int) -> dict:
    """{(name, frozenset(labels)): value}, checking every line's syntax."""
    raw = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n"), head
    assert b"Content-Type: text/plain; version=0.0.4" in head
    m = re.search(rb"Content-Length: (\d+)", head)
    assert m and int(m.group(1)) == len(body)
    out = {}
    types = {}
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram")
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        mm = SAMPLE.match(line)
        assert mm, f"bad sample line: {line!r}"
        name = mm.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or base in types, f"no TYPE for {name}"
        if types.get(name) == "counter":
            assert name.endswith("_total"), name
        labels = frozenset(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', mm.group(3) or ""))
        out[(name, labels)] = float(mm.group(4))
    return out


def val(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def total(metrics: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, l), v in metrics.items() if n == name and want <= set(l))


def test_metrics_match_what_happened(tmp_path, pki, stack):
    mport = free_port()
    m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none"),
                             listener("smtps", stack.smtp_addr, tls="implicit",
                                      backend_proxy="v1")],
             extra=RATE, metrics=f"127.0.0.1:{mport}").start()
    try:
        # Moat.start() waited until the workers served its readiness
        # probes: they are in this first reading. Exact counts follow,
        # so a slow machine waits longer here rather than miscount.
        m._settle(2, timeout=15, strict=True)
        before = scrape(mport)
        assert val(before, "moat_sessions") == 0
        assert val(before, "moat_bans_active") == 0
        assert val(before, "moat_info", version="0.1.0") == 1
        exp = [v for (n, l), v in before.items() if n == "moat_certificate_expiry_seconds"]
        assert exp and exp[0] > 86400
        # Three TLS sessions that reach Postfix through moat.
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        host, port = m.addr("smtps")
        for _ in range(3):
            with socket.create_connection((host, port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    banner = s.recv(512)
                    assert banner.startswith(b"220 ")
                    s.sendall(b"QUIT\r\n")
                    s.recv(512)
        # One failed handshake: plaintext to an implicit-TLS port.
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"EHLO plaintext.example\r\n")
            try:
                s.recv(512)
            except ConnectionError:
                pass
        # The connection rate: two pass, the third is refused and banned,
        # the fourth is refused as banned.
        lport = m.port("smtp")
        for _ in range(2):
            assert hello(lport, "203.0.113.5").startswith(b"220 ")
        assert hello(lport, "203.0.113.5").startswith(b"554 ")
        assert hello(lport, "203.0.113.5") == b""
        assert m.ctl("ban", "192.0.2.66", "1h").returncode == 0
        deadline = time.monotonic() + 10
        while True:
            after = scrape(mport)
            done = (total(after, "moat_session_duration_seconds_count") -
                    total(before, "moat_session_duration_seconds_count"))
            if done >= 6 and val(after, "moat_sessions") == 0:
                break
            assert time.monotonic() < deadline, after
            time.sleep(0.1)
    finally:
        assert m.stop() == 0
    # Deltas: moat's readiness probe (moatrun) connects to each port once.
    def d(name, **labels):
        return val(after, name, **labels) - val(before, name, **labels)

    def dt(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert d("moat_connections_total", listener="smtps", verdict="accepted") == 4
    assert d("moat_connections_total", listener="smtp", verdict="accepted") == 2
    assert d("moat_connections_total", listener="smtp", verdict="rejected") == 2
    assert d("moat_rejects_total", listener="smtp", reason="rate") == 1
    assert d("moat_rejects_total", listener="smtp", reason="banned") == 1
    assert dt("moat_tls_handshakes_total") == 3
    assert dt("moat_tls_handshakes_total", version="TLSv1.3") == 3
    assert dt("moat_tls_handshake_failures_total") == 1
    assert val(after, "moat_bans_total", reason="rate") == 1
    assert val(after, "moat_bans_total", reason="manual") == 1
    assert val(after, "moat_bans_active") == 2
    assert val(after, "moat_backend_connect_failures_total", listener="smtps") == 0
    assert d("moat_relayed_bytes_total", listener="smtps",
             direction="client_to_backend") == 3 * len(b"QUIT\r\n")
    assert d("moat_relayed_bytes_total", listener="smtps",
             direction="backend_to_client") > 0
    assert d("moat_session_duration_seconds_bucket", listener="smtps", le="+Inf") == 4
    assert val(after, "moat_events_written_total") >= 4   # 2 rejects, 2 bans
    assert val(after, "moat_events_dropped_total") == 0
    assert ("moat_events_syslog_dropped_total", frozenset()) in after
    assert val(after, "moat_events_syslog_dropped_total") == 0
    assert val(after, "moat_events_failing", sink="file") == 0
    assert val(after, "moat_events_failing", sink="syslog") == 0
    assert val(after, "moat_backends_failing") == 0
    # No firewall set configured: no firewall health to tell.
    assert not any(n == "moat_firewall_failing" for n, _ in after)


def fill_places(mport: int, first: bytes) -> list:
    """Takes all 32 places, four from each of eight addresses, each
    sending first; then a scraper must still be answered, five times."""
    hog = []
    for i in range(8):
        for _ in range(4):
            h = socket.socket()
            h.bind((f"127.0.1.{i + 1}", 0))
            h.connect(("127.0.0.1", mport))
            h.sendall(first)
            hog.append(h)
    time.sleep(0.3)
    for _ in range(5):
        assert http(mport, b"GET /metrics HTTP/1.0\r\n\r\n").startswith(
            b"HTTP/1.0 200 ")
    return hog


def test_metrics_http_edges(tmp_path, pki, stack):
    mport = free_port()
    m = Moat(tmp_path, pki, [lb("smtp", stack.smtp_addr, tls="none")],
             metrics=f"127.0.0.1:{mport}").start()
    try:
        assert http(mport, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 404 ")
        # A known path with another method: 405 and what is allowed;
        # HEAD (health checks) gets the headers of a scrape.
        r = http(mport, b"POST /metrics HTTP/1.0\r\n\r\n")
        assert r.startswith(b"HTTP/1.0 405 ") and b"\r\nAllow: GET, HEAD\r\n" in r, r
        r = http(mport, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        head, _, rest = r.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 ") and rest == b"", r
        assert int(re.search(rb"Content-Length: (\d+)", head).group(1)) > 1000
        assert http(mport, b"garbage\r\n\r\n").startswith(b"HTTP/1.0 400 ")
        # A NUL hides nothing: answered at once, not at the timeout.
        t0 = time.monotonic()
        assert http(mport, b"GET /metrics HTTP/1.0\0\r\n\r\n").startswith(
            b"HTTP/1.0 400 ")
        assert time.monotonic() - t0 < 2
        assert http(mport, b"GET /metrics HTTP/1.0\r\nX: " + b"a" * 8000 +
                    b"\r\n\r\n").startswith(b"HTTP/1.0 431 ")
        # A client that says nothing does not hold up a scrape.
        idle = socket.create_connection(("127.0.0.1", mport))
        assert http(mport, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 ")
        idle.close()
        out = http(mport, b"GET /metrics HTTP/1.0\r\n\r\n").decode()
        assert "# TYPE moat_session_duration_seconds histogram" in out
        assert "moat_geo_database_build_timestamp_seconds" not in out  # no geo
        # One address holding idle connections gets four, not all 32:
        # a scraper elsewhere still gets its answer.
        hog = []
        for _ in range(40):
            h = socket.socket()
            h.bind(("127.0.0.2", 0))
            h.connect(("127.0.0.1", mport))
            hog.append(h)
        open_ = 0
        for h in hog:
            h.settimeout(0.2)
            try:
                if h.recv(1) == b"":
                    continue        # closed at once
            except socket.timeout:
                open_ += 1          # kept, waiting for a request
            except ConnectionError:
                continue
        assert open_ == 4, open_
        assert http(mport, b"GET /metrics HTTP/1.0\r\n\r\n").startswith(
            b"HTTP/1.0 200 ")
        # A scraper on the hog's own address: it used to be refused (a
        # reset) while four idle connections held the address's places;
        # the oldest of them makes way for it now.
        for _ in range(2):
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.settimeout(10)
            s.connect(("127.0.0.1", mport))
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            got = b""
            while (d := s.recv(65536)):
                got += d
            s.close()
            assert got.startswith(b"HTTP/1.0 200 "), got[:200]
            h = socket.socket()         # the hog takes its place back
            h.bind(("127.0.0.2", 0))
            h.connect(("127.0.0.1", mport))
            hog.append(h)
        for h in hog:
            h.close()
        # Eight addresses holding four places each fill all 32: the
        # newcomer takes the place held longest by a client still
        # sending nothing, and the scraper is answered every time.
        hog = fill_places(mport, b"GET /met")
        for h in hog:
            h.close()
        # The same with whole requests whose answers nobody reads: once an
        # answer is out, its place can go to the newcomer.
        hog = fill_places(mport, b"GET /metrics HTTP/1.0\r\n\r\n")
        # A head that takes longer than a scraper's is cut off.
        slow = socket.create_connection(("127.0.0.1", mport))
        slow.sendall(b"GET /met")
        slow.settimeout(10)
        t0 = time.monotonic()
        assert slow.recv(100) == b""
        assert time.monotonic() - t0 < 5
        slow.close()
        for h in hog:
            h.close()
    finally:
        assert m.stop() == 0


NS_CLIENT = r"""
import socket, sys, time
port = int(sys.argv[1])
def hold(src):
    s = socket.socket(socket.AF_INET6)
    s.bind((src, 0))
    s.connect(("2001:db8:1::1", port))
    return s
def kept(socks):
    n = 0
    for s in socks:
        s.settimeout(0.2)
        try:
            if s.recv(1) != b"":
                n += 1
        except socket.timeout:
            n += 1
        except ConnectionError:
            pass
    return n
# Eight addresses of one /64 hold what one address would.
one = [hold(f"2001:db8:1::{10 + i % 8:x}") for i in range(12)]
other = [hold(f"2001:db8:2::{10 + i:x}") for i in range(2)]
print(kept(one), kept(other))
"""


def ns_config(tmp_path, metrics: str) -> str:
    """A moat for netns_moat(): metrics on the given address, one plain
    SMTP listener to a backend that is not there."""
    return f"""
[daemon]
control_socket = "{tmp_path}/c.sock"
state_file = "{tmp_path}/state"
metrics = "{metrics}"
[[listener]]
name = "smtp"
listen = ["127.0.0.1:2525"]
protocol = "smtp"
tls = "none"
backend = "127.0.0.1:9"
backend_proxy = "v1"
[events]
file = "{tmp_path}/events.jsonl"
"""


def test_metrics_ipv6_sources_count_per_64(tmp_path):
    """An IPv6 client has a /64 to pick addresses from: its connections
    count together, so it gets four places, not four per address."""
    import sys
    from moatrun import netns_moat
    addrs = ["2001:db8:1::1"] + [f"2001:db8:1::{10 + i:x}" for i in range(8)] + \
        [f"2001:db8:2::{10 + i:x}" for i in range(2)]
    with netns_moat(tmp_path, ns_config(tmp_path, "[2001:db8:1::1]:9109"), [["ip", "addr", "add", f"{a}/64", "dev", "lo", "nodad"] for a in addrs]) as (run, _):
        r = run([sys.executable, "-c", NS_CLIENT, "9109"], capture_output=True,
                text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        one, other = map(int, r.stdout.split())
        assert (one, other) == (4, 2), (one, other)


def test_metrics_on_any_ipv6_takes_ipv4_with_bindv6only(tmp_path):
    """moat.toml(5) says metrics on [::] takes the port on IPv4 too, and
    the config check refuses a backend there for that reason: it must
    hold where net.ipv6.bindv6only = 1 (some hardened hosts) as well."""
    import sys
    from moatrun import netns_moat
    get = ("import sys, urllib.request; print(urllib.request.urlopen("
           "'http://127.0.0.1:9109/metrics', timeout=10).read().decode())")
    with netns_moat(tmp_path, ns_config(tmp_path, "[::]:9109"), [["sysctl", "-qw", "net.ipv6.bindv6only=1"]]) as (run, log):
        r = run([sys.executable, "-c", get], capture_output=True, text=True,
                timeout=60)
        assert r.returncode == 0, (r.stderr, log.read_text())
        assert "\nmoat_info{version=" in r.stdout


def test_proxy_header_failures_are_counted(tmp_path, pki):
    """A bad or late PROXY header is a refusal in the counts (status and
    moat_rejects_total), or a balancer set up without the header would
    leave them showing no traffic at all; a connection that ends without
    a byte (a TCP health check) is not counted."""
    mport = free_port()
    m = Moat(tmp_path, pki, [lb("lb", ("127.0.0.1", free_port()), tls="none",
                                handshake="1s")],
             metrics=f"127.0.0.1:{mport}").start()
    try:
        port = m.port("lb")
        before = val(scrape(mport), "moat_rejects_total", listener="lb", reason="proxy_fail")
        for data in (b"EHLO x\r\n", b"PROXY TCP4 1.2.3.4\r\n", b"PROXY ", b"", None):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                if data is not None:
                    s.sendall(data)
                if data != b"PROXY " and data is not None:
                    assert s.recv(100) == b""
        m.wait_log("proxy_fail reason=timeout")
        deadline = time.monotonic() + 10
        while True:
            n = val(scrape(mport), "moat_rejects_total", listener="lb",
                    reason="proxy_fail") - before
            if n >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # The two malformed, the one cut short, the silent one that timed
        # out; not the one closed at once without a byte.
        assert n == 4, m.log()[-2000:]
        assert "4 rejected" in m.ctl("status").stdout
    finally:
        assert m.stop() == 0
