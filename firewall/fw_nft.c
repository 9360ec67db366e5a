/* fw_nft.c - nftables set writer: element batches over netlink. */
#include "fw.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/common.h>

/*
 * Each element change is its own NEWSETELEM or DELSETELEM message inside
 * one NFNL batch (a kernel transaction), so that an error names the
 * element that caused it: the kernel acknowledges only failing messages
 * (no NLM_F_ACK) and aborts the whole transaction if any fails. A GETGEN
 * request with NLM_F_ACK after the batch marks the end of the answers.
 * After a failure the batch is sent again without the elements that
 * failed for good: a DELSETELEM of an element the kernel has already
 * expired (ENOENT) is dropped and its add kept, an element into a set
 * that vanished re-creates the set (if allowed) first.
 *
 * An add that must set a new timeout on an existing element (a longer
 * ban, a restart) is a DELSETELEM and a NEWSETELEM in the same
 * transaction: the kernel does not update the timeout of an element that
 * exists, and the pair is atomic, so the address is never unblocked.
 */

/* nft's data type ids for the set keys (nftables' datatype.h). */
#define NFT_TYPE_IPADDR		7
#define NFT_TYPE_IP6ADDR	8

#define MSG_MAX		256	/* bytes of one element message, generous */
#define ROUNDS		4

struct staged {
	struct fw_elem *e;
	bool done;
	bool skip_del;		/* replace: the element was not there */
};

struct nft {
	struct mnl_socket *nl;
	uint32_t portid;
	uint32_t seq;
	const char *table, *set[2];	/* [0] IPv4, [1] IPv6; borrowed */
	bool create;
	int set_state[2];		/* 0 unchecked, 1 good, -1 bad */
	struct fw_status set_status[2];	/* why a set is bad */
	char *buf;			/* batch being built */
	size_t buflen;
	char *rbuf;			/* answers */
	size_t rbuflen;
	struct staged *st;
	size_t nst, capst;
};

static int fam_of(const struct fw_elem *e)
{
	return fw_addr_is_v4(e->addr) ? 0 : 1;
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

/* The fix for a whole-request error, by errno. */
static void
status_errno(struct nft *n, struct fw_status *st, int err, const char *what)
{
	switch (err) {
	case EPERM:
	case EACCES:
		status_set(st, FW_PERM, "nftables: cannot %s in table inet %s "
		    "(%s): run moat as root or give it CAP_NET_ADMIN "
		    "(systemd: AmbientCapabilities=CAP_NET_ADMIN); banned "
		    "addresses are still rejected by moat itself", what,
		    n->table, strerror(err));
		break;
	case EOPNOTSUPP:
	case EPROTONOSUPPORT:
	case EAFNOSUPPORT:
		status_set(st, FW_NOSUPPORT, "nftables: the kernel refused "
		    "to %s (%s): load the nf_tables module (modprobe "
		    "nf_tables) or use [firewall] backend = \"ipset\"; banned "
		    "addresses are still rejected by moat itself", what,
		    strerror(err));
		break;
	case ENFILE:
		/* What the kernel says when a set reached its size. */
		status_set(st, FW_OTHER, "nftables: cannot %s in table inet "
		    "%s: the set is full (its size limit): raise or drop size "
		    "in its definition; banned addresses are still rejected "
		    "by moat itself", what, n->table);
		break;
	default:
		status_set(st, FW_OTHER, "nftables: cannot %s in table inet "
		    "%s: %s", what, n->table, strerror(err));
		break;
	}
}

/* ---- talking to the kernel --------------------------------------------- */

typedef void answer_fn(void *arg, const struct nlmsghdr *nlh);
typedef void error_fn(void *arg, uint32_t seq, int err);

/*
 * Sends len bytes of buf, then reads until the acknowledgement or DONE of
 * message end_seq. Data messages go to data, errors of other messages to
 * fail. Returns 0, or an errno value for end_seq's own error, a send or
 * receive failure, or no answer within two seconds (ETIMEDOUT).
 */
static int
nft_talk(struct nft *n, const void *buf, size_t len, uint32_t end_seq,
    answer_fn *data, error_fn *fail, void *arg)
{
	const struct nlmsghdr *nlh;
	const struct nlmsgerr *ne;
	ssize_t r;
	int len_left, err;

	if (mnl_socket_sendto(n->nl, buf, len) < 0)
		return errno;
	for (;;) {
		r = mnl_socket_recvfrom(n->nl, n->rbuf, n->rbuflen);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? ETIMEDOUT : errno;
		}
		len_left = (int)r;
		for (nlh = (const struct nlmsghdr *)(const void *)n->rbuf;
		    mnl_nlmsg_ok(nlh, len_left);
		    nlh = mnl_nlmsg_next(nlh, &len_left)) {
			if (nlh->nlmsg_pid != n->portid && nlh->nlmsg_pid != 0)
				continue;
			if (nlh->nlmsg_type == NLMSG_ERROR) {
				ne = mnl_nlmsg_get_payload(nlh);
				err = -ne->error;
				if (nlh->nlmsg_seq == end_seq)
					return err;
				if (err != 0 && fail != NULL)
					fail(arg, nlh->nlmsg_seq, err);
				continue;
			}
			if (nlh->nlmsg_type == NLMSG_DONE) {
				if (nlh->nlmsg_seq == end_seq)
					return 0;
				continue;
			}
			if (nlh->nlmsg_type < NLMSG_MIN_TYPE)
				continue;
			if (data != NULL)
				data(arg, nlh);
		}
	}
}

