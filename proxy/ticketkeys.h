/* ticketkeys.h - TLS session ticket keys: random, in memory, rotating. */
#ifndef MOAT_TICKETKEYS_H
#define MOAT_TICKETKEYS_H

#include <stdint.h>

#include <openssl/ssl.h>

/*
 * One key store per process, shared by every SSL_CTX and every worker
 * thread (a mutex guards it) and untouched by reloads, so tickets stay
 * valid across SIGHUP. Keys are made with RAND_bytes when first needed and
 * never leave memory. Every rotation period a new key starts encrypting
 * new tickets; the previous one still decrypts (and its tickets are
 * renewed under the new key); a key older than two periods is no longer
 * accepted, and is wiped by the next ticket the store seals or opens or
 * by ticketkeys_expire(), which the main loop calls every HEAP_TICK
 * (10 s): a quiet moat keeps no key more than that past its two periods.
 *
 * Tickets are issued for TLS 1.3 only, where OpenSSL resumes with a fresh
 * (EC)DHE exchange (psk_dhe_ke): a leaked key then decrypts no recorded
 * traffic. A TLS 1.2 ticket would carry the master secret itself.
 */

/* Sets the rotation period (at start, and by each reload that takes
 * effect: never by one that fails); keys already made stay and follow
 * the new period from now on. The first call also has the keys wiped at
 * exit. */
void ticketkeys_configure(uint64_t rotation_ms);

/* For SSL_CTX_set_tlsext_ticket_key_evp_cb(): returns 1 (ticket
 * sealed or opened), 2 (opened with the previous key: renew it), 0 (no
 * ticket issued, or ticket unknown or expired: full handshake) or -1. */
int ticketkeys_cb(SSL *ssl, unsigned char name[16], unsigned char *iv,
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc);

/* Wipes the keys older than two periods as of now_ms (mono_ms()). */
void ticketkeys_expire(uint64_t now_ms);

/* How many keys are in memory (tests). */
int ticketkeys_count(void);

/* Wipes every key (shutdown; tests). */
void ticketkeys_wipe(void);

#endif
