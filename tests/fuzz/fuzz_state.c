/* fuzz_state.c - libFuzzer target: the ban state-file reader. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "state.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
on_ban(void *arg, const struct state_ban *b)
{
	(void)arg, (void)b;
}

static void
on_report(void *arg, const char *line)
{
	(void)arg;
	if (strlen(line) > 4096)
		__builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	(void)state_parse("fuzz.state", (const char *)data, size, on_ban,
	    on_report, NULL);
	return 0;
}