/* Appends a GETGEN with NLM_F_ACK at off: its answer ends a batch. */
static size_t
put_getgen(struct nft *n, size_t off, uint32_t seq)
{
	struct nlmsghdr *nlh;

	nlh = nftnl_nlmsg_build_hdr(n->buf + off, NFT_MSG_GETGEN, AF_UNSPEC,
	    NLM_F_ACK, seq);
	return off + nlh->nlmsg_len;
}

/*
 * Sends the batch of len bytes in n->buf, then a GETGEN on its own: the
 * kernel has queued every error of the batch for us before it answers
 * that. Errors of batch messages go to fail. Returns 0 or an errno value
 * for the exchange itself.
 */
static int
nft_batch(struct nft *n, size_t len, error_fn *fail, void *arg)
{
	uint32_t gen;

	if (mnl_socket_sendto(n->nl, n->buf, len) < 0)
		return errno;
	gen = ++n->seq;
	return nft_talk(n, n->buf, put_getgen(n, 0, gen), gen, NULL, fail,
	    arg);
}

/* ---- sets: check, create ------------------------------------------------ */

struct set_info {
	bool found;
	uint32_t key_type, key_len, flags;
};

static void
set_info_cb(void *arg, const struct nlmsghdr *nlh)
{
	struct set_info *si = arg;
	struct nftnl_set *s;

	if ((s = nftnl_set_alloc()) == NULL)
		return;
	if (nftnl_set_nlmsg_parse(nlh, s) == 0) {
		si->found = true;
		si->key_type = nftnl_set_get_u32(s, NFTNL_SET_KEY_TYPE);
		si->key_len = nftnl_set_get_u32(s, NFTNL_SET_KEY_LEN);
		si->flags = nftnl_set_get_u32(s, NFTNL_SET_FLAGS);
	}
	nftnl_set_free(s);
}

static struct nftnl_set *
set_new(struct nft *n, int fam)
{
	struct nftnl_set *s;

	if ((s = nftnl_set_alloc()) == NULL)
		return NULL;
	nftnl_set_set_str(s, NFTNL_SET_TABLE, n->table);
	nftnl_set_set_str(s, NFTNL_SET_NAME, n->set[fam]);
	nftnl_set_set_u32(s, NFTNL_SET_FAMILY, NFPROTO_INET);
	return s;
}

static void
first_error(void *arg, uint32_t seq, int err)
{
	int *first = arg;

	(void)seq;
	if (*first == 0)
		*first = err;
}

/* Creates table inet <table> and the set (create flags: no error when
 * they exist). Returns 0 or an errno value. */
