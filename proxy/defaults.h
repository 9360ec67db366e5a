/* defaults.h - the configuration moat runs with when no -c is given. */
#ifndef MOAT_DEFAULTS_H
#define MOAT_DEFAULTS_H

/*
 * A complete TOML document: implicit-TLS SMTP and POP3 and STARTTLS
 * submission on loopback in front of a local Postfix and Dovecot, certificate files and state in the
 * current directory, events on stdout, no firewall writes. `moat -p`
 * prints it as a starting point.
 */
extern const char default_config[];

#endif
