/* fw_none.c - the writer that writes nothing: bans stay in userspace. */
#include "fw.h"

#include <stddef.h>

/*
 * fw_open() starts no thread for this backend, so these are only here to
 * make the vtable whole (and for tools that drive a backend directly).
 */
static void *
none_open(const struct config *cfg, struct fw_status *st)
{
	static int token;

	(void)cfg, (void)st;
	return &token;
}

static int
none_stage(void *ctx, struct fw_elem *e)
{
	(void)ctx;
	e->err = 0;
	return 0;
}

static int
none_commit(void *ctx, struct fw_status *st)
{
	(void)ctx, (void)st;
	return 0;
}

static void
none_close(void *ctx)
{
	(void)ctx;
}

const struct fw_backend fw_backend_none = {
	.name = "none",
	.open = none_open,
	.add = none_stage,
	.del = none_stage,
	.list = NULL,
	.commit = none_commit,
	.close = none_close,
};