static int
set_create(struct nft *n, int fam)
{
	struct nftnl_table *t;
	struct nftnl_set *s;
	struct nlmsghdr *nlh;
	uint32_t begin = ++n->seq;
	size_t off = 0;
	int err, first = 0;

	if ((t = nftnl_table_alloc()) == NULL || (s = set_new(n, fam)) == NULL) {
		nftnl_table_free(t);
		return ENOMEM;
	}
	nftnl_table_set_str(t, NFTNL_TABLE_NAME, n->table);
	nftnl_table_set_u32(t, NFTNL_TABLE_FAMILY, NFPROTO_INET);
	nftnl_set_set_u32(s, NFTNL_SET_KEY_TYPE,
	    fam == 0 ? NFT_TYPE_IPADDR : NFT_TYPE_IP6ADDR);
	nftnl_set_set_u32(s, NFTNL_SET_KEY_LEN, fam == 0 ? 4 : 16);
	nftnl_set_set_u32(s, NFTNL_SET_FLAGS, NFT_SET_TIMEOUT);
	nftnl_set_set_u32(s, NFTNL_SET_ID, 1);

	nlh = nftnl_batch_begin(n->buf + off, begin);
	off += nlh->nlmsg_len;
	nlh = nftnl_nlmsg_build_hdr(n->buf + off, NFT_MSG_NEWTABLE,
	    NFPROTO_INET, NLM_F_CREATE, ++n->seq);
	nftnl_table_nlmsg_build_payload(nlh, t);
	off += nlh->nlmsg_len;
	nlh = nftnl_nlmsg_build_hdr(n->buf + off, NFT_MSG_NEWSET,
	    NFPROTO_INET, NLM_F_CREATE, ++n->seq);
	nftnl_set_nlmsg_build_payload(nlh, s);
	off += nlh->nlmsg_len;
	nlh = nftnl_batch_end(n->buf + off, ++n->seq);
	off += nlh->nlmsg_len;
	nftnl_table_free(t);
	nftnl_set_free(s);
	err = nft_batch(n, off, first_error, &first);
	return err != 0 ? err : first;
}

/* GETSET: 0 and *si, or an errno value (ENOENT: no table or set). */
static int
set_get(struct nft *n, int fam, struct set_info *si)
{
	struct nftnl_set *s;
	struct nlmsghdr *nlh;
	uint32_t seq = ++n->seq;
	int err;

	memset(si, 0, sizeof(*si));
	if ((s = set_new(n, fam)) == NULL)
		return ENOMEM;
	nlh = nftnl_nlmsg_build_hdr(n->buf, NFT_MSG_GETSET, NFPROTO_INET,
	    NLM_F_ACK, seq);
	nftnl_set_nlmsg_build_payload(nlh, s);
	nftnl_set_free(s);
	err = nft_talk(n, n->buf, nlh->nlmsg_len, seq, set_info_cb, NULL, si);
	if (err == 0 && !si->found)
		err = ENOENT;
	return err;
}

/*
 * Makes sure set fam exists with the right type, creating table and set
 * when allowed. Returns 0 (st->refill when the set was created or was bad
 * before), or -1 with st (and the set marked bad).
 */
static int
set_ensure(void *ctx, int fam, struct fw_status *st)
{
	struct nft *n = ctx;
	const uint32_t want_type = fam == 0 ? NFT_TYPE_IPADDR :
	    NFT_TYPE_IP6ADDR, want_len = fam == 0 ? 4 : 16;
	const uint32_t bad_flags = NFT_SET_INTERVAL | NFT_SET_MAP |
	    NFT_SET_OBJECT | NFT_SET_CONCAT;
	struct fw_status *ss = &n->set_status[fam];
	struct set_info si;
	char what[160];
	int err, was = n->set_state[fam];

	n->set_state[fam] = -1;
	ss->problem = FW_OK;
	ss->message[0] = '\0';
	err = set_get(n, fam, &si);
	if (err == ENOENT && n->create) {
		if ((err = set_create(n, fam)) == 0)
			err = set_get(n, fam, &si);
		if (err == 0) {
			status_set(st, FW_OK, "nftables: created set inet %s "
			    "%s (type %s; flags timeout); the drop rule is "
			    "yours to load (contrib/nftables/moat.nft)",
			    n->table, n->set[fam],
			    fam == 0 ? "ipv4_addr" : "ipv6_addr");
			was = -1;	/* new and empty */
		}
	}
	if (err == ENOENT) {
		status_set(ss, FW_MISSING, "nftables: set inet %s %s does not "
		    "exist: load contrib/nftables/moat.nft (nft -f) or set "
		    "[firewall] create = true; banned addresses are still "
		    "rejected by moat itself", n->table, n->set[fam]);
	} else if (err != 0) {
		snprintf(what, sizeof(what), "read set %s", n->set[fam]);
		status_errno(n, ss, err, what);
	} else if (si.key_type != want_type || si.key_len != want_len ||
	    !(si.flags & NFT_SET_TIMEOUT) || (si.flags & bad_flags)) {
		status_set(ss, FW_TYPE, "nftables: set inet %s %s has the "
		    "wrong type (key type %u, length %u, flags 0x%x); moat "
		    "needs 'type %s; flags timeout;': delete it (nft delete "
		    "set inet %s %s) and load contrib/nftables/moat.nft, or "
		    "name another set in [firewall] %s; banned addresses are "
		    "still rejected by moat itself", n->table, n->set[fam],
		    si.key_type, si.key_len, si.flags,
		    fam == 0 ? "ipv4_addr" : "ipv6_addr", n->table,
		    n->set[fam], fam == 0 ? "set4" : "set6");
	} else {
		n->set_state[fam] = 1;
		st->refill = was == -1;
		return 0;
	}
	ss->fam = FW_FAM_V4 + fam;
	*st = *ss;
	return -1;
}

