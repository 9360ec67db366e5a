"""`meson install --destdir` puts binaries, manual pages, the example
configuration and the contrib files where a package expects them."""
import os
import subprocess

import pytest

BUILD = os.environ.get("MOAT_BUILD_ROOT", "build")


def test_install_destdir(tmp_path):
    if not os.path.exists(os.path.join(BUILD, "meson-private")):
        pytest.skip(f"{BUILD} is not a meson build directory")
    dest = tmp_path / "root"
    r = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild",
                        "--destdir", str(dest)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    files = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}

    def one(suffix):
        hits = [f for f in files if f.endswith(suffix)]
        assert len(hits) == 1, (suffix, sorted(files))
        return dest / hits[0]

    for exe in ("bin/moat", "bin/moatctl"):
        p = one(exe)
        assert os.access(p, os.X_OK)
    assert subprocess.run([str(one("bin/moatctl")), "--version"],
                          capture_output=True, text=True).stdout.startswith("moatctl ")
    one("share/man/man8/moat.8")
    one("share/man/man8/moatctl.8")
    one("share/man/man5/moat.toml.5")
    one("share/doc/moat/config.example.toml")
    unit = one("lib/systemd/system/moat.service").read_text()
    # The installed unit starts the binary where this build put it.
    exec_start = [l for l in unit.splitlines() if l.startswith("ExecStart=")]
    assert exec_start and "/bin/moat " in exec_start[0] + " "
    bindir = subprocess.run(["meson", "introspect", "--buildoptions", BUILD],
                            capture_output=True, text=True).stdout
    import json
    opts = {o["name"]: o["value"] for o in json.loads(bindir)}
    assert exec_start[0].split("=", 1)[1].startswith(
        os.path.join(opts["prefix"], opts["bindir"], "moat")), exec_start
    reload = [l for l in unit.splitlines() if l.startswith("ExecReload=")]
    assert reload == ["ExecReload=" + os.path.join(
        opts["prefix"], opts["bindir"], "moatctl") + " reload"], reload
    one("share/doc/moat/nftables/moat.nft")
    one("share/doc/moat/ipset/README.md")
    one("share/doc/moat/grafana/moat-dashboard.json")
    # logrotate reads /etc/logrotate.d only, not PREFIX/etc.
    assert "etc/logrotate.d/moat" in files, sorted(files)
    one("share/doc/moat/postfix/main.cf.moat")
    one("share/doc/moat/postfix/master.cf.moat")
    one("share/doc/moat/dovecot/moat.conf")
