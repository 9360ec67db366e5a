/* test_tlsout.c - records gathered, sent in order, retried on a full socket;
 * reads as a socket BIO's. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <openssl/bio.h>

#include "check.h"
#include "tlsout.h"

#define REC 16406		/* a full TLS 1.3 record on the wire */
#define TOTAL (4 * 1024 * 1024)

/* What was written, in order, and what the peer read so far. */
static uint8_t *sent, *got;
static size_t nsent, ngot;

/* Reads what the peer has; returns how many bytes came. */
static size_t
drain(int fd)
{
	size_t before = ngot;
	ssize_t r;

	while (ngot < TOTAL &&
	    (r = read(fd, got + ngot, TOTAL - ngot)) > 0)
		ngot += (size_t)r;
	return ngot - before;
}

/* A BIO on one end of a fresh socket pair (send buffer sndbuf, or the
 * default for 0); fds[1] is the peer. Starts the record of bytes anew. */
static BIO *
open_pair(int fds[2], int sndbuf)
{
	BIO *b;

	nsent = ngot = 0;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == -1)
		abort();
	if (sndbuf > 0)
		(void)setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf,
		    sizeof(sndbuf));
	(void)fcntl(fds[0], F_SETFL, O_NONBLOCK);
	(void)fcntl(fds[1], F_SETFL, O_NONBLOCK);
	if ((b = tlsout_new(fds[0])) == NULL)
		abort();
	return b;
}

/* Flushes b, reads what the peer has, and says whether it got every
 * byte written, in order; then closes all. */
static bool
close_pair(BIO *b, int fds[2])
{
	bool ok;

	ok = BIO_flush(b) == 1;
	drain(fds[1]);
	ok = ok && ngot == nsent && memcmp(sent, got, nsent) == 0;
	BIO_free(b);
	close(fds[0]);
	close(fds[1]);
	return ok;
}

/* Writes len bytes of the pattern from a source at offset skew of a
 * 64-byte line, as OpenSSL would: the same bytes again after a retry. */
static int
put(BIO *b, size_t len, size_t skew)
{
	static uint8_t src[4 * REC + 128] __attribute__((aligned(64)));
	size_t i;
	int n;

	for (i = 0; i < len; i++)
		src[skew + i] = (uint8_t)((nsent + i) * 7 + (nsent + i) / 251);
	n = BIO_write(b, src + skew, (int)len);
	if (n > 0) {
		memcpy(sent + nsent, src + skew, (size_t)n);
		nsent += (size_t)n;
	}
	return n;
}

static void
test_gathered_until_flushed(void)
{
	int fds[2], fd = -2;
	BIO *b = open_pair(fds, 0);

	CHECK(BIO_get_fd(b, &fd) == fds[0] && fd == fds[0]);
	CHECK(BIO_wpending(b) == 0);

	/* Three records and a short one wait for a flush... */
	CHECK(put(b, REC, 8) == REC);
	CHECK(put(b, REC, 8) == REC);
	CHECK(put(b, REC, 13) == REC);
	CHECK(put(b, 37, 0) == 37);
	CHECK(BIO_wpending(b) == 3 * REC + 37);
	CHECK(tlsout_blocks() == 1);
	CHECK(drain(fds[1]) == 0);

	/* ...which sends them in order, gaps left out, and gives the block
	 * back: an idle connection holds none. */
	CHECK(BIO_flush(b) == 1);
	CHECK(BIO_wpending(b) == 0);
	CHECK(tlsout_blocks() == 0);
	CHECK(drain(fds[1]) == 3 * REC + 37);

	/* Nothing held: a flush has nothing to do. */
	CHECK(BIO_flush(b) == 1);
	CHECK(close_pair(b, fds));
}

