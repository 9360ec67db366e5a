/* listener.h - listening sockets that hand accepted connections over. */
#ifndef MOAT_LISTENER_H
#define MOAT_LISTENER_H

#include <stddef.h>
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
 * Binds ap for n event loops and listens: n == 1 is one plain socket
 * (SO_REUSEADDR; IPV6_V6ONLY for IPv6); n > 1 is a SO_REUSEPORT group of
 * n sockets, over which the kernel spreads new connections, made only
 * after a probe bind without SO_REUSEPORT succeeded, so that an address
 * somebody else listens on (a second moat too) fails as it does for one
 * socket. Fills fds[0..n-1]. Returns 0, or -1 with errno set
 * (EADDRINUSE, ...) for the caller to say; then no descriptor is left
 * open.
 */
int listener_bind(const struct addr_port *ap, int *fds, size_t n);
/* What an operator does about a bind error err, as " (...)" to follow
 * strerror(err); "" when strerror says enough. */
const char *listener_hint(int err);
/*
 * Starts accepting on fd (from listener_bind, taken over in every case)
 * on loop; call it on the thread that runs loop. NULL when out of memory.
 */
struct listener *listener_start(struct ev_loop *loop,
    const struct addr_port *ap, int fd, listener_accept_fn *fn, void *arg);
/* Stops accepting and closes the socket; established sessions stay.
 * Call it on the thread that runs the listener's loop. */
void listener_close(struct listener *l);

/* The [[listener]] this socket serves; replaced on reload. */
void listener_set_config(struct listener *l, const struct cfg_listener *lc);
const struct cfg_listener *listener_config(const struct listener *l);
const struct addr_port *listener_addr(const struct listener *l);

#endif
