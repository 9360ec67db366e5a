/* test_tlsalloc.c - OpenSSL's record-sized blocks aligned and reused. */
#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>

#include "check.h"
#include "tlsalloc.h"

int
main(void)
{
	void *a, *b, *c, *small;

	/* Before OpenSSL's first allocation, as main() does. */
	CHECK(tlsalloc_init());

	/* A record buffer's size: on a cache line, fully writable. */
	a = CRYPTO_malloc(16 * 1024 + 325, __FILE__, __LINE__);
	CHECK(a != NULL && (uintptr_t)a % 64 == 0);
	if (a != NULL)
		memset(a, 'a', 16 * 1024 + 325);
	b = CRYPTO_zalloc(18 * 1024, __FILE__, __LINE__);
	CHECK(b != NULL && (uintptr_t)b % 64 == 0 && b != a);
	CHECK(b != NULL && ((unsigned char *)b)[18 * 1024 - 1] == 0);

	/* Freed ones come back for the next request of that range, zeroed
	 * when asked. */
	CRYPTO_free(a, __FILE__, __LINE__);
	c = CRYPTO_zalloc(17 * 1024, __FILE__, __LINE__);
	CHECK(c == a);
	CHECK(c != NULL && ((unsigned char *)c)[0] == 0);

	/* Other sizes are plain malloc, and grow like it. */
	small = CRYPTO_malloc(100, __FILE__, __LINE__);
	CHECK(small != NULL);
	small = CRYPTO_realloc(small, 64 * 1024, __FILE__, __LINE__);
	CHECK(small != NULL);
	CRYPTO_free(small, __FILE__, __LINE__);

	CRYPTO_free(b, __FILE__, __LINE__);
	CRYPTO_free(c, __FILE__, __LINE__);
	tlsalloc_thread_end();	/* the leak check sees any block kept */
	return check_report("tlsalloc");
}
