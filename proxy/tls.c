/* tls.c - OpenSSL server contexts of one configuration, SNI included. */
#include "tls.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "sni.h"
#include "ticketkeys.h"
#include "tlsout.h"
#include "utc.h"

/* TLS 1.2 suites: forward secrecy (ECDHE) with AEAD only. */
#define TLS12_CIPHERS							\
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"	\
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"	\
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS_GROUPS "X25519:P-256:X448:P-384:P-521"

struct tls_name {
	char *name;		/* lower case; "*.example.org" allowed */
	SSL_CTX *ctx;		/* a reference of its own */
};

struct tls_set {
	SSL_CTX *def;
	struct tls_name *names;
	size_t nnames;
};

const char *
tls_error_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();
	const char *r;

	if (e == 0)
		return NULL;
	r = ERR_reason_error_string(e);
	if (r != NULL)
		snprintf(buf, len, "%s", r);
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

static void
report_ssl(config_report_fn *report, void *arg, const char *file,
    const char *what)
{
	/* what may be a whole line of its own (ctx_new). */
	char line[2048], reason[256];
	const char *r = tls_error_reason(reason, sizeof(reason));

	snprintf(line, sizeof(line), "%s: %s%s%s", file, what, r ? ": " : "",
	    r ? r : "");
	report(arg, CONFIG_ERROR, line);
}

/* The context for the name a client asked for; t->def for an unknown
 * one. */
static SSL_CTX *
sni_lookup(const struct tls_set *t, const char *name)
{
	size_t i;

	/* Exact names win over wildcards, whatever the order in config. */
	for (i = 0; i < t->nnames; i++)
		if (t->names[i].name[0] != '*' &&
		    sni_name_matches(t->names[i].name, name))
			return t->names[i].ctx;
	for (i = 0; i < t->nnames; i++)
		if (t->names[i].name[0] == '*' &&
		    sni_name_matches(t->names[i].name, name))
			return t->names[i].ctx;
	return t->def;
}

/*
 * Acknowledges the name (without a servername callback OpenSSL would
 * not); client_hello_cb() has picked the certificate already.
 */
static int
sni_cb(SSL *ssl, int *alert, void *arg)
{
	(void)ssl, (void)alert, (void)arg;
	return SSL_TLSEXT_ERR_OK;
}

/*
 * Picks the certificate as soon as the ClientHello is in, before OpenSSL
 * opens a ticket (it does that ahead of reading the other extensions,
 * and of sni_cb()), so that ticket_dec_cb() knows what this handshake
 * would be authenticated with. Names sni_host_name() refuses, OpenSSL
 * refuses too, a moment later.
 */
static int
client_hello_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_set *t = arg;
	const unsigned char *ext;
	char name[256];
	size_t len;
	SSL_CTX *ctx;

	if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext,
	    &len) || !sni_host_name(ext, len, name, sizeof(name)))
		return SSL_CLIENT_HELLO_SUCCESS;
	ctx = sni_lookup(t, name);
	if (ctx != t->def && SSL_set_SSL_CTX(ssl, ctx) == NULL) {
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	return SSL_CLIENT_HELLO_SUCCESS;
}

/*
 * A ticket names the certificate its session was made with (its digest,
 * in the ticket's application data) and resumes only where the name the
 * client asks for now picks that certificate: otherwise a ticket from one
 * [[tls.sni]] tenant's name would resume on another's, authenticated by a
 * certificate that was never shown for it. RFC 8446 4.6.1 asks the client
 * not to try; the server need not trust that it does not. A renewed
 * certificate costs each client one full handshake.
 *
 * SHA-1, because OpenSSL keeps that digest with the certificate (no cost
 * per handshake), and collisions do not matter here: a ticket's contents
 * are encrypted and authenticated by moat's own keys, so only digests of
 * moat's own certificates are ever compared.
 */
static bool
cert_digest(SSL_CTX *ctx, unsigned char md[EVP_MAX_MD_SIZE], unsigned *len)
{
	X509 *x = ctx != NULL ? SSL_CTX_get0_certificate(ctx) : NULL;

	return x != NULL && X509_digest(x, EVP_sha1(), md, len) == 1;
}

