"""The manual pages render cleanly: no groff warnings, mandoc -T lint
quiet, every page through man -l; and they name what the code has:
moat.toml(5) every key config.example.toml names and every key the loader
takes, in its section; moat(8) every event and reason; moatctl(8) every
metric with its labels."""
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


def _section(page, start, end):
    return page[page.index(start):page.index(end, page.index(start) + 1)]


def _bold_words(text):
    """The words of text's .B and .BR lines, where the pages name keys."""
    words = set()
    for line in text.splitlines():
        if line.startswith((".B ", ".BR ")):
            words |= set(re.findall(r"[a-z_0-9]+", line.replace("\\", " ")))
    return words


def test_moat_toml_5_documents_every_key_the_loader_takes():
    """Each key of each section the loader walks is named in that
    section of moat.toml(5), not only somewhere in the page."""
    src = _src("policy/config.c")
    specs = {m.group(1): re.findall(r'\{ "([a-z_0-9]+)", k_', m.group(2))
             for m in re.finditer(r"key_spec (\w+)_keys\[\] = \{(.*?)\n\};",
                                  src, re.S)}
    page = _src("doc/moat.toml.5")
    where = {"daemon": ".SH [daemon]", "tls": ".SH [tls]",
             "sni": ".SH [[tls.sni]]", "listener": ".SH [[listener]]",
             "timeout": ".SH [[listener]]", "policy": ".SH [policy]",
             "geo": ".SH [policy.geo]", "rate": ".SH [policy.rate]",
             "ban": ".SH [ban]", "firewall": ".SH [firewall]",
             "events": ".SH [events]"}
    # The extraction itself is checked, so that a rename cannot empty it.
    assert set(specs) == set(where) | {"top"}, sorted(specs)
    assert "reserved_sessions" in specs["daemon"], specs["daemon"]
    missing = []
    for name, keys in specs.items():
        if name == "top":
            continue
        words = _bold_words(_section(page, where[name], "\n.SH "))
        missing += [f"{name}.{k}" for k in keys
                    if k not in words and not (name == "policy" and
                                               k in ("geo", "rate"))]
    # The inline tables' own keys.
    rate = _bold_words(_section(page, ".SH [policy.rate]", "\n.SH "))
    missing += [f"rate.{k}" for k in ("limit", "window") if k not in rate]
    assert not missing, f"keys missing from moat.toml(5): {missing}"


def _metric_families():
    """Every metric name metrics.c writes, with the labels of those kept
    in its table of families."""
    src = re.sub(r'"\s*\n\s*"', "", _src("proxy/metrics.c"))
    names = set(re.findall(r'"(moat_[a-z_]+)(?![a-z_.])', src))
    labels = {m.group(1): [l for l in m.group(2, 3) if l]
              for m in re.finditer(r'\{ "(moat_[a-z_]+)",\s*"[^"]*",\s*'
                                   r'\{ "([a-z_]+)", (?:"([a-z_]+)"|NULL) \}',
                                   src)}
    labels["moat_session_duration_seconds"] = ["listener"]
    labels["moat_worker_connections_total"] = ["worker"]
    labels["moat_worker_sessions"] = ["worker"]
    labels["moat_certificate_expiry_seconds"] = ["certificate"]
    labels["moat_certificate_not_after_timestamp_seconds"] = ["certificate"]
    labels["moat_info"] = ["version"]
    return names, labels


def test_moatctl_8_lists_every_metric_with_its_labels():
    names, labels = _metric_families()
    assert {"moat_rejects_total", "moat_workers", "moat_info",
            "moat_geo_database_build_timestamp_seconds"} <= names, names
    assert labels["moat_rejects_total"] == ["listener", "reason"], labels
    page = _src("doc/moatctl.8")
    section = _section(page, ".SH METRICS", "\n.SH ")
    missing = sorted(n for n in names
                     if not re.search(r"(?<![a-z_])%s(?![a-z_])" % n, section))
    assert not missing, f"moatctl(8) METRICS does not name: {missing}"
    wrong = sorted(f"{n}{{{','.join(ls)}}}" for n, ls in labels.items()
                   if f"{n}{{{','.join(ls)}}}" not in section)
    assert not wrong, f"moatctl(8) METRICS has other labels for: {wrong}"


def test_tls_failure_reasons_are_in_both_pages():
    """The fixed reasons of tls_fail, which the handshake-failure metric
    counts by too: named in moat(8), EVENTS, and moatctl(8), METRICS."""
    session = _src("proxy/session.c")
    reasons = ("eof", "timeout", "no_tls_context", "client hello too large")
    for r in reasons:
        assert f'"{r}"' in session, f"{r} is gone from session.c"
    events = _section(_src("doc/moat.8"), ".SH EVENTS", "\n.SH ")
    metrics = _section(_src("doc/moatctl.8"), ".SH METRICS", "\n.SH ")
    for page, text in (("moat(8)", events), ("moatctl(8)", metrics)):
        missing = [r for r in reasons if r not in text]
        assert not missing, f"{page} does not name: {missing}"
