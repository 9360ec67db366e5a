/* test_sni.c - unit tests for the server_name reader and name matching. */
#include <string.h>

#include "check.h"
#include "sni.h"

/* Reads ext (len bytes) into a 256-byte name; "" when there is none. */
static const char *
host(const char *ext, size_t len)
{
	static char name[256];

	if (!sni_host_name((const unsigned char *)ext, len, name,
	    sizeof(name)))
		return "";
	return name;
}

static void
test_host_name(void)
{
	char big[2 + 3 + 300], at[2 + 3 + 255];
	size_t i;

	/* One host_name, as every client sends it. */
	CHECK_STR_EQ(host("\0\x0e\0\0\x0bmail.a.test", 16), "mail.a.test");
	/* Another name type first: skipped. */
	CHECK_STR_EQ(host("\0\x0c\x01\0\x01x\0\0\x05" "a.bcd", 14), "a.bcd");
	/* The list length must cover the rest exactly. */
	CHECK_STR_EQ(host("\0\x0f\0\0\x0bmail.a.test", 16), "");
	CHECK_STR_EQ(host("\0\x0d\0\0\x0bmail.a.test", 16), "");
	/* A name running past its list, an empty one, a NUL in one. */
	CHECK_STR_EQ(host("\0\x05\0\0\x03" "ab", 7), "");
	CHECK_STR_EQ(host("\0\x03\0\0\0", 5), "");
	CHECK_STR_EQ(host("\0\x06\0\0\x03" "a\0b", 8), "");
	/* No host_name at all, an empty list, nothing, a short header. */
	CHECK_STR_EQ(host("\0\x04\x01\0\x01x", 6), "");
	CHECK_STR_EQ(host("\0\0", 2), "");
	CHECK_STR_EQ(host("", 0), "");
	CHECK_STR_EQ(host("\0", 1), "");
	CHECK_STR_EQ(host("\0\x02\0\0", 4), "");
	/* A name that does not fit the buffer is no name; 255 fits. */
	memset(big, 'a', sizeof(big));
	big[0] = 0x01, big[1] = 0x2f, big[2] = 0, big[3] = 0x01, big[4] = 0x2c;
	CHECK_STR_EQ(host(big, sizeof(big)), "");
	memset(at, 'b', sizeof(at));
	at[0] = 0x01, at[1] = 0x02, at[2] = 0, at[3] = 0, at[4] = (char)0xff;
	CHECK_INT_EQ(strlen(host(at, sizeof(at))), 255);
	/* Every truncation of a good extension is refused, never over-read
	 * (ASan watches). */
	for (i = 0; i < 16; i++)
		CHECK_STR_EQ(host("\0\x0e\0\0\x0bmail.a.test", i), "");
}

static void
test_matches(void)
{
	CHECK(sni_name_matches("mail.example.org", "mail.example.org"));
	CHECK(sni_name_matches("mail.example.org", "MAIL.Example.ORG"));
	CHECK(!sni_name_matches("mail.example.org", "mail.example.org."));
	CHECK(sni_name_matches("*.example.org", "a.example.org"));
	CHECK(sni_name_matches("*.example.org", "A.EXAMPLE.org"));
	/* One label only, and a non-empty one. */
	CHECK(!sni_name_matches("*.example.org", "a.b.example.org"));
	CHECK(!sni_name_matches("*.example.org", ".example.org"));
	CHECK(!sni_name_matches("*.example.org", "example.org"));
	CHECK(!sni_name_matches("*.example.org", "aexample.org"));
	CHECK(!sni_name_matches("a*.example.org", "ab.example.org"));
}

int
main(void)
{
	test_host_name();
	test_matches();
	return check_report("sni");
}
