/* fw_ipset.c - ipset set writer through libipset's session API. */
#include "fw.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <libipset/data.h>
#include <libipset/nf_inet_addr.h>
#include <libipset/session.h>
#include <libipset/types.h>

/*
 * One libipset session, used by the writer thread only (libipset keeps
 * its set-type cache in globals). Every element change is one command
 * with the "exist" option, which makes an add of an existing element set
 * its new timeout and a delete of a missing one succeed; so extending a
 * ban and re-asserting it after a restart are plain adds. ipset answers
 * errors without naming an element inside aggregated messages, so each
 * element is its own netlink request: still thousands per second, and the
 * event loop waits for none of them.
 */

/* ipset keeps timeouts in seconds, up to this many. */
#define IPSET_TIMEOUT_MAX	2147483u

struct ips {
	struct ipset_session *s;
	const char *set[2];
	bool create;
	uint32_t maxelem;		/* for the sets moat creates */
	int set_state[2];		/* 0 unchecked, 1 good, -1 bad */
	struct fw_status set_status[2];
	struct fw_elem **st;
	size_t nst, capst;
	char out[2048];			/* captured "ipset list" output */
	size_t outlen;
};

static pthread_once_t types_once = PTHREAD_ONCE_INIT;

static void
load_types(void)
{
	ipset_load_types();
}

