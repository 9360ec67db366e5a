"""`moat -t`, `moat -V` and `moat -p` as an operator runs them."""
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import textwrap

import pytest

BUILD = os.environ.get("MOAT_BUILD_ROOT", "build")
SOURCE = os.environ.get("MOAT_SOURCE_ROOT", ".")
MOAT = os.path.join(BUILD, "proxy", "moat")

LISTENER = textwrap.dedent("""\
    [[listener]]
    name = "smtps"
    listen = ["127.0.0.1:10465"]
    protocol = "smtp"
    tls = "implicit"
    backend = "127.0.0.1:10025"
    """)


def run(*args, cwd=None):
    # No terminal and no input: nothing moat does may wait for a person.
    return subprocess.run([MOAT, *args], capture_output=True, text=True,
                          timeout=30, cwd=cwd, stdin=subprocess.DEVNULL,
                          start_new_session=True)


@pytest.fixture
def confdir(tmp_path):
    # The certificate only has to be readable for these checks; the TLS
    # checks proper build real contexts from the shipped example pair.
    for name in ("cert.pem", "key.pem"):
        src = os.path.join(SOURCE, "contrib", "example", name)
        with open(src, "rb") as f, open(tmp_path / name, "wb") as g:
            g.write(f.read())
    return tmp_path


def check(confdir, body):
    path = confdir / "moat.toml"
    path.write_text('[tls]\ncertificate = "cert.pem"\nkey = "key.pem"\n'
                    + body)
    return str(path), run("-t", "-c", str(path))


# The six broken configs of the foundation issue: each fails with the
# file, line and column of the culprit and a message naming the problem.
BROKEN = [
    ("unknown key", LISTENER + "[daemon]\nworkerz = 2\n",
     "11:1: unknown key 'workerz' in [daemon] (did you mean 'workers'?)"),
    ("wrong type", LISTENER + "[daemon]\nworkers = \"two\"\n",
     "11:11: daemon.workers must be an integer, not a string"),
    ("bad CIDR", LISTENER + "[policy]\ndeny = [\"192.0.2.0/24\", "
     "\"198.51.100.300/24\"]\n",
     "11:25: invalid address or CIDR \"198.51.100.300/24\" in policy.deny: "
     "not an IPv4 or IPv6 address"),
    ("bad duration", LISTENER + "timeouts = { idle = \"5 minutes\" }\n",
     "10:21: invalid duration \"5 minutes\" for timeouts.idle: write a number "
     "and a unit with nothing between them"),
    ("missing cert file", LISTENER.replace("[[listener]]",
     "[[tls.sni]]\nnames = [\"mail.example.org\"]\n"
     "certificate = \"missing.pem\"\nkey = \"key.pem\"\n\n[[listener]]"),
     "6:15: tls.sni.certificate: cannot read {dir}/missing.pem: "
     "No such file or directory"),
    ("duplicate listener", LISTENER + LISTENER.replace("10465", "10466"),
     "10:1: duplicate listener name 'smtps' (first used at line 4)"),
]


# Configs that moat -t passed although moat could not start with them (or
# that meant something else than they said), and hints that were wrong.
# "A configuration that passes -t starts" (moat(8)).
WILD = LISTENER.replace("127.0.0.1:10465", "0.0.0.0:10465")
SNI = ('[[tls.sni]]\nnames = ["%s"]\ncertificate = "cert.pem"\n'
       'key = "key.pem"\n')

