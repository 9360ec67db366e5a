"""ThreadSanitizer over everything the workers share at once: a short run
of tests/tsan/stress.py (clients over implicit TLS and STARTTLS on four
listeners, bans on every worker, moatctl and metrics in loops, reloads
that change policy, listeners and the firewall writer, a drain under
load) against a moat built with -Db_sanitize=thread. conftest.py turns
any report into a failure; here moat must also stop cleanly. Only a TSan
build registers it (tests/integration/meson.build); run by hand against
another build, it skips itself.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_mailstack
from moatrun import moat_binary


def tsan_built() -> bool:
    r = subprocess.run(["ldd", str(moat_binary())], capture_output=True,
                       text=True)
    return "libtsan" in r.stdout


@pytest.mark.skipif(not tsan_built(), reason="moat is not built with "
                    "-Db_sanitize=thread")
@pytest.mark.parametrize("workers", [2, 4])
def test_workers_share_without_races(tmp_path, workers):
    """Seed 1 drains to the end, seed 2 cuts the drain short with a
    second SIGTERM."""
    require_mailstack()
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a network namespace")
    stress = Path(__file__).resolve().parents[1] / "tsan" / "stress.py"
    r = subprocess.run([sys.executable, str(stress), "--workers",
                        str(workers), "--seconds", "20", "--seed",
                        str(workers // 2), "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "moat exit: 0" in r.stdout, r.stdout[-3000:]
