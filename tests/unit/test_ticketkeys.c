/* test_ticketkeys.c - ticket keys are erased two periods after they were
 * made, whether or not a ticket comes to ask for them. */
#include <stdint.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "check.h"
#include "mono.h"
#include "ticketkeys.h"

/* Seals one ticket, which makes (or rotates to) a key; returns the cb's
 * result. */
static int
seal(SSL *ssl)
{
	unsigned char name[16], iv[EVP_MAX_IV_LENGTH];
	EVP_CIPHER_CTX *cctx = EVP_CIPHER_CTX_new();
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *hctx = EVP_MAC_CTX_new(mac);
	int rc;

	rc = ticketkeys_cb(ssl, name, iv, cctx, hctx, 1);
	EVP_MAC_CTX_free(hctx);
	EVP_MAC_free(mac);
	EVP_CIPHER_CTX_free(cctx);
	return rc;
}

int
main(void)
{
	const uint64_t period = 1000;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	SSL *ssl;
	uint64_t t0;

	CHECK(ctx != NULL);
	/* TLS 1.3 only, as the store seals no other. */
	CHECK(SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) == 1);
	ssl = SSL_new(ctx);
	CHECK(ssl != NULL);
	ticketkeys_configure(period);
	CHECK_INT_EQ(ticketkeys_count(), 0);

	t0 = mono_ms();
	CHECK_INT_EQ(seal(ssl), 1);
	CHECK_INT_EQ(ticketkeys_count(), 1);

	/* Within its two periods the key stays... */
	ticketkeys_expire(t0);
	CHECK_INT_EQ(ticketkeys_count(), 1);
	/* ...and past them it goes with no ticket sealed or opened. */
	ticketkeys_expire(mono_ms() + 2 * period);
	CHECK_INT_EQ(ticketkeys_count(), 0);

	/* A key made after the caller read its clock is not expired. */
	usleep(5000);
	CHECK_INT_EQ(seal(ssl), 1);
	ticketkeys_expire(t0);
	CHECK_INT_EQ(ticketkeys_count(), 1);

	ticketkeys_wipe();
	CHECK_INT_EQ(ticketkeys_count(), 0);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return check_report("ticketkeys");
}
