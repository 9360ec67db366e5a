/* backend.c - reaching the plaintext backend: connect, PROXY, XCLIENT. */
#include "backend.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int
backend_connect(const struct addr_port *ap)
{
	int fd, saved, on = 1;

	fd = socket(ap->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	/* Replies are small and interactive; do not let Nagle hold them. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	if (connect(fd, (const struct sockaddr *)&ap->ss, ap->len) == -1 &&
	    errno != EINPROGRESS) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

int
backend_connect_result(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		return errno;
	return err;
}

int
backend_proxy_header(uint8_t *buf, size_t cap, enum cfg_backend_proxy mode,
    const struct sockaddr *client, const struct sockaddr *local,
    const struct proxyproto_tls *tls)
{
	switch (mode) {
	case CFG_BPROXY_V1:
		return proxyproto_write_v1((char *)buf, cap, client, local);
	case CFG_BPROXY_V2:
		return proxyproto_write_v2(buf, cap, client, local, tls);
	case CFG_BPROXY_NONE:
	case CFG_BPROXY_XCLIENT:
		break;
	}
	return 0;
}

enum backend_reply_rc
backend_reply_parse(const uint8_t *p, size_t len, size_t *replylen,
    int *code)
{
	size_t off = 0, n = len < BACKEND_REPLY_MAX ? len : BACKEND_REPLY_MAX;
	int first = -1;

	while (off < n) {
		const uint8_t *lf = memchr(p + off, '\n', n - off);
		size_t ll;
		int c;

		if (lf == NULL)
			break;
		ll = (size_t)(lf - (p + off)) + 1;
		/* "DDD" then ' ', '-' or the line end. */
		if (ll < 5 || p[off] < '2' || p[off] > '5' ||
		    p[off + 1] < '0' || p[off + 1] > '9' ||
		    p[off + 2] < '0' || p[off + 2] > '9')
			return BACKEND_REPLY_ERROR;
		c = (p[off] - '0') * 100 + (p[off + 1] - '0') * 10 +
		    (p[off + 2] - '0');
		if (first == -1)
			first = c;
		else if (c != first)
			return BACKEND_REPLY_ERROR;
		if (p[off + 3] == ' ' || p[off + 3] == '\r') {
			*code = c;
			*replylen = off + ll;
			return BACKEND_REPLY_OK;
		}
		if (p[off + 3] != '-')
			return BACKEND_REPLY_ERROR;
		off += ll;
	}
	if (len >= BACKEND_REPLY_MAX)
		return BACKEND_REPLY_ERROR;
	return BACKEND_REPLY_AGAIN;
}

int
backend_ehlo_cmd(char *buf, size_t cap)
{
	char host[256];
	size_t i;
	int n;

	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	/* Keep the name a plain domain whatever the system calls itself. */
	for (i = 0; host[i] != '\0'; i++)
		if (!((host[i] >= 'a' && host[i] <= 'z') ||
		    (host[i] >= 'A' && host[i] <= 'Z') ||
		    (host[i] >= '0' && host[i] <= '9') ||
		    host[i] == '.' || host[i] == '-'))
			host[i] = '-';
	n = snprintf(buf, cap, "EHLO %s\r\n", host);
	return n < 0 || (size_t)n >= cap ? -1 : n;
}

int
backend_xclient_cmd(char *buf, size_t cap, const struct sockaddr *client)
{
	char ip[INET6_ADDRSTRLEN];
	const char *prefix = "";
	unsigned port;
	int n;

	if (client->sa_family == AF_INET) {
		const struct sockaddr_in *sin =
		    (const struct sockaddr_in *)client;

		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		port = ntohs(sin->sin_port);
	} else if (client->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 =
		    (const struct sockaddr_in6 *)client;

		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], ip,
			    sizeof(ip));
		} else {
			inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
			prefix = "IPV6:";
		}
		port = ntohs(sin6->sin6_port);
	} else {
		return -1;
	}
	n = snprintf(buf, cap, "XCLIENT NAME=[UNAVAILABLE] ADDR=%s%s "
	    "PORT=%u\r\n", prefix, ip, port);
	return n < 0 || (size_t)n >= cap ? -1 : n;
}