static void
test_fifth_record_sends_four(void)
{
	int fds[2], i;
	BIO *b = open_pair(fds, 0);

	for (i = 0; i < 4; i++)
		CHECK(put(b, REC, (size_t)(i * 17) % 64) == REC);
	CHECK(drain(fds[1]) == 0);
	CHECK(put(b, REC, 8) == REC);
	CHECK(drain(fds[1]) == 4 * REC);
	CHECK(BIO_wpending(b) == REC);
	CHECK(close_pair(b, fds));
}

/* Many runs of every length and alignment: more runs than the header
 * tracks, small ones packed. */
static void
test_runs_of_every_size(void)
{
	int fds[2], i;
	BIO *b = open_pair(fds, 0);

	CHECK(BIO_write(b, "", 0) == 0);
	for (i = 0; i < 400; i++) {
		CHECK(put(b, (size_t)(1 + (i * 997) % 3000),
		    (size_t)(i * 29) % 64) > 0);
		if (i % 50 == 49)
			drain(fds[1]);
	}
	CHECK(close_pair(b, fds));
}

/* A write larger than a block (a long certificate chain, say) goes
 * straight to the socket, partly if it is full; the caller writes the
 * rest, as OpenSSL does. */
static void
test_write_larger_than_a_block(void)
{
	int fds[2], n;
	size_t left = 4 * REC + 100;
	BIO *b = open_pair(fds, 0);

	CHECK(put(b, 100, 0) == 100);	/* sent first, before the rest */
	while (left > 0) {
		n = put(b, left, 3);
		if (n > 0)
			left -= (size_t)n;
		else {
			CHECK(BIO_should_retry(b) && BIO_should_write(b));
			drain(fds[1]);
		}
	}
	CHECK(close_pair(b, fds));
}

/* A peer that reads slowly: writes and flushes fail with retry, nothing
 * is lost or repeated, and everything arrives once the peer reads. */
static void
test_full_socket_retries(void)
{
	int fds[2], n, retries = 0, flush_retries = 0;
	BIO *b = open_pair(fds, 4096);

	while (nsent < 2 * 1024 * 1024) {
		n = put(b, REC, 8);
		if (n == REC)
			continue;
		CHECK(n == -1 && BIO_should_retry(b) && BIO_should_write(b));
		retries++;
		if (BIO_flush(b) != 1) {
			CHECK(BIO_should_retry(b) && BIO_wpending(b) > 0);
			flush_retries++;
		}
		drain(fds[1]);
	}
	while (BIO_flush(b) != 1) {
		CHECK(BIO_should_retry(b));
		drain(fds[1]);
	}
	CHECK(retries > 0 && flush_retries > 0);
	CHECK(BIO_wpending(b) == 0 && tlsout_blocks() == 0);
	CHECK(close_pair(b, fds));
}

/* A peer that is gone: an error, not a retry and not SIGPIPE. Held
 * bytes are dropped with the BIO (the leak check sees the block). */
static void
test_peer_gone(void)
{
	int fds[2];
	BIO *b = open_pair(fds, 0);

	CHECK(put(b, REC, 8) == REC);
	close(fds[1]);
	errno = 0;
	CHECK(BIO_flush(b) == -1 && !BIO_should_retry(b) && errno == EPIPE);
	CHECK(put(b, REC, 8) == REC);	/* held: the block has room */
	BIO_free(b);
	CHECK(tlsout_blocks() == 0);	/* freeing gives the block back */
	close(fds[0]);
}

/* A connected loopback TCP pair, t[0] non-blocking; -1 on failure. */
static int
tcp_pair(int t[2])
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int l;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((l = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		return -1;
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) == -1 ||
	    listen(l, 1) == -1 ||
	    getsockname(l, (struct sockaddr *)&a, &len) == -1 ||
	    (t[1] = socket(AF_INET, SOCK_STREAM, 0)) == -1) {
		close(l);
		return -1;
	}
	if (connect(t[1], (struct sockaddr *)&a, sizeof(a)) == -1 ||
	    (t[0] = accept(l, NULL, NULL)) == -1) {
		close(t[1]);
		close(l);
		return -1;
	}
	close(l);
	(void)fcntl(t[0], F_SETFL, O_NONBLOCK);
	return 0;
}

