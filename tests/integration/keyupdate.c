/*
 * keyupdate.c - a POP3 client over implicit TLS 1.3 that asks for key
 * updates while moat is blocked writing a long message to it; Python's
 * ssl module cannot send KeyUpdate. Used by test_faults.py.
 *
 * usage: keyupdate PORT BYTES UPDATES
 * Logs in, sends RETR 1, stops reading for a second so that moat's
 * socket fills, then UPDATES times sends a KeyUpdate (update requested)
 * and a NOOP and reads a little; then reads until BYTES bytes of replies
 * have come and quits. Exit 0 when every byte came and QUIT was answered.
 *
 * usage: keyupdate PORT notify-reset
 * Logs in, sends RETR 1 and its close_notify at once, reads nothing for a
 * second, then resets the connection (SO_LINGER 0) while moat still has
 * the message to write.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static void __attribute__((noreturn))
die(const char *what)
{
	fprintf(stderr, "keyupdate: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static size_t
get(SSL *ssl, char *buf, size_t len)
{
	size_t n;

	if (SSL_read_ex(ssl, buf, len, &n) != 1)
		die("the connection ended early");
	return n;
}

static void
put(SSL *ssl, const char *s)
{
	size_t n;

	if (SSL_write_ex(ssl, s, strlen(s), &n) != 1)
		die("write failed");
}

int
main(int argc, char *argv[])
{
	struct sockaddr_in sin;
	SSL_CTX *ctx;
	SSL *ssl;
	char buf[65536];
	long long want, got = 0;
	int fd, i, updates;

	if (argc != 4 && (argc != 3 || strcmp(argv[2], "notify-reset") != 0)) {
		fprintf(stderr, "usage: keyupdate PORT BYTES UPDATES\n"
		    "       keyupdate PORT notify-reset\n");
		return 2;
	}
	want = argc == 4 ? atoll(argv[2]) : 0;
	updates = argc == 4 ? atoi(argv[3]) : 0;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((unsigned short)atoi(argv[1]));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1)
		die("cannot connect");
	/* The test's own certificate: what is checked here is the relay. */
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
	    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    (ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1 ||
	    SSL_connect(ssl) != 1)
		die("handshake failed");
	got += (long long)get(ssl, buf, sizeof(buf));	/* the greeting */
	put(ssl, "USER alice\r\nPASS secret\r\nRETR 1\r\n");
	if (argc == 3) {
		struct linger lg = { 1, 0 };

		(void)SSL_shutdown(ssl);
		sleep(1);
		if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == -1)
			die("SO_LINGER failed");
		close(fd);
		SSL_free(ssl);
		SSL_CTX_free(ctx);
		return 0;
	}
	for (i = 0; i < updates; i++) {
		if (SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) != 1)
			die("SSL_key_update failed");
		put(ssl, "NOOP\r\n");
		got += (long long)get(ssl, buf, 1000);
	}
	while (got < want)
		got += (long long)get(ssl, buf, sizeof(buf));
	if (got != want) {
		fprintf(stderr, "keyupdate: %lld bytes, expected %lld\n", got,
		    want);
		return 1;
	}
	put(ssl, "QUIT\r\n");
	if (get(ssl, buf, sizeof(buf)) < 3 || memcmp(buf, "+OK", 3) != 0)
		die("QUIT was not answered");
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	return 0;
}
