"""scripts/demo's driver: a throw-away certificate, moat's built-in
configuration printed and checked, private Postfix and Dovecot on loopback,
moat in front of them, one message through, and moat left running in the
foreground until Ctrl-C (or SIGTERM). Never touches a system mail server:
the backends live under /tmp/moat-demo-PID with their own ports and queues.

MOAT_BUILD_ROOT (default build/) names the build; MOAT_DEMO_DIR (default
demo/) the directory moat runs in, where the certificate is made."""
import os
import poplib
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

top = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(top / "tests" / "integration"))
from mailstack import MailStack  # noqa: E402
from moatrun import moat_binary, moatctl_binary  # noqa: E402

demo = Path(os.environ.get("MOAT_DEMO_DIR") or top / "demo")
moat_bin = moat_binary()


def say(text: str) -> None:
    """One write per line: moat writes its log lines to the same terminal
    or pipe, and print() writes a line and its newline separately."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def prepare() -> None:
    """The certificate the built-in configuration names (cert.pem and
    key.pem beside it), then moat -p and moat -t on that configuration."""
    demo.mkdir(parents=True, exist_ok=True)
    if not (demo / "cert.pem").exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", "key.pem", "-out", "cert.pem",
                        "-days", "30", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       cwd=demo, check=True, capture_output=True)
    say("== moat's built-in configuration (moat -p):")
    p = subprocess.run([str(moat_bin), "-p"], cwd=demo, check=True,
                       capture_output=True, text=True)
    say("\n".join("   " + line for line in p.stdout.splitlines()))
    say("== checking it (moat -t):")
    subprocess.run([str(moat_bin), "-t"], cwd=demo, check=True)


def wait_ready(moat: subprocess.Popen, timeout: float = 20.0) -> None:
    """Until moat answers on its control socket, which it opens once its
    listeners are bound. A probe connection to a listener would show up
    as a tls_fail event of the demo's own making."""
    deadline = time.monotonic() + timeout
    while True:
        if moat.poll() is not None:
            raise SystemExit(f"moat exited with status {moat.returncode}")
        r = subprocess.run([str(moatctl_binary()), "-s",
                            str(demo / "moat.sock"), "status"],
                           capture_output=True)
        if r.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise SystemExit("moat did not come up: "
                             + r.stderr.decode(errors="replace"))
        time.sleep(0.1)


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, interrupted)
    prepare()
    # The built-in configuration expects its backends here (moat -p).
    stack = MailStack(Path("/tmp") / f"moat-demo-{os.getpid()}",
                      smtp_port=10025, pop3_port=10110,
                      postfix_proxy="haproxy", dovecot_proxy=True)
    moat = None
    try:
        say("== starting private Postfix (127.0.0.1:10025) and Dovecot "
            "(127.0.0.1:10110), both expecting PROXY v2 from moat")
        stack.start()
        moat = subprocess.Popen([str(moat_bin)], cwd=demo)
        wait_ready(moat)
        ctx = ssl.create_default_context(cafile=str(demo / "cert.pem"))
        msg = EmailMessage()
        msg["From"] = "demo@example.test"
        msg["To"] = stack.address("alice")
        msg["Subject"] = "through moat"
        msg.set_content("This message went through moat's implicit TLS "
                        "listener to a private Postfix.\n")
        say("== sending one message with SMTP over TLS to "
            "127.0.0.1:10465 (smtps)")
        with smtplib.SMTP_SSL("127.0.0.1", 10465, context=ctx,
                              timeout=20) as s:
            s.send_message(msg)
        stack.wait_for_messages("alice", 1, timeout=20)
        say("== reading it back with POP3 over TLS from "
            "127.0.0.1:10995 (pop3s)")
        p = poplib.POP3_SSL("127.0.0.1", 10995, context=ctx, timeout=20)
        p.user("alice")
        p.pass_("alicepw")
        _, lines, _ = p.retr(len(p.list()[1]))
        p.quit()
        body = b"\n".join(lines)
        ok = b"went through moat" in body
        say("== the message arrived" + ("" if ok else " DAMAGED"))
        say("== moat keeps running in the foreground (events on stdout);"
            " Ctrl-C stops it and the private mail servers")
        while moat.poll() is None:
            time.sleep(0.5)
        return moat.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        # The private servers and their directory go, however it ended.
        if moat is not None and moat.poll() is None:
            moat.send_signal(signal.SIGTERM)
            moat.wait(30)
        stack.cleanup()

if __name__ == "__main__":
    sys.exit(main())
