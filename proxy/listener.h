/* listener.h - listening sockets that hand accepted connections over. */
#ifndef MOAT_LISTENER_H
#define MOAT_LISTENER_H

#include <sys/socket.h>

#include "addr.h"
#include "config.h"

struct ev_loop;
struct listener;

/*
 * Called for each accepted connection; fd is non-blocking and close-on-
 * exec, and belongs to the callee from then on.
 */
typedef void listener_accept_fn(void *arg, struct listener *l, int fd,
    const struct sockaddr *peer, socklen_t peerlen);

/*
 * Binds ap (SO_REUSEADDR; IPV6_V6ONLY for IPv6) and starts accepting on
 * loop. Returns NULL with errno set (and a log line) on failure.
 */
struct listener *listener_open(struct ev_loop *loop,
    const struct addr_port *ap, listener_accept_fn *fn, void *arg);
/* Stops accepting and closes the socket; established sessions stay. */
void listener_close(struct listener *l);

/* The [[listener]] this socket serves; replaced on reload. */
void listener_set_config(struct listener *l, const struct cfg_listener *lc);
const struct cfg_listener *listener_config(const struct listener *l);
const struct addr_port *listener_addr(const struct listener *l);

#endif
