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
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
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

/* A file whose directory is missing, and the directory above it too. */
static void
say_no_parent(char *err, size_t errlen, const char *file, const char *dir,
    const char *parent)
{
	snprintf(err, errlen, "%s: neither %s nor %s exists (moat makes only "
	    "a file's own directory; check the path)", file, dir, parent);
}

/*
 * Makes dir, a file's own directory, when missing; it belongs to uid:gid.
 * Only that last level: a typo in the path must not build a tree of
 * directories (as root, from /) that nobody meant.
 */
static int
make_dir_for(const char *dir, const char *file, uid_t uid, gid_t gid,
    char *err, size_t errlen)
{
	char parent[4096];

	if (mkdir(dir, 0750) == 0) {
		if (chown(dir, uid, gid) == -1) {
			snprintf(err, errlen, "privileges: chown %s: %s", dir,
			    strerror(errno));
			return -1;
		}
		if (uid != geteuid())
			log_info("created %s for the daemon user", dir);
		else
			log_info("created %s", dir);
		return 0;
	}
	if (errno == EEXIST)
		return 0;
	if (errno == ENOENT)
		say_no_parent(err, errlen, file, dir,
		    privdrop_dirname(dir, parent, sizeof(parent)));
	else
		snprintf(err, errlen, "cannot create %s: %s", dir,
		    strerror(errno));
	return -1;
}

/*
 * True if dir is one that systemd made for this service (StateDirectory=,
 * LogsDirectory=, RuntimeDirectory=, CacheDirectory=): systemd gives them
 * to the unit's User=, which is root for moat, as moat binds its ports
 * first and switches user itself.
 */
static bool
systemd_dir(const char *dir)
{
	static const char *const vars[] = { "STATE_DIRECTORY",
	    "LOGS_DIRECTORY", "RUNTIME_DIRECTORY", "CACHE_DIRECTORY" };
	const char *v, *p, *colon;
	size_t i, n = strlen(dir);

	for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		if ((v = getenv(vars[i])) == NULL)
			continue;
		for (p = v; *p != '\0'; p = *colon ? colon + 1 : colon) {
			colon = strchrnul(p, ':');
			if ((size_t)(colon - p) == n &&
			    memcmp(p, dir, n) == 0)
				return true;
		}
	}
	return false;
}

/* Gives path to uid:gid if it exists and belongs to someone else. */
static int
give(const char *path, uid_t uid, gid_t gid, char *err, size_t errlen)
{
	struct stat st;

	if (lstat(path, &st) == -1 || S_ISLNK(st.st_mode) ||
	    (st.st_uid == uid && st.st_gid == gid))
		return 0;
	if (chown(path, uid, gid) == -1) {
		snprintf(err, errlen, "privileges: chown %s: %s", path,
		    strerror(errno));
		return -1;
	}
	log_info("gave %s to the daemon user", path);
	return 0;
}

/* Whether user name (primary group gid) is a member of group want. */
static bool
in_group(const char *name, gid_t gid, gid_t want)
{
	gid_t small[64], *groups = small;
	int i, n = (int)(sizeof(small) / sizeof(small[0]));
	bool found = false;

	if (getgrouplist(name, gid, groups, &n) == -1) {
		/* More groups than fit: n now says how many. */
		if (n <= 0 || (groups = calloc((size_t)n,
		    sizeof(*groups))) == NULL)
			return false;
		if (getgrouplist(name, gid, groups, &n) == -1)
			n = 0;
	}
	for (i = 0; i < n && !found; i++)
		found = groups[i] == want;
	if (groups != small)
		free(groups);
	return found;
}

/*
 * Whether uid (gid and its groups) may write in and enter dir, judged by
 * owner and mode bits as the kernel will after the switch: a refusal
 * found now comes before anything is bound or created.
 */
