"""The manual pages render cleanly: no groff warnings, mandoc -T lint
quiet, every page through man -l, and moat.toml(5) names every key that
config.example.toml does."""
import os
import re
import shutil
import subprocess

import pytest

SOURCE = os.environ.get("MOAT_SOURCE_ROOT", ".")
DOC = os.path.join(SOURCE, "doc")
PAGES = ["moat.8", "moatctl.8", "moat.toml.5"]


def _need(cmd):
    if shutil.which(cmd) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{cmd} not installed")
        pytest.skip(f"{cmd} not installed")


@pytest.mark.parametrize("page", PAGES)
def test_groff_has_no_warnings(page):
    _need("groff")
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z",
                        os.path.join(DOC, page)], capture_output=True, text=True,
                       timeout=30, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint_is_quiet(page):
    _need("mandoc")
    r = subprocess.run(["mandoc", "-T", "lint", os.path.join(DOC, page)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


@pytest.mark.parametrize("page", PAGES)
def test_man_renders(page):
    _need("man")
    r = subprocess.run(["man", "--warnings", "-l", os.path.join(DOC, page)],
                       capture_output=True, text=True, timeout=30,
                       env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat",
                            "PAGER": "cat", "LC_ALL": "C.UTF-8"})
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    assert "NAME" in r.stdout and "SEE ALSO" in r.stdout
    # Nothing left unformatted: no raw requests or escapes in the output.
    for line in r.stdout.splitlines():
        assert not line.startswith("."), line
        assert "\\f" not in line and "\\-" not in line, line


def test_moat_toml_documents_every_example_key():
    with open(os.path.join(SOURCE, "config.example.toml")) as f:
        example = f.read()
    keys = set()
    for line in example.splitlines():
        m = re.match(r"^#?\s*([a-z_0-9]+)\s*=", line)
        if m:
            keys.add(m.group(1))
    # The per-listener keys are documented in a comment block.
    keys |= set(re.findall(r"^#   ([a-z_]+) ", example, re.M))
    words = set()
    with open(os.path.join(DOC, "moat.toml.5")) as f:
        for line in f:
            if line.startswith((".B ", ".BR ")):
                words |= set(re.findall(r"[a-z_0-9]+", line.replace("\\", " ")))
    missing = sorted(keys - words)
    assert not missing, f"keys missing from moat.toml(5): {missing}"


def _src(path):
    with open(os.path.join(SOURCE, path)) as f:
        return f.read()


def _returns_of(text, func):
    """The string literals function func returns."""
    body = re.search(r"\n%s\([^)]*\)\n\{(.*?)\n\}" % re.escape(func), text, re.S)
    assert body, f"{func} not found"
    return set(re.findall(r'return "([a-z_]+)";', body.group(1)))


def event_vocabulary():
    """Every event name and reason word the code writes into events."""
    words = set(re.findall(r"[a-z_]+", re.search(
        r"#define EVENT_NAMES (.*?)\n\n", _src("proxy/events.h"), re.S).group(1)))
    policy = _src("policy/policy.c")
    words |= set(re.findall(r'\[POLICY_[A-Z]+\] = "([a-z_]+)"', policy.split(
        "reason_categories")[0])) - {"ok"}
    for f in ("proxy/cmdflow.c", "proxy/smtp.c", "proxy/pop3.c"):
        words |= set(re.findall(r'filter_signal\(io, FILTER_SIG_(?!AUTH_OK|AUTH_TEMP)'
                                r'[A-Z_]+, "([a-z0-9_]+)"\)', _src(f)))
    words |= set(re.findall(r'"(pop3_[a-z]+)"', _src("proxy/pop3.c")))
    words |= _returns_of(_src("proxy/smtp_parse.c"), "smtp_data_why_str") - {"ok"}
    words |= set(re.findall(r'\*what = "([a-z_]+)";', _src("proxy/smtp_parse.c")))
    words |= _returns_of(_src("proxy/slots.c"), "slots_verdict_str") - {"ok"}
    words |= _returns_of(_src("firewall/fw.c"), "fw_problem_str") - {"ok"}
    words |= set(re.findall(r'note_unban\(addr, "([a-z_]+)"\)', _src("proxy/guard.c")))
    # Written as literals in session.c: each must still be there.
    session = _src("proxy/session.c")
    for w in ("proxy_untrusted", "eof", "timeout", "no_tls_context"):
        assert f'"{w}"' in session, f"{w} is gone from session.c"
        words.add(w)
    return words


def test_moat_8_lists_every_event_and_reason():
    """moat(8), EVENTS, is what operators filter their tail with: every
    event kind and reason word the code can write is listed there."""
    page = _src("doc/moat.8")
    section = page[page.index(".SH EVENTS"):page.index(".SH FILES")]
    words = event_vocabulary()
    # The extraction itself is checked, so that a rename cannot empty it.
    assert {"reject", "firewall_error", "smtp_auth", "pop3_apop", "bare_lf",
            "http", "early_talker", "capacity_reserve", "wrong_set_type",
            "allowlist", "manual", "concurrency", "error"} <= words, words
    missing = sorted(w for w in words
                     if not re.search(r"(?<![a-z_])%s(?![a-z_])" % w, section))
    assert not missing, f"moat(8) EVENTS does not name: {missing}"
