/* tlsout.c - a TLS connection's socket BIO, sending records in batches. */
#include "tlsout.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "bufpool.h"

/*
 * A block is the header below, then room for RECORDS records of up to
 * SLOT bytes each: the largest record of any suite moat allows (16 KiB
 * of text plus header, nonce, padding and tag) and its alignment gap.
 */
#define RECORDS 4
#define SLOT (16 * 1024 + 512)
#define HEAD 256		/* the header, in whole cache lines */
#define ROOM (RECORDS * SLOT)
#define BLOCK (HEAD + ROOM)
#define KEEP 8			/* freed blocks a thread keeps */
#define SEGS 16		/* runs of held bytes, between gaps */
/* Copies this long are placed on OpenSSL's alignment (shorter ones are
 * far below where the slow copy starts, and are packed). */
#define ALIGN_MIN 1024

struct held {
	size_t len;		/* bytes held, gaps not counted */
	int first;		/* the first run not yet sent */
	int nseg;
	struct {
		uint32_t off, len;
	} seg[SEGS];
};
_Static_assert(sizeof(struct held) <= HEAD, "header fits its lines");
_Static_assert(HEAD % BUFPOOL_ALIGN == 0, "the room starts on a line");

/*
 * The client's stream up to the header of its last ClientHello
 * (tlsout.h). A first record that is not a handshake record (an SSLv2
 * hello, garbage) ends the watch: OpenSSL judges it. After it, record
 * headers are followed through every record type (they are never
 * encrypted), and handshake headers through the handshake records. A header may come split over several records,
 * however small: it is gathered across them rather than a first record
 * of fewer than 4 bytes being refused, which the TLS spec allows.
 *
 * The first handshake message is the ClientHello. The second is one only
 * when the server answered the first with a HelloRetryRequest, and its
 * header may be read (read-ahead) before the server's first record is
 * written: its length is then kept until that record says which.
 */
struct watch {
	uint8_t rec[5];		/* the record header being read */
	uint8_t hs[4];		/* the handshake header being read */
	uint8_t nrec, nhs;
	uint8_t nmsg;		/* handshake headers read */
	uint8_t retry;		/* RETRY_*: what the server's first record is */
	uint8_t state;		/* WATCH_* */
	uint8_t begun;		/* a record header was read */
	uint16_t left;		/* body bytes left in the current record */
	uint32_t hsleft;	/* body bytes left in the handshake message */
	uint32_t second;	/* the second message's length, once read */
};
enum { RETRY_UNKNOWN, RETRY_NO, RETRY_YES };
enum { WATCH_ON, WATCH_DONE, WATCH_REFUSED };

struct out {
	int fd;
	int flags;		/* send()'s: MSG_MORE once a FIN follows */
	struct held *h;		/* NULL while nothing is held */
	struct watch w;
};

static _Thread_local struct bufpool pool;
static BIO_METHOD *method;
static int method_type;		/* BIO_method_type() of our BIOs */
static pthread_once_t method_once = PTHREAD_ONCE_INIT;

static uint8_t *
room(struct held *h)
{
	return (uint8_t *)h + HEAD;
}

/* The offset in the room past the last run. */
static size_t
end(const struct held *h)
{
	return h->nseg > 0 ? h->seg[h->nseg - 1].off +
	    (size_t)h->seg[h->nseg - 1].len : 0;
}

/* Where a copy of len bytes from src would start in h, or ROOM + 1 if it
 * does not fit. */
static size_t
place(struct held *h, const void *src, size_t len)
{
	size_t at = end(h);

	if (len >= ALIGN_MIN)
		at += ((uintptr_t)src - (uintptr_t)(room(h) + at)) %
		    BUFPOOL_ALIGN;
	if (at > ROOM || len > ROOM - at ||
	    (h->nseg == SEGS && at != end(h)))
		return ROOM + 1;
	return at;
}

static void
append(struct held *h, size_t at, const void *src, size_t len)
{
	memcpy(room(h) + at, src, len);
	if (h->nseg > h->first && at == end(h))
		h->seg[h->nseg - 1].len += (uint32_t)len;
	else {
		h->seg[h->nseg].off = (uint32_t)at;
		h->seg[h->nseg].len = (uint32_t)len;
		h->nseg++;
	}
	h->len += len;
}

/* Sends what o holds: 1 when all of it went, 0 when the socket is full,
 * -1 on an error (errno). */