static int
ticket_gen_cb(SSL *ssl, void *arg)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len;

	(void)arg;
	if (!cert_digest(SSL_get_SSL_CTX(ssl), md, &len))
		return 0;
	return SSL_SESSION_set1_ticket_appdata(SSL_get0_session(ssl), md,
	    len);
}

static SSL_TICKET_RETURN
ticket_dec_cb(SSL *ssl, SSL_SESSION *sess, const unsigned char *keyname,
    size_t keyname_len, SSL_TICKET_STATUS status, void *arg)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	void *data = NULL;
	size_t dlen = 0;
	unsigned len;

	(void)keyname, (void)keyname_len, (void)arg;
	switch (status) {
	case SSL_TICKET_SUCCESS:
	case SSL_TICKET_SUCCESS_RENEW:
		break;
	case SSL_TICKET_EMPTY:
	case SSL_TICKET_NO_DECRYPT:
		return SSL_TICKET_RETURN_IGNORE_RENEW;
	default:
		return SSL_TICKET_RETURN_ABORT;
	}
	if (!cert_digest(SSL_get_SSL_CTX(ssl), md, &len) ||
	    !SSL_SESSION_get0_ticket_appdata(sess, &data, &dlen) ||
	    dlen != len || memcmp(data, md, len) != 0)
		return SSL_TICKET_RETURN_IGNORE_RENEW;
	return status == SSL_TICKET_SUCCESS_RENEW ?
	    SSL_TICKET_RETURN_USE_RENEW : SSL_TICKET_RETURN_USE;
}

/*
 * Session tickets ([tls] session_tickets): TLS 1.3 resumption with keys
 * from ticketkeys.c, which rotate and never touch the disk; one ticket
 * per handshake, valid as long as its key decrypts (two rotation
 * periods). Off: no tickets at all and no session cache, as every
 * resumption secret would have to outlive the connection.
 */
static void
ctx_tickets(SSL_CTX *ctx, const struct config *cfg)
{
	uint64_t life_s = 2 * cfg->tls.ticket_rotation_ms / 1000;

	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (!cfg->tls.session_tickets) {
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
		return;
	}
	SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_timeout(ctx, (long)(life_s > 0 ? life_s : 1));
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticketkeys_cb);
}

/*
 * Stands in for OpenSSL's terminal prompt: an encrypted key would block
 * moat -t and a SIGHUP reload on a pass phrase nobody types, and fail
 * under systemd with a bare "PEM lib". Refusing makes loading fail; the
 * flag lets the caller say why.
 */
static int
no_passphrase_cb(char *buf, int size, int rwflag, void *arg)
{
	bool *asked = arg;

	(void)buf, (void)size, (void)rwflag;
	if (asked != NULL)
		*asked = true;
	return -1;
}

/*
 * Whether a line of path opens a PEM block whose label contains what. The
 * file may hold a key, so the buffers it passed through are wiped.
 */
static bool
pem_has_block(const char *path, const char *what)
{
	char line[256], iobuf[4096];
	bool found = false;
	FILE *f;

	if ((f = fopen(path, "re")) == NULL)
		return false;
	if (setvbuf(f, iobuf, _IOFBF, sizeof(iobuf)) == 0)
		while (!found && fgets(line, sizeof(line), f) != NULL)
			found = strncmp(line, "-----BEGIN ", 11) == 0 &&
			    strstr(line, what) != NULL;
	fclose(f);
	OPENSSL_cleanse(line, sizeof(line));
	OPENSSL_cleanse(iobuf, sizeof(iobuf));
	return found;
}

/*
 * What a file with no PEM block of the kind wanted (a certificate when
 * want_cert, else a private key) holds instead, as "; ..." for the
 * error: the other kind, or the wanted one in binary form (DER, or a
 * PKCS#12 bundle), with the openssl command that makes PEM of it. ""
 * when none of these. The bytes may be a key: wiped after.
 */