/* ---- the vtable ---------------------------------------------------------- */

static void nft_close(void *ctx);

static void *
nft_open(const struct config *cfg, struct fw_status *st)
{
	struct nft *n;
	struct timeval tv = { 2, 0 };
	int one = 1, size = 4 << 20, fd;

	if ((n = calloc(1, sizeof(*n))) == NULL) {
		status_set(st, FW_OTHER, "nftables: out of memory");
		return NULL;
	}
	n->table = cfg->firewall.table;
	n->set[0] = cfg->firewall.set4;
	n->set[1] = cfg->firewall.set6;
	n->create = cfg->firewall.create;
	n->seq = (uint32_t)time(NULL);
	n->buflen = (size_t)(2 * FW_BATCH_MAX + 8) * MSG_MAX;
	n->rbuflen = 64 * 1024;
	if ((n->buf = calloc(1, n->buflen)) == NULL ||
	    (n->rbuf = malloc(n->rbuflen)) == NULL) {
		nft_close(n);
		status_set(st, FW_OTHER, "nftables: out of memory");
		return NULL;
	}
	if ((n->nl = mnl_socket_open(NETLINK_NETFILTER)) == NULL ||
	    mnl_socket_bind(n->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		status_errno(n, st, errno, "open a netlink socket");
		nft_close(n);
		return NULL;
	}
	n->portid = mnl_socket_get_portid(n->nl);
	fd = mnl_socket_get_fd(n->nl);
	/* Errors carry only the header back; big batches need room. */
	(void)mnl_socket_setsockopt(n->nl, NETLINK_CAP_ACK, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size,
	    sizeof(size)) == -1)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size,
	    sizeof(size)) == -1)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

	/* A failed open is retried later by the queue. */
	if (fw_ensure_sets(n, set_ensure, st) == -1) {
		nft_close(n);
		return NULL;
	}
	return n;
}

static int
nft_stage(void *ctx, struct fw_elem *e)
{
	struct nft *n = ctx;
	struct staged *s;

	if (n->nst == n->capst) {
		size_t cap = n->capst ? n->capst * 2 : 64;

		if ((s = realloc(n->st, cap * sizeof(*s))) == NULL) {
			e->err = ENOMEM;
			return -1;
		}
		n->st = s;
		n->capst = cap;
	}
	e->err = 0;
	n->st[n->nst].e = e;
	n->st[n->nst].done = false;
	n->st[n->nst].skip_del = false;
	n->nst++;
	return 0;
}

/* Builds one element message at off; returns the new offset. */
static size_t
put_elem(struct nft *n, size_t off, const struct fw_elem *e, bool del,
    uint32_t seq)
{
	struct nftnl_set *s;
	struct nftnl_set_elem *el;
	struct nlmsghdr *nlh;
	int fam = fam_of(e);

	if ((s = set_new(n, fam)) == NULL || (el = nftnl_set_elem_alloc()) ==
	    NULL) {
		nftnl_set_free(s);
		return off;
	}
	if (fam == 0)
		nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY, e->addr + 12, 4);
	else
		nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY, e->addr, 16);
	if (!del)
		nftnl_set_elem_set_u64(el, NFTNL_SET_ELEM_TIMEOUT,
		    e->timeout_ms > 0 ? e->timeout_ms : 1);
	nftnl_set_elem_add(s, el);
	nlh = nftnl_nlmsg_build_hdr(n->buf + off,
	    del ? NFT_MSG_DELSETELEM : NFT_MSG_NEWSETELEM, NFPROTO_INET,
	    del ? 0 : NLM_F_CREATE, seq);
	nftnl_set_elems_nlmsg_build_payload(nlh, s);
	nftnl_set_free(s);
	return off + nlh->nlmsg_len;
}

