/* test_geo.c - unit tests for geo/geo.c against real MaxMind databases. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "check.h"
#include "geo.h"

/*
 * Usage: test_geo [OWN.mmdb [OWN-ASN.mmdb [OWN-V4.mmdb]]]
 *
 * The databases of ../shared/testdata come from $MOAT_SHARED (set by
 * meson's test environment); OWN.mmdb is the project's database built at
 * test time by tests/geo/make-test-mmdb.pl, OWN-V4.mmdb the same data in
 * an IPv4-only database (--ip-version 4). Without $MOAT_SHARED the test
 * is skipped (exit 77), unless CI=true, where that is a failure.
 */

static bool ci;

/* geo_summary() at now, after its "PATH: " (checked here). */
static const char *
summary(const struct geo *g, int64_t now)
{
	static char sum[1024];
	size_t n = strlen(geo_path(g));

	geo_summary(g, now, sum, sizeof(sum));
	if (strncmp(sum, geo_path(g), n) != 0 || strncmp(sum + n, ": ", 2))
		return sum;		/* compared whole: the check fails */
	return sum + n + 2;
}

static void
to16(const char *s, uint8_t a[16])
{
	struct cidr c;
	const char *why;

	if (cidr_parse(s, &c, &why) == -1 || c.plen != 128) {
		fprintf(stderr, "bad address in test data: %s\n", s);
		exit(1);
	}
	memcpy(a, c.addr, 16);
}

/* Checks one expectation: found, country, continent ("-" = absent). */
static void
expect(struct geo *g, const char *ip, bool found, const char *cc,
    const char *cont, const char *where)
{
	char country[3], continent[3];
	uint8_t a[16];
	int rc;

	to16(ip, a);
	rc = geo_lookup(g, a, country, continent);
	if (strcmp(cc, "-") == 0)
		cc = "";
	if (strcmp(cont, "-") == 0)
		cont = "";
	if (rc != (found ? 1 : 0) || strcmp(country, cc) != 0 ||
	    strcmp(continent, cont) != 0) {
		fprintf(stderr, "%s: %s: got rc=%d country='%s' continent="
		    "'%s', want found=%d country='%s' continent='%s'\n",
		    where, ip, rc, country, continent, found, cc, cont);
		CHECK(false);
	} else
		CHECK(true);
}

/* Every row of an expected-country.tsv: ip, found, country, continent,
 * registered_country, netmask; '#' lines are comments. */
static int
check_tsv(const char *mmdb, const char *tsv)
{
	char line[512], *f[6], *save;
	unsigned long lineno = 0;
	int rows = 0;
	struct geo *g;
	char *err;
	FILE *fp;

	g = geo_open(mmdb, &err);
	if (g == NULL) {
		fprintf(stderr, "%s\n", err);
		free(err);
		CHECK(false);
		return 0;
	}
	fp = fopen(tsv, "r");
	if (fp == NULL) {
		fprintf(stderr, "%s: %s\n", tsv, strerror(errno));
		CHECK(false);
		geo_close(g);
		return 0;
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		char where[600];
		int n = 0;

		lineno++;
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		for (char *p = strtok_r(line, "\t", &save); p != NULL && n < 6;
		    p = strtok_r(NULL, "\t", &save))
			f[n++] = p;
		snprintf(where, sizeof(where), "%s:%lu", tsv, lineno);
		if (n < 4) {
			fprintf(stderr, "%s: too few columns\n", where);
			CHECK(false);
			continue;
		}
		expect(g, f[0], strcmp(f[1], "yes") == 0, f[2], f[3], where);
		rows++;
	}
	fclose(fp);
	geo_close(g);
	return rows;
}

