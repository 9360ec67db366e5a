#!/bin/sh
# contrib/appliance/build.sh - a Debian 12 root filesystem with moat in
# front of Postfix and Dovecot on loopback, as an appliance starts from.
#
# Usage: contrib/appliance/build.sh OUTPUT [MIRROR [SECURITY]]
#   OUTPUT    what mmdebstrap makes: a tarball (OUTPUT.tar, .tar.gz, ...)
#             or a directory; see README.md here for trying or booting it.
#   MIRROR    a Debian mirror (default http://deb.debian.org/debian);
#   SECURITY  its security archive (http://deb.debian.org/debian-security).
# Run as root on Debian 12 with moat's build dependencies (scripts/deps)
# and mmdebstrap. moat is built from this checkout (release, prefix /usr)
# and installed into the image; the rest comes from Debian.
set -eu

[ $# -ge 1 ] && [ $# -le 3 ] || {
	sed -n '4,12s/^# \{0,1\}//p' "$0" >&2
	exit 2
}
out=$1
mirror=${2:-http://deb.debian.org/debian}
security=${3:-http://deb.debian.org/debian-security}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
command -v mmdebstrap >/dev/null || {
	echo "build.sh: mmdebstrap is needed (apt-get install mmdebstrap)" >&2
	exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
meson setup "$work/build" "$src" --prefix=/usr --buildtype=release \
	>"$work/setup.log" || { cat "$work/setup.log" >&2; exit 1; }
meson compile -C "$work/build" >"$work/build.log" ||
	{ cat "$work/build.log" >&2; exit 1; }
meson install -C "$work/build" --destdir "$work/stage" >/dev/null

# The Debian packages that hold the libraries moat links against; one
# that no package holds (a library in /usr/local) would be missing in the
# image, so the build stops.
ldd "$work/stage/usr/bin/moat" "$work/stage/usr/bin/moatctl" |
	awk '$3 ~ /^\// { print $3 }' | sort -u >"$work/libs"
: >"$work/pkgs"
while read -r lib; do
	pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" \
	    2>/dev/null) || {
		echo "build.sh: no Debian package holds $lib" >&2
		exit 1
	}
	echo "${pkg%%:*}" >>"$work/pkgs"
done <"$work/libs"
libs=$(sort -u "$work/pkgs" | tr '\n' ,)

# Hooks see these in their environment: no path is pasted into a hook's
# text, so any checkout path works.
export MOAT_STAGE="$work/stage" MOAT_APPLIANCE="$here"
mmdebstrap --variant=minbase \
	--include="${libs}systemd-sysv,nftables,postfix,dovecot-pop3d,openssl,logrotate,ca-certificates,iproute2" \
	--customize-hook='cp -a "$MOAT_STAGE"/. "$1"/' \
	--customize-hook='mkdir -p "$1/tmp/appliance" && cd "$MOAT_APPLIANCE" && cp setup.sh moat.toml dovecot.conf moat-selfsigned.service make-selfsigned "$1/tmp/appliance/"' \
	--customize-hook='chroot "$1" sh /tmp/appliance/setup.sh' \
	bookworm "$out" "deb $mirror bookworm main" \
	"deb $mirror bookworm-updates main" \
	"deb $security bookworm-security main"
echo "build.sh: $out is ready; see contrib/appliance/README.md"