AUDIT = [
    ("forget_after 0", LISTENER + "[ban]\nforget_after = \"0s\"\n",
     "11:16: ban.forget_after must be at least 1s"),
    ("user root", LISTENER + "[daemon]\nuser = \"root\"\n",
     "11:8: daemon.user 'root' is root; name an unprivileged user or omit "
     "the key"),
    ("metrics on a listener address",
     LISTENER + "[daemon]\nmetrics = \"127.0.0.1:10465\"\n",
     "11:11: daemon.metrics: 127.0.0.1:10465 is already used by listener "
     "'smtps'"),
    ("metrics under a listener wildcard",
     WILD + "[daemon]\nmetrics = \"127.0.0.1:10465\"\n",
     "11:11: daemon.metrics: 127.0.0.1:10465 overlaps 0.0.0.0:10465 of "
     "listener 'smtps'"),
    ("listeners on 0.0.0.0 and 127.0.0.1",
     WILD + LISTENER.replace("smtps", "smtps2"),
     "12:11: listener 'smtps2': 127.0.0.1:10465 overlaps 0.0.0.0:10465 of "
     "listener 'smtps'"),
    ("listen on [::] and [::1]",
     LISTENER.replace("\"127.0.0.1:10465\"", "\"[::]:10465\", \"[::1]:10465\""),
     "6:25: listener 'smtps': [::1]:10465 overlaps [::]:10465 listed before "
     "it"),
    ("metrics on [::] at a listener's IPv4 backend",
     LISTENER + "[daemon]\nmetrics = \"[::]:10025\"\n",
     "11:11: daemon.metrics: listener 'smtps' has its backend at "
     "127.0.0.1:10025, moat's own metrics endpoint"),
    ("IPv4-mapped listen",
     LISTENER.replace("127.0.0.1:10465", "[::ffff:127.0.0.1]:10465"),
     "6:11: listener.listen: \"[::ffff:127.0.0.1]:10465\" is an IPv4 "
     "address in IPv6 form, which moat cannot listen on: write "
     "\"127.0.0.1:10465\""),
    ("IPv4-mapped metrics",
     LISTENER + "[daemon]\nmetrics = \"[::ffff:127.0.0.1]:9425\"\n",
     "11:11: daemon.metrics: \"[::ffff:127.0.0.1]:9425\" is an IPv4 address "
     "in IPv6 form, which moat cannot listen on: write \"127.0.0.1:9425\""),
    ("country uk", LISTENER + "[policy.geo]\ndeny_countries = [\"uk\"]\n",
     "11:19: \"uk\" is not an ISO 3166-1 code; the United Kingdom is "
     "\"GB\""),
    ("duration upper case", LISTENER + "timeouts = { idle = \"10S\" }\n",
     "10:21: invalid duration \"10S\" for timeouts.idle: units are lower "
     "case: write \"10s\""),
    ("duration fraction", LISTENER + "[ban]\nduration = \"1.5h\"\n",
     "11:12: invalid duration \"1.5h\" for ban.duration: fractions are not "
     "allowed: write \"1h30m\""),
    ("reserved_sessions position",
     LISTENER + "[daemon]\nmax_sessions = 10\nreserved_sessions = 10\n",
     "12:1: daemon.reserved_sessions (10) must be smaller than "
     "daemon.max_sessions (10)"),
    ("sni name twice",
     LISTENER.replace("[[listener]]", SNI % "mail.example.org" + "\n"
                      + SNI % "MAIL.example.org" + "\n[[listener]]"),
     "10:10: tls.sni.names: \"MAIL.example.org\" is already in an earlier "
     "[[tls.sni]] entry"),
    ("sni name with trailing dot",
     LISTENER.replace("[[listener]]", SNI % "a.example." + "\n[[listener]]"),
     "5:10: tls.sni.names: \"a.example.\" is not a host name"),
    ("sni name with empty label",
     LISTENER.replace("[[listener]]", SNI % "a..example" + "\n[[listener]]"),
     "5:10: tls.sni.names: \"a..example\" is not a host name"),
    ("geo unknown deny without database",
     LISTENER + "[policy.geo]\nunknown = \"deny\"\n",
     "10:1: [policy.geo]: unknown = \"deny\" needs database = "),
    ("max_line above the filter's bound", LISTENER + "max_line = 40000\n",
     "10:12: listener.max_line must be between 512 and 16384"),
    ("max_duration position",
     LISTENER + "[ban]\nduration = \"2d\"\nmax_duration = \"1d\"\n",
     "12:1: ban.max_duration (1d) is shorter than ban.duration (2d)"),
    ("duration without quotes", LISTENER + "timeouts = { idle = 5m }\n",
     "10:21: invalid number '5m' (a string needs quotes)"),
    ("key under the wrong header", LISTENER + "[events]\nfile = \"-\"\n"
     "log_level = \"debug\"\n",
     "12:1: unknown key 'log_level' in [events] (it belongs in [daemon])"),
]


@pytest.mark.parametrize("what,body,want", BROKEN + AUDIT,
                         ids=[b[0] for b in BROKEN + AUDIT])
def test_broken_config(confdir, what, body, want):
    path, r = check(confdir, body)
    assert r.returncode != 0, f"{what}: moat -t accepted it"
    want = f"{path}:{want.format(dir=confdir)}"
    assert any(line.startswith(want) for line in r.stderr.splitlines()), \
        r.stderr
    # The country hint once suggested "UK", which is refused in turn.
    assert 'write "UK"' not in r.stderr






def test_control_socket_path_the_start_refuses(confdir):
    """A control_socket that names a regular file, or lies under one,
    passed moat -t and then stopped the start ("exists and is not a
    socket"). A socket there, as beside a running moat, passes."""
    (confdir / "afile").write_text("")
    for sock, want in [
            ("afile", f"{confdir}/afile exists and is not a socket"),
            ("afile/ctl.sock", f"{confdir}/afile is not a directory, so "
             f"the control socket {confdir}/afile/ctl.sock cannot be made")]:
        path, r = check(confdir, LISTENER + "[daemon]\ncontrol_socket = "
                        f"\"{sock}\"\n")
        assert r.returncode == 1, r.stderr
        assert f"{path}:11:18: daemon.control_socket: {want}" in r.stderr, \
            r.stderr
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(confdir / "ctl.sock"))
    s.listen()
    try:
        path, r = check(confdir, LISTENER + "[daemon]\ncontrol_socket = "
                        "\"ctl.sock\"\n")
    finally:
        s.close()
    assert r.returncode == 0, r.stderr