static void
test_shared(const char *shared)
{
	char mmdb[1024], tsv[1024], *err;
	struct geo *g;
	uint8_t a[16];
	char cc[3], cont[3];

	snprintf(mmdb, sizeof(mmdb), "%s/testdata/maxmind/"
	    "GeoIP2-Country-Test.mmdb", shared);
	snprintf(tsv, sizeof(tsv), "%s/testdata/maxmind/expected-country.tsv",
	    shared);
	CHECK_INT_EQ(check_tsv(mmdb, tsv), 18);

	snprintf(mmdb, sizeof(mmdb), "%s/testdata/geo/test-country.mmdb",
	    shared);
	snprintf(tsv, sizeof(tsv), "%s/testdata/geo/expected-country.tsv",
	    shared);
	CHECK_INT_EQ(check_tsv(mmdb, tsv), 21);
	g = geo_open(mmdb, &err);
	CHECK(g != NULL);
	if (g != NULL) {
		const int64_t built = 1735689600;	/* 2025-01-01 00:00 UTC */

		CHECK_STR_EQ(geo_database_type(g), "GeoIP2-Country");
		CHECK_INT_EQ(geo_build_epoch(g), built);
		CHECK_INT_EQ(geo_ip_version(g), 6);
		CHECK_STR_EQ(geo_path(g), mmdb);
		/* The age in whole days; a clock behind the database's date. */
		CHECK_STR_EQ(summary(g, built + 3600), "GeoIP2-Country, built "
		    "2025-01-01 (today), IPv4 and IPv6");
		CHECK_STR_EQ(summary(g, built + 86400), "GeoIP2-Country, built "
		    "2025-01-01 (1 day ago), IPv4 and IPv6");
		CHECK_STR_EQ(summary(g, built + 400 * 86400 - 1), "GeoIP2-"
		    "Country, built 2025-01-01 (399 days ago), IPv4 and IPv6");
		CHECK_STR_EQ(summary(g, built - 10), "GeoIP2-Country, built "
		    "2025-01-01 (in the future), IPv4 and IPv6");
		geo_close(g);
	}

	/* A City database is accepted and gives the country. */
	snprintf(mmdb, sizeof(mmdb), "%s/testdata/maxmind/"
	    "GeoIP2-City-Test.mmdb", shared);
	g = geo_open(mmdb, &err);
	CHECK(g != NULL);
	if (g != NULL) {
		to16("81.2.69.160", a);
		CHECK_INT_EQ(geo_lookup(g, a, cc, cont), 1);
		CHECK_STR_EQ(cc, "GB");
		CHECK_STR_EQ(cont, "EU");
		geo_close(g);
	}

	/* An ASN database is refused, naming file and type. */
	snprintf(mmdb, sizeof(mmdb), "%s/testdata/maxmind/"
	    "GeoLite2-ASN-Test.mmdb", shared);
	g = geo_open(mmdb, &err);
	CHECK(g == NULL);
	if (g == NULL) {
		CHECK(strstr(err, mmdb) != NULL);
		CHECK(strstr(err, "GeoLite2-ASN") != NULL);
		CHECK(strstr(err, "Country or City") != NULL);
		free(err);
	} else
		geo_close(g);
}

