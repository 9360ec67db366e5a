/* fuzz_config.c - libFuzzer target: the config loader over any bytes. */
/*
 * Covers what the TOML fuzzer cannot: the loader's key walk, value
 * checks and messages on any tree the parser accepts. Paths in the input
 * are resolved against a directory that does not exist, so no file is
 * ever read or written. Run as fuzz_toml is (see its header).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
ignore(void *arg, enum config_severity sev, const char *line)
{
	(void)arg, (void)sev;
	/* Every line must be a proper C string: touch all of it. */
	if (strlen(line) > 4096)
		__builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg;

	cfg = config_load_buf("fuzz.toml", "/nonexistent-moat-fuzz",
	    (const char *)data, size, ignore, NULL);
	config_free(cfg);
	return 0;
}
