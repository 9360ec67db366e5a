#!/bin/sh
# Runs inside the appliance's root (build.sh's customize hook), after moat
# was installed there with the files of this directory in /tmp/appliance.
set -eu
a=/tmp/appliance
doc=/usr/share/doc/moat

# moat's own user; /etc/moat holds its config, certificate and ruleset.
useradd --system --no-create-home --home-dir /nonexistent \
	--shell /usr/sbin/nologin moat
install -d -m 0750 -g moat /etc/moat
install -m 0644 "$a/moat.toml" /etc/moat/moat.toml
install -m 0644 "$doc/nftables/moat.nft" /etc/moat/moat.nft
install -D -m 0755 "$a/make-selfsigned" /usr/libexec/moat/make-selfsigned
install -m 0644 "$a/moat-selfsigned.service" /etc/systemd/system/

# The kernel drops banned addresses: Debian's ruleset starts with
# "flush ruleset"; moat's table comes after it.
printf '\ninclude "/etc/moat/moat.nft"\n' >> /etc/nftables.conf

# Postfix behind moat (contrib/postfix): the public services go, the
# private ones on loopback take PROXY headers.
sed -i -E 's/^(smtp|submission|smtps)([[:space:]]+inet[[:space:]])/#\1\2/' \
	/etc/postfix/master.cf
cat "$doc/postfix/master.cf.moat" >> /etc/postfix/master.cf
postconf -e inet_interfaces=loopback-only inet_protocols=all \
	'mynetworks=127.0.0.0/8 [::1]/128' \
	smtpd_sasl_type=dovecot smtpd_sasl_path=private/auth

# Dovecot behind moat (contrib/dovecot), POP3 only.
install -m 0644 "$doc/dovecot/moat.conf" /etc/dovecot/conf.d/90-moat.conf
install -m 0644 "$a/dovecot.conf" /etc/dovecot/conf.d/91-appliance.conf

systemctl enable nftables.service moat-selfsigned.service moat.service
rm -rf "$a"