static bool
may_write(const struct stat *st, uid_t uid, gid_t gid, const char *name)
{
	if (st->st_uid == uid)
		return (st->st_mode & 0300) == 0300;
	if (st->st_gid == gid || in_group(name, gid, st->st_gid))
		return (st->st_mode & 0030) == 0030;
	return (st->st_mode & 0003) == 0003;
}

static void
say_cannot_write(const char *user, const char *dir, const struct stat *st,
    const char *file, char *err, size_t errlen)
{
	snprintf(err, errlen, "privileges: %s cannot write in %s (owner uid "
	    "%u, mode %04o), where %s goes: give the directory to that user "
	    "(chown %s %s) or choose another", user, dir, (unsigned)st->st_uid,
	    (unsigned)(st->st_mode & 07777), file, user, dir);
}

const char *
privdrop_rofs_hint(int e)
{
	/* Only the unit's own mounts are read-only this way, and a moat -t
	 * from a shell sees the host's: the start is where it shows. */
	if (e != EROFS || getenv("INVOCATION_ID") == NULL)
		return "";
	return " (under systemd: moat.service's ProtectSystem=strict leaves "
	    "moat only /run/moat, /var/lib/moat and /var/log/moat to write; "
	    "move the file there or add ReadWritePaths= to the unit)";
}

const char *
privdrop_read_only(const char *path, char *buf, size_t len)
{
	struct statvfs vfs;
	char up[4096];

	privdrop_dirname(path, buf, len);
	while (statvfs(buf, &vfs) == -1) {
		if (errno != ENOENT || strcmp(buf, "/") == 0 ||
		    strcmp(buf, ".") == 0)
			return NULL;
		snprintf(up, sizeof(up), "%s", buf);
		privdrop_dirname(up, buf, len);
	}
	return (vfs.f_flag & ST_RDONLY) != 0 ? buf : NULL;
}

/*
 * Root's access() cannot tell a read-only mount, whose permission bits
 * are fine: the events file would fail to open after the ports were
 * bound, and the state file's saves would fail for good. A device or
 * FIFO there (/dev/null under systemd's PrivateDevices=) opens for
 * writing all the same.
 */
static bool
read_only(const char *file, char *err, size_t errlen)
{
	struct stat st;
	char dir[4096];

	if ((stat(file, &st) == 0 && !S_ISREG(st.st_mode)) ||
	    privdrop_read_only(file, dir, sizeof(dir)) == NULL)
		return false;
	snprintf(err, errlen, "%s: %s is on a read-only file system%s", file,
	    dir, privdrop_rofs_hint(EROFS));
	return true;
}

/* dir, or else its parent (make_dir_for() makes one level), must be a
 * directory. */