static int
send_held(struct out *o)
{
	struct held *h = o->h;
	struct iovec iov[SEGS];
	struct msghdr m;
	ssize_t r;
	size_t done;
	int i, n;

	while (h->first < h->nseg) {
		for (i = h->first, n = 0; i < h->nseg; i++, n++) {
			iov[n].iov_base = room(h) + h->seg[i].off;
			iov[n].iov_len = h->seg[i].len;
		}
		memset(&m, 0, sizeof(m));
		m.msg_iov = iov;
		m.msg_iovlen = (size_t)n;
		if ((r = sendmsg(o->fd, &m, o->flags)) == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		done = (size_t)r;
		h->len -= done;
		while (done > 0) {
			if (done >= h->seg[h->first].len) {
				done -= h->seg[h->first].len;
				h->first++;
			} else {
				h->seg[h->first].off += (uint32_t)done;
				h->seg[h->first].len -= (uint32_t)done;
				done = 0;
			}
		}
	}
	h->first = 0;
	h->nseg = 0;
	return 1;
}

static struct held *
take(void)
{
	struct held *h;

	if (pool.size == 0)
		bufpool_init(&pool, BLOCK, KEEP);
	if ((h = bufpool_get(&pool)) != NULL)
		memset(h, 0, sizeof(*h));
	return h;
}

static void
give_back(struct out *o)
{
	if (o->h != NULL)
		bufpool_put(&pool, o->h);
	o->h = NULL;
}

/* Judges the second handshake message once both its length and the
 * server's first record are known. */
static void
judge_second(struct watch *w)
{
	if (w->nmsg < 2 || w->retry == RETRY_UNKNOWN)
		return;
	w->state = w->retry == RETRY_YES && w->second > TLSOUT_HELLO_MAX ?
	    WATCH_REFUSED : WATCH_DONE;
}

/* A handshake header: the first message's is judged at once. */
static void
watch_header(struct watch *w)
{
	uint32_t len = (uint32_t)w->hs[1] << 16 | (uint32_t)w->hs[2] << 8 |
	    w->hs[3];

	w->nhs = 0;
	w->hsleft = len;
	if (++w->nmsg == 1) {
		if (len > TLSOUT_HELLO_MAX)
			w->state = WATCH_REFUSED;
		else if (w->retry == RETRY_NO)
			w->state = WATCH_DONE;
	} else {
		w->second = len;
		judge_second(w);
	}
}

/* Follows n bytes read from the client (struct watch). */
static int
watch(struct watch *w, const uint8_t *p, size_t n)
{
	size_t take;

	while (n > 0 && w->state == WATCH_ON) {
		if (w->nrec < sizeof(w->rec)) {
			w->rec[w->nrec++] = *p++;
			n--;
			if (w->nrec == 1 && !w->begun && w->rec[0] != 22)
				w->state = WATCH_DONE; /* no handshake: OpenSSL's */
			else if (w->nrec == sizeof(w->rec)) {
				w->begun = 1;
				w->left = (uint16_t)(w->rec[3] << 8 | w->rec[4]);
				if (w->left == 0)
					w->nrec = 0;
			}
			continue;
		}
		take = n < w->left ? n : w->left;
		if (w->rec[0] != 22) {
			;		/* not handshake: skipped */
		} else if (w->hsleft > 0) {
			if (take > w->hsleft)
				take = w->hsleft;
			w->hsleft -= (uint32_t)take;
		} else {
			if (take > sizeof(w->hs) - w->nhs)
				take = sizeof(w->hs) - w->nhs;
			memcpy(w->hs + w->nhs, p, take);
			w->nhs += (uint8_t)take;
		}
		p += take;
		n -= take;
		w->left -= (uint16_t)take;
		if (w->left == 0)
			w->nrec = 0;
		if (w->nhs == sizeof(w->hs))
			watch_header(w);
	}
	return w->state;
}

/* The server's first record, before it goes out: whether it is a
 * HelloRetryRequest (a ServerHello with this random, RFC 8446 4.1.3). */
static void
watch_server(struct watch *w, const uint8_t *p, size_t n)
{
	static const uint8_t hrr[32] = {
		0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11,
		0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
		0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e,
		0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
	};

	w->retry = n >= 43 && p[0] == 22 && p[5] == 2 &&
	    memcmp(p + 11, hrr, sizeof(hrr)) == 0 ? RETRY_YES : RETRY_NO;
	if (w->nmsg >= 2)
		judge_second(w);
	else if (w->nmsg == 1 && w->retry == RETRY_NO)
		w->state = WATCH_DONE;
}

static int
out_write(BIO *b, const char *in, int inl)
{
	struct out *o = BIO_get_data(b);
	size_t len = (size_t)inl, at;
	ssize_t r;
	int rc;

	BIO_clear_retry_flags(b);
	if (inl <= 0)
		return 0;
	if (o->w.state == WATCH_ON && o->w.retry == RETRY_UNKNOWN)
		watch_server(&o->w, (const uint8_t *)in, len);
	if (o->h == NULL && len <= ROOM - (BUFPOOL_ALIGN - 1))
		o->h = take();
	if (o->h != NULL) {
		/* No room: what is held goes first, to keep the order. */
		if ((at = place(o->h, in, len)) > ROOM) {
			if ((rc = send_held(o)) <= 0) {
				if (rc == 0)
					BIO_set_retry_write(b);
				return -1;
			}
			at = place(o->h, in, len);
		}
		if (at <= ROOM) {
			append(o->h, at, in, len);
			return inl;
		}
	}
	/* Larger than a block (a long certificate chain), or no memory for
	 * one; nothing is held, so order is kept. */
	r = send(o->fd, in, len, o->flags);
	if (r == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			BIO_set_retry_write(b);
		return -1;
	}
	return (int)r;
}

/* What a socket BIO does, so that the connection needs no second BIO;
 * and the watch on the ClientHello's size. */
static int
out_read(BIO *b, char *buf, int len)
{
	struct out *o = BIO_get_data(b);
	ssize_t r;

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (o->w.state == WATCH_REFUSED) {
		errno = EMSGSIZE;
		return -1;
	}
	if ((r = recv(o->fd, buf, (size_t)len, 0)) > 0) {
		if (o->w.state == WATCH_ON &&
		    watch(&o->w, (const uint8_t *)buf, (size_t)r) ==
		    WATCH_REFUSED) {
			errno = EMSGSIZE;
			return -1;
		}
		return (int)r;
	}
	if (r == 0) {
		/* OpenSSL asks BIO_eof() to tell an end of stream from an
		 * error (SSL_OP_IGNORE_UNEXPECTED_EOF). */
		BIO_set_flags(b, BIO_FLAGS_IN_EOF);
		return 0;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		BIO_set_retry_read(b);
	return -1;
}

static long
out_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct out *o = BIO_get_data(b);
	int rc;

	(void)num;
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		BIO_clear_retry_flags(b);
		if (o->h == NULL)
			return 1;
		if ((rc = send_held(o)) == 1)
			give_back(o);
		else if (rc == 0)
			BIO_set_retry_write(b);
		return rc;
	case BIO_CTRL_WPENDING:
		return o->h != NULL ? (long)o->h->len : 0;
	case BIO_CTRL_EOF:
		return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
	case BIO_C_GET_FD:
		if (ptr != NULL)
			*(int *)ptr = o->fd;
		return o->fd;
	case BIO_CTRL_DUP:
		return 1;
	default:
		return 0;
	}
}

