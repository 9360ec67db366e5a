"""valgrind memcheck over the integration smoke path: one message in
through SMTPS (with a STARTTLS SMTP session too) and read back through
POP3S, real Postfix and Dovecot behind moat, with two reloads under the
SMTPS session, then SIGTERM.  moat runs
under `valgrind --error-exitcode=99 --leak-check=full
--errors-for-leak-kinds=definite`: zero errors and zero definite leaks.
See issue 9.

Only in a normal build: valgrind and AddressSanitizer cannot share a
process, and the ASan build checks the same things its own way.
"""

from __future__ import annotations

import os
import poplib
import re
import shutil
import smtplib
import ssl
import subprocess
import uuid

import pytest

from conftest import require_mailstack
from mailstack import MailStack
from moatrun import Moat, listener, moat_binary


def asan_build() -> bool:
    p = subprocess.run(["ldd", str(moat_binary())], capture_output=True, text=True)
    return "libasan" in p.stdout or "libubsan" in p.stdout


@pytest.fixture
def valgrind():
    if not moat_binary().exists():
        pytest.skip(f"{moat_binary()} not built")
    if asan_build():
        pytest.skip("moat is built with sanitizers (libasan): valgrind cannot run "
                    "it; the normal build runs this test")
    vg = shutil.which("valgrind")
    if vg is None:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("CI=true but valgrind is missing (apt-get install valgrind)")
        pytest.skip("valgrind not installed (apt-get install valgrind)")
    return vg


def test_smoke_under_memcheck(valgrind, pki, tmp_path):
    require_mailstack()
    ms = MailStack(postfix_proxy="haproxy", dovecot_proxy=True)
    ms.start()
    vglog = tmp_path / "valgrind.log"
    m = Moat(tmp_path / "moat", pki, [
        listener("smtps", ms.smtp_addr, backend_proxy="v2"),
        listener("smtp", ms.smtp_addr, tls="starttls", backend_proxy="v2"),
        listener("pop3s", ms.pop3_addr, protocol="pop3", backend_proxy="v2"),
    ], wrap=[valgrind, "--error-exitcode=99", "--leak-check=full",
             "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
             "--track-fds=no", f"--log-file={vglog}"])
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    subject = "valgrind " + uuid.uuid4().hex
    msg = (f"From: a@example.org\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
           "\r\nbody line\r\n.dot line\r\n").encode()
    try:
        m.start(timeout=90)
        before = len(ms.maildir_messages("alice"))
        with smtplib.SMTP_SSL(*m.addr("smtps"), context=ctx, timeout=60) as c:
            c.ehlo("vg.example")
            # Two reloads under this session: the generation it holds
            # and the one between must both be freed, the first when
            # the session ends.
            for _ in range(2):
                r = m.ctl("reload", timeout=120)
                assert r.returncode == 0, r.stderr
            c.sendmail("a@example.org", ["alice@example.test"], msg)
        with smtplib.SMTP(*m.addr("smtp"), timeout=60) as c:
            c.starttls(context=ctx)
            c.ehlo("vg.example")
            c.sendmail("a@example.org", ["alice@example.test"], msg)
        ms.wait_for_messages("alice", before + 2, timeout=60)
        p = poplib.POP3_SSL(*m.addr("pop3s"), context=ctx, timeout=60)
        try:
            p.user("alice")
            p.pass_("alicepw")
            n, _ = p.stat()
            got = b"\r\n".join(p.retr(n)[1])
        finally:
            p.quit()
        assert subject.encode() in got
    finally:
        rc = m.stop(timeout=120)
        ms.stop()
        shutil.rmtree(ms.workdir, ignore_errors=True)
    report = vglog.read_text(errors="replace")
    summary = re.search(r"ERROR SUMMARY: (\d+) errors", report)
    assert summary, report[-3000:]
    print(summary.group(0))
    assert summary.group(1) == "0", report[-6000:]
    lost = re.search(r"definitely lost: ([\d,]+) bytes", report)
    assert lost is None or lost.group(1) == "0", report[-6000:]
    assert rc == 0, f"moat exited {rc}\n{report[-3000:]}\n{m.log()[-2000:]}"