static const char *
pem_missing_why(const char *path, bool want_cert, char *buf, size_t len)
{
	unsigned char data[32768];
	const unsigned char *p;
	const char *kind = NULL, *cmd = NULL;
	bool cert = false, key = false;
	size_t n;
	X509 *x;
	EVP_PKEY *k;
	PKCS12 *p12;
	FILE *f;

	if (pem_has_block(path, want_cert ? "PRIVATE KEY" : "CERTIFICATE"))
		return want_cert ? "; it holds a private key" :
		    "; it holds a certificate";
	if ((f = fopen(path, "re")) == NULL)
		return "";
	setvbuf(f, NULL, _IONBF, 0);
	n = fread(data, 1, sizeof(data), f);
	fclose(f);
	if ((p = data, x = d2i_X509(NULL, &p, (long)n)) != NULL) {
		cert = true;
		X509_free(x);
	} else if ((p = data, k = d2i_AutoPrivateKey(NULL, &p,
	    (long)n)) != NULL) {
		key = true;
		EVP_PKEY_free(k);
	} else if ((p = data, p12 = d2i_PKCS12(NULL, &p, (long)n)) != NULL) {
		kind = "a PKCS#12 bundle";
		cmd = "pkcs12 -nodes";
		PKCS12_free(p12);
	}
	OPENSSL_cleanse(data, sizeof(data));
	ERR_clear_error();
	if (cert || key) {
		if (cert != want_cert)
			return cert ? "; it holds a certificate, in DER form" :
			    "; it holds a private key, in DER form";
		kind = cert ? "a DER certificate" : "a DER private key";
		cmd = cert ? "x509 -inform der" : "pkey -inform der";
	}
	if (kind == NULL)
		return "";
	snprintf(buf, len, "; it is %s, not PEM: convert it with openssl %s "
	    "-in %s -out NEW.pem", kind, cmd, path);
	return buf;
}

/*
 * Loads the private key, saying in words what OpenSSL reports as
 * "PEM lib": an encrypted key, or a file with no key in it.
 */
static bool
ctx_use_key(SSL_CTX *ctx, const char *key, const char *cert,
    config_report_fn *report, void *arg)
{
	char line[1024], why[512];
	bool asked = false;
	int ok;

	SSL_CTX_set_default_passwd_cb_userdata(ctx, &asked);
	ok = SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
	if (ok)
		return true;
	if (asked) {
		ERR_clear_error();
		snprintf(line, sizeof(line), "%s: the private key is "
		    "encrypted; moat needs an unencrypted key (openssl pkey "
		    "-in %s -out NEW.pem)", key, key);
		report(arg, CONFIG_ERROR, line);
	} else if (ERR_GET_LIB(ERR_peek_last_error()) == ERR_LIB_X509 &&
	    ERR_GET_REASON(ERR_peek_last_error()) ==
	    X509_R_KEY_VALUES_MISMATCH) {
		ERR_clear_error();
		snprintf(line, sizeof(line), "%s: this private key does not "
		    "belong to the first certificate in %s, which must be "
		    "the server's own (its chain follows it)", key, cert);
		report(arg, CONFIG_ERROR, line);
	} else if (ERR_GET_REASON(ERR_peek_last_error()) != ERR_R_PEM_LIB)
		report_ssl(report, arg, key, "cannot load private key");
	else if (!pem_has_block(key, "PRIVATE KEY")) {
		ERR_clear_error();
		snprintf(line, sizeof(line), "%s: no private key found in the "
		    "file (expected a PEM \"BEGIN PRIVATE KEY\" block)%s", key,
		    pem_missing_why(key, false, why, sizeof(why)));
		report(arg, CONFIG_ERROR, line);
	} else
		report_ssl(report, arg, key, "cannot load private key: the "
		    "PEM block is damaged or of a kind OpenSSL cannot read");
	return false;
}

/* What an OpenSSL security-level refusal of a chain means; NULL for
 * other reasons. */
static const char *
weak_cert_what(int reason)
{
	switch (reason) {
	case SSL_R_EE_KEY_TOO_SMALL:
		return "the certificate's key is too small";
	case SSL_R_CA_KEY_TOO_SMALL:
		return "a CA certificate's key in the chain is too small";
	case SSL_R_CA_MD_TOO_WEAK:
		return "a certificate in the chain is signed with a weak "
		    "digest";
	}
	return NULL;
}

