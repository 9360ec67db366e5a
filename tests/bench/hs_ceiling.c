/* hs_ceiling.c - the CPU cost of a TLS 1.3 server handshake with no sockets.
 *
 * The ceiling of this OpenSSL build for figure 1 of run.sh: a client and
 * a server SSL talk through a BIO pair in one thread, and only the
 * server's work is timed (SSL_new, every SSL_do_handshake call, SSL_free)
 * with CLOCK_THREAD_CPUTIME_ID. The settings are those of moat and of the
 * load generator: TLS 1.3 only, one cipher suite, one group, no session
 * tickets, no resumption, certificates not verified by the client.
 *
 *   hs_ceiling CERT KEY [N] [LABEL]
 *
 * prints one line:
 *
 *   RESULT label=LABEL n=N server_us=... per_cpu_s=... client_us=... clock_ns=...
 *
 * server_us has the clock's own cost (clock_ns, one read per timed piece,
 * four pieces a handshake) taken out; client_us keeps it.
 *
 * With --held N it measures memory instead, the floor for figure 3: N
 * handshakes whose server side is kept (its BIO pair half swapped for an
 * unconnected socket BIO, as a proxy holds a socket), the client sides
 * freed, and the heap bytes in use (glibc's mallinfo2) per kept server
 * connection:
 *
 *   hs_ceiling --held N CERT KEY [LABEL]
 *   RESULT label=LABEL held=N heap_per_conn=...
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define SUITE "TLS_AES_128_GCM_SHA256"
#define GROUP "X25519"

static double
cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Timed pieces of the server's work: each also holds about one clock
 * read (a system call here, ~0.4 us), subtracted at the end. */
static long server_pieces;

static void
server_add(double *scpu, double t)
{
	*scpu += cpu_now() - t;
	server_pieces++;
}

/* What an empty timed piece measures: the clock's own cost. */
static double
clock_cost(void)
{
	double sum = 0, t;
	int i;

	for (i = 0; i < 100000; i++) {
		t = cpu_now();
		sum += cpu_now() - t;
	}
	return sum / i;
}

static SSL_CTX *
ctx_new(int server, const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() :
	    TLS_client_method());

	if (ctx == NULL ||
	    !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, SUITE) ||
	    !SSL_CTX_set1_groups_list(ctx, GROUP))
		goto fail;
	if (server) {
		if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
			goto fail;
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS |
		    SSL_MODE_NO_AUTO_CHAIN);
	} else
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
fail:
	ERR_print_errors_fp(stderr);
	exit(1);
}

/*
 * One handshake; adds the server's and the client's CPU seconds. With
 * keep, the server side is not freed but returned, idle.
 */
static SSL *
handshake(SSL_CTX *sctx, SSL_CTX *cctx, double *scpu, double *ccpu, int keep)
{
	BIO *cb, *sb;
	SSL *c, *s;
	double t;
	int cdone = 0, sdone = 0, rounds = 0;

	t = cpu_now();
	if ((s = SSL_new(sctx)) == NULL)
		goto fail;
	server_add(scpu, t);
	t = cpu_now();
	if ((c = SSL_new(cctx)) == NULL ||
	    !BIO_new_bio_pair(&cb, 64 * 1024, &sb, 64 * 1024))
		goto fail;
	SSL_set_bio(c, cb, cb);
	SSL_set_bio(s, sb, sb);
	SSL_set_connect_state(c);
	SSL_set_accept_state(s);
	*ccpu += cpu_now() - t;
	while (!cdone || !sdone) {
		int r;

		if (++rounds > 20)
			goto fail;
		if (!cdone) {
			t = cpu_now();
			r = SSL_do_handshake(c);
			*ccpu += cpu_now() - t;
			if (r == 1)
				cdone = 1;
			else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ)
				goto fail;
		}
		if (!sdone) {
			t = cpu_now();
			r = SSL_do_handshake(s);
			server_add(scpu, t);
			if (r == 1)
				sdone = 1;
			else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ)
				goto fail;
		}
	}
	if (keep) {
		BIO *sock = BIO_new_socket(-1, BIO_NOCLOSE);

		if (sock == NULL)
			goto fail;
		SSL_set_bio(s, sock, sock);	/* frees the pair half */
		SSL_free(c);
		return s;
	}
	t = cpu_now();
	SSL_free(s);
	server_add(scpu, t);
	t = cpu_now();
	SSL_free(c);
	*ccpu += cpu_now() - t;
	return NULL;
fail:
	fprintf(stderr, "hs_ceiling: handshake failed\n");
	ERR_print_errors_fp(stderr);
	exit(1);
}

/* Heap bytes in use per idle server connection, n of them held. */
static int
held(long n, const char *cert, const char *key, const char *label)
{
	SSL_CTX *sctx = ctx_new(1, cert, key), *cctx = ctx_new(0, NULL, NULL);
	SSL **kept;
	double dummy = 0;
	size_t before, after;

	for (int i = 0; i < 20; i++)	/* lazy initialisation first */
		handshake(sctx, cctx, &dummy, &dummy, 0);
	if ((kept = calloc((size_t)n, sizeof(*kept))) == NULL) {
		fprintf(stderr, "hs_ceiling: out of memory\n");
		return 1;
	}
	before = mallinfo2().uordblks;
	for (long i = 0; i < n; i++)
		kept[i] = handshake(sctx, cctx, &dummy, &dummy, 1);
	after = mallinfo2().uordblks;
	printf("RESULT label=%s held=%ld heap_per_conn=%.0f\n", label, n,
	    (double)(after - before) / (double)n);
	for (long i = 0; i < n; i++)
		SSL_free(kept[i]);
	free(kept);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	return 0;
}

int
main(int argc, char **argv)
{
	SSL_CTX *sctx, *cctx;
	double scpu = 0, ccpu = 0, dummy = 0, clk;
	long n;

	if (argc >= 5 && strcmp(argv[1], "--held") == 0 && atol(argv[2]) > 0)
		return held(atol(argv[2]), argv[3], argv[4],
		    argc > 5 ? argv[5] : "-");
	if (argc < 3 || argv[1][0] == '-') {
		fprintf(stderr, "usage: hs_ceiling CERT KEY [N] [LABEL]\n"
		    "       hs_ceiling --held N CERT KEY [LABEL]\n");
		return 2;
	}
	n = argc > 3 ? atol(argv[3]) : 2000;
	if (n <= 0)
		n = 2000;
	sctx = ctx_new(1, argv[1], argv[2]);
	cctx = ctx_new(0, NULL, NULL);
	for (int i = 0; i < 20; i++)	/* warm caches and lazy init */
		handshake(sctx, cctx, &dummy, &dummy, 0);
	server_pieces = 0;
	for (long i = 0; i < n; i++)
		handshake(sctx, cctx, &scpu, &ccpu, 0);
	clk = clock_cost();
	scpu -= clk * (double)server_pieces;
	printf("RESULT label=%s n=%ld server_us=%.1f per_cpu_s=%.0f "
	    "client_us=%.1f clock_ns=%.0f\n", argc > 4 ? argv[4] : "-", n,
	    scpu / (double)n * 1e6, (double)n / scpu, ccpu / (double)n * 1e6,
	    clk * 1e9);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	return 0;
}