static void
test_own(const char *own, const char *own_asn)
{
	struct {
		const char *ip;
		bool found;
		const char *cc, *cont;
	} rows[] = {
		{ "192.0.2.0", true, "NL", "EU" },
		{ "192.0.2.127", true, "NL", "EU" },
		{ "192.0.2.128", true, "JP", "AS" },
		{ "192.0.2.255", true, "JP", "AS" },
		{ "198.51.100.1", true, "BR", "SA" },
		{ "203.0.113.5", true, "-", "OC" },	/* no country key */
		{ "100.64.0.1", true, "IN", "AS" },
		{ "100.127.255.255", true, "IN", "AS" },
		{ "100.128.0.0", false, "-", "-" },
		{ "2001:db8:a::1", true, "CA", "NA" },
		{ "2001:db8:b:ffff::1", true, "AU", "OC" },
		{ "2001:db8:c::1", false, "-", "-" },
		{ "10.0.0.1", false, "-", "-" },
		{ "::1", false, "-", "-" },
		/*
		 * This database has no ::ffff:0:0/96 alias, so these are
		 * found only because geo_lookup looks mapped clients up
		 * as IPv4 (mmdblookup --ip ::ffff:192.0.2.1 finds nothing).
		 */
		{ "::ffff:192.0.2.1", true, "NL", "EU" },
		{ "::ffff:198.51.100.200", true, "BR", "SA" },
	};
	struct geo *g;
	char *err;

	g = geo_open(own, &err);
	CHECK(g != NULL);
	if (g == NULL) {
		fprintf(stderr, "%s\n", err);
		free(err);
		return;
	}
	CHECK_STR_EQ(geo_database_type(g), "Moat-Test-Country");
	CHECK_INT_EQ(geo_ip_version(g), 6);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		expect(g, rows[i].ip, rows[i].found, rows[i].cc, rows[i].cont,
		    own);
	geo_close(g);

	if (own_asn != NULL) {
		g = geo_open(own_asn, &err);
		CHECK(g == NULL);
		if (g == NULL) {
			CHECK(strstr(err, "Moat-Test-ASN") != NULL);
			free(err);
		} else
			geo_close(g);
	}
}

/*
 * An IPv4-only database opens and answers for IPv4 and IPv4-mapped
 * clients, says it is IPv4-only (moat warns about it), and finds no IPv6
 * client, not even one its IPv6 twin knows: unknown, not an error.
 */
static void
test_own_v4(const char *own_v4)
{
	struct {
		const char *ip;
		bool found;
		const char *cc, *cont;
	} rows[] = {
		{ "192.0.2.1", true, "NL", "EU" },
		{ "198.51.100.1", true, "BR", "SA" },
		{ "::ffff:192.0.2.200", true, "JP", "AS" },
		{ "10.0.0.1", false, "-", "-" },
		{ "2001:db8:a::1", false, "-", "-" },
		{ "2001:db8:b::1", false, "-", "-" },
		{ "::1", false, "-", "-" },
	};
	struct geo *g;
	char *err;

	g = geo_open(own_v4, &err);
	CHECK(g != NULL);
	if (g == NULL) {
		fprintf(stderr, "%s\n", err);
		free(err);
		return;
	}
	CHECK_INT_EQ(geo_ip_version(g), 4);
	CHECK_STR_EQ(geo_database_type(g), "Moat-Test-Country");
	/* Its date is SOURCE_DATE_EPOCH's when the build set one. */
	CHECK(strncmp(summary(g, (int64_t)geo_build_epoch(g)),
	    "Moat-Test-Country, built ", 25) == 0);
	CHECK(strstr(summary(g, (int64_t)geo_build_epoch(g)),
	    " (today), IPv4 only") != NULL);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		expect(g, rows[i].ip, rows[i].found, rows[i].cc, rows[i].cont,
		    own_v4);
	geo_close(g);
}

static void
test_errors(void)
{
	char path[] = "/tmp/moat-test-geo.XXXXXX", *err = NULL;
	struct geo *g;
	int fd;

	g = geo_open("/nonexistent/GeoLite2-Country.mmdb", &err);
	CHECK(g == NULL);
	CHECK(err != NULL && strstr(err,
	    "/nonexistent/GeoLite2-Country.mmdb: ") == err);
	CHECK(err != NULL && strstr(err, "No such file") != NULL);
	free(err);

	/* Not a database at all. */
	fd = mkstemp(path);
	CHECK(fd != -1);
	CHECK(write(fd, "this is not a MaxMind DB\n", 25) == 25);
	close(fd);
	g = geo_open(path, &err);
	CHECK(g == NULL);
	CHECK(err != NULL && strstr(err, path) == err);
	CHECK(err != NULL && strstr(err, "invalid") != NULL);
	fprintf(stderr, "(expected) %s\n", err ? err : "?");
	free(err);
	unlink(path);
}

