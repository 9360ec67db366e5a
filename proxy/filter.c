/* filter.c - choosing a listener's filter; the pass-through filter. */
#include "filter.h"

static size_t
pass_client(void *state, struct filter_io *io, const uint8_t *p, size_t len,
    bool eof)
{
	size_t n = filter_room_backend(io);

	(void)state;
	(void)eof;
	if (n > len)
		n = len;
	if (n > 0 && filter_to_backend(io, p, n) == -1)
		return 0;
	return n;
}

static size_t
pass_backend(void *state, struct filter_io *io, const uint8_t *p,
    size_t len, bool eof)
{
	size_t n = filter_room_client(io);

	(void)state;
	(void)eof;
	if (n > len)
		n = len;
	if (n > 0 && filter_to_client(io, p, n) == -1)
		return 0;
	return n;
}

const struct filter_ops filter_passthrough = {
	.name = "passthrough",
	.new = NULL,
	.client_data = pass_client,
	.backend_data = pass_backend,
	.tls_started = NULL,
	.free = NULL,
};

const struct filter_ops *
filter_for(const struct cfg_listener *lc)
{
	(void)lc;	/* issue 4: smtp/pop3 filters by lc->protocol */
	return &filter_passthrough;
}
