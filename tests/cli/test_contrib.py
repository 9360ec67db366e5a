"""contrib/ files that operators load elsewhere stay true to the daemon."""
import json
import os
import re

SOURCE = os.environ.get("MOAT_SOURCE_ROOT", ".")


def test_grafana_dashboard_uses_only_real_metrics():
    with open(os.path.join(SOURCE, "contrib", "grafana",
                           "moat-dashboard.json")) as f:
        dash = json.load(f)
    with open(os.path.join(SOURCE, "proxy", "metrics.c")) as f:
        exported = set(re.findall(r'"(moat_[a-z_]+)', f.read()))
    used = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(moat_[a-z_]+)", target["expr"]))
    assert used, "the dashboard queries nothing"
    # Histograms are exported as NAME and scraped as NAME_bucket.
    missing = {m for m in used
               if m not in exported and m.removesuffix("_bucket") not in exported}
    assert not missing, f"dashboard queries unknown metrics: {missing}"


def _need(tool):
    """Postfix and Dovecot come with the suite's dependencies; without
    them these checks cannot run, which CI must not take for a pass."""
    import shutil
    import pytest
    path = shutil.which(tool) or (f"/usr/sbin/{tool}"
                                  if os.path.exists(f"/usr/sbin/{tool}")
                                  else None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} not installed")
        pytest.skip(f"{tool} not installed")
    return path


def _contrib(*parts):
    with open(os.path.join(SOURCE, "contrib", *parts)) as f:
        return f.read()


def test_postfix_snippets_are_settings_postfix_knows(tmp_path):
    """Debian's Postfix reads main.cf.moat (with its commented options
    turned on) and master.cf.moat without a warning: a misspelt or
    retired parameter would be ignored with no more than that warning,
    leaving the backend open or shut without anyone noticing."""
    import subprocess
    postconf = _need("postconf")
    main = _contrib("postfix", "main.cf.moat")
    options = re.findall(r"^#([a-z_]+ = .+)$", main, re.M)
    assert {o.split()[0] for o in options} >= {
        "proxy_interfaces", "smtpd_authorized_xclient_hosts"}, options
    (tmp_path / "main.cf").write_text(
        "compatibility_level = 3.6\n" + main + "\n".join(options) + "\n")
    dist = "/usr/share/postfix/master.cf.dist"
    master = open(dist).read() if os.path.exists(dist) else ""
    (tmp_path / "master.cf").write_text(
        master + _contrib("postfix", "master.cf.moat"))
    for flag in ("-n", "-P", "-M"):
        r = subprocess.run([postconf, "-c", str(tmp_path), flag],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "warning" not in r.stderr, \
            (flag, r.stderr)
        if flag == "-P":
            assert "127.0.0.1:10587/inet/smtpd_tls_auth_only = no" \
                in r.stdout, r.stdout


def test_dovecot_snippet_and_its_pop3_advice_parse(tmp_path):
    """moat.conf, and the protocol pop3 block its comment offers for port
    110, are settings Debian's Dovecot accepts where they are put."""
    import subprocess
    doveconf = _need("doveconf")
    snippet = _contrib("dovecot", "moat.conf")
    advice = re.search(r"^#   (protocol pop3 \{\n(?:#   .*\n)*?#   \})",
                       snippet, re.M)
    assert advice, "the pop3 advice is gone from moat.conf"
    block = re.sub(r"^#   ", "", advice.group(1), flags=re.M)
    (tmp_path / "moat.conf").write_text(snippet)
    conf = tmp_path / "dovecot.conf"
    conf.write_text(f"protocols = pop3\nssl = no\n"
                    f"!include {tmp_path / 'moat.conf'}\n{block}\n")
    r = subprocess.run([doveconf, "-c", str(conf), "-n"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "disable_plaintext_auth = no" in r.stdout, r.stdout
    assert "haproxy = yes" in r.stdout, r.stdout


def test_appliance_recipe_is_whole(tmp_path):
    """contrib/appliance cannot be built here (it needs a Debian mirror;
    check.sh runs what it builds): its scripts parse, every file they copy
    or install exists, and its moat.toml passes moat -t with the example
    certificate and paths of this machine."""
    import subprocess
    d = os.path.join(SOURCE, "contrib", "appliance")
    for script in ("build.sh", "setup.sh", "check.sh", "make-selfsigned"):
        r = subprocess.run(["sh", "-n", os.path.join(d, script)],
                           capture_output=True, text=True)
        assert r.returncode == 0, (script, r.stderr)
    build = _contrib("appliance", "build.sh")
    copied = re.search(r'cp ((?:[\w.-]+ )+)"\$1/tmp/appliance/"', build)
    assert copied, "build.sh copies nothing into the image"
    copied = copied.group(1).split()
    for name in copied:
        assert os.path.exists(os.path.join(d, name)), name
    setup = _contrib("appliance", "setup.sh")
    for name in re.findall(r'"\$a/([\w.-]+)"', setup):
        assert name in copied, f"build.sh does not copy {name}"
    # $doc is where meson installs contrib/ (doc/meson.build).
    for rel in re.findall(r'"\$doc/([\w./-]+)"', setup):
        assert os.path.exists(os.path.join(SOURCE, "contrib", rel)), rel
    moat = os.environ.get("MOAT_BUILD_ROOT", "build") + "/proxy/moat"
    example = os.path.join(SOURCE, "contrib", "example")
    conf = (_contrib("appliance", "moat.toml")
            .replace('user = "moat"\n', "")
            .replace("/etc/moat/cert.pem", f"{example}/cert.pem")
            .replace("/etc/moat/key.pem", f"{example}/key.pem")
            .replace("/var/log/moat/", f"{tmp_path}/"))
    (tmp_path / "moat.toml").write_text(conf)
    r = subprocess.run([moat, "-t", "-c", str(tmp_path / "moat.toml")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "configuration OK" in r.stderr, r.stderr
    assert "warning" not in r.stderr, r.stderr
