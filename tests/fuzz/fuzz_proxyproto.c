/* fuzz_proxyproto.c - libFuzzer target: the PROXY v1/v2 header parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxyproto_hdr h;
	const char *why = NULL;
	size_t hlen = 0, i;
	enum proxyproto_rc rc;

	rc = proxyproto_parse(data, size, &h, &hlen, &why);
	if (rc == PROXYPROTO_OK && (hlen == 0 || hlen > size))
		abort();
	/* The parser is re-run on growing prefixes by the session; every
	 * prefix of an accepted header must be a valid prefix too. */
	if (rc == PROXYPROTO_OK)
		for (i = 0; i < hlen; i++)
			if (proxyproto_parse(data, i, &h, &size, &why) !=
			    PROXYPROTO_AGAIN)
				abort();
	return 0;
}