/* A BIO on t[0] of a fresh loopback TCP pair; NULL (a failed check)
 * when there is none. */
static BIO *
open_tcp(int t[2])
{
	BIO *b;

	if (tcp_pair(t) == -1) {
		CHECK(!"loopback TCP pair");
		return NULL;
	}
	if ((b = tlsout_new(t[0])) == NULL)
		abort();
	return b;
}

/* Reads: what the peer sent; a retry while nothing is there; end of
 * stream as BIO_eof() (OpenSSL tells it from an error so); an error. */
static void
test_reads(void)
{
	int fds[2];
	char buf[64];
	BIO *b = open_pair(fds, 0);

	CHECK(BIO_read(b, buf, sizeof(buf)) == -1);
	CHECK(BIO_should_retry(b) && BIO_should_read(b) && !BIO_eof(b));
	CHECK(write(fds[1], "hello", 5) == 5);
	CHECK(BIO_read(b, buf, sizeof(buf)) == 5 && memcmp(buf, "hello", 5) == 0);
	CHECK(!BIO_should_retry(b) && !BIO_eof(b));
	/* Reading leaves what is held for writing alone. */
	CHECK(put(b, REC, 8) == REC);
	CHECK(write(fds[1], "x", 1) == 1);
	CHECK(BIO_read(b, buf, sizeof(buf)) == 1 && buf[0] == 'x');
	CHECK(BIO_wpending(b) == REC);
	CHECK(shutdown(fds[1], SHUT_WR) == 0);
	CHECK(BIO_read(b, buf, sizeof(buf)) == 0);
	CHECK(!BIO_should_retry(b) && BIO_eof(b));
	CHECK(close_pair(b, fds));
}

/* A reset: an error with errno, not a retry and not end of stream. */
static void
test_read_reset(void)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	char buf[64];
	int t[2];
	BIO *b;

	/* socketpair() cannot reset; a loopback TCP pair can. */
	if ((b = open_tcp(t)) == NULL)
		return;
	CHECK(setsockopt(t[1], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
	CHECK(write(t[1], "y", 1) == 1);
	close(t[1]);			/* linger 0: a reset */
	usleep(20000);
	CHECK(BIO_read(b, buf, 1) == 1 && buf[0] == 'y');
	errno = 0;
	CHECK(BIO_read(b, buf, sizeof(buf)) == -1);
	CHECK(!BIO_should_retry(b) && !BIO_eof(b) && errno == ECONNRESET);
	BIO_free(b);
	close(t[0]);
}

/* Bytes fd's kernel has not sent yet; -1 on failure. */
static int
unsent(int fd)
{
	int n;

	return ioctl(fd, SIOCOUTQNSD, &n) == 0 ? n : -1;
}

/* Reads from fd until end of stream (waiting up to a second for each
 * piece) into buf; returns how many bytes came, -1 without the end. */
static int
read_to_end(int fd, char *buf, size_t size)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	size_t n = 0;
	ssize_t r;

	while (n < size && poll(&p, 1, 1000) == 1) {
		if ((r = read(fd, buf + n, size - n)) <= 0)
			return r == 0 ? (int)n : -1;
		n += (size_t)r;
	}
	return -1;
}

/* After tlsout_fin_follows() the kernel keeps what is flushed until the
 * FIN, which then rides with it; before, a flush sends at once, Nagle
 * off as on moat's sockets. */
