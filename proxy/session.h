/* session.h - one proxied connection, from accept to close. */
#ifndef MOAT_SESSION_H
#define MOAT_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>

#include "config.h"

struct gen;
struct session;
struct slots;

/*
 * The sessions of one event loop. The owner embeds it; on_empty (may be
 * NULL) runs whenever the last session is freed, which is how a draining
 * server learns it may exit.
 */
struct session_list {
	struct session *head;
	size_t n;
	/* What new sessions start under: a reference of the owner's, which
	 * a reload replaces. A TLS handshake that starts later, a STARTTLS
	 * in a session accepted before, takes its TLS contexts too. */
	struct gen *gen;
	struct slots *slots;	/* the global cap (slots.h); NULL: none */
	void (*on_empty)(void *arg);
	void *arg;
	/* Sessions whose relay paused to let the others run, resumed once
	 * per loop iteration by kick (session.c's; zeroed by the owner). */
	struct session **kicked;
	size_t nkicked, kicked_cap;
	bool kick_ready;
	ev_idle kick;
};

/*
 * Starts a session for fd (accepted on listener lc of list->gen, which
 * the session references until it ends). Takes ownership of fd in
 * every case: on failure it is closed. With list->slots set, the session
 * first takes a slot for its TCP peer's address and gives it back when
 * freed; without one it is refused at once (a 421 / -ERR line on
 * plaintext and STARTTLS listeners, a bare close on implicit TLS, where
 * a refusal would cost a handshake). Without accept_proxy the cap and
 * policy decide from peer before anything is allocated, and a banned
 * address (or a full cap on implicit TLS) is closed right there, with
 * its event but no session. The session frees itself when it ends;
 * nothing outside holds a pointer to it except list.
 */
void session_start(struct ev_loop *loop, struct session_list *list,
    const struct cfg_listener *lc, int fd,
    const struct sockaddr *peer, socklen_t peerlen);

/* Ends every session of list now (drain deadline, shutdown), a client
 * between replies after a last 421 / -ERR line (and close_notify on
 * TLS) written once, without waiting; then writes the calling thread's
 * pending refusal summaries (refusals.h) and frees the relay buffers its
 * pool keeps (buf.h). Must not be called from a session's own callback;
 * call it on list's thread. */
void session_list_close_all(struct session_list *list, const char *reason);

/* Ends now the admitted sessions of list whose client is addr (a new
 * ban), without a reply, as the kernel set would; returns how many.
 * Not from a session's own callback; on list's thread. */
size_t session_list_close_addr(struct session_list *list,
    const uint8_t addr[16], const char *reason);

#endif
