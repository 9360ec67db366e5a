/* tlsout.h - a TLS connection's socket BIO, sending records in batches. */
#ifndef MOAT_TLSOUT_H
#define MOAT_TLSOUT_H

#include <stddef.h>

#include <openssl/bio.h>

/*
 * OpenSSL hands its write BIO one record at a time, and a socket BIO
 * makes each one a system call: relaying backend to client, one 16 KiB
 * write per 16 KiB record. On loopback the kernel then spends about 15 %
 * less CPU per byte when the same records go out four to a call, so this
 * BIO gathers records and sends them with one sendmsg() when it has four
 * (when the next would not fit) or when told to flush.
 *
 * The caller flushes: BIO_flush() whenever it has nothing more to write
 * for now. It returns 1 once everything is in the kernel; 0 with
 * BIO_should_retry() true when the socket is full (wait until it is
 * writable and flush again); -1 on a socket error, errno saying which.
 * BIO_wpending() says how many bytes are held. OpenSSL flushes on its
 * own after a handshake flight and after an alert, but ignores the result
 * of that flush after an alert (close_notify included): whoever closes
 * the socket after SSL_shutdown() must flush until nothing is held.
 *
 * Held bytes live in a block from a per-thread pool, taken when the
 * first record arrives and given back when a flush empties it, so an idle
 * connection holds none. A write finds the block full only when the
 * socket cannot take the held records either; it then fails with
 * BIO_should_retry() and OpenSSL offers the record again later, as with a
 * socket BIO. Records are placed in the block at the same offset from a
 * 64-byte boundary as OpenSSL's copy (why: buf.c), which leaves gaps of
 * under 64 bytes between them that sendmsg() skips.
 *
 * It reads as a socket BIO does (BIO_eof() true after end of stream), so
 * one BIO serves both directions: a second BIO per connection would cost
 * about 260 bytes (figure 3 of the benchmarks).
 *
 * Reading, it also watches the client's ClientHello go by (and the
 * second one, when moat's first record is a HelloRetryRequest): OpenSSL
 * 3.0 takes the length its header declares, up to 128 KiB, allocates and
 * zeroes that much at once and then waits for the rest until the
 * handshake timeout, so 35 bytes could pin 170 KB. A declared length
 * over TLSOUT_HELLO_MAX fails the read (errno EMSGSIZE, no retry) that
 * would give OpenSSL the bytes holding the header, and every read after
 * it; tlsout_hello_too_large() then says so. (A second ClientHello sent
 * ahead of the HelloRetryRequest may already sit in OpenSSL's read-ahead
 * buffer; it is judged when that request is written, and the next read
 * fails at once.) The watch ends there, or at a first record that is not
 * a handshake record (OpenSSL refuses those itself).
 *
 * The BIO does not own fd. Free it with the SSL (SSL_set_bio() hands it
 * over), on the thread that used it.
 */
BIO *tlsout_new(int fd);

/* The largest ClientHello moat takes. Real ones, post-quantum key shares
 * included, stay under about 4 KiB. */
#define TLSOUT_HELLO_MAX (16 * 1024)

/* Whether b (a BIO of any kind) refused a ClientHello over
 * TLSOUT_HELLO_MAX. */
int tlsout_hello_too_large(BIO *b);

/*
 * Says that the caller ends its side of the stream (shutdown() or
 * close()) as soon as what b holds and what it is given from now on is
 * sent: the close_notify, and the records just before it. They then go
 * with MSG_MORE, so that the kernel holds the last of them back and the
 * FIN rides with it, one segment where there were two; on loopback each
 * segment costs the sender its transmission and the receiver's kernel
 * work, about 2 % of a handshake's CPU (tests/bench/ab.sh). The caller
 * must not wait for anything but a writable socket in between: the
 * kernel holds the last bytes until the FIN comes, a segment fills, or
 * about 200 ms have passed.
 */
void tlsout_fin_follows(BIO *b);

/* Blocks the calling thread's BIOs hold now: records waiting for a
 * flush (zero once every BIO of the thread has been flushed empty). */
size_t tlsout_blocks(void);

/* Frees the blocks the calling thread's pool keeps (its loop is ending). */
void tlsout_thread_end(void);

#endif
