/* fuzz_filter_driver.h - drives a filter from fuzz bytes (filter_fake.h). */
#ifndef MOAT_FUZZ_FILTER_DRIVER_H
#define MOAT_FUZZ_FILTER_DRIVER_H

/*
 * Input layout: one byte of listener settings, then chunks. Each chunk is
 * a header byte and a length byte, then that many bytes:
 *   header & 3 == 0  bytes from the client
 *   header & 3 == 1  bytes from the backend
 *   header & 3 == 2  the TLS handshake finishes (if the filter asked)
 *   header & 3 == 3  end of stream from the client (bit 2) or backend
 * Invariants checked (abort on failure):
 *   - the backend never receives a bare LF, a bare CR or a NUL: commands
 *     are re-terminated with CRLF and message text is checked per line;
 *   - between a STARTTLS/STLS request and the handshake, nothing reaches
 *     the backend (the injection rule);
 *   - a filter never consumes more than offered (checked by the fake).
 */
#include <stdint.h>
#include <stdlib.h>

/* Small transcripts keep each run cheap; the driver checks and resets
 * them when half full. */
#define FAKE_LOG (32 * 1024)
#include "filter_fake.h"

#define INVARIANT(c)							\
	do {								\
		if (!(c))						\
			abort();					\
	} while (0)

static void
check_backend_stream(const struct filter_io *io)
{
	const char *p = io->backend.log;
	size_t i, n = io->backend.loglen;

	for (i = 0; i < n; i++) {
		if (p[i] == '\n')
			INVARIANT(i > 0 && p[i - 1] == '\r');
		if (p[i] == '\r')
			INVARIANT(i + 1 < n && p[i + 1] == '\n');
		INVARIANT(p[i] != '\0');
	}
}

static void
drive_filter(const struct filter_ops *ops, enum cfg_protocol proto,
    const uint8_t *data, size_t size)
{
	static const uint32_t lines[] = { 512, 2048, 40, 16 * 1024 };
	struct filter_io *io;
	size_t off = 1, len, asked_at = 0;
	bool asked = false;
	uint8_t cfg;

	if (size < 1)
		return;
	cfg = data[0];
	io = fake_new(ops, proto, (enum cfg_tls_mode)(cfg % 3),
	    (cfg & 4) != 0, lines[(cfg >> 3) & 3]);
	if (cfg & 0x20)
		io->client.room = 12000;
	if (cfg & 0x40)
		io->backend.room = 12000;
	while (off + 2 <= size && io->closed == NULL) {
		uint8_t h = data[off];

		len = data[off + 1];
		off += 2;
		if (len > size - off)
			len = size - off;
		switch (h & 3) {
		case 0:
			if (!io->client.eof)
				fake_client_bytes(io, data + off, len);
			break;
		case 1:
			if (!io->backend.eof) {
				fake_input(&io->backend, data + off, len);
				fake_pump(io);
			}
			break;
		case 2:
			if (io->starttls)
				fake_handshake(io);
			break;
		case 3:
			if (h & 4)
				io->client.eof = true;
			else
				io->backend.eof = true;
			fake_pump(io);
			break;
		}
		off += len;
		if (io->starttls && !asked) {
			asked = true;
			asked_at = io->backend.loglen;
		}
		if (asked && io->starttls)
			INVARIANT(io->backend.loglen == asked_at);
		if (!io->starttls)
			asked = false;
		/* Logs are capped; start over before they fill. */
		if (io->backend.loglen > FAKE_LOG / 2 ||
		    io->client.loglen > FAKE_LOG / 2) {
			check_backend_stream(io);
			io->backend.loglen = 0;
			io->client.loglen = 0;
			asked_at = 0;
		}
	}
	check_backend_stream(io);
	fake_free(io);
}

#endif
