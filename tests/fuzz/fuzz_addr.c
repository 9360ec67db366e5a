/* fuzz_addr.c - libFuzzer target: address, CIDR and duration parsing. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "duration.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char s[256], out[CIDR_STRLEN], back[ADDR_PORT_STRLEN];
	struct addr_port ap;
	struct cidr c, c2;
	const char *why;
	uint64_t ms;

	if (size >= sizeof(s))
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (cidr_parse(s, &c, &why) == 0) {
		/* What we print must parse back to the same prefix. */
		cidr_str(&c, out, sizeof(out));
		if (cidr_parse(out, &c2, &why) != 0 || c.plen != c2.plen ||
		    memcmp(c.addr, c2.addr, 16) != 0)
			abort();
	}
	if (addr_port_parse(s, &ap, &why) == 0)
		addr_port_str(&ap, back, sizeof(back));
	if (duration_parse(s, &ms, &why) == 0)
		duration_str(ms, out, sizeof(out));
	return 0;
}
