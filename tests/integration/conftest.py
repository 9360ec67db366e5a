"""pytest fixtures for the integration tests: a test PKI and private
Postfix/Dovecot instances (see mailstack.py, certs.py, README.md).

Fixtures:
  pki              session-scoped certs.PKI in a temporary directory
  mailstack        module-scoped MailStack with default options, started
  make_mailstack   factory: make_mailstack(**MailStack options) -> started
                   MailStack, stopped and removed after the test
Helpers:
  free_port()          a free loopback TCP port
  require_mailstack()  skip (or fail when CI=true) if the servers are missing
  started_stack(**opts)  generator for module fixtures: a started MailStack
  make_test_mmdb(path, *opts)  the project's test country database

Environment:
  CI=true              missing Postfix/Dovecot/openssl is a failure, not a skip
  TSAN_OPTIONS         set without log_path (tests/meson.build does, in a
                       -Db_sanitize=thread build): ThreadSanitizer reports
                       of every moat the tests start go to files of a
                       temporary directory, and the test after which one
                       appears fails with it (one that appears later, as a
                       module's moat exits, fails the run)
  MAILSTACK_KEEP=1     keep every MailStack workdir (logs, maildirs, configs);
                       workdirs of failed tests are always kept and named
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from certs import PKI, make_pki, openssl_available  # noqa: E402
from mailstack import MailStack, MailStackError, free_port  # noqa: E402

__all__ = ["free_port", "require_mailstack", "started_stack", "make_test_mmdb",
           "MailStack", "MailStackError", "PKI"]


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _missing(why: str) -> None:
    if _ci():
        pytest.fail(f"CI=true but {why}", pytrace=False)
    pytest.skip(why)


def require_mailstack() -> None:
    ok, why = MailStack.available()
    if not ok:
        _missing(f"Postfix/Dovecot test servers unavailable: {why}")


def make_test_mmdb(path, *opts: str) -> Path:
    """Builds the project's own test country database at path with
    tests/geo/make-test-mmdb.pl and its options (e.g. "--ip-version", "4");
    skips (fails when CI=true) without Debian's libmaxmind-db-writer-perl."""
    if shutil.which("perl") is None or subprocess.run(
            ["perl", "-MMaxMind::DB::Writer::Tree", "-e", "1"],
            capture_output=True, timeout=60).returncode != 0:
        _missing("libmaxmind-db-writer-perl is not installed")
    root = os.environ.get("MOAT_SOURCE_ROOT") or \
        Path(__file__).resolve().parents[2]
    subprocess.run(["perl", str(Path(root) / "tests" / "geo" / "make-test-mmdb.pl"),
                    *opts, str(path)], check=True, capture_output=True, timeout=60)
    return Path(path)


# ThreadSanitizer writes each process's reports to log_path.PID; moat may
# run as daemon.user, hence a directory anyone may write. A log_path the
# caller chose is left alone (and not checked).
_tsan_dir = None
_tsan_seen = set()


def pytest_configure(config):
    global _tsan_dir
    opts = os.environ.get("TSAN_OPTIONS")
    if opts is None or "log_path=" in opts:
        return
    _tsan_dir = Path(tempfile.mkdtemp(prefix="moat-tsan-"))
    os.chmod(_tsan_dir, 0o1777)
    os.environ["TSAN_OPTIONS"] = f"{opts}:log_path={_tsan_dir}/report"


def _tsan_new() -> str:
    """The reports written since the last call, as one text."""
    new = sorted(set(_tsan_dir.iterdir()) - _tsan_seen)
    _tsan_seen.update(new)
    return "\n".join(f"{p.name}:\n{p.read_text(errors='replace')}" for p in new)


@pytest.fixture(autouse=True)
def _tsan_reports():
    yield
    if _tsan_dir is not None and (text := _tsan_new()):
        pytest.fail(f"ThreadSanitizer reports:\n{text}", pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    if _tsan_dir is None:
        return
    if text := _tsan_new():
        print(f"\nThreadSanitizer reports after the last test:\n{text}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        shutil.rmtree(_tsan_dir, ignore_errors=True)


def _keep() -> bool:
    return os.environ.get("MAILSTACK_KEEP", "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "_mailstack_rep_" + rep.when, rep)
    if rep.when == "call" and rep.failed:
        for ms in getattr(item, "_mailstacks", []):
            rep.sections.append((f"mailstack {ms.name} ({ms.workdir}, kept)", ms.diagnostics()))


def _failed(request) -> bool:
    node = request.node
    return any(getattr(getattr(node, "_mailstack_rep_" + w, None), "failed", False)
               for w in ("setup", "call"))


def _finish(ms: MailStack, keep: bool) -> None:
    ms.stop()
    if not keep:
        shutil.rmtree(ms.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKI:
    if not openssl_available():
        _missing("openssl command not found (apt-get install openssl)")
    return make_pki(tmp_path_factory.mktemp("pki"))


def started_stack(**opts):
    """For a module fixture (`yield from started_stack(...)`): a started
    MailStack with opts, stopped and removed after the module (kept with
    MAILSTACK_KEEP=1)."""
    require_mailstack()
    ms = MailStack(**opts)
    try:
        ms.start()
        yield ms
    finally:
        _finish(ms, _keep())


@pytest.fixture(scope="module")
def mailstack():
    yield from started_stack()


@pytest.fixture
def make_mailstack(request):
    require_mailstack()
    made = []
    request.node._mailstacks = made

    def factory(**opts) -> MailStack:
        ms = MailStack(**opts)
        made.append(ms)
        return ms.start()

    yield factory
    failed = _failed(request)
    for ms in made:
        _finish(ms, _keep() or failed)
