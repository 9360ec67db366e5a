/* syslogsink.h - a syslog client that drops a message rather than wait. */
#ifndef MOAT_SYSLOGSINK_H
#define MOAT_SYSLOGSINK_H

#include <stddef.h>

/* The local syslog daemon's socket (journald's or rsyslog's). */
#define SYSLOG_SINK_DEVLOG "/dev/log"

struct syslog_sink;

/*
 * A client of the AF_UNIX socket at path. Every message goes in the
 * traditional BSD format, "<pri>Mmm dd hh:mm:ss ident[pid]: message"
 * (local time, the pid of the caller of open), which journald, rsyslog
 * and syslog-ng all parse: one datagram each, or on a stream socket (as
 * syslog-ng may bind) each ended by a NUL, as syslog(3) sends them. The
 * socket is connected here if it can be; a syslog daemon that is not
 * there yet is not an error, it is tried again when a message is sent.
 * Returns NULL only when out of memory; syslog_sink_close() frees it.
 *
 * Not thread-safe: the caller serialises open, send and close.
 */
struct syslog_sink *syslog_sink_open(const char *path, const char *ident,
    int pri);

/*
 * Sends msg (len bytes, no trailing newline) without ever waiting.
 * Returns 0 when the message was taken (on a stream, what the daemon could
 * not take yet of it is kept and sent first next time), -1 when it was
 * dropped, with errno saying why: EAGAIN (or ENOBUFS) when the reader
 * lags and its queue is full, or the reason the socket cannot be reached
 * (ENOENT, ECONNREFUSED, ...). A socket that went away (the daemon
 * restarted) is connected again and the message sent once more, but a
 * connect is tried at most once a second, so a machine without a syslog
 * daemon does not pay one per message.
 */
int syslog_sink_send(struct syslog_sink *sink, const char *msg, size_t len);

/* Closes the socket and frees sink; NULL is a no-op. */
void syslog_sink_close(struct syslog_sink *sink);

#endif
