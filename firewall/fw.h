/* fw.h - kernel set writers (nftables, ipset, none) behind one queue. */
#ifndef MOAT_FW_H
#define MOAT_FW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "config.h"

/*
 * The firewall writer pushes bans into kernel sets so that a banned
 * client's next packets are dropped before they wake moat.
 *
 * The event loop never talks to the kernel: fw_add() and fw_del() only
 * merge the change into a pending queue (a hash by address) and wake the
 * writer thread, which alone holds the netlink socket. The thread takes
 * the whole queue at once and writes it as one batch (one nftables
 * transaction per up to FW_BATCH_MAX changes), so a burst of bans costs a
 * few system calls, not one process per ban.
 *
 * Merging: two adds for one address keep the later deadline; a delete
 * cancels a pending add and an add after a delete wins. The thread also
 * remembers what it wrote (address -> deadline): an add whose deadline the
 * kernel already holds is skipped, a longer one replaces the element so
 * that its timeout is extended (the kernel does not extend the timeout of
 * an element that exists). Elements expire by their set timeout in the
 * kernel; moat never runs timers for them.
 *
 * Failures (no CAP_NET_ADMIN, no kernel support, a set of the wrong type,
 * a set deleted under us) are reported once per kind through the report
 * callback, on the loop thread, with the fix in the message; when writes
 * work again that is reported once too. Failed adds are retried with a
 * backoff while their ban lasts. Bans are enforced in userspace either
 * way.
 *
 * A set that the writer had to create (the operator deleted the table
 * under us) or that became usable again holds none of the bans written
 * before: the writer reads back what the kernel holds and sends a report
 * with refill set, and the caller queues every ban in force again.
 * fw_resync() does the same on demand (a reload), for sets that were
 * emptied without being deleted (nft flush ruleset).
 */
struct fw;

/* Largest number of element changes in one kernel batch. */
#define FW_BATCH_MAX 512

enum fw_problem {
	FW_OK = 0,
	FW_PERM,	/* no CAP_NET_ADMIN */
	FW_NOSUPPORT,	/* kernel lacks nf_tables / ip_set */
	FW_MISSING,	/* table or set missing and not created */
	FW_TYPE,	/* set exists with the wrong type or flags */
	FW_OTHER,
	FW_NPROBLEMS
};

struct fw_report {
	enum fw_problem problem;	/* FW_OK: writes work again */
	const char *backend;		/* "nftables", "ipset" */
	const char *message;		/* one line, with the fix */
	const uint8_t *addr;		/* the element, or NULL */
	bool refill;			/* queue every ban in force again */
	bool note;			/* FW_OK news that leaves any
					 * problem standing ("created") */
};

/* Called on the loop thread (or, without a loop, on the writer thread). */
typedef void fw_report_fn(void *arg, const struct fw_report *r);

struct fw_stats {
	uint64_t queued;	/* fw_add/fw_del calls */
	uint64_t merged;	/* absorbed by a pending change or the kernel */
	uint64_t written;	/* element changes the kernel accepted */
	uint64_t failed;	/* element changes that failed (per attempt) */
	uint64_t batches;	/* commits */
	uint64_t latency_us_sum; /* queue to commit, over written changes */
	uint64_t latency_us_max;
};

/*
 * Starts the writer for cfg->firewall (copied). loop may be NULL (tools,
 * tests): reports then run on the writer thread. With backend "none" no
 * thread is started and every call is a no-op. Returns NULL only when out
 * of memory or when the thread cannot be created (errno set); kernel
 * problems are reported later, never fatal.
 */
struct fw *fw_open(struct ev_loop *loop, const struct config *cfg,
    fw_report_fn *report, void *arg);
/*
 * Writes what is pending (waiting up to a second), stops the thread and
 * frees everything. Elements stay in the kernel and expire there.
 */
void fw_close(struct fw *fw);
/*
 * The writer fw replaces was failing: fw takes that state over, so that it
 * reports writes working (a FW_OK report that is no note) once it has
 * written to a set, as it would after a problem of its own. Call before
 * any ban is queued; one queued before is written without it.
 */
void fw_inherit_failing(struct fw *fw);

/* "nftables", "ipset" or "none". */
const char *fw_name(const struct fw *fw);
bool fw_enabled(const struct fw *fw);
/* Whether addr's bans go into the sets: fw is enabled and addr is not
 * loopback or unspecified (fw_add() keeps those out, see fw.c). */
bool fw_takes(const struct fw *fw, const uint8_t addr[16]);

/* Queue addr (16-byte form; IPv4-mapped goes to set4 as IPv4) for
 * timeout_ms from now, or its removal. Never block on the kernel. */
void fw_add(struct fw *fw, const uint8_t addr[16], uint64_t timeout_ms);
void fw_del(struct fw *fw, const uint8_t addr[16]);
/* Like fw_add, but the element gets exactly this timeout, a shorter one
 * too: an operator's ban replaces the one in force. */
void fw_set(struct fw *fw, const uint8_t addr[16], uint64_t timeout_ms);
/* Forgets what the writer believes the kernel holds and reads it back
 * before the next write; the caller then queues every ban in force. */
