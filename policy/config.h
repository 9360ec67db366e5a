/* config.h - moat's configuration: a TOML file in, validated settings out. */
#ifndef MOAT_CONFIG_H
#define MOAT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "log.h"

enum cfg_protocol {
	CFG_PROTO_SMTP = 0,
	CFG_PROTO_POP3,
};

enum cfg_tls_mode {
	CFG_TLS_NONE = 0,
	CFG_TLS_IMPLICIT,
	CFG_TLS_STARTTLS,
};

enum cfg_backend_proxy {
	CFG_BPROXY_NONE = 0,
	CFG_BPROXY_V1,
	CFG_BPROXY_V2,
	CFG_BPROXY_XCLIENT,
};

enum cfg_firewall {
	CFG_FW_NFTABLES = 0,
	CFG_FW_IPSET,
	CFG_FW_NONE,
};

enum cfg_geo_unknown {
	CFG_GEO_UNKNOWN_ALLOW = 0,
	CFG_GEO_UNKNOWN_DENY,
};

/* A sliding-window limit: at most limit events in any window_ms. */
struct cfg_window {
	uint32_t limit;
	uint64_t window_ms;
};

struct cfg_cidrs {
	struct cidr *v;
	size_t n;
};

struct cfg_strings {
	char **v;
	size_t n;
};

struct cfg_sni {
	struct cfg_strings names;	/* lower-case; "*.example.org" allowed */
	char *certificate;		/* absolute paths */
	char *key;
};

struct cfg_listener {
	char *name;
	struct addr_port *listen;
	size_t nlisten;
	enum cfg_protocol protocol;
	enum cfg_tls_mode tls;
	bool require_tls;
	struct addr_port backend;
	enum cfg_backend_proxy backend_proxy;
	bool accept_proxy;
	struct cfg_cidrs accept_proxy_from;
	uint64_t handshake_ms;
	uint64_t idle_ms;
	uint64_t connect_ms;
	uint32_t max_line;		/* longest command line accepted */
	int line;			/* where [[listener]] was written */
};

/*
 * Bounds of tls.ticket_rotation. A ticket key decrypts for two periods, so
 * the maximum keeps what a leaked key gives away to two days at most; the
 * minimum (short, for tests) only refuses the absurd.
 */
#define CFG_TICKET_ROTATION_MIN_MS 1000ULL
#define CFG_TICKET_ROTATION_MAX_MS (24ULL * 3600 * 1000)

struct config {
	char *path;			/* as given; "<embedded>" for the default */

	struct {
		char *user;		/* NULL: keep the starting user */
		uint32_t workers;	/* 0: one per core */
		char *control_socket;
		char *state_file;
		bool metrics_enabled;
		struct addr_port metrics;
		uint64_t drain_ms;	/* SIGTERM grace period */
		enum log_level log_level;	/* the most verbose shown */
		uint32_t max_sessions;	/* 0: no global cap */
		uint32_t reserved_sessions; /* of max_sessions, kept for
					     * addresses holding few */
	} daemon;

	struct {
		char *certificate;	/* NULL when no listener needs TLS */
		char *key;
		int min_version;	/* TLS1_2_VERSION or TLS1_3_VERSION */
		bool session_tickets;	/* TLS 1.3 resumption; off by default */
		uint64_t ticket_rotation_ms;	/* a new ticket key this often;
						 * a ticket lives two periods */
		struct cfg_sni *sni;
		size_t nsni;
	} tls;

	struct cfg_listener *listeners;
	size_t nlisteners;

	struct {
		struct cfg_cidrs allow;	/* inline entries and allow_files */
		struct cfg_cidrs deny;
		struct cfg_strings allow_files;
		struct cfg_strings deny_files;
		struct {
			char *database;	/* NULL: geofencing off */
			struct cfg_strings allow_countries;	/* upper case */
			struct cfg_strings deny_countries;
			enum cfg_geo_unknown unknown;
		} geo;
		struct {
			struct cfg_window connections;
			uint32_t concurrent_per_ip;
			struct cfg_window auth_failures;
			uint32_t aggregate_ipv4;	/* prefix counted as one */
			uint32_t aggregate_ipv6;
			uint32_t max_tracked;	/* addresses in the windows */
		} rate;
	} policy;

	struct {
		uint64_t duration_ms;
		double escalation;
		uint64_t max_duration_ms;
		uint64_t forget_after_ms;	/* 0: max_duration */
		uint32_t max_entries;
	} ban;

	struct {
		enum cfg_firewall backend;
		char *table;
		char *set4;
		char *set6;
		bool create;	/* create missing table/sets (default on) */
	} firewall;

	struct {
		char *file;		/* "-" for stdout, NULL for none */
		bool syslog;
	} events;

	/* Where each path checked at load was written (config_locate). */
	struct cfg_origin *origins;
	size_t norigins;
};

struct cfg_origin {
	const char *value;	/* the config's own string, compared by address */
	const char *key;	/* "tls.certificate", ... */
	int line, col;
};

/* How much a report line matters; moat logs each at its level. */
enum config_severity {
	CONFIG_INFO,
	CONFIG_WARNING,
	CONFIG_ERROR,
};

/*
 * Receives each diagnostic as one line "FILE:LINE:COL: message" (or
 * "FILE: message" where no position applies); for people, warnings are
 * also marked "warning: " after the position.
 */
typedef void config_report_fn(void *arg, enum config_severity sev,
    const char *line);

/*
 * Reads and validates path. Returns a config owned by the caller
 * (config_free), or NULL after reporting every error found. Relative paths
 * inside the file are taken relative to the file's directory.
 */
struct config *config_load(const char *path, config_report_fn *report,
    void *arg);
/* The same over bytes in memory; name appears in diagnostics and relative
 * paths resolve against basedir. */
struct config *config_load_buf(const char *name, const char *basedir,
    const char *buf, size_t len, config_report_fn *report, void *arg);
void config_free(struct config *cfg);

/*
 * For a problem found in a file the config names, once moat opens it (a
 * key that does not fit its certificate, a database libmaxminddb cannot
 * read): msg "FILE: text" (or "FILE: warning: text"), with FILE one of
 * cfg's own path strings, becomes "CONFIG:LINE:COL: [warning: ]KEY: FILE:
 * text", where cfg wrote it. Any other msg is copied as it is. Returns
 * out.
 */
const char *config_locate(const struct config *cfg, const char *file,
    const char *msg, char *out, size_t len);

/*
 * msg about value, one of cfg's own path strings, as "CONFIG:LINE:COL:
 * [warning: ]KEY: text" where cfg wrote it (msg "[warning: ]text"), or
 * "CONFIG: msg" for a value it did not write (a default, or the config
 * file itself). Returns out.
 */
const char *config_at(const struct config *cfg, const char *value,
    const char *msg, char *out, size_t len);

/* Prints a report line to stderr; a ready-made config_report_fn. */
void config_report_stderr(void *arg, enum config_severity sev,
    const char *line);

const char *cfg_protocol_str(enum cfg_protocol p);
const char *cfg_tls_mode_str(enum cfg_tls_mode t);
const char *cfg_backend_proxy_str(enum cfg_backend_proxy b);
const char *cfg_firewall_str(enum cfg_firewall f);

#endif
