/* filter.c - choosing a listener's filter; the pass-through filter. */
#include "filter.h"

#include "pop3.h"
#include "smtp.h"

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
	switch (lc->protocol) {
	case CFG_PROTO_SMTP:
		return &filter_smtp;
	case CFG_PROTO_POP3:
		return &filter_pop3;
	}
	return &filter_passthrough;
}

const char *
filter_signal_str(enum filter_signal sig)
{
	switch (sig) {
	case FILTER_SIG_AUTH_OK:
		return "auth_ok";
	case FILTER_SIG_AUTH_FAIL:
		return "auth_fail";
	case FILTER_SIG_AUTH_TEMPFAIL:
		return "auth_tempfail";
	case FILTER_SIG_SMUGGLING:
		return "smuggling";
	case FILTER_SIG_GLITCH:
		return "glitch";
	case FILTER_SIG_FOREIGN:
		return "foreign_protocol";
	}
	return "?";
}