/* Loads the certificate chain; "PEM lib" with no certificate in the
 * file, a damaged intermediate ("ASN1 lib" and the like) and a chain too
 * weak for OpenSSL are said in words. */
static bool
ctx_use_chain(SSL_CTX *ctx, const char *cert, config_report_fn *report,
    void *arg)
{
	char line[1024], why[512];
	const char *weak;

	if (SSL_CTX_use_certificate_chain_file(ctx, cert))
		return true;
	weak = ERR_GET_LIB(ERR_peek_last_error()) != ERR_LIB_SSL ? NULL :
	    weak_cert_what(ERR_GET_REASON(ERR_peek_last_error()));
	if (weak != NULL) {
		ERR_clear_error();
		snprintf(line, sizeof(line), "%s: %s, below what OpenSSL "
		    "accepts here (RSA keys need 2048 bits or more, signatures "
		    "SHA-256 or better); issue a new certificate", cert, weak);
		report(arg, CONFIG_ERROR, line);
		return false;
	}
	if (ERR_GET_REASON(ERR_peek_last_error()) == ERR_R_PEM_LIB &&
	    !pem_has_block(cert, "CERTIFICATE")) {
		ERR_clear_error();
		snprintf(line, sizeof(line), "%s: no certificate found in the "
		    "file (expected a PEM \"BEGIN CERTIFICATE\" block)%s",
		    cert, pem_missing_why(cert, true, why, sizeof(why)));
		report(arg, CONFIG_ERROR, line);
	} else if (SSL_CTX_get0_certificate(ctx) != NULL) {
		/* The leaf went in; what broke is behind it. */
		report_ssl(report, arg, cert, "cannot load certificate chain: "
		    "the first certificate (the server's) is fine, a "
		    "certificate after it in the chain is damaged or cut "
		    "short");
	} else
		report_ssl(report, arg, cert, "cannot load certificate chain");
	return false;
}

static int64_t
cert_not_after(const X509 *x)
{
	const ASN1_TIME *t = X509_get0_notAfter(x);
	struct tm tm;

	if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
		return 0;
	return (int64_t)timegm(&tm);
}

/*
 * A certificate out of its dates still loads (a renewal may be on its
 * way), but every client will refuse it: said at the check, the start
 * and each reload, as is one about to expire (CERT_WARN_DAYS).
 */
static void
cert_dates(SSL_CTX *ctx, const char *cert, config_report_fn *report,
    void *arg)
{
	const X509 *x = SSL_CTX_get0_certificate(ctx);
	int64_t now = (int64_t)time(NULL), end;
	char line[1024], when[32];

	if (x == NULL || (end = cert_not_after(x)) == 0)
		return;
	utc_human(end, when, sizeof(when));
	if (X509_cmp_time(X509_get0_notBefore(x), NULL) > 0)
		snprintf(line, sizeof(line), "%s: warning: the certificate is "
		    "not valid yet (its notBefore is in the future); clients "
		    "will refuse it", cert);
	else if (end <= now)
		snprintf(line, sizeof(line), "%s: warning: the certificate "
		    "expired on %s; clients will refuse it", cert, when);
	else if (end - now < 86400)
		snprintf(line, sizeof(line), "%s: warning: the certificate "
		    "expires on %s, in less than a day", cert, when);
	else if (end - now < CERT_WARN_DAYS * 86400)
		snprintf(line, sizeof(line), "%s: warning: the certificate "
		    "expires on %s, in %lld day%s", cert, when,
		    (long long)((end - now) / 86400),
		    (end - now) / 86400 == 1 ? "" : "s");
	else
		return;
	report(arg, CONFIG_WARNING, line);
}

/*
 * Warns when the certificate of a [[tls.sni]] entry does not cover one of
 * its names: clients that ask for that name would get it and refuse it.
 * A wildcard name ("*.example.org") is tried as one of the names it
 * stands for.
 */