def test_fifo_or_device_as_config_or_list_file_is_refused_at_once(confdir):
    """A FIFO with no writer held open() for good: moat -t hung, and a
    reload hung the main loop (no moatctl, no SIGTERM). /dev/zero as a
    list file grew one line without end (or, under a memory limit,
    passed as an empty list)."""
    os.mkfifo(confdir / "fifo")
    for body, want in [
            (LISTENER + '[policy]\ndeny_files = ["fifo"]\n',
             f"11:15: list file {confdir}/fifo is not a regular file"),
            (LISTENER + '[policy]\nallow_files = ["/dev/zero"]\n',
             "11:16: list file /dev/zero is not a regular file")]:
        path = confdir / "moat.toml"
        path.write_text('[tls]\ncertificate = "cert.pem"\n'
                        'key = "key.pem"\n' + body)
        r = subprocess.run([MOAT, "-t", "-c", str(path)],
                           capture_output=True, text=True, timeout=5,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 1, r.stderr
        assert f"{path}:{want}" in r.stderr, r.stderr
    r = subprocess.run([MOAT, "-t", "-c", str(confdir / "fifo")],
                       capture_output=True, text=True, timeout=5,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "not a regular file" in r.stderr, r.stderr
    # /dev/null stays what it was before: a placeholder for an empty list.
    path.write_text('[tls]\ncertificate = "cert.pem"\nkey = "key.pem"\n' +
                    LISTENER + '[policy]\ndeny_files = ["/dev/null"]\n')
    r = subprocess.run([MOAT, "-t", "-c", str(path)], capture_output=True,
                       text=True, timeout=5, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr


def test_rate_limit_zero_needs_no_window(confdir):
    path, r = check(confdir, LISTENER + "[policy.rate]\n"
                    "connections = { limit = 0 }\n"
                    "auth_failures = { limit = 0 }\n")
    assert r.returncode == 0, r.stderr


def test_ipv4_and_ipv6_wildcards_go_together(confdir):
    # IPv6 listening sockets are IPv6-only: 0.0.0.0:P and [::]:P share
    # nothing, and an IPv4 metrics endpoint beside [::]:P neither.
    path, r = check(confdir, LISTENER.replace(
        "\"127.0.0.1:10465\"", "\"0.0.0.0:10465\", \"[::]:10465\""))
    assert r.returncode == 0, r.stderr
    path, r = check(confdir, "[daemon]\nmetrics = \"0.0.0.0:10465\"\n"
                    + LISTENER.replace("127.0.0.1:10465", "[::]:10465"))
    assert r.returncode == 0, r.stderr


def _openssl(*args):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    subprocess.run(["openssl", *args], check=True, capture_output=True,
                   timeout=30)


def test_encrypted_key(confdir):
    # It once prompted on a terminal, failed with "PEM lib" under systemd
    # and blocked a reload at the prompt.
    _openssl("pkey", "-in", str(confdir / "key.pem"), "-aes256",
             "-passout", "pass:x", "-out", str(confdir / "enc.pem"))
    path, r = check(confdir, LISTENER)
    assert r.returncode == 0, r.stderr
    path, r = run_with_key(confdir, "enc.pem")
    assert r.returncode != 0
    assert f"{confdir}/enc.pem: the private key is encrypted; moat needs " \
        "an unencrypted key (openssl pkey -in" in r.stderr, r.stderr
    assert "PEM lib" not in r.stderr and "pass phrase" not in r.stderr


def test_key_file_without_key(confdir):
    path, r = run_with_key(confdir, "cert.pem")
    assert r.returncode != 0
    assert f"{confdir}/cert.pem: no private key found in the file " \
        in r.stderr, r.stderr
    assert "it holds a certificate" in r.stderr


def test_der_or_pkcs12_files_said_with_the_conversion(confdir):
    """A certificate or key in DER form, or a PKCS#12 bundle, as a CA or
    a Windows export hands them out: "no certificate found (expected a
    PEM block)" did not say the file was fine but in another format, nor
    how to convert it."""
    cert, key = str(confdir / "cert.pem"), str(confdir / "key.pem")
    _openssl("x509", "-in", cert, "-outform", "der",
             "-out", str(confdir / "cert.der"))
    _openssl("pkey", "-in", key, "-outform", "der",
             "-out", str(confdir / "key.der"))
    _openssl("pkcs12", "-export", "-in", cert, "-inkey", key,
             "-passout", "pass:", "-out", str(confdir / "both.p12"))
    for c, k, want in [
            ("cert.der", "key.pem", "2:15: tls.certificate: {d}/cert.der: no "
             "certificate found in the file (expected a PEM \"BEGIN "
             "CERTIFICATE\" block); it is a DER certificate, not PEM: "
             "convert it with openssl x509 -inform der -in {d}/cert.der "
             "-out NEW.pem"),
            ("cert.pem", "key.der", "3:7: tls.key: {d}/key.der: no private "
             "key found in the file (expected a PEM \"BEGIN PRIVATE KEY\" "
             "block); it is a DER private key, not PEM: convert it with "
             "openssl pkey -inform der -in {d}/key.der -out NEW.pem"),
            ("both.p12", "key.pem", "2:15: tls.certificate: {d}/both.p12: no "
             "certificate found in the file (expected a PEM \"BEGIN "
             "CERTIFICATE\" block); it is a PKCS#12 bundle, not PEM: "
             "convert it with openssl pkcs12 -nodes -in {d}/both.p12 "
             "-out NEW.pem"),
            # The other kind, in DER: converting it would not help.
            ("key.der", "key.pem", "2:15: tls.certificate: {d}/key.der: no "
             "certificate found in the file (expected a PEM \"BEGIN "
             "CERTIFICATE\" block); it holds a private key, in DER form")]:
        path = confdir / "moat.toml"
        path.write_text(f'[tls]\ncertificate = "{c}"\nkey = "{k}"\n'
                        + LISTENER)
        r = run("-t", "-c", str(path))
        assert r.returncode == 1, r.stderr
        assert f"{path}:{want.format(d=confdir)}\n" in r.stderr, r.stderr


def test_key_of_another_certificate_or_chain_in_the_wrong_order(confdir):
    """OpenSSL says "key values mismatch"; the operator needs to hear
    which files disagree and that the server's certificate comes first."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             str(confdir / "other.key"), "-out", str(confdir / "other.pem"),
             "-days", "3", "-subj", "/CN=other")
    path, r = run_with_key(confdir, "other.key")
    # Where the config names the key, then the files and the problem.
    want = (f"{path}:3:7: tls.key: {confdir}/other.key: this private key "
            f"does not belong to the first certificate in {confdir}/cert.pem, "
            "which must be the server's own (its chain follows it)")
    assert r.returncode == 1 and want in r.stderr, r.stderr
    assert "key values mismatch" not in r.stderr
    # The right key, behind a file whose leaf came second.
    (confdir / "cert.pem").write_text((confdir / "other.pem").read_text() +
                                      (confdir / "cert.pem").read_text())
    path, r = run_with_key(confdir, "key.pem")
    assert r.returncode == 1, r.stderr
    assert f"{confdir}/key.pem: this private key does not belong to the first " \
        f"certificate in {confdir}/cert.pem" in r.stderr, r.stderr


def test_sni_certificate_not_covering_its_names_warned(confdir):
    """An SNI entry whose certificate does not cover one of its names
    (the wrong file, a renewal that dropped a name): moat -t passes it, as
    a start would, but warns, naming the file and the name."""
    path, r = check(confdir, SNI % 'mail.example.org", "pop.example.org",'
                    ' "*.example.org' + LISTENER)
    assert r.returncode == 0, r.stderr
    assert f"{confdir}/cert.pem: warning: the certificate does not cover the " \
        'name "pop.example.org" it is listed for; clients asking for it will ' \
        "refuse it" in r.stderr, r.stderr
    assert '"*.example.org"' in r.stderr, r.stderr
    assert '"mail.example.org"' not in r.stderr, r.stderr
    path, r = check(confdir, SNI % "mail.example.org" + LISTENER)
    assert r.returncode == 0 and "does not cover" not in r.stderr, r.stderr


def test_damaged_intermediate_said_in_words(confdir):
    """A chain whose second certificate was mangled (a bad copy and paste
    of the intermediate): OpenSSL says only "ASN1 lib"; the operator
    hears that the server's certificate is fine and what follows it is
    not."""
    leaf = (confdir / "cert.pem").read_text()
    body = leaf.split("-----BEGIN CERTIFICATE-----\n", 1)[1].split("\n")
    body[3] = body[3][:10] + "AAAA" + body[3][14:]
    bad = "-----BEGIN CERTIFICATE-----\n" + "\n".join(body)
    (confdir / "cert.pem").write_text(leaf + bad)
    path, r = run_with_key(confdir, "key.pem")
    assert r.returncode == 1, r.stderr
    assert f"{confdir}/cert.pem: cannot load certificate chain: the first " \
        "certificate (the server's) is fine, a certificate after it in the " \
        "chain is damaged or cut short" in r.stderr, r.stderr


def test_weak_rsa_certificate_said_in_words(confdir):
    _openssl("req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout",
             str(confdir / "weak.key"), "-out", str(confdir / "weak.pem"),
             "-days", "3", "-subj", "/CN=weak")
    path = confdir / "moat.toml"
    path.write_text('[tls]\ncertificate = "weak.pem"\nkey = "weak.key"\n'
                    + LISTENER)
    r = run("-t", "-c", str(path))
    assert r.returncode == 1, r.stderr
    assert f"{confdir}/weak.pem: the certificate's key is too small, below " \
        "what OpenSSL accepts here (RSA keys need 2048 bits or more" \
        in r.stderr, r.stderr


def test_certificate_out_of_its_dates_warned(confdir):
    """A certificate that expired (a stale file put back during renewal)
    or is about to: moat -t passes it, as a start or reload would, but
    says so, since every client will refuse it."""
    (confdir / "ca.cnf").write_text(
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\n"
        "new_certs_dir = .\nserial = serial\ndefault_md = sha256\n"
        "policy = p\n[p]\ncommonName = supplied\n")
    (confdir / "index.txt").write_text("")
    (confdir / "serial").write_text("01\n")
    key = str(confdir / "key.pem")
    _openssl("req", "-new", "-key", key, "-subj", "/CN=localhost",
             "-out", str(confdir / "r.csr"))
    subprocess.run(["openssl", "ca", "-batch", "-config", "ca.cnf",
                    "-selfsign", "-keyfile", "key.pem", "-notext",
                    "-startdate", "20200101000000Z",
                    "-enddate", "20200201000000Z",
                    "-in", "r.csr", "-out", "old.pem"],
                   cwd=confdir, check=True, capture_output=True, timeout=30)
    _openssl("req", "-x509", "-key", key, "-subj", "/CN=localhost",
             "-days", "3", "-out", str(confdir / "soon.pem"))
    at = r"^.*/moat\.toml:2:15: warning: tls\.certificate: .*/"
    for cert, want in (
            ("old.pem", at + r"old\.pem: the certificate expired on "
             r"2020-02-01 00:00 UTC; clients will refuse it$"),
            ("soon.pem", at + r"soon\.pem: the certificate expires on "
             r"\d{4}-\d\d-\d\d \d\d:\d\d UTC, in [23] days$"),
            ("cert.pem", None)):
        path = confdir / "moat.toml"
        path.write_text(f'[tls]\ncertificate = "{cert}"\nkey = "key.pem"\n'
                        + LISTENER)
        r = run("-t", "-c", str(path))
        assert r.returncode == 0, r.stderr
        if want is None:
            assert "warning" not in r.stderr, r.stderr
        else:
            assert re.search(want, r.stderr, re.M), r.stderr
    # Certificate and key in one file, named by both keys: a problem of
    # the certificate is located at the certificate's key.
    (confdir / "both.pem").write_text((confdir / "soon.pem").read_text() +
                                      (confdir / "key.pem").read_text())
    path = confdir / "moat.toml"
    path.write_text('[tls]\ncertificate = "both.pem"\nkey = "both.pem"\n'
                    + LISTENER)
    r = run("-t", "-c", str(path))
    assert r.returncode == 0, r.stderr
    assert re.search(at + r"both\.pem: the certificate expires on ",
                     r.stderr, re.M), r.stderr


def run_with_key(confdir, key):
    path = confdir / "moat.toml"
    path.write_text(f'[tls]\ncertificate = "cert.pem"\nkey = "{key}"\n'
                    + LISTENER)
    return str(path), run("-t", "-c", str(path))


def test_example_config_passes():
    r = run("-t", "-c", os.path.join(SOURCE, "config.example.toml"))
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stderr


def test_every_error_is_reported(confdir):
    path, r = check(confdir, LISTENER + "[daemon]\nworkers = -1\n"
                    "[ban]\nduration = \"1x\"\n")
    assert r.returncode != 0
    assert f"{path}:11:11: daemon.workers must be between 0 and 256, " \
        "not -1" in r.stderr
    assert f"{path}:13:12: invalid duration \"1x\"" in r.stderr


def test_toml_syntax_error(confdir):
    path, r = check(confdir, LISTENER + "name = \"again\"\n")
    assert r.returncode != 0
    assert f"{path}:10:1:" in r.stderr and "duplicate" in r.stderr


def test_open_relay_warning(confdir):
    path, r = check(confdir, LISTENER + "backend_proxy = \"none\"\n")
    assert r.returncode == 0, r.stderr
    assert f"{path}:10:17: warning: listener 'smtps'" in r.stderr
    assert "OPEN RELAY" in r.stderr


def _make_mmdb(path, *opts):
    """The project's test country database (tests/geo/make-test-mmdb.pl)."""
    if shutil.which("perl") is None or subprocess.run(
            ["perl", "-MMaxMind::DB::Writer::Tree", "-e", "1"],
            capture_output=True, timeout=60).returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("libmaxmind-db-writer-perl not installed")
        pytest.skip("libmaxmind-db-writer-perl not installed")
    subprocess.run(["perl", os.path.join(SOURCE, "tests", "geo",
                                         "make-test-mmdb.pl"),
                    *opts, str(path)], check=True, capture_output=True,
                   timeout=60)


def test_ipv4_only_geo_database_warning(confdir):
    """An IPv4-only database (ip_version 4) finds no IPv6 client: while
    IPv6 clients can come, moat -t says that [policy.geo] unknown decides
    for all of them, and what it decides."""
    _make_mmdb(confdir / "v4.mmdb", "--ip-version", "4")
    _make_mmdb(confdir / "v6.mmdb")
    on6 = LISTENER.replace('"127.0.0.1:10465"',
                           '"127.0.0.1:10465", "[::1]:10465"')
    proxied = LISTENER + ('accept_proxy = true\n'
                          'accept_proxy_from = ["127.0.0.1"]\n')
    geo = '[policy.geo]\ndatabase = "{}"\n'
    lists = 'deny_countries = ["BR"]\n'
    head = (f"warning: policy.geo.database: {confdir}/v4.mmdb: an "
            "IPv4-only database (ip_version 4), but listener 'smtps' ")
    tail = (": IPv6 clients are never found in it and get the policy for "
            "unknown countries: [policy.geo] unknown = ")
    for body, want in [
        (on6 + geo.format("v4.mmdb") + lists,
         "listens on [::1]:10465" + tail + '"allow" admits them all, '
         "whatever allow_countries and deny_countries say"),
        (on6 + geo.format("v4.mmdb"),
         "listens on [::1]:10465" + tail + '"allow" admits them all'),
        (proxied + geo.format("v4.mmdb") + 'unknown = "deny"\n',
         "takes client addresses from PROXY headers" + tail +
         '"deny" refuses them all'),
    ]:
        path, r = check(confdir, body)
        assert r.returncode == 0, r.stderr
        line = body.splitlines().index(geo.format("v4.mmdb").splitlines()[1])
        assert f"{path}:{line + 4}:12: " + head + want + "\n" in r.stderr, \
            r.stderr
        assert r.stderr.count("IPv4-only") == 1, r.stderr
        assert f"{path}: configuration OK" in r.stderr
        # Which database, and how old: the test one is built 2026-01-01
        # unless SOURCE_DATE_EPOCH says otherwise.
        assert re.search(rf"^geo: {re.escape(str(confdir))}/v4.mmdb: "
                         r"Moat-Test-Country, built \d{4}-\d\d-\d\d "
                         r"\((today|\d+ days? ago|in the future)\), "
                         r"IPv4 only$", r.stderr, re.M), r.stderr
    # No IPv6 client can come, or the database knows IPv6: nothing to say.
    for body in (LISTENER + geo.format("v4.mmdb") + lists,
                 on6 + geo.format("v6.mmdb") + lists,
                 proxied + geo.format("v6.mmdb")):
        path, r = check(confdir, body)
        assert r.returncode == 0, r.stderr
        assert "IPv4-only" not in r.stderr and "warning" not in r.stderr, \
            r.stderr


def test_unreadable_geo_database_located(confdir):
    """A file that is no MaxMind database passes the loader (it is
    readable) and fails when libmaxminddb opens it: the message names the
    config line as well as the file."""
    (confdir / "bad.mmdb").write_text("not a database\n" * 100)
    (confdir / "empty.mmdb").write_text("")
    for name in ("bad.mmdb", "empty.mmdb"):
        path, r = check(confdir, LISTENER + '[policy.geo]\n'
                        f'database = "{name}"\n')
        assert r.returncode == 1, r.stderr
        assert f"{path}:11:12: policy.geo.database: {confdir}/{name}: " \
            in r.stderr, r.stderr
        # libmaxminddb's words alone ("An attempt to read data from the
        # MaxMind DB file failed") do not say the file is the problem.
        assert "(not a MaxMind database, or one cut short)" in r.stderr, \
            r.stderr


def test_missing_file():
    r = run("-t", "-c", "/nonexistent/moat.toml")
    assert r.returncode != 0
    assert "/nonexistent/moat.toml: cannot open: No such file or directory" \
        in r.stderr


def test_versions():
    r = run("-V")
    assert r.returncode == 0
    for lib in ("moat ", "OpenSSL 3.", "libev 4.", "libnftnl ", "libmnl ",
                "libipset ", "libmaxminddb "):
        assert lib in r.stdout, r.stdout


def test_builtin_config(tmp_path):
    r = run("-p")
    assert r.returncode == 0 and "[[listener]]" in r.stdout
    # Without cert.pem in the current directory the default cannot start,
    # and moat says what it expected.
    r = run("-t", cwd=tmp_path)
    assert r.returncode != 0
    assert "expects cert.pem and key.pem" in r.stderr


@pytest.mark.parametrize("opt", ["-V", "-p", "-h"])
def test_output_to_a_full_disk_fails(opt):
    """`moat -p > moat.toml` on a full disk used to exit 0 with nothing
    written; now the write error is said and the status is 1."""
    with open("/dev/full", "w") as full:
        r = subprocess.run([MOAT, opt], stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stderr
    assert "moat: standard output: No space left on device" in r.stderr


def test_usage():
    r = run("-x")
    assert r.returncode == 2
    assert "usage: moat" in r.stderr


def test_config_without_c_is_named():
    """`moat /etc/moat/moat.toml`, the -c forgotten, used to print only
    the usage: now it names the argument and where it belongs."""
    r = run("/etc/moat/moat.toml")
    assert r.returncode == 2
    assert "moat: unexpected argument '/etc/moat/moat.toml' (a " \
        "configuration file goes after -c)" in r.stderr, r.stderr
    assert "usage: moat" in r.stderr


def test_c_given_twice_is_refused(tmp_path):
    """`moat -t -c a.toml -c b.toml` used to check b.toml alone without a
    word: which file the operator meant is a guess, so it is refused."""
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    for f in (a, b):
        f.write_text("")
    r = run("-t", "-c", str(a), "-c", str(b))
    assert r.returncode == 2, r.stderr
    assert f"moat: -c given twice ('{a}' and '{b}'); moat reads one " \
        "configuration file" in r.stderr, r.stderr
    assert "usage: moat" in r.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def public_dir(confdir, prefix: str):
    """A directory outside pytest's 0700 tree, with the test certificate
    and key readable by all, so that moat run as nobody can read them;
    removed afterwards."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    try:
        os.chmod(d, 0o755)
        for name in ("cert.pem", "key.pem"):
            shutil.copy(confdir / name, d)
            os.chmod(os.path.join(d, name), 0o644)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_own_file_daemon_user_cannot_write_fails_the_check(confdir):
    """An events file (or state file) left by a run as root, or made by
    logrotate's create: daemon.user cannot write it, so the start stops
    in privdrop(), but moat -t said "configuration OK". Both now agree;
    in a systemd directory the start gives the file to the user, and
    the check passes it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to check files as daemon.user")
    with public_dir(confdir, "moat-own-") as d:
        var = os.path.join(d, "var")
        os.mkdir(var)
        shutil.chown(var, "nobody")
        with open(os.path.join(var, "events.jsonl"), "w"):
            pass
        os.chmod(os.path.join(var, "events.jsonl"), 0o600)
        cfg = os.path.join(d, "moat.toml")
        with open(cfg, "w") as f:
            f.write(textwrap.dedent(f"""\
                [daemon]
                user = "nobody"
                control_socket = "{d}/moat.sock"
                state_file = "{var}/state"
                [tls]
                certificate = "cert.pem"
                key = "key.pem"
                [[listener]]
                name = "smtps"
                listen = ["127.0.0.1:{free_port()}"]
                protocol = "smtp"
                tls = "implicit"
                backend = "127.0.0.1:10025"
                [firewall]
                backend = "none"
                [events]
                file = "{var}/events.jsonl"
                """))
        r = run("-t", "-c", cfg)
        start = run("-c", cfg)
        env = dict(os.environ, LOGS_DIRECTORY=var)
        sd = subprocess.run([MOAT, "-t", "-c", cfg], capture_output=True,
                            text=True, timeout=30, env=env,
                            stdin=subprocess.DEVNULL)
    assert start.returncode == 1, start.stderr
    assert "nobody cannot read and write" in start.stderr, start.stderr
    assert r.returncode == 1, r.stderr
    assert f"{cfg}:17:8: events.file: nobody cannot read and write " \
        f"{var}/events.jsonl: Permission denied; moat would not start: " \
        f"give the file to that user (chown nobody {var}/events.jsonl)" \
        in r.stderr, r.stderr
    assert "configuration OK" not in r.stderr, r.stderr
    assert sd.returncode == 0, sd.stderr


def test_start_logs_config_problems_with_a_priority(confdir):
    """moat(8): with standard error not a terminal every line starts with
    a syslog priority prefix, so journald files the reason a start failed
    as a warning, as a reload's, not as info; moat -t prints the same
    lines bare, FILE:LINE:COL: message."""
    path = confdir / "moat.toml"
    path.write_text('[tls]\ncertificate = "cert.pem"\nkey = "key.pem"\n'
                    + LISTENER + '[policy]\nallow = ["0.0.0.0/0"]\n'
                    'workerz = 1\n')
    warning = (f"{path}:11:1: warning: policy.allow covers every IPv4 "
               "address")
    error = f"{path}:12:1: unknown key 'workerz' in [policy]"
    start = run("-c", str(path))
    assert start.returncode == 1, start.stderr
    lines = start.stderr.splitlines()
    assert lines, start.stderr
    assert all(re.match(r"<[0-7]>", line) for line in lines), start.stderr
    assert any(line.startswith("<4>moat: " + warning) for line in lines), \
        start.stderr
    assert f"<4>moat: {error}" in lines, start.stderr
    check = run("-t", "-c", str(path))
    assert check.returncode == 1, check.stderr
    assert check.stderr.startswith(warning), check.stderr
    assert error in check.stderr.splitlines(), check.stderr


def test_start_without_root_says_why(confdir):
    """Started as an ordinary user: the control socket, opened first,
    cannot be made in a directory only root may write, nor looked for in
    the 0750 root directory a start as root leaves behind, and both errors
    say moat starts as root; given a directory it may write, the port
    below 1024 fails next, and that error says the port needs a start as
    root, not that a restart would do."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to start moat as nobody")
    runs = []
    with public_dir(confdir, "moat-lowport-") as d:
        cfg = os.path.join(d, "moat.toml")
        with open(cfg, "w") as f:
            f.write(textwrap.dedent(f"""\
                [daemon]
                control_socket = "{d}/run/moat.sock"
                state_file = "{d}/moat.state"
                [tls]
                certificate = "cert.pem"
                key = "key.pem"
                [[listener]]
                name = "smtps"
                listen = ["127.0.0.1:1"]
                protocol = "smtp"
                tls = "implicit"
                backend = "127.0.0.1:10025"
                [firewall]
                backend = "none"
                [events]
                file = ""
                """))
        os.chmod(cfg, 0o644)
        for step in ("absent", "root's", "writable"):
            if step == "root's":
                os.mkdir(os.path.join(d, "run"), 0o750)
                os.chmod(os.path.join(d, "run"), 0o750)   # not the umask's
            if step == "writable":
                os.chmod(os.path.join(d, "run"), 0o777)
            runs.append(subprocess.run(
                ["setpriv", "--reuid=nobody", "--regid=nogroup",
                 "--clear-groups", MOAT, "-c", cfg],
                capture_output=True, text=True, timeout=30,
                stdin=subprocess.DEVNULL))
    r = runs[0]
    assert r.returncode == 1, r.stderr
    assert f"control socket: cannot create directory {d}/run: Permission " \
        "denied (moat starts as root and then runs as daemon.user)" \
        in r.stderr, r.stderr
    assert "cannot listen" not in r.stderr, r.stderr
    r = runs[1]
    assert r.returncode == 1, r.stderr
    assert f"control socket {d}/run/moat.sock: Permission denied (moat " \
        "starts as root and then runs as daemon.user)" in r.stderr, r.stderr
    assert "cannot listen" not in r.stderr, r.stderr
    r = runs[2]
    assert r.returncode == 1, r.stderr
    assert "cannot listen on 127.0.0.1:1: Permission denied (a port below " \
        "1024 needs moat to start as root)" in r.stderr, r.stderr
    assert "restart" not in r.stderr, r.stderr


def test_start_on_an_address_it_cannot_listen_on(confdir):
    """A port another program holds, an address no interface has (a typo,
    an address moved to another host): moat -t cannot know, the start
    fails with one line naming the listener, and says what the errno
    means. It used to print two lines, neither naming the listener, and
    "Cannot assign requested address" bare."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    tail = (f'[firewall]\nbackend = "none"\n[events]\nfile = ""\n'
            f'[daemon]\nstate_file = "{confdir}/st"\n'
            f'control_socket = "{confdir}/s"\n')
    try:
        for listen, want in [
                (f"127.0.0.1:{port}", "Address already in use (another "
                 "program listens there; ss -ltnp shows which)"),
                ("192.0.2.77:10465", "Cannot assign requested address (no "
                 "interface of this host has that address)")]:
            path, r = check(confdir, LISTENER.replace("127.0.0.1:10465",
                                                      listen) + tail)
            assert r.returncode == 0, r.stderr
            r = run("-c", path)
            assert r.returncode == 1, r.stderr
            line = f"listener 'smtps': cannot listen on {listen}: {want}"
            assert line in r.stderr, r.stderr
            assert r.stderr.count(listen) == 1, r.stderr
    finally:
        busy.close()


@pytest.mark.parametrize("key,value,want", [
    ("state_file", "{dir}/statedir", "{dir}/statedir is a directory; name a file"),
    ("events", "{dir}/eventsdir", "{dir}/eventsdir is a directory; name a file"),
    ("events", "{dir}/no/such/events.jsonl",
     "{dir}/no/such/events.jsonl: neither {dir}/no/such nor {dir}/no exists "
     "(moat makes only a file's own directory; check the path)"),
    ("control_socket", "{dir}/no/such/control.sock",
     "control socket {dir}/no/such/control.sock: neither {dir}/no/such nor "
     "{dir}/no exists (moat makes only the socket's own directory; check "
     "the path)"),
])
def test_state_and_events_paths_are_checked(confdir, key, value, want):
    """A state or events file that is a directory, or a state file, events
    file or control socket under a directory tree that does not exist (a
    typo): moat -t refuses it as the start does, and the start makes no
    directories for it (the control socket's used to be made as with
    mkdir -p)."""
    (confdir / "statedir").mkdir()
    (confdir / "eventsdir").mkdir()
    value, want = value.format(dir=confdir), want.format(dir=confdir)
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    section = (f'[daemon]\nstate_file = "{value}"\ncontrol_socket = "{confdir}/s"\n'
               if key == "state_file" else
               f'[daemon]\nstate_file = "{confdir}/st"\ncontrol_socket = "{value}"\n'
               if key == "control_socket" else
               f'[daemon]\nstate_file = "{confdir}/st"\ncontrol_socket = "{confdir}/s"\n'
               f'[events]\nfile = "{value}"\n')
    path, r = check(confdir, LISTENER.replace("10465", str(free)) +
                    '[firewall]\nbackend = "none"\n' + section)
    assert r.returncode == 1, r.stderr
    assert want in r.stderr, r.stderr
    r = run("-c", path)
    assert r.returncode == 1, r.stderr
    assert want in r.stderr, r.stderr
    assert not (confdir / "no").exists()


@pytest.mark.parametrize("key,want", [
    ("events", "16:8: events.file: {ro}/events.jsonl: {ro} is on a "
     "read-only file system"),
    ("state_file", "11:14: daemon.state_file: {ro}/state: {ro} is on a "
     "read-only file system"),
    # The start tries to make the directory, and says that.
    ("control_socket", ("12:18: daemon.control_socket: {ro} is on a "
     "read-only file system, so the control socket {ro}/run/moat.sock "
     "cannot be made", "control socket: cannot create directory {ro}/run: "
     "Read-only file system")),
])
def test_own_file_on_a_read_only_mount(confdir, key, want):
    """An events file, state file or control socket moved onto a
    read-only mount: root's permission bits let everything through, so
    moat -t said "configuration OK"; the start then failed at the events
    file after binding its ports, or ran with state saves failing every
    2 s. Under systemd, where the unit's ProtectSystem=strict is the
    usual cause, the message says so."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a read-only mount")
    ro = confdir / "ro"
    ro.mkdir()
    paths = {"events": f"{confdir}/events.jsonl",
             "state_file": f"{confdir}/state",
             "control_socket": f"{confdir}/s"}
    paths[key] = {"events": f"{ro}/events.jsonl", "state_file": f"{ro}/state",
                  "control_socket": f"{ro}/run/moat.sock"}[key]
    path = confdir / "moat.toml"
    path.write_text('[tls]\ncertificate = "cert.pem"\nkey = "key.pem"\n' +
                    LISTENER.replace("10465", str(free_port())) +
                    f'[daemon]\nstate_file = "{paths["state_file"]}"\n'
                    f'control_socket = "{paths["control_socket"]}"\n'
                    '[firewall]\nbackend = "none"\n'
                    f'[events]\nfile = "{paths["events"]}"\n')
    want, want_start = (want, None) if isinstance(want, str) else want
    want = f"{path}:" + want.format(ro=ro)
    want_start = want if want_start is None else want_start.format(ro=ro)
    hint = ("(under systemd: moat.service's ProtectSystem=strict leaves "
            "moat only /run/moat, /var/lib/moat and /var/log/moat to write; "
            "move the file there or add ReadWritePaths= to the unit)")
    mount = f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && "
    for args, env in ((["-t"], {}), ([], {}), ([], {"INVOCATION_ID": "1"})):
        r = subprocess.run(
            ["unshare", "-m", "sh", "-c",
             mount + 'exec "$@"', "sh", MOAT, *args, "-c", str(path)],
            capture_output=True, text=True, timeout=30,
            stdin=subprocess.DEVNULL, env=dict(os.environ, **env))
        assert r.returncode == 1, (args, r.stderr)
        assert (want if args else want_start) in r.stderr, (args, r.stderr)
        assert "listening on" not in r.stderr, r.stderr
        assert (hint in r.stderr) == bool(env), r.stderr
    assert not (ro / "run").exists()
    # A device there opens for writing all the same.
    if key == "events":
        path.write_text(path.read_text().replace(paths["events"],
                                                 "/dev/null"))
        r = subprocess.run(
            ["unshare", "-m", "sh", "-c", "mount -o remount,bind,ro "
             "/dev && exec \"$@\"", "sh", MOAT, "-t", "-c", str(path)],
            capture_output=True, text=True, timeout=30,
            stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("body,want", [
    ('[daemon]\ncontrol_socket = "x.sock"\nstate_file = "x.sock"\n',
     "12:1: daemon.state_file and daemon.control_socket are both "
     "{dir}/x.sock: saving the bans would replace the control socket"),
    ('[events]\nfile = "x.jsonl"\n[daemon]\nstate_file = "x.jsonl"\n',
     "13:1: daemon.state_file and events.file are both {dir}/x.jsonl: "
     "saving the bans would replace the events file"),
    # Only the other key written: said there.
    ('[events]\nfile = "/var/lib/moat/state"\n',
     "11:1: daemon.state_file and events.file are both /var/lib/moat/state: "
     "saving the bans would replace the events file"),
])
def test_state_file_of_another_use_refused(confdir, body, want):
    """Saves rename a new file over daemon.state_file, and a start that
    cannot read it renames it aside: the control socket or the events
    file there would be lost. moat -t says so at the line."""
    path, r = check(confdir, LISTENER + body)
    assert r.returncode == 1, r.stderr
    want = f"{path}:{want.format(dir=confdir)}"
    assert any(line.startswith(want) for line in r.stderr.splitlines()), \
        r.stderr