void fw_resync(struct fw *fw);

/* Whether the kernel's element for addr must go; on the writer thread. */
typedef bool fw_lift_fn(void *arg, const uint8_t addr[16]);
/*
 * Deletes from the sets every element for which lift(arg, addr) is true
 * (an address on the allow list, banned in a past run whose state moat
 * has lost), as the writer knows them: read back from nftables at open
 * and after fw_resync; ipset cannot list, so only what this writer
 * wrote. Done once, at the writer's next turn; the report says how many.
 */
void fw_lift(struct fw *fw, fw_lift_fn *lift, void *arg);

/* Waits up to timeout_ms until everything queued so far was written (or
 * failed); returns true if the queue drained. For tools and shutdown. */
bool fw_sync(struct fw *fw, uint64_t timeout_ms);
void fw_stats(struct fw *fw, struct fw_stats *st);
/* Bytes the queue holds (pending and taken changes, the elements of a
 * write), kept or not between writes: a burst's are given back. Read it
 * when the writer is idle (after fw_sync); for tests. */
size_t fw_queue_bytes(struct fw *fw);

/* ---- the backend interface ------------------------------------------- */

enum fw_op { FW_OP_ADD = 0, FW_OP_DEL };

/*
 * One element change in a commit. The backend sets err (0 or an errno
 * value) for each element it was given; replace asks for the element's
 * timeout to be set even if the element exists.
 */
struct fw_elem {
	uint8_t addr[16];
	enum fw_op op;
	bool replace;
	uint64_t timeout_ms;	/* add: from the time of the commit */
	uint64_t deadline_ms;	/* monotonic; kept by the queue */
	uint64_t queued_ms;	/* when fw_add/fw_del was called */
	int err;
};

/* Which set something is about; none (0) is what a zeroed status says.
 * A backend's per-set index i (0 IPv4, 1 IPv6) is FW_FAM_V4 + i here. */
enum fw_family {
	FW_FAM_NONE = 0,
	FW_FAM_V4,
	FW_FAM_V6,
	FW_NFAMILIES
};

/* The outcome of open/commit beyond single elements. */
struct fw_status {
	enum fw_problem problem;
	char message[320];
	bool refill;		/* a set was created or is usable again */
	enum fw_family fam;
};

/* Called by list for each element the kernel holds; remaining_ms 0 is an
 * element without a timeout. */
typedef void fw_list_fn(void *arg, const uint8_t addr[16],
    uint64_t remaining_ms);

/*
 * A writer. Everything runs on the writer thread. open and commit fill
 * st[FW_NFAMILIES], zeroed by the caller, a status per set: st[FW_FAM_V4]
 * and st[FW_FAM_V6] say what is wrong with (or new about) that set, so
 * that two broken sets are two problems; st[FW_FAM_NONE] (that is, *st)
 * is for what concerns neither set alone (no socket, no permission, a
 * batch the kernel refused as a whole). open returns a context, or NULL
 * with st[FW_FAM_NONE] filled (the queue retries later). add and del
 * stage one element (e stays valid until commit returns); commit writes
 * everything staged, sets e->err for each element and returns 0, or -1
 * when something failed (every failed element carries an err, and a
 * status says why). list visits the elements of both sets (0, or -1 with
 * st, a single status).
 */
struct fw_backend {
	const char *name;
	void *(*open)(const struct config *cfg, struct fw_status *st);
	int (*add)(void *ctx, struct fw_elem *e);
	int (*del)(void *ctx, struct fw_elem *e);
	int (*list)(void *ctx, fw_list_fn *fn, void *arg,
	    struct fw_status *st);
	int (*commit)(void *ctx, struct fw_status *st);
	void (*close)(void *ctx);
};

extern const struct fw_backend fw_backend_nft;
extern const struct fw_backend fw_backend_ipset;
extern const struct fw_backend fw_backend_none;

/* Like fw_open with an explicit backend (unit tests pass a fake). */
struct fw *fw_open_backend(struct ev_loop *loop, const struct config *cfg,
    const struct fw_backend *be, fw_report_fn *report, void *arg);

/* Helpers for backends. */
/*
 * Checks (or creates) the IPv4 and the IPv6 set with ensure(ctx, fam, st),
 * fam 0 and 1, and puts each set's outcome (problem, or note such as
 * "created", and refill) in st[FW_FAM_V4 + fam] of st[FW_NFAMILIES]. A
 * bad or missing set only disables its family, so IPv6 bans still work
 * when set4 is wrong; a permission or kernel problem (FW_PERM,
 * FW_NOSUPPORT) fails the open: -1 with it in st[FW_FAM_NONE], and the
 * caller closes.
 */
int fw_ensure_sets(void *ctx, int (*ensure)(void *ctx, int fam,
    struct fw_status *st), struct fw_status *st);
bool fw_addr_is_v4(const uint8_t addr[16]);
enum fw_family fw_addr_family(const uint8_t addr[16]);
const char *fw_addr_str(const uint8_t addr[16], char *buf, size_t len);
const char *fw_problem_str(enum fw_problem p);

#endif
