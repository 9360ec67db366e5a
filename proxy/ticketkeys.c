/* ticketkeys.c - TLS session ticket keys: random, in memory, rotating. */
#include "ticketkeys.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "mono.h"

struct tkey {
	unsigned char name[16];
	unsigned char aes[32];	/* AES-256-CBC */
	unsigned char hmac[32];	/* HMAC-SHA256 */
	uint64_t born_ms;	/* monotonic */
};

static struct {
	pthread_mutex_t mu;
	uint64_t period_ms;
	struct tkey k[2];	/* [0] encrypts; [1] the previous one */
	int n;			/* keys in k */
} store = { .mu = PTHREAD_MUTEX_INITIALIZER, .period_ms = 3600 * 1000 };

static void
wipe_at_exit(void)
{
	(void)atexit(ticketkeys_wipe);
}

void
ticketkeys_configure(uint64_t rotation_ms)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	(void)pthread_once(&once, wipe_at_exit);
	pthread_mutex_lock(&store.mu);
	if (rotation_ms > 0)
		store.period_ms = rotation_ms;
	pthread_mutex_unlock(&store.mu);
}

void
ticketkeys_wipe(void)
{
	pthread_mutex_lock(&store.mu);
	OPENSSL_cleanse(store.k, sizeof(store.k));
	store.n = 0;
	pthread_mutex_unlock(&store.mu);
}

/* Drops keys past their two periods; called with the lock held. A key
 * made after now was read (by another thread) is not past them. */
static void
expire(uint64_t now)
{
	while (store.n > 0 && now >= store.k[store.n - 1].born_ms &&
	    now - store.k[store.n - 1].born_ms >= 2 * store.period_ms) {
		store.n--;
		OPENSSL_cleanse(&store.k[store.n], sizeof(store.k[0]));
	}
}

void
ticketkeys_expire(uint64_t now_ms)
{
	pthread_mutex_lock(&store.mu);
	expire(now_ms);
	pthread_mutex_unlock(&store.mu);
}

int
ticketkeys_count(void)
{
	int n;

	pthread_mutex_lock(&store.mu);
	n = store.n;
	pthread_mutex_unlock(&store.mu);
	return n;
}

/* The key for a new ticket, made or rotated as due; lock held. */
static bool
current(uint64_t now, struct tkey *out)
{
	struct tkey k;

	if (store.n == 0 || now - store.k[0].born_ms >= store.period_ms) {
		if (RAND_bytes(k.name, sizeof(k.name)) != 1 ||
		    RAND_bytes(k.aes, sizeof(k.aes)) != 1 ||
		    RAND_bytes(k.hmac, sizeof(k.hmac)) != 1) {
			OPENSSL_cleanse(&k, sizeof(k));
			return false;
		}
		k.born_ms = now;
		OPENSSL_cleanse(&store.k[1], sizeof(store.k[1]));
		if (store.n > 0)
			store.k[1] = store.k[0];
		store.k[0] = k;
		store.n = store.n > 0 ? 2 : 1;
		OPENSSL_cleanse(&k, sizeof(k));
		expire(now);
	}
	*out = store.k[0];
	return true;
}

/* The key named name, if still valid; *renew when it is the previous
 * one. Lock held. */
static bool
lookup(uint64_t now, const unsigned char name[16], struct tkey *out,
    bool *renew)
{
	int i;

	expire(now);
	for (i = 0; i < store.n; i++)
		if (CRYPTO_memcmp(store.k[i].name, name, 16) == 0) {
			*out = store.k[i];
			*renew = i > 0;
			return true;
		}
	return false;
}

static int
mac_init(EVP_MAC_CTX *hctx, unsigned char *key)
{
	static char digest[] = "SHA256";
	OSSL_PARAM p[3];

	p[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32);
	p[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest,
	    0);
	p[2] = OSSL_PARAM_construct_end();
	return EVP_MAC_CTX_set_params(hctx, p);
}

int
ticketkeys_cb(SSL *ssl, unsigned char name[16], unsigned char *iv,
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	const EVP_CIPHER *aes = EVP_aes_256_cbc();
	uint64_t now = mono_ms();
	struct tkey k;
	bool found, renew = false;
	int rc = -1;

	if (enc && SSL_version(ssl) < TLS1_3_VERSION)
		return 0;	/* see ticketkeys.h: TLS 1.3 only */
	pthread_mutex_lock(&store.mu);
	found = enc ? current(now, &k) : lookup(now, name, &k, &renew);
	pthread_mutex_unlock(&store.mu);
	if (!found)
		return enc ? -1 : 0;
	if (enc) {
		memcpy(name, k.name, sizeof(k.name));
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(aes)) == 1 &&
		    EVP_EncryptInit_ex(cctx, aes, NULL, k.aes, iv) == 1 &&
		    mac_init(hctx, k.hmac) == 1)
			rc = 1;
	} else if (mac_init(hctx, k.hmac) == 1 &&
	    EVP_DecryptInit_ex(cctx, aes, NULL, k.aes, iv) == 1) {
		rc = renew ? 2 : 1;
	}
	OPENSSL_cleanse(&k, sizeof(k));
	return rc;
}
