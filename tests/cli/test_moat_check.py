"""`moat -t`, `moat -V` and `moat -p` as an operator runs them."""
import os
import subprocess
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
    return subprocess.run([MOAT, *args], capture_output=True, text=True,
                          timeout=30, cwd=cwd)


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


@pytest.mark.parametrize("what,body,want", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_config(confdir, what, body, want):
    path, r = check(confdir, body)
    assert r.returncode != 0, f"{what}: moat -t accepted it"
    want = f"{path}:{want.format(dir=confdir)}"
    assert any(line.startswith(want) for line in r.stderr.splitlines()), \
        r.stderr


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


def test_usage():
    r = run("-x")
    assert r.returncode == 2
    assert "usage: moat" in r.stderr