static void
cert_names(SSL_CTX *ctx, const char *cert, const struct cfg_strings *names,
    config_report_fn *report, void *arg)
{
	X509 *x = SSL_CTX_get0_certificate(ctx);
	char host[300], line[1024];
	size_t i;

	if (x == NULL)
		return;
	for (i = 0; i < names->n; i++) {
		const char *name = names->v[i];

		if (name[0] == '*')
			snprintf(host, sizeof(host), "moat-check%s", name + 1);
		else
			snprintf(host, sizeof(host), "%s", name);
		if (X509_check_host(x, host, 0, 0, NULL) == 1)
			continue;
		snprintf(line, sizeof(line), "%s: warning: the certificate "
		    "does not cover the name \"%s\" it is listed for; "
		    "clients asking for it will refuse it", cert, name);
		report(arg, CONFIG_WARNING, line);
	}
}

/*
 * Puts where the config names file in front of a message about it. The
 * caller says which file each step is about: certificate and key may be
 * one file under two keys.
 */
struct located {
	config_report_fn *report;
	void *arg;
	const struct config *cfg;
	const char *file;
};

static void
report_located(void *arg, enum config_severity sev, const char *line)
{
	const struct located *r = arg;
	char out[2048];

	r->report(r->arg, sev, config_locate(r->cfg, r->file, line, out,
	    sizeof(out)));
}

static SSL_CTX *
ctx_new(const char *cert, const char *key, const struct config *cfg,
    config_report_fn *report_to, void *arg_to)
{
	int min_version = cfg->tls.min_version;
	struct located loc = { report_to, arg_to, cfg, cert };
	config_report_fn *report = report_located;
	void *arg = &loc;
	SSL_CTX *ctx;
	char line[1024];

	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		report_ssl(report, arg, cert, "cannot create TLS context");
		return NULL;
	}
	if (!SSL_CTX_set_min_proto_version(ctx, min_version) ||
	    !SSL_CTX_set_max_proto_version(ctx, 0)) {
		report_ssl(report, arg, cert, "cannot set protocol versions");
		goto fail;
	}
	/*
	 * No renegotiation (a DoS lever and a source of bugs), no
	 * compression (CRIME), our cipher order; tickets only when asked
	 * for (ctx_tickets). An unexpected EOF is a plain EOF for mail
	 * clients that close without close_notify. OpenSSL frees its record
	 * buffers while a connection is idle. The chain sent is the
	 * certificate file's, as it stands: without NO_AUTO_CHAIN, OpenSSL
	 * would try to build one per handshake from a certificate store
	 * that moat leaves empty, a few percent of a handshake for nothing.
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_IGNORE_UNEXPECTED_EOF);
	ctx_tickets(ctx, cfg);
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	    SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS |
	    SSL_MODE_NO_AUTO_CHAIN);
	/*
	 * Read whole socket buffers, not a record header and then its body:
	 * half the read calls (session.c enlarges the buffer once the
	 * handshake is done). Bytes OpenSSL holds this way announce no
	 * socket event, which is safe because the relay reads the client
	 * whenever it has room and SSL_has_pending() says OpenSSL holds
	 * bytes, and pumps at once on every state change (session.c).
	 */
	SSL_CTX_set_read_ahead(ctx, 1);
	if (!SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)) {
		report_ssl(report, arg, cert, "cannot set TLS 1.2 ciphers");
		goto fail;
	}
	if (!SSL_CTX_set1_groups_list(ctx, TLS_GROUPS)) {
		report_ssl(report, arg, cert, "cannot set key exchange groups");
		goto fail;
	}
	/* Before any PEM is read: no file may ever prompt. */
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase_cb);
	if (!ctx_use_chain(ctx, cert, report, arg))
		goto fail;
	loc.file = key;
	if (!ctx_use_key(ctx, key, cert, report, arg))
		goto fail;
	if (!SSL_CTX_check_private_key(ctx)) {
		snprintf(line, sizeof(line), "private key does not match "
		    "certificate %s", cert);
		report_ssl(report, arg, key, line);
		goto fail;
	}
	loc.file = cert;
	cert_dates(ctx, cert, report, arg);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct tls_set *
