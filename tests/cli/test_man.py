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
