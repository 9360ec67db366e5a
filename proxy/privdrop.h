/* privdrop.h - running as daemon.user with only the capabilities needed. */
#ifndef MOAT_PRIVDROP_H
#define MOAT_PRIVDROP_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Switches the process from root to user: supplementary groups, gid and
 * uid (all three of each), keeping CAP_NET_ADMIN in the permitted and
 * effective sets when keep_net_admin (the firewall writer needs it to
 * reach netlink, now and after a reload) and nothing else; then sets
 * PR_SET_NO_NEW_PRIVS and changes to workdir, which must belong to user
 * (it is created for user when missing). Every thread started afterwards
 * inherits the result, so the caller drops before it starts threads.
 *
 * Each path in own_dirs (NULL-terminated; NULL entries skipped) names a
 * file whose directory user must be able to write (state file, events
 * file): a missing directory is created for user with mode 0750, an
 * existing one is left alone.
 *
 * Already running as user: only no_new_privs and the chdir. Running as
 * another non-root user: -1. Returns 0, or -1 with a message in err; a
 * failure half way is fatal to the start, never ignored.
 */
int privdrop(const char *user, bool keep_net_admin, const char *workdir,
    const char *const *own_dirs, char *err, size_t errlen);

/* The directory part of path into buf ("." for a bare name). */
const char *privdrop_dirname(const char *path, char *buf, size_t len);

#endif
