/* sni.c - the name a TLS client asks for (RFC 6066 server_name). */
#include "sni.h"

#include <string.h>
#include <strings.h>

#define SNI_HOST_NAME 0		/* NameType host_name */

bool
sni_host_name(const unsigned char *p, size_t len, char *name, size_t size)
{
	size_t list, n;

	/* ServerNameList: a 2-byte length that must cover the rest. */
	if (len < 2 || (list = (size_t)p[0] << 8 | p[1]) != len - 2)
		return false;
	p += 2;
	/* ServerName: a type byte, then a 2-byte length and the name. */
	while (list >= 3) {
		n = (size_t)p[1] << 8 | p[2];
		if (n > list - 3)
			return false;
		if (p[0] == SNI_HOST_NAME) {
			if (n == 0 || n >= size || memchr(p + 3, 0, n) != NULL)
				return false;
			memcpy(name, p + 3, n);
			name[n] = '\0';
			return true;
		}
		p += 3 + n;
		list -= 3 + n;
	}
	return false;
}

bool
sni_name_matches(const char *pattern, const char *name)
{
	const char *dot;

	if (strcasecmp(pattern, name) == 0)
		return true;
	if (pattern[0] != '*' || pattern[1] != '.')
		return false;
	dot = strchr(name, '.');
	if (dot == NULL || dot == name)
		return false;
	return strcasecmp(pattern + 1, dot) == 0;
}
