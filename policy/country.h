/* country.h - ISO 3166-1 alpha-2 country codes, to catch typos in policy. */
#ifndef MOAT_COUNTRY_H
#define MOAT_COUNTRY_H

#include <stdbool.h>

/* True for an assigned upper-case code ("DE"), false for "UK" or "de". */
bool country_code_valid(const char *code);

#endif