static int
out_destroy(BIO *b)
{
	struct out *o = BIO_get_data(b);

	if (o != NULL) {
		give_back(o);
		free(o);
	}
	BIO_set_data(b, NULL);
	BIO_set_init(b, 0);
	return 1;
}

static void
method_make(void)
{
	BIO_METHOD *m;
	int type = BIO_get_new_index();

	if (type == -1)
		return;
	type |= BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR;
	m = BIO_meth_new(type, "moat tlsout");
	if (m == NULL)
		return;
	if (!BIO_meth_set_write(m, out_write) ||
	    !BIO_meth_set_read(m, out_read) ||
	    !BIO_meth_set_ctrl(m, out_ctrl) ||
	    !BIO_meth_set_destroy(m, out_destroy)) {
		BIO_meth_free(m);
		return;
	}
	method_type = type;
	method = m;
}

BIO *
tlsout_new(int fd)
{
	struct out *o;
	BIO *b;

	if (pthread_once(&method_once, method_make) != 0 || method == NULL)
		return NULL;
	if ((o = malloc(sizeof(*o))) == NULL)
		return NULL;
	o->fd = fd;
	o->flags = MSG_NOSIGNAL;
	o->h = NULL;
	memset(&o->w, 0, sizeof(o->w));
	o->w.state = WATCH_ON;
	if ((b = BIO_new(method)) == NULL) {
		free(o);
		return NULL;
	}
	BIO_set_data(b, o);
	BIO_set_init(b, 1);
	return b;
}

/* b's struct out, or NULL when b is not one of ours. */
static struct out *
out_of(BIO *b)
{
	if (b == NULL || method == NULL || BIO_method_type(b) != method_type)
		return NULL;
	return BIO_get_data(b);
}

int
tlsout_hello_too_large(BIO *b)
{
	struct out *o = out_of(b);

	return o != NULL && o->w.state == WATCH_REFUSED;
}

void
tlsout_fin_follows(BIO *b)
{
	struct out *o = out_of(b);

	if (o != NULL)
		o->flags |= MSG_MORE;
}

size_t
tlsout_blocks(void)
{
	return pool.out;
}

void
tlsout_thread_end(void)
{
	bufpool_clear(&pool);
}
