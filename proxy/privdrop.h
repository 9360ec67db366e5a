/* privdrop.h - running as daemon.user with only the capabilities needed. */
#ifndef MOAT_PRIVDROP_H
#define MOAT_PRIVDROP_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Makes sure the directory of each file in own (NULL-terminated: state
 * file, events file; "" and "-" skipped) exists, before anything binds or
 * opens there: a missing one is created with mode 0750 for user (for the
 * current user when user is NULL). When moat runs as root under systemd,
 * a directory systemd made for the unit ($STATE_DIRECTORY,
 * $LOGS_DIRECTORY, ...) and the file in it are given to user, as systemd
 * gives them to root. Other existing directories are left alone, and
 * one that user could not write, or on a read-only mount, is an error. With dry_run (moat -t)
 * nothing is made or changed: only whether the start would get through
 * this. Returns 0, or -1 with a message in err and, in *which, the index
 * in own of the file it is about.
 */
int privdrop_dirs(const char *user, const char *const *own, bool dry_run,
    size_t *which, char *err, size_t errlen);

/*
 * Switches the process from root to user: supplementary groups, gid and
 * uid (all three of each), keeping CAP_NET_ADMIN in the permitted and
 * effective sets when keep_net_admin (the firewall writer needs it to
 * reach netlink, now and after a reload) and nothing else; then sets
 * PR_SET_NO_NEW_PRIVS, checks that user can write each file of own (the
 * caller has run privdrop_dirs() on own, before anything was bound
 * there) and changes to workdir. Every thread
 * started afterwards inherits the result, so the caller drops before it
 * starts threads.
 *
 * Already running as user: only no_new_privs, the checks and the chdir.
 * Running as another non-root user: -1. Returns 0, or -1 with a message
 * in err naming the file or directory and the fix; a failure half way is
 * fatal to the start, never ignored.
 */
int privdrop(const char *user, bool keep_net_admin, const char *workdir,
    const char *const *own, char *err, size_t errlen);

/*
 * Whether user can read each of files (n of them; NULL entries skipped),
 * as the kernel answers user: running as root, a child process takes
 * user's uid and groups and tries them; running as user, the process
 * itself. errs[i] gets 0 or the errno of a file user cannot read.
 * Returns 0, or -1 when it cannot tell (no such user, another non-root
 * user, no child process).
 */
int privdrop_readable(const char *user, const char *const *files, size_t n,
    int *errs);

/*
 * The same for files user must read and write once privdrop() is done
 * (its own files): one that is not there yet, or that lies in a systemd
 * directory privdrop_dirs() gives to user, passes.
 */
int privdrop_writable(const char *user, const char *const *files, size_t n,
    int *errs);

/* What to do about errno e where moat makes a file, as " (...)" after
 * strerror(e): for EROFS under systemd, the unit's ProtectSystem=strict;
 * "" otherwise. */
const char *privdrop_rofs_hint(int e);

/* The directory path would be made in, or the nearest one above it
 * that exists, into buf when it is on a read-only mount; else NULL. */
const char *privdrop_read_only(const char *path, char *buf, size_t len);

/* The directory part of path into buf ("." for a bare name). */
const char *privdrop_dirname(const char *path, char *buf, size_t len);

#endif