static int
can_make(const char *dir, const char *file, char *err, size_t errlen)
{
	char parent[4096];
	struct stat st;

	if (stat(dir, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		snprintf(err, errlen, "%s: %s is not a directory", file, dir);
		return -1;
	}
	if (errno != ENOENT) {
		snprintf(err, errlen, "%s: %s: %s", file, dir, strerror(errno));
		return -1;
	}
	privdrop_dirname(dir, parent, sizeof(parent));
	if (stat(parent, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		snprintf(err, errlen, "%s: %s is not a directory", file,
		    parent);
	} else if (errno == ENOENT)
		say_no_parent(err, errlen, file, dir, parent);
	else
		snprintf(err, errlen, "%s: %s: %s", file, parent,
		    strerror(errno));
	return -1;
}

int
privdrop_dirs(const char *user, const char *const *own, bool dry_run,
    size_t *which, char *err, size_t errlen)
{
	struct stat st;
	struct passwd *pw = NULL;
	char dir[4096];
	uid_t uid = geteuid();
	gid_t gid = getegid();
	size_t i;
	bool sd;

	if (user != NULL && (pw = getpwnam(user)) != NULL) {
		uid = pw->pw_uid;
		gid = pw->pw_gid;
	}
	/*
	 * The files in systemd's directories first: once a directory is
	 * user's, root cannot reach a file inside it without
	 * CAP_DAC_READ_SEARCH, which the systemd unit does not grant.
	 */
	for (i = 0; own != NULL && own[i] != NULL; i++) {
		if (own[i][0] == '\0' || strcmp(own[i], "-") == 0 ||
		    pw == NULL || geteuid() != 0 || dry_run)
			continue;
		privdrop_dirname(own[i], dir, sizeof(dir));
		if (systemd_dir(dir) && give(own[i], uid, gid, err,
		    errlen) == -1) {
			*which = i;
			return -1;
		}
	}
	for (i = 0; own != NULL && own[i] != NULL; i++) {
		*which = i;
		if (own[i][0] == '\0' || strcmp(own[i], "-") == 0)
			continue;
		if (stat(own[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			snprintf(err, errlen, "%s is a directory; name a file "
			    "(in it, for instance)", own[i]);
			return -1;
		}
		privdrop_dirname(own[i], dir, sizeof(dir));
		if (dry_run ? can_make(dir, own[i], err, errlen) == -1 :
		    make_dir_for(dir, own[i], uid, gid, err, errlen) == -1)
			return -1;
		if (read_only(own[i], err, errlen))
			return -1;
		if (pw == NULL || geteuid() != 0)
			continue;
		sd = systemd_dir(dir);
		if (sd && !dry_run && give(dir, uid, gid, err, errlen) == -1)
			return -1;
		if (!(sd && dry_run) && stat(dir, &st) == 0 &&
		    !may_write(&st, uid, gid, user)) {
			say_cannot_write(user, dir, &st, own[i], err, errlen);
			return -1;
		}
	}
	return 0;
}

/*
 * After the switch: every own file can be written where it lives. The
 * kernel's answer, which knows ACLs and the like, backs up the owner and
 * mode reading of privdrop_dirs(); and only now can a file in a writable
 * directory be found unreadable.
 */
static int
check_own(const char *user, const char *const *own, char *err,
    size_t errlen)
{
	struct stat st;
	char dir[4096];
	size_t i;

	for (i = 0; own != NULL && own[i] != NULL; i++) {
		if (own[i][0] == '\0' || strcmp(own[i], "-") == 0)
			continue;
		privdrop_dirname(own[i], dir, sizeof(dir));
		if (access(dir, W_OK | X_OK) == -1) {
			if (stat(dir, &st) == 0)
				say_cannot_write(user, dir, &st, own[i], err,
				    errlen);
			else
				snprintf(err, errlen, "privileges: %s cannot "
				    "reach %s, where %s goes: %s", user, dir,
				    own[i], strerror(errno));
			return -1;
		}
		if (access(own[i], R_OK | W_OK) == -1 && errno != ENOENT) {
			snprintf(err, errlen, "privileges: %s cannot read and "
			    "write %s: %s; give the file to that user (chown "
			    "%s %s)", user, own[i], strerror(errno), user,
			    own[i]);
			return -1;
		}
	}
	return 0;
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

/*
 * Started as the user already (systemd User= with AmbientCapabilities=):
 * no switch trimmed the capabilities, so they are trimmed here to
 * CAP_NET_ADMIN at most, and only when wanted and given. The ambient set
 * goes too, so that nothing moat might run inherits any. *held says
 * whether CAP_NET_ADMIN stayed.
 */
static int
trim_caps(bool want_net_admin, bool *held)
{
	struct __user_cap_header_struct hdr;
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	memset(&hdr, 0, sizeof(hdr));
	memset(data, 0, sizeof(data));
	hdr.version = _LINUX_CAPABILITY_VERSION_3;
	if (syscall(SYS_capget, &hdr, data) == -1)
		return -1;
	*held = want_net_admin && (data[CAP_TO_INDEX(CAP_NET_ADMIN)].permitted &
	    CAP_TO_MASK(CAP_NET_ADMIN)) != 0;
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1 &&
	    errno != EINVAL)
		return -1;
	return set_caps(*held);
}

int
privdrop(const char *user, bool keep_net_admin, const char *workdir,
    const char *const *own, char *err, size_t errlen)
{
	struct passwd *pw;
	struct stat st;
	uid_t uid;
	gid_t gid;
	bool held = keep_net_admin;

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
	} else if (trim_caps(keep_net_admin, &held) == -1)
		goto fail;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		goto fail;
	if (check_own(user, own, err, errlen) == -1)
		return -1;
	if (workdir != NULL) {
		if (chdir(workdir) == -1 || stat(".", &st) == -1) {
			snprintf(err, errlen, "privileges: %s cannot enter "
			    "%s: %s", user, workdir, strerror(errno));
			return -1;
		}
		if (st.st_uid != uid)
			log_warnx("privileges: working directory %s belongs "
			    "to uid %u, not to %s", workdir,
			    (unsigned)st.st_uid, user);
	}
	log_info("running as %s (uid %u, gid %u)%s", user, (unsigned)uid,
	    (unsigned)gid, held ? " with CAP_NET_ADMIN only" :
	    " with no capabilities");
	if (keep_net_admin && !held)
		log_warnx("privileges: the firewall needs CAP_NET_ADMIN, which "
		    "moat was started without (systemd: AmbientCapabilities="
		    "CAP_NET_ADMIN); bans are enforced by moat itself only");
	return 0;
fail:
	snprintf(err, errlen, "privileges: cannot switch to %s: %s", user,
	    strerror(errno));
	return -1;
}

/* access(2) for each of files; with W_OK a file that is not there yet
 * (moat makes it) and one in a systemd directory (privdrop_dirs() gives
 * it to user) pass. */
static void
try_access(const char *const *files, size_t n, int mode, int *errs)
{
	char dir[4096];
	size_t i;

	for (i = 0; i < n; i++) {
		errs[i] = 0;
		if (files[i] == NULL || access(files[i], mode) == 0)
			continue;
		errs[i] = errno;
		if ((mode & W_OK) && (errs[i] == ENOENT ||
		    systemd_dir(privdrop_dirname(files[i], dir, sizeof(dir)))))
			errs[i] = 0;
	}
}

static int
as_user(const char *user, const char *const *files, size_t n, int mode,
    int *errs)
{
	struct passwd *pw;
	size_t got = 0;
	ssize_t r;
	pid_t pid;
	int fd[2], status;

	if ((pw = getpwnam(user)) == NULL)
		return -1;
	if (geteuid() == pw->pw_uid) {
		try_access(files, n, mode, errs);
		return 0;
	}
	if (geteuid() != 0 || pipe(fd) == -1)
		return -1;
	if ((pid = fork()) == -1) {
		close(fd[0]);
		close(fd[1]);
		return -1;
	}
	if (pid == 0) {
		/* access() asks with the real ids, which these set too. */
		close(fd[0]);
		if (initgroups(pw->pw_name, pw->pw_gid) == -1 ||
		    setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) == -1 ||
		    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) == -1)
			_exit(1);
		try_access(files, n, mode, errs);
		_exit(write(fd[1], errs, n * sizeof(*errs)) ==
		    (ssize_t)(n * sizeof(*errs)) ? 0 : 1);
	}
	close(fd[1]);
	while (got < n * sizeof(*errs) && ((r = read(fd[0], (char *)errs +
	    got, n * sizeof(*errs) - got)) > 0 || (r == -1 && errno == EINTR)))
		got += r > 0 ? (size_t)r : 0;
	close(fd[0]);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	return got == n * sizeof(*errs) && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 0 ? 0 : -1;
}

int
privdrop_readable(const char *user, const char *const *files, size_t n,
    int *errs)
{
	return as_user(user, files, n, R_OK, errs);
}

int
privdrop_writable(const char *user, const char *const *files, size_t n,
    int *errs)
{
	return as_user(user, files, n, R_OK | W_OK, errs);
}