/* Whether this process maps a memfd of that name. */
static bool
maps_memfd(const char *name)
{
	char line[512], want[128];
	bool found = false;
	FILE *f = fopen("/proc/self/maps", "r");

	if (f == NULL)
		return false;
	snprintf(want, sizeof(want), "/memfd:%s", name);
	while (fgets(line, sizeof(line), f) != NULL)
		if (strstr(line, want) != NULL)
			found = true;
	fclose(f);
	return found;
}

/*
 * The database is read with read(2) into a copy of moat's own before
 * libmaxminddb sees it: a file rewritten in place while it is opened
 * (cp over it during a reload) comes back short instead of being SIGBUS,
 * and lookups never touch the file. The copy goes with geo_close().
 */
static void
test_private_copy(const char *src)
{
	char path[] = "/tmp/moat-test-geo.XXXXXX", *err = NULL;
	char cc[3], cont[3];
	struct geo *g;
	uint8_t a[16];
	int fd;

	CHECK(!maps_memfd("moat-geo"));
	fd = mkstemp(path);
	CHECK(fd != -1);
	{
		char buf[65536];
		FILE *in = fopen(src, "rb");
		size_t n;

		CHECK(in != NULL);
		while (in != NULL && (n = fread(buf, 1, sizeof(buf), in)) > 0)
			CHECK(write(fd, buf, n) == (ssize_t)n);
		if (in != NULL)
			fclose(in);
	}
	g = geo_open(path, &err);
	CHECK(g != NULL);
	CHECK(maps_memfd("moat-geo"));
	/* Cut the file to nothing: the lookups do not notice. */
	CHECK(ftruncate(fd, 0) == 0);
	close(fd);
	to16("81.2.69.160", a);
	if (g != NULL) {
		CHECK_INT_EQ(geo_lookup(g, a, cc, cont), 1);
		CHECK_STR_EQ(cc, "GB");
	}
	geo_close(g);
	CHECK(!maps_memfd("moat-geo"));
	free(err);
	unlink(path);
}

/* A cut-off copy of a good database must fail to open or look up
 * without crashing. */
static void
test_truncated(const char *src)
{
	char path[] = "/tmp/moat-test-geo.XXXXXX", *err = NULL, buf[65536];
	FILE *in = fopen(src, "rb");
	size_t n;
	struct geo *g;
	int fd;

	if (in == NULL)
		return;
	n = fread(buf, 1, sizeof(buf), in);
	fclose(in);
	fd = mkstemp(path);
	CHECK(fd != -1);
	CHECK(write(fd, buf, n / 2) == (ssize_t)(n / 2));
	close(fd);
	g = geo_open(path, &err);
	if (g != NULL) {
		uint8_t a[16];
		char cc[3], cont[3];

		to16("81.2.69.160", a);
		(void)geo_lookup(g, a, cc, cont);
		geo_close(g);
	} else {
		CHECK(strstr(err, path) == err);
		free(err);
	}
	unlink(path);
}

int
main(int argc, char **argv)
{
	const char *shared = getenv("MOAT_SHARED"), *env_ci = getenv("CI");
	char src[1024];

	ci = env_ci != NULL && strcmp(env_ci, "true") == 0;
	test_errors();
	if (argc > 1) {
		test_own(argv[1], argc > 2 ? argv[2] : NULL);
		if (argc > 3)
			test_own_v4(argv[3]);
	} else {
		printf("geo: no project-made database given (is "
		    "libmaxmind-db-writer-perl installed?)\n");
		if (ci)
			CHECK(false);
	}
	if (shared == NULL || access(shared, R_OK) != 0) {
		printf("geo: MOAT_SHARED is not set or not readable; the "
		    "shared test databases are skipped\n");
		if (ci) {
			CHECK(false);
			return check_report("geo");
		}
		check_report("geo");
		return 77;
	}
	test_shared(shared);
	snprintf(src, sizeof(src), "%s/testdata/maxmind/"
	    "GeoIP2-Country-Test.mmdb", shared);
	test_truncated(src);
	test_private_copy(src);
	return check_report("geo");
}
