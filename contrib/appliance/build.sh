#!/bin/sh
# contrib/appliance/build.sh - a Debian 12 root filesystem with moat in
# front of Postfix and Dovecot on loopback, as an appliance starts from.
#
# Usage: contrib/appliance/build.sh OUTPUT [MIRROR]
#   OUTPUT  what mmdebstrap makes: a tarball (OUTPUT.tar, .tar.gz, ...)
#           or a directory; see README.md here for booting or importing it.
#   MIRROR  a Debian mirror (default http://deb.debian.org/debian).
# Run as root on Debian 12 with moat's build dependencies (scripts/deps)
# and mmdebstrap. moat is built from this checkout (release, prefix /usr)
# and installed into the image; the rest comes from Debian.
set -eu

[ $# -ge 1 ] && [ $# -le 2 ] || {
	sed -n '4,10s/^# \{0,1\}//p' "$0" >&2
	exit 2
}
out=$1
mirror=${2:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
command -v mmdebstrap >/dev/null || {
	echo "build.sh: mmdebstrap is needed (apt-get install mmdebstrap)" >&2
	exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
meson setup "$work/build" "$src" --prefix=/usr --buildtype=release \
	>/dev/null
meson compile -C "$work/build" >/dev/null
meson install -C "$work/build" --destdir "$work/stage" >/dev/null

# The Debian packages that hold the libraries moat links against.
libs=$(ldd "$work/stage/usr/bin/moat" "$work/stage/usr/bin/moatctl" |
	awk '$3 ~ /^\// { print $3 }' | sort -u | while read -r lib; do
		dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")"
	done | cut -d: -f1 | sort -u | tr '\n' ,)

mmdebstrap --variant=minbase \
	--include="${libs}systemd-sysv,nftables,postfix,dovecot-pop3d,openssl,logrotate,ca-certificates" \
	--customize-hook="sync-in '$work/stage' /" \
	--customize-hook="mkdir -p \"\$1/tmp/appliance\"" \
	--customize-hook="copy-in '$here/setup.sh' '$here/moat.toml' '$here/dovecot.conf' '$here/moat-selfsigned.service' '$here/make-selfsigned' /tmp/appliance" \
	--customize-hook='chroot "$1" sh /tmp/appliance/setup.sh' \
	bookworm "$out" "deb $mirror bookworm main" \
	"deb $mirror bookworm-updates main" \
	"deb http://deb.debian.org/debian-security bookworm-security main"
echo "build.sh: $out is ready; see contrib/appliance/README.md"
