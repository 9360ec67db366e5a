#!/bin/sh
# Runs inside the appliance's root (build.sh's customize hook), once, after
# moat was installed there with the files of this directory in
# /tmp/appliance. Not meant to run twice: it adds a user and appends to
# nftables.conf and master.cf.
set -eu
a=/tmp/appliance
doc=/usr/share/doc/moat

# moat's own user; /etc/moat holds its config, certificate and ruleset
# (0755, as moat.service's ConfigurationDirectory= has it; the key itself
# is 0640, group moat).
useradd --system --no-create-home --home-dir /nonexistent \
	--shell /usr/sbin/nologin moat
install -d -m 0755 /etc/moat
install -m 0644 "$a/moat.toml" /etc/moat/moat.toml
install -m 0644 "$doc/nftables/moat.nft" /etc/moat/moat.nft
install -D -m 0755 "$a/make-selfsigned" /usr/libexec/moat/make-selfsigned
install -m 0644 "$a/moat-selfsigned.service" /etc/systemd/system/

# The kernel drops banned addresses: Debian's ruleset starts with
# "flush ruleset"; moat's table comes after it.
printf '\ninclude "/etc/moat/moat.nft"\n' >> /etc/nftables.conf

# Postfix behind moat (contrib/postfix): the public services go, the
# private ones on loopback take PROXY headers. Its name is the host's at
# run time, not the build machine's that the package wrote down. It needs
# no TLS of its own on loopback (moat hides the backend's STARTTLS).
sed -i -E 's/^(smtp|submission|smtps)([[:space:]]+inet[[:space:]])/#\1\2/' \
	/etc/postfix/master.cf
cat "$doc/postfix/master.cf.moat" >> /etc/postfix/master.cf
postconf -X myhostname smtpd_tls_cert_file smtpd_tls_key_file
postconf -e inet_interfaces=loopback-only inet_protocols=all \
	'mynetworks=127.0.0.0/8 [::1]/128' \
	'mydestination=$myhostname, localhost.$mydomain, localhost' \
	smtpd_tls_security_level=none \
	smtpd_sasl_type=dovecot smtpd_sasl_path=private/auth

# Dovecot behind moat (contrib/dovecot), POP3 only.
install -m 0644 "$doc/dovecot/moat.conf" /etc/dovecot/conf.d/90-moat.conf
install -m 0644 "$a/dovecot.conf" /etc/dovecot/conf.d/91-appliance.conf

# Keys every copy of the image would share: nothing uses them now, and
# Dovecot must not read its own at start any more (10-ssl.conf).
rm -f /etc/ssl/private/ssl-cert-snakeoil.key \
	/etc/ssl/certs/ssl-cert-snakeoil.pem \
	/etc/dovecot/private/dovecot.key /etc/dovecot/private/dovecot.pem
sed -i -E 's/^(ssl_(cert|key) = )/#\1/' /etc/dovecot/conf.d/10-ssl.conf

# The build machine's name and resolver stay behind; networkd takes DHCP
# on a container's host0 (and on what /etc/systemd/network names).
rm -f /etc/hostname
: >/etc/resolv.conf
systemctl enable systemd-networkd.service nftables.service \
	moat-selfsigned.service moat.service
# moat, Postfix and Dovecot bind wildcard and loopback addresses and need
# not wait for an address, which without DHCP would take two minutes.
systemctl disable systemd-networkd-wait-online.service
rm -rf "$a"