struct round {
	struct nft *n;
	uint32_t base;		/* element i: del base+2i, new base+2i+1 */
	uint32_t begin, end;
	int whole;		/* error of the batch as a whole */
	bool any;
	bool missing[2];	/* a set vanished */
	int other[2];		/* another error in this family */
};

static void
round_fail(void *arg, uint32_t seq, int err)
{
	struct round *r = arg;
	struct staged *s;
	size_t i;
	bool del;

	r->any = true;
	if (seq < r->base || seq >= r->end) {
		r->whole = err;
		return;
	}
	i = (seq - r->base) / 2;
	del = ((seq - r->base) & 1) == 0;
	if (i >= r->n->nst)
		return;
	s = &r->n->st[i];
	if (del && err == ENOENT) {
		/* Not there (expired, or the set is gone): nothing to do. */
		if (s->e->op == FW_OP_DEL) {
			s->done = true;
			s->e->err = 0;
		} else
			s->skip_del = true;
		return;
	}
	if (!del && err == ENOENT) {
		r->missing[fam_of(s->e)] = true;
		return;
	}
	s->done = true;
	s->e->err = err;
	r->other[fam_of(s->e)] = err;
}

static int
nft_commit(void *ctx, struct fw_status *st)
{
	struct nft *n = ctx;
	struct round r;
	struct staged *s;
	struct nlmsghdr *nlh;
	size_t i, off;
	int round, fam, err, ret = 0;
	bool sent, refill = false;

	/* Sets found bad earlier are checked again: the operator may have
	 * fixed them. Elements of a bad set fail with its reason. */
	for (fam = 0; fam < 2; fam++) {
		bool want = false;

		for (i = 0; i < n->nst && !want; i++)
			want = fam_of(n->st[i].e) == fam;
		if (want && n->set_state[fam] != 1) {
			struct fw_status fst = { 0 };

			if (set_ensure(n, fam, &fst) == 0 && fst.refill)
				refill = true;
		}
	}
	for (i = 0; i < n->nst; i++) {
		s = &n->st[i];
		fam = fam_of(s->e);
		if (n->set_state[fam] != 1) {
			s->done = true;
			s->e->err = n->set_status[fam].problem == FW_MISSING ?
			    ENOENT : EINVAL;
			st[FW_FAM_V4 + fam] = n->set_status[fam];
			ret = -1;
		}
	}

	for (round = 0; round < ROUNDS; round++) {
		memset(&r, 0, sizeof(r));
		r.n = n;
		r.begin = ++n->seq;
		r.base = n->seq + 1;
		n->seq += 2 * (uint32_t)n->nst;
		r.end = ++n->seq;
		off = 0;
		nlh = nftnl_batch_begin(n->buf, r.begin);
		off += nlh->nlmsg_len;
		sent = false;
		for (i = 0; i < n->nst; i++) {
			s = &n->st[i];
			if (s->done)
				continue;
			if (s->e->op == FW_OP_DEL ||
			    (s->e->replace && !s->skip_del))
				off = put_elem(n, off, s->e, true,
				    r.base + 2 * (uint32_t)i);
			if (s->e->op == FW_OP_ADD)
				off = put_elem(n, off, s->e, false,
				    r.base + 2 * (uint32_t)i + 1);
			sent = true;
		}
		if (!sent)
			break;
		nlh = nftnl_batch_end(n->buf + off, r.end);
		off += nlh->nlmsg_len;
		err = nft_batch(n, off, round_fail, &r);
		if (err == 0)
			err = r.whole;
		if (err != 0) {
			for (i = 0; i < n->nst; i++)
				if (!n->st[i].done) {
					n->st[i].done = true;
					n->st[i].e->err = err;
				}
			status_errno(n, st, err, "write set elements");
			ret = -1;
			break;
		}
		if (!r.any) {
			/* Committed: everything sent is in the kernel. */
			for (i = 0; i < n->nst; i++)
				n->st[i].done = true;
			break;
		}
		/* Aborted: drop what failed for good, fix sets, send again. */
		for (fam = 0; fam < 2; fam++) {
			struct fw_status fst = { 0 };

			if (!r.missing[fam] && r.other[fam] == 0)
				continue;
			if (set_ensure(n, fam, &fst) == 0) {
				/* Gone and back: the bans before are not. */
				if (r.missing[fam])
					refill = true;
				if (r.other[fam] != 0) {
					char what[96];

					snprintf(what, sizeof(what), "add an "
					    "element to set %s", n->set[fam]);
					status_errno(n, &st[FW_FAM_V4 + fam],
					    r.other[fam], what);
					ret = -1;
				} else if (fst.message[0] != '\0' &&
				    st[FW_FAM_V4 + fam].problem == FW_OK)
					st[FW_FAM_V4 + fam] = fst; /* re-created */
				continue;
			}
			st[FW_FAM_V4 + fam] = fst;
			ret = -1;
			for (i = 0; i < n->nst; i++)
				if (!n->st[i].done && fam_of(n->st[i].e) == fam) {
					n->st[i].done = true;
					n->st[i].e->err = fst.problem ==
					    FW_MISSING ? ENOENT : EINVAL;
				}
		}
	}
	for (i = 0; i < n->nst; i++)
		if (!n->st[i].done) {
			n->st[i].e->err = EAGAIN;
			status_set(st, FW_OTHER, "nftables: the kernel kept "
			    "refusing a batch of set elements; will retry");
			ret = -1;
		}
	n->nst = 0;
	st[FW_FAM_NONE].refill = refill;
	return ret;
}