tls_set_new(const struct config *cfg, config_report_fn *report, void *arg)
{
	struct tls_set *t;
	size_t i, j, n = 0;
	int errors = 0;

	if ((t = calloc(1, sizeof(*t))) == NULL) {
		report(arg, CONFIG_ERROR, "out of memory");
		return NULL;
	}
	if (cfg->tls.certificate == NULL)
		return t;	/* no listener speaks TLS */
	t->def = ctx_new(cfg->tls.certificate, cfg->tls.key, cfg, report, arg);
	if (t->def == NULL)
		errors++;
	for (i = 0; i < cfg->tls.nsni; i++)
		n += cfg->tls.sni[i].names.n;
	if (n > 0 && (t->names = calloc(n, sizeof(*t->names))) == NULL) {
		report(arg, CONFIG_ERROR, "out of memory");
		tls_set_free(t);
		return NULL;
	}
	for (i = 0; i < cfg->tls.nsni; i++) {
		const struct cfg_sni *sni = &cfg->tls.sni[i];
		SSL_CTX *ctx = ctx_new(sni->certificate, sni->key, cfg,
		    report, arg);

		if (ctx == NULL) {
			errors++;
			continue;
		}
		cert_names(ctx, sni->certificate, &sni->names, report, arg);
		for (j = 0; j < sni->names.n; j++) {
			struct tls_name *tn = &t->names[t->nnames];

			if ((tn->name = strdup(sni->names.v[j])) == NULL) {
				errors++;
				break;
			}
			SSL_CTX_up_ref(ctx);
			tn->ctx = ctx;
			t->nnames++;
		}
		SSL_CTX_free(ctx);	/* the names hold it now */
	}
	if (errors > 0) {
		tls_set_free(t);
		return NULL;
	}
	SSL_CTX_set_tlsext_servername_callback(t->def, sni_cb);
	if (t->nnames > 0)
		SSL_CTX_set_client_hello_cb(t->def, client_hello_cb, t);
	/* Tickets are made and opened by the listener's context, the one
	 * SSL_new() was given, whichever certificate was picked. */
	if (cfg->tls.session_tickets &&
	    !SSL_CTX_set_session_ticket_cb(t->def, ticket_gen_cb,
	    ticket_dec_cb, NULL)) {
		report(arg, CONFIG_ERROR, "cannot set the ticket callbacks");
		tls_set_free(t);
		return NULL;
	}
	return t;
}

void
tls_set_free(struct tls_set *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nnames; i++) {
		free(t->names[i].name);
		SSL_CTX_free(t->names[i].ctx);
	}
	free(t->names);
	SSL_CTX_free(t->def);
	free(t);
}

bool
tls_set_empty(const struct tls_set *t)
{
	return t == NULL || t->def == NULL;
}

SSL *
tls_ssl_new(struct tls_set *t, int fd, const char *context)
{
	size_t clen = strlen(context);
	SSL *ssl;
	BIO *out;

	if (t->def == NULL)
		return NULL;
	ERR_clear_error();
	if ((ssl = SSL_new(t->def)) == NULL)
		return NULL;
	if (clen > SSL_MAX_SID_CTX_LENGTH)
		clen = SSL_MAX_SID_CTX_LENGTH;
	if (!SSL_set_session_id_context(ssl, (const unsigned char *)context,
	    (unsigned)clen)) {
		SSL_free(ssl);
		return NULL;
	}
	/* One BIO both ways (one reference taken). Without it records go out
	 * one per call through a socket BIO, which only costs CPU. */
	if ((out = tlsout_new(fd)) != NULL)
		SSL_set_bio(ssl, out, out);
	else if (!SSL_set_fd(ssl, fd)) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_accept_state(ssl);
	return ssl;
}

void
tls_set_certs(const struct tls_set *t, tls_cert_fn *fn, void *arg)
{
	const SSL_CTX *prev = NULL;
	X509 *x;
	size_t i;

	if (t == NULL)
		return;
	if (t->def != NULL && (x = SSL_CTX_get0_certificate(t->def)) != NULL)
		fn(arg, "default", cert_not_after(x));
	/* The names of one [[tls.sni]] entry share its context and follow
	 * each other: report the context once, under its first name. */
	for (i = 0; i < t->nnames; i++) {
		if (t->names[i].ctx == prev)
			continue;
		prev = t->names[i].ctx;
		if ((x = SSL_CTX_get0_certificate(prev)) != NULL)
			fn(arg, t->names[i].name, cert_not_after(x));
	}
}