/* Keeps what libipset prints (a set's header, for set_ensure). */
static int
capture_print(struct ipset_session *session, void *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
capture_print(struct ipset_session *session, void *p, const char *fmt, ...)
{
	struct ips *x = p;
	va_list ap;
	int n;

	(void)session;
	if (x->outlen + 1 >= sizeof(x->out))
		return 0;
	va_start(ap, fmt);
	n = vsnprintf(x->out + x->outlen, sizeof(x->out) - x->outlen, fmt, ap);
	va_end(ap);
	if (n > 0)
		x->outlen += (size_t)n < sizeof(x->out) - x->outlen ?
		    (size_t)n : sizeof(x->out) - x->outlen - 1;
	return n;
}

/*
 * Reads set fam's header line ("ipset list -t"): whether it has timeouts
 * (1, 0, or -1 when it cannot be read) and its netmask in *netmask (0 if
 * none is shown). A hash:ip with a netmask stores networks: a ban of one
 * address would drop its whole /N, and its unban lift the others' bans.
 */
static int
set_header(struct ips *x, int fam, int *netmask)
{
	const char *h, *end, *t, *m;
	int ret;

	*netmask = 0;
	x->outlen = 0;
	x->out[0] = '\0';
	ipset_envopt_set(x->s, IPSET_ENV_LIST_HEADER);
	ipset_session_output(x->s, IPSET_LIST_PLAIN);
	ipset_session_data_set(x->s, IPSET_SETNAME, x->set[fam]);
	ret = ipset_cmd(x->s, IPSET_CMD_LIST, 0);
	ipset_envopt_unset(x->s, IPSET_ENV_LIST_HEADER);
	ipset_session_output(x->s, IPSET_LIST_NONE);
	if (ret < 0) {
		ipset_session_report_reset(x->s);
		return -1;
	}
	if ((h = strstr(x->out, "Header:")) == NULL)
		return -1;
	if ((end = strchr(h, '\n')) == NULL)
		end = h + strlen(h);
	if ((m = strstr(h, " netmask ")) != NULL && m < end)
		*netmask = atoi(m + 9);
	t = strstr(h, " timeout ");
	return t != NULL && t < end;
}

static void
status_set(struct fw_status *st, enum fw_problem p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
status_set(struct fw_status *st, enum fw_problem p, const char *fmt, ...)
{
	va_list ap;

	st->problem = p;
	va_start(ap, fmt);
	vsnprintf(st->message, sizeof(st->message), fmt, ap);
	va_end(ap);
}

/*
 * libipset reports in words only; these are the kernel's strerror texts
 * and libipset's own messages for the cases an operator can fix.
 */
static int
classify(const char *msg)
{
	if (msg == NULL)
		return EIO;
	if (strstr(msg, "not permitted") != NULL ||
	    strstr(msg, "ermission denied") != NULL)
		return EPERM;
	if (strstr(msg, "does not exist") != NULL)
		return ENOENT;
	if (strstr(msg, "not supported") != NULL ||
	    strstr(msg, "Cannot open session") != NULL)
		return EOPNOTSUPP;
	/* An element the set cannot take: a set of the other family, or
	 * of another type, put in its place while moat runs. */
	if (strstr(msg, "protocol") != NULL)
		return EPROTO;
	if (strstr(msg, "is full") != NULL)
		return ENOSPC;
	return EIO;
}

/* The last report of the session, without its trailing newline. */
static const char *
report_msg(struct ips *x, char *buf, size_t len)
{
	const char *m = ipset_session_report_msg(x->s);
	size_t l;

	snprintf(buf, len, "%s", m != NULL && *m != '\0' ? m : "failed");
	l = strlen(buf);
	while (l > 0 && (buf[l - 1] == '\n' || buf[l - 1] == '.'))
		buf[--l] = '\0';
	ipset_session_report_reset(x->s);
	return buf;
}

static void
status_from(struct ips *x, struct fw_status *st, int fam, const char *why)
{
	st->fam = FW_FAM_V4 + fam;
	switch (classify(why)) {
	case EPERM:
		status_set(st, FW_PERM, "ipset: cannot change set %s (%s): "
		    "run moat as root or give it CAP_NET_ADMIN (systemd: "
		    "AmbientCapabilities=CAP_NET_ADMIN); banned addresses are "
		    "still rejected by moat itself", x->set[fam], why);
		break;
	case EOPNOTSUPP:
		status_set(st, FW_NOSUPPORT, "ipset: the kernel refused (%s): "
		    "load the ip_set and ip_set_hash_ip modules (modprobe "
		    "ip_set_hash_ip) or use [firewall] backend = \"nftables\"; "
		    "banned addresses are still rejected by moat itself", why);
		break;
	case ENOSPC:
		status_set(st, FW_OTHER, "ipset: set %s is full (%s): "
		    "create it with maxelem %u ([ban] max_entries) or more, "
		    "or destroy it and let moat create it; banned addresses "
		    "are still rejected by moat itself", x->set[fam], why,
		    x->maxelem);
		break;
	case ENOENT:
		status_set(st, FW_MISSING, "ipset: set %s does not exist: "
		    "create it (ipset create %s hash:ip family %s timeout 0, "
		    "see contrib/ipset/README.md) or set [firewall] create = "
		    "true; banned addresses are still rejected by moat itself",
		    x->set[fam], x->set[fam], fam == 0 ? "inet" : "inet6");
		break;
	default:
		status_set(st, FW_OTHER, "ipset: set %s: %s", x->set[fam], why);
		break;
	}
}

static int
set_create(struct ips *x, int fam, char *why, size_t whylen)
{
	uint8_t family = fam == 0 ? NFPROTO_IPV4 : NFPROTO_IPV6;
	uint32_t timeout = 0;	/* timeouts on; elements carry their own */
	uint32_t maxelem = x->maxelem;

	ipset_session_data_set(x->s, IPSET_SETNAME, x->set[fam]);
	ipset_session_data_set(x->s, IPSET_OPT_TYPENAME, "hash:ip");
	ipset_session_data_set(x->s, IPSET_OPT_FAMILY, &family);
	if (ipset_type_get(x->s, IPSET_CMD_CREATE) == NULL) {
		report_msg(x, why, whylen);
		ipset_data_reset(ipset_session_data(x->s));
		return -1;
	}
	ipset_session_data_set(x->s, IPSET_OPT_FAMILY, &family);
	ipset_session_data_set(x->s, IPSET_OPT_TIMEOUT, &timeout);
	/* libipset's default of 65536 would fill long before the ban
	 * table does in a flood. */
	ipset_session_data_set(x->s, IPSET_OPT_MAXELEM, &maxelem);
	if (ipset_cmd(x->s, IPSET_CMD_CREATE, 0) < 0) {
		report_msg(x, why, whylen);
		return -1;
	}
	return 0;
}

/*
 * Checks that set fam is hash:ip of the right family with timeouts,
 * creating it when missing and allowed, and caches its type so that adds
 * need one request each. 0 (st->refill when the set was created or was
 * bad before), or -1 with st and the set marked bad.
 */
static int
set_ensure(void *ctx, int fam, struct fw_status *st)
{
	struct ips *x = ctx;
	struct ipset_data *d = ipset_session_data(x->s);
	const struct ipset_type *type;
	uint8_t want = fam == 0 ? NFPROTO_IPV4 : NFPROTO_IPV6, family;
	const char *tn;
	char why[256], mask[24] = "";
	bool timeout, created = false, was_bad = x->set_state[fam] == -1;
	int netmask = 0, full = fam == 0 ? 32 : 128;

	x->set_state[fam] = -1;
	(void)ipset_cache_del(x->set[fam]);
again:
	ipset_session_data_set(x->s, IPSET_SETNAME, x->set[fam]);
	if (ipset_cmd(x->s, IPSET_CMD_HEADER, 0) < 0) {
		report_msg(x, why, sizeof(why));
		ipset_data_reset(d);
		if (classify(why) == ENOENT && x->create && !created) {
			if (set_create(x, fam, why, sizeof(why)) == 0) {
				created = true;
				goto again;
			}
		}
		status_from(x, &x->set_status[fam], fam, why);
		*st = x->set_status[fam];
		return -1;
	}
	tn = ipset_data_get(d, IPSET_OPT_TYPENAME);
	family = ipset_data_family(d);
	timeout = true;
	if (tn != NULL && strcmp(tn, "hash:ip") == 0 && family == want) {
		ipset_data_reset(d);
		timeout = set_header(x, fam, &netmask) != 0;
		tn = "hash:ip";
	}
	if (netmask != 0 && netmask != full)
		snprintf(mask, sizeof(mask), " netmask %d", netmask);
	if (tn == NULL || strcmp(tn, "hash:ip") != 0 || family != want ||
	    !timeout || mask[0] != '\0') {
		status_set(&x->set_status[fam], FW_TYPE, "ipset: set %s is "
		    "%s family %s%s%s; moat needs hash:ip family %s with "
		    "timeout, one address an element: destroy it (ipset "
		    "destroy %s) and let moat create it, or name another set "
		    "in [firewall] %s; banned addresses are still rejected by "
		    "moat itself", x->set[fam], tn ? tn : "?",
		    family == NFPROTO_IPV4 ? "inet" :
		    family == NFPROTO_IPV6 ? "inet6" : "?", mask,
		    timeout ? "" : " without timeout",
		    fam == 0 ? "inet" : "inet6", x->set[fam],
		    fam == 0 ? "set4" : "set6");
		x->set_status[fam].fam = FW_FAM_V4 + fam;
		ipset_data_reset(d);
		*st = x->set_status[fam];
		return -1;
	}
	ipset_data_reset(d);
	/* Resolve the type once; adds then use libipset's cache. */
	ipset_session_data_set(x->s, IPSET_SETNAME, x->set[fam]);
	type = ipset_type_get(x->s, IPSET_CMD_ADD);
	ipset_data_reset(d);
	if (type == NULL) {
		report_msg(x, why, sizeof(why));
		status_from(x, &x->set_status[fam], fam, why);
		*st = x->set_status[fam];
		return -1;
	}
	(void)ipset_cache_add(x->set[fam], type, want);
	x->set_state[fam] = 1;
	st->refill = created || was_bad;
	if (created)
		status_set(st, FW_OK, "ipset: created set %s (hash:ip family "
		    "%s timeout 0); the drop rule is yours to add (see "
		    "contrib/ipset/README.md)", x->set[fam],
		    fam == 0 ? "inet" : "inet6");
	return 0;
}

static void ips_close(void *ctx);

static void *
ips_open(const struct config *cfg, struct fw_status *st)
{
	struct ips *x;

	pthread_once(&types_once, load_types);
	if ((x = calloc(1, sizeof(*x))) == NULL) {
		status_set(st, FW_OTHER, "ipset: out of memory");
		return NULL;
	}
	x->set[0] = cfg->firewall.set4;
	x->set[1] = cfg->firewall.set6;
	x->create = cfg->firewall.create;
	x->maxelem = cfg->ban.max_entries > 65536 ? cfg->ban.max_entries :
	    65536;
	if ((x->s = ipset_session_init(capture_print, x)) == NULL) {
		status_set(st, FW_OTHER, "ipset: cannot start a session");
		free(x);
		return NULL;
	}
	ipset_envopt_set(x->s, IPSET_ENV_EXIST);
	if (fw_ensure_sets(x, set_ensure, st) == -1) {
		ips_close(x);
		return NULL;
	}
	return x;
}

static int
ips_stage(void *ctx, struct fw_elem *e)
{
	struct ips *x = ctx;
	struct fw_elem **st;

	if (x->nst == x->capst) {
		size_t cap = x->capst ? x->capst * 2 : 64;

		if ((st = realloc(x->st, cap * sizeof(*st))) == NULL) {
			e->err = ENOMEM;
			return -1;
		}
		x->st = st;
		x->capst = cap;
	}
	e->err = 0;
	x->st[x->nst++] = e;
	return 0;
}

/* One add or delete; 0 or an errno value with why. */
static int
ips_one(struct ips *x, const struct fw_elem *e, char *why, size_t whylen)
{
	int fam = fw_addr_is_v4(e->addr) ? 0 : 1;
	uint8_t family = fam == 0 ? NFPROTO_IPV4 : NFPROTO_IPV6;
	enum ipset_cmd cmd = e->op == FW_OP_ADD ? IPSET_CMD_ADD :
	    IPSET_CMD_DEL;
	union nf_inet_addr ip;
	uint64_t secs;
	uint32_t timeout;

	memset(&ip, 0, sizeof(ip));
	if (fam == 0)
		memcpy(&ip.in, e->addr + 12, 4);
	else
		memcpy(&ip.in6, e->addr, 16);
	ipset_session_data_set(x->s, IPSET_SETNAME, x->set[fam]);
	ipset_session_data_set(x->s, IPSET_OPT_FAMILY, &family);
	if (ipset_type_get(x->s, cmd) == NULL)
		goto fail;
	ipset_session_data_set(x->s, IPSET_OPT_IP, &ip);
	if (e->op == FW_OP_ADD) {
		secs = (e->timeout_ms + 999) / 1000;
		timeout = secs > IPSET_TIMEOUT_MAX ? IPSET_TIMEOUT_MAX :
		    secs == 0 ? 1 : (uint32_t)secs;
		ipset_session_data_set(x->s, IPSET_OPT_TIMEOUT, &timeout);
	}
	if (ipset_cmd(x->s, cmd, 0) < 0)
		goto fail;
	return 0;
fail:
	ipset_data_reset(ipset_session_data(x->s));
	report_msg(x, why, whylen);
	return classify(why);
}

static int
ips_commit(void *ctx, struct fw_status *st)
{
	struct ips *x = ctx;
	struct fw_elem *e;
	char why[256];
	size_t i;
	int fam, err, ret = 0, bad[2] = { 0, 0 };
	bool refill = false;

	for (i = 0; i < x->nst; i++) {
		e = x->st[i];
		fam = fw_addr_is_v4(e->addr) ? 0 : 1;
		/* Its set failed in this commit: so would this element. */
		if (bad[fam] != 0) {
			e->err = bad[fam];
			continue;
		}
		if (x->set_state[fam] != 1) {
			struct fw_status fst = { 0 };

			if (set_ensure(x, fam, &fst) == -1) {
				bad[fam] = x->set_status[fam].problem ==
				    FW_MISSING ? ENOENT : EINVAL;
				e->err = bad[fam];
				st[FW_FAM_V4 + fam] = fst;
				ret = -1;
				continue;
			}
			refill = refill || fst.refill;
			if (fst.message[0] != '\0' &&
			    st[FW_FAM_V4 + fam].problem == FW_OK)
				st[FW_FAM_V4 + fam] = fst;	/* created */
		}
		err = ips_one(x, e, why, sizeof(why));
		if (err == ENOENT) {
			/* The set vanished under us: check (re-create). */
			struct fw_status fst = { 0 };

			if (set_ensure(x, fam, &fst) == 0) {
				refill = true;	/* the bans before are gone */
				if (fst.message[0] != '\0' &&
				    st[FW_FAM_V4 + fam].problem == FW_OK)
					st[FW_FAM_V4 + fam] = fst;
				err = ips_one(x, e, why, sizeof(why));
			} else {
				st[FW_FAM_V4 + fam] = fst;
				ret = -1;
				e->err = bad[fam] = ENOENT;
				continue;
			}
		}
		if (err == EPROTO) {
			/* Say what the set is now, and fail its family only. */
			struct fw_status fst = { 0 };

			if (set_ensure(x, fam, &fst) == -1) {
				st[FW_FAM_V4 + fam] = fst;
				ret = -1;
				e->err = bad[fam] = EINVAL;
				continue;
			}
		}
		if (err != 0) {
			e->err = err;
			ret = -1;
			if (err == EPERM || err == EOPNOTSUPP) {
				/* Every other element would fail alike: a
				 * problem of neither set alone. */
				status_from(x, st, fam, why);
				st->fam = FW_FAM_NONE;
				for (i++; i < x->nst; i++)
					x->st[i]->err = err;
				break;
			}
			status_from(x, &st[FW_FAM_V4 + fam], fam, why);
		}
	}
	x->nst = 0;
	st[FW_FAM_NONE].refill = refill;
	return ret;
}

static void
ips_close(void *ctx)
{
	struct ips *x = ctx;

	if (x == NULL)
		return;
	if (x->s != NULL)
		ipset_session_fini(x->s);
	free(x->st);
	free(x);
}

const struct fw_backend fw_backend_ipset = {
	.name = "ipset",
	.open = ips_open,
	.add = ips_stage,
	.del = ips_stage,
	.list = NULL,
	.commit = ips_commit,
	.close = ips_close,
};