static int
nft_del(void *ctx, struct fw_elem *e)
{
	return nft_stage(ctx, e);
}

static int
nft_add(void *ctx, struct fw_elem *e)
{
	return nft_stage(ctx, e);
}

struct list_ctx {
	fw_list_fn *fn;
	void *arg;
	int fam;
};

static int
list_elem_cb(struct nftnl_set_elem *el, void *data)
{
	struct list_ctx *lc = data;
	const void *key;
	uint32_t len = 0;
	uint8_t addr[16] = { 0 };
	uint64_t left = 0;

	key = nftnl_set_elem_get(el, NFTNL_SET_ELEM_KEY, &len);
	if (key == NULL || len != (lc->fam == 0 ? 4u : 16u))
		return 0;
	if (lc->fam == 0) {
		addr[10] = addr[11] = 0xff;
		memcpy(addr + 12, key, 4);
	} else
		memcpy(addr, key, 16);
	if (nftnl_set_elem_is_set(el, NFTNL_SET_ELEM_EXPIRATION))
		left = nftnl_set_elem_get_u64(el, NFTNL_SET_ELEM_EXPIRATION);
	lc->fn(lc->arg, addr, left);
	return 0;
}

static void
list_cb(void *arg, const struct nlmsghdr *nlh)
{
	struct list_ctx *lc = arg;
	struct nftnl_set *s;

	if ((s = nftnl_set_alloc()) == NULL)
		return;
	if (nftnl_set_elems_nlmsg_parse(nlh, s) == 0)
		nftnl_set_elem_foreach(s, list_elem_cb, lc);
	nftnl_set_free(s);
}

static int
nft_list(void *ctx, fw_list_fn *fn, void *arg, struct fw_status *st)
{
	struct nft *n = ctx;
	struct list_ctx lc = { fn, arg, 0 };
	struct nftnl_set *s;
	struct nlmsghdr *nlh;
	uint32_t seq;
	int fam, err;

	for (fam = 0; fam < 2; fam++) {
		if (n->set_state[fam] != 1)
			continue;
		if ((s = set_new(n, fam)) == NULL)
			return -1;
		seq = ++n->seq;
		nlh = nftnl_nlmsg_build_hdr(n->buf, NFT_MSG_GETSETELEM,
		    NFPROTO_INET, NLM_F_DUMP, seq);
		nftnl_set_elems_nlmsg_build_payload(nlh, s);
		nftnl_set_free(s);
		lc.fam = fam;
		if ((err = nft_talk(n, n->buf, nlh->nlmsg_len, seq, list_cb,
		    NULL, &lc)) != 0) {
			status_errno(n, st, err, "list set elements");
			return -1;
		}
	}
	return 0;
}

static void
nft_close(void *ctx)
{
	struct nft *n = ctx;

	if (n == NULL)
		return;
	if (n->nl != NULL)
		mnl_socket_close(n->nl);
	free(n->buf);
	free(n->rbuf);
	free(n->st);
	free(n);
}

const struct fw_backend fw_backend_nft = {
	.name = "nftables",
	.open = nft_open,
	.add = nft_add,
	.del = nft_del,
	.list = nft_list,
	.commit = nft_commit,
	.close = nft_close,
};
