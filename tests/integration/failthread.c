/*
 * failthread.c - an LD_PRELOAD shim for test_workers: the Nth
 * pthread_create() of the process (MOAT_TEST_FAIL_THREAD=N) waits
 * MOAT_TEST_FAIL_DELAY_MS, so that clients reach the threads already
 * running, and then fails with EAGAIN, as under a full task limit
 * (root is exempt from RLIMIT_NPROC, so a limit cannot stand in).
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int create_fn(pthread_t *, const pthread_attr_t *,
    void *(*)(void *), void *);

static atomic_int calls;

int
pthread_create(pthread_t *t, const pthread_attr_t *attr,
    void *(*start)(void *), void *arg)
{
	void *sym = dlsym(RTLD_NEXT, "pthread_create");
	create_fn *real;
	const char *n = getenv("MOAT_TEST_FAIL_THREAD");
	const char *d = getenv("MOAT_TEST_FAIL_DELAY_MS");

	if (n != NULL && atomic_fetch_add(&calls, 1) + 1 == atoi(n)) {
		long ms = d != NULL ? atol(d) : 0;
		struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

		while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
			;
		return EAGAIN;
	}
	/* POSIX guarantees that dlsym()'s result converts; ISO C does not
	 * say so, hence the copy rather than a cast. */
	memcpy(&real, &sym, sizeof(real));
	return real(t, attr, start, arg);
}
