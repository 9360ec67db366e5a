/* privdrop.c - running as daemon.user with only the capabilities needed. */
#include "privdrop.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "log.h"

const char *
privdrop_dirname(const char *path, char *buf, size_t len)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		snprintf(buf, len, ".");
	else if (slash == path)
		snprintf(buf, len, "/");
	else
		snprintf(buf, len, "%.*s", (int)(slash - path), path);
	return buf;
}

/* mkdir -p for dir; the directories it makes belong to uid:gid. */
static int
make_dir_for(const char *dir, uid_t uid, gid_t gid, char *err, size_t errlen)
{
	char buf[4096];
	char *p;
	size_t n = strlen(dir);

	if (n == 0 || n >= sizeof(buf)) {
		snprintf(err, errlen, "privileges: bad directory '%s'", dir);
		return -1;
	}
	memcpy(buf, dir, n + 1);
	for (p = buf + 1;; p++) {
		bool last = *p == '\0';

		if (*p != '/' && !last)
			continue;
		*p = '\0';
		if (mkdir(buf, 0750) == 0) {
			if (chown(buf, uid, gid) == -1) {
				snprintf(err, errlen, "privileges: chown %s: "
				    "%s", buf, strerror(errno));
				return -1;
			}
			log_info("created %s for the daemon user", buf);
		} else if (errno != EEXIST) {
			snprintf(err, errlen, "privileges: cannot create %s: "
			    "%s", buf, strerror(errno));
			return -1;
		}
		if (last)
			return 0;
		*p = '/';
	}
}

/* Permitted and effective: CAP_NET_ADMIN or nothing; inheritable none. */
static int
set_caps(bool net_admin)
{
	struct __user_cap_header_struct hdr;
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	memset(&hdr, 0, sizeof(hdr));
	memset(data, 0, sizeof(data));
	hdr.version = _LINUX_CAPABILITY_VERSION_3;
	hdr.pid = 0;
	if (net_admin) {
		data[CAP_TO_INDEX(CAP_NET_ADMIN)].permitted |=
		    CAP_TO_MASK(CAP_NET_ADMIN);
		data[CAP_TO_INDEX(CAP_NET_ADMIN)].effective |=
		    CAP_TO_MASK(CAP_NET_ADMIN);
	}
	return (int)syscall(SYS_capset, &hdr, data);
}

int
privdrop(const char *user, bool keep_net_admin, const char *workdir,
    const char *const *own_dirs, char *err, size_t errlen)
{
	struct passwd *pw;
	struct stat st;
	char dir[4096];
	uid_t uid;
	gid_t gid;
	size_t i;

	errno = 0;
	if ((pw = getpwnam(user)) == NULL) {
		snprintf(err, errlen, "privileges: no user '%s'%s%s", user,
		    errno ? ": " : "", errno ? strerror(errno) : "");
		return -1;
	}
	uid = pw->pw_uid;
	gid = pw->pw_gid;
	if (uid == 0) {
		snprintf(err, errlen, "privileges: daemon.user '%s' is root; "
		    "name an unprivileged user or omit the key", user);
		return -1;
	}
	if (geteuid() != 0 && geteuid() != uid) {
		snprintf(err, errlen, "privileges: cannot become '%s': moat "
		    "runs as uid %u, not root", user, (unsigned)geteuid());
		return -1;
	}
	for (i = 0; own_dirs != NULL && own_dirs[i] != NULL; i++)
		if (own_dirs[i][0] != '\0' && strcmp(own_dirs[i], "-") != 0 &&
		    make_dir_for(privdrop_dirname(own_dirs[i], dir,
		    sizeof(dir)), uid, gid, err, errlen) == -1)
			return -1;
	if (workdir != NULL && make_dir_for(workdir, uid, gid, err,
	    errlen) == -1)
		return -1;
	if (geteuid() == 0) {
		/* Keep the permitted set across setuid, then trim it. */
		if (keep_net_admin && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) == -1)
			goto fail;
		if (initgroups(pw->pw_name, gid) == -1 ||
		    setresgid(gid, gid, gid) == -1 ||
		    setresuid(uid, uid, uid) == -1)
			goto fail;
		if (set_caps(keep_net_admin) == -1)
			goto fail;
		if (keep_net_admin && prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) == -1)
			goto fail;
		/* Paranoia: there must be no way back. */
		if (setuid(0) == 0 || seteuid(0) == 0) {
			snprintf(err, errlen, "privileges: could regain root "
			    "after dropping it");
			return -1;
		}
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		goto fail;
	if (workdir != NULL) {
		if (chdir(workdir) == -1 || stat(".", &st) == -1)
			goto fail;
		if (st.st_uid != uid)
			log_warnx("privileges: working directory %s belongs "
			    "to uid %u, not to %s", workdir,
			    (unsigned)st.st_uid, user);
	}
	log_info("running as %s (uid %u, gid %u)%s", user, (unsigned)uid,
	    (unsigned)gid, keep_net_admin ? " with CAP_NET_ADMIN only" :
	    " with no capabilities");
	return 0;
fail:
	snprintf(err, errlen, "privileges: cannot switch to %s: %s", user,
	    strerror(errno));
	return -1;
}
