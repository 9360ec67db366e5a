"""scripts/demo's driver: private Postfix and Dovecot on loopback, moat on
its built-in configuration in front of them, one message through, and moat
left running in the foreground until Ctrl-C. Never touches a system mail
server: the backends live in demo/mail with their own ports and queues."""
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
from moatrun import wait_port  # noqa: E402

demo = top / "demo"
moat_bin = top / "build" / "proxy" / "moat"


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, interrupted)
    # The built-in configuration expects its backends here (moat -p).
    stack = MailStack(Path("/tmp") / f"moat-demo-{os.getpid()}",
                      smtp_port=10025, pop3_port=10110,
                      postfix_proxy="haproxy", dovecot_proxy=True)
    print("== starting private Postfix (127.0.0.1:10025) and Dovecot "
          "(127.0.0.1:10110), both expecting PROXY v2 from moat")
    stack.start()
    moat = subprocess.Popen([str(moat_bin)], cwd=demo)
    try:
        for port in (10465, 10995):
            wait_port("127.0.0.1", port, timeout=20)
        ctx = ssl.create_default_context(cafile=str(demo / "cert.pem"))
        msg = EmailMessage()
        msg["From"] = "demo@example.test"
        msg["To"] = stack.address("alice")
        msg["Subject"] = "through moat"
        msg.set_content("This message went through moat's implicit TLS "
                        "listener to a private Postfix.\n")
        print("== sending one message with SMTP over TLS to "
              "127.0.0.1:10465 (smtps)")
        with smtplib.SMTP_SSL("127.0.0.1", 10465, context=ctx,
                              timeout=20) as s:
            s.send_message(msg)
        stack.wait_for_messages("alice", 1, timeout=20)
        print("== reading it back with POP3 over TLS from "
              "127.0.0.1:10995 (pop3s)")
        p = poplib.POP3_SSL("127.0.0.1", 10995, context=ctx, timeout=20)
        p.user("alice")
        p.pass_("alicepw")
        _, lines, _ = p.retr(len(p.list()[1]))
        p.quit()
        body = b"\n".join(lines)
        ok = b"went through moat" in body
        print("== the message arrived" + ("" if ok else " DAMAGED"))
        print("== moat keeps running in the foreground (events on stdout);"
              " Ctrl-C stops it and the private mail servers")
        while moat.poll() is None:
            time.sleep(0.5)
        return moat.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        if moat.poll() is None:
            moat.send_signal(signal.SIGTERM)
            moat.wait(30)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
