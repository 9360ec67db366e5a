/* geo.h - country and continent of an address, from a MaxMind database. */
#ifndef MOAT_GEO_H
#define MOAT_GEO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A read-only GeoIP2/GeoLite2 Country or City database (libmaxminddb),
 * held as a private copy in memory: the file is read only when it is
 * opened, so replacing or rewriting it on disk never touches a running
 * lookup (a reload reads the new one). Lookups do not change the handle,
 * so several threads may share it. A reload opens a new handle and, only if
 * that worked, swaps it in and closes the old one once nothing uses it;
 * a failed open leaves the old database serving.
 *
 * Lookups use the record's `country.iso_code` (where the client is), not
 * `registered_country` (who holds the block): geofencing is about where
 * connections come from. A record without `country` (anycast ranges,
 * continent-only records) counts as found with an unknown country.
 * IPv4-mapped addresses are looked up as IPv4, so the database's IPv4
 * subtree is used even when it has no ::ffff:0:0/96 alias.
 */
struct geo;

/*
 * Opens path. Returns NULL on failure with *errmsg (malloc'd; the caller
 * frees it) naming the file and the reason: MMDB_strerror for a missing or
 * corrupt file, or the database type when it is not a Country or City
 * database. The daemon opens it as daemon.user, at start and at each
 * reload, so that a reload finds it as the start did.
 */
struct geo *geo_open(const char *path, char **errmsg);
void geo_close(struct geo *g);

/*
 * Looks addr up (16-byte form). Returns 1 when the database has a record
 * for it, with country and continent set to the ISO codes or to "" where
 * the record lacks them; 0 when it has none (both ""); -1 on a database
 * error (a corrupt record; both ""). Never allocates.
 */
int geo_lookup(const struct geo *g, const uint8_t addr[16], char country[3],
    char continent[3]);

/*
 * Lookups of g that returned -1 so far. geo_open() checks the metadata
 * and the search tree's size, not every record: a file damaged in its
 * data section opens, and then fails lookups, whose clients count as
 * unknown. This is how anyone learns of it.
 */
uint64_t geo_errors(const struct geo *g);

/* The database's metadata, for the log and `moatctl status`. */
const char *geo_database_type(const struct geo *g);
uint64_t geo_build_epoch(const struct geo *g);
const char *geo_path(const struct geo *g);
/*
 * 4 for an IPv4-only database, where geo_lookup() finds no IPv6 address
 * (it returns 0: unknown); 6 for one that holds both families.
 */
unsigned geo_ip_version(const struct geo *g);
/*
 * One line for an operator: the file, type, build date and age at now
 * (Unix seconds), and the address families, e.g. "/var/lib/GeoIP/x.mmdb:
 * GeoLite2-Country, built 2026-11-20 (12 days ago), IPv4 and IPv6". A
 * stale database places reassigned ranges in their old countries: the
 * age says how stale. Returns buf.
 */
char *geo_summary(const struct geo *g, int64_t now, char *buf, size_t len);

#endif