static void
test_fin_follows(void)
{
	char buf[64];
	int t[2], on = 1;
	BIO *b;

	if ((b = open_tcp(t)) == NULL)
		return;
	CHECK(setsockopt(t[0], IPPROTO_TCP, TCP_NODELAY, &on,
	    sizeof(on)) == 0);
	CHECK(BIO_write(b, "reply", 5) == 5 && BIO_flush(b) == 1);
	CHECK_INT_EQ(unsent(t[0]), 0);
	tlsout_fin_follows(b);
	CHECK(BIO_write(b, "alert", 5) == 5 && BIO_flush(b) == 1);
	CHECK_INT_EQ(unsent(t[0]), 5);
	CHECK(shutdown(t[0], SHUT_WR) == 0);
	CHECK_INT_EQ(unsent(t[0]), 0);
	CHECK(read_to_end(t[1], buf, sizeof(buf)) == 10 &&
	    memcmp(buf, "replyalert", 10) == 0);
	BIO_free(b);
	close(t[0]);
	close(t[1]);

	/* Any other BIO is left alone. */
	tlsout_fin_follows(NULL);
	b = BIO_new(BIO_s_mem());
	tlsout_fin_follows(b);
	CHECK(BIO_write(b, "x", 1) == 1 && BIO_pending(b) == 1);
	BIO_free(b);
}

/* Feeds the BIO s, one read per byte when trickle (the header then
 * comes however thinly the records are cut); returns whether it refused
 * a ClientHello as too large. */
static bool
hello_refused(const uint8_t *s, size_t n, bool trickle)
{
	char buf[64];
	size_t i, step;
	int fds[2];
	bool refused;
	BIO *b = open_pair(fds, 0);

	for (i = 0; i < n; i += step) {
		step = trickle ? 1 : n - i;
		if (write(fds[1], s + i, step) != (ssize_t)step)
			abort();
		while (BIO_read(b, buf, trickle ? 1 : (int)sizeof(buf)) > 0)
			;
	}
	refused = tlsout_hello_too_large(b);
	BIO_free(b);
	close(fds[0]);
	close(fds[1]);
	return refused;
}

static void
test_hello_size(void)
{
	/* Declaring 16 KiB + 1 in one record, then the same header cut
	 * into records of one byte after an empty one; then a CCS record
	 * first, which OpenSSL judges. */
	static const uint8_t big[] = { 22, 3, 1, 0, 6, 1, 0, 0x40, 1, 3, 3 };
	static const uint8_t cut[] = { 22, 3, 1, 0, 0, 22, 3, 1, 0, 1, 1,
	    20, 3, 3, 0, 1, 1, 22, 3, 1, 0, 1, 0, 22, 3, 1, 0, 1, 0x40,
	    22, 3, 1, 0, 1, 1 };
	static const uint8_t ok[] = { 22, 3, 1, 0, 6, 1, 0, 0x40, 0, 3, 3 };
	static const uint8_t ccs[] = { 20, 3, 3, 0, 1, 1, 22, 3, 1, 0, 6, 1,
	    0, 0x40, 1, 3, 3 };

	CHECK(hello_refused(big, sizeof(big), false));
	CHECK(hello_refused(big, sizeof(big), true));
	CHECK(hello_refused(cut, sizeof(cut), false));
	CHECK(hello_refused(cut, sizeof(cut), true));
	CHECK(!hello_refused(ok, sizeof(ok), false));
	CHECK(!hello_refused(ok, sizeof(ok), true));
	CHECK(!hello_refused(ccs, sizeof(ccs), false));
	CHECK(!tlsout_hello_too_large(NULL));
}

int
main(void)
{
	/* A send that raised SIGPIPE would kill the test. */
	signal(SIGPIPE, SIG_DFL);
	sent = malloc(TOTAL);
	got = malloc(TOTAL);
	if (sent == NULL || got == NULL)
		return 1;
	test_gathered_until_flushed();
	test_fifth_record_sends_four();
	test_runs_of_every_size();
	test_write_larger_than_a_block();
	test_full_socket_retries();
	test_peer_gone();
	test_reads();
	test_read_reset();
	test_fin_follows();
	test_hello_size();
	tlsout_thread_end();	/* the leak check sees any block kept */
	free(sent);
	free(got);
	return check_report("tlsout");
}
