#!/bin/sh
# contrib/appliance/check.sh - tries an unpacked appliance root (what
# build.sh makes, untarred) without booting it: starts its nftables
# ruleset, Dovecot, Postfix and moat from the root in a private network,
# mount and PID namespace, then sends a mail through moat (submission on
# 587 with STARTTLS and AUTH), reads it back over POP3S (995), checks that
# 25, 465 and 110 answer through moat and that a ban reaches the kernel
# set, and that a client not on loopback cannot relay. Everything stops
# with the namespaces, and its test user (with a password written here)
# is removed again; the root keeps the first-boot certificate. Check a
# copy, not an appliance in service.
#
# Usage: contrib/appliance/check.sh ROOT     (as root, with python3)
set -eu

[ $# -eq 1 ] && [ -d "$1/etc/moat" ] || {
	sed -n '2,14s/^# \{0,1\}//p' "$0" >&2
	exit 2
}
root=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)

if [ -z "${MOAT_CHECK_INSIDE:-}" ]; then
	MOAT_CHECK_INSIDE=1 exec unshare --net --mount --pid --uts --fork \
	    --mount-proc sh "$0" "$root"
fi

in_root() { chroot "$root" "$@"; }

hostname mail.appliance.test
ip link set lo up
# A client address that is not loopback, so not in Postfix's mynetworks.
ip addr add 192.0.2.10/32 dev lo
mount --make-rprivate /
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"

# What systemd would do at boot: the first-boot certificate, moat's
# directories, the ruleset, then the services.
[ -e "$root/etc/moat/key.pem" ] || in_root /usr/libexec/moat/make-selfsigned
for d in /run/moat /var/lib/moat /var/log/moat; do
	in_root install -d -m 0750 -o moat -g moat "$d"
done
in_root nft -f /etc/nftables.conf
in_root sh -c 'id moatcheck >/dev/null 2>&1 ||
	{ useradd -m moatcheck && echo moatcheck:moat-check-pw | chpasswd; }'
trap 'in_root userdel -r moatcheck 2>/dev/null || true' EXIT
in_root install -d -m 0755 /run/dovecot
in_root dovecot
in_root postfix start
in_root /usr/bin/moat -t -c /etc/moat/moat.toml
in_root /usr/bin/moat -c /etc/moat/moat.toml >"$root/tmp/moat.log" 2>&1 &
i=0
until in_root moatctl status >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -lt 100 ] || { cat "$root/tmp/moat.log"; exit 1; }
	sleep 0.1
done

rc=0
python3 - "$root" <<'PY' || rc=1
import poplib, smtplib, ssl, subprocess, sys, time
root = sys.argv[1]
ctx = ssl.create_default_context(cafile=f"{root}/etc/moat/cert.pem")
ctx.check_hostname = False
subject = f"appliance check {time.time()}"
with smtplib.SMTP("127.0.0.1", 587, timeout=20) as s:
    s.starttls(context=ctx)
    s.login("moatcheck", "moat-check-pw")
    s.sendmail("moatcheck@localhost", ["moatcheck@localhost"],
               f"Subject: {subject}\r\n\r\nthrough moat\r\n")
print("587: submitted with STARTTLS and AUTH")
for _ in range(100):
    p = poplib.POP3_SSL("127.0.0.1", 995, context=ctx, timeout=20)
    p.user("moatcheck")
    p.pass_("moat-check-pw")
    n = len(p.list()[1])
    text = b"\n".join(p.retr(n)[1]).decode() if n else ""
    p.quit()
    if subject in text:
        break
    time.sleep(0.2)
else:
    sys.exit("995: the mail never arrived")
print("995: read back over POP3S")
with smtplib.SMTP("127.0.0.1", 25, timeout=20) as s:
    s.starttls(context=ctx)
    assert s.ehlo()[0] == 250
# From an address Postfix does not trust, through moat's PROXY header:
# mail for elsewhere is refused, not relayed.
with smtplib.SMTP("192.0.2.10", 25, timeout=20,
                  source_address=("192.0.2.10", 0)) as s:
    s.starttls(context=ctx)
    s.ehlo()
    s.mail("someone@example.org")
    code, _ = s.rcpt("victim@example.net")
    assert code in (454, 554), code
print("25: STARTTLS; no relay for 192.0.2.10")
with smtplib.SMTP_SSL("127.0.0.1", 465, context=ctx, timeout=20) as s:
    assert s.noop()[0] == 250
print("465: implicit TLS")
p = poplib.POP3("127.0.0.1", 110, timeout=20)
p.stls(context=ctx)
p.quit()
print("110: STLS")
subprocess.run(["chroot", root, "moatctl", "ban", "192.0.2.66", "1h"],
               check=True, capture_output=True)
for _ in range(50):
    out = subprocess.run(["chroot", root, "nft", "list", "set", "inet",
                          "moat", "blocked4"], capture_output=True,
                         text=True).stdout
    if "192.0.2.66" in out:
        break
    time.sleep(0.1)
else:
    sys.exit("the ban did not reach the kernel set")
print("ban: in the kernel set blocked4")
PY
[ $rc -eq 0 ] || { echo "--- moat's log"; cat "$root/tmp/moat.log"; }
in_root postfix stop || true
in_root doveadm stop 2>/dev/null || true
echo "check.sh: $([ $rc -eq 0 ] && echo passed || echo FAILED)"
exit $rc
