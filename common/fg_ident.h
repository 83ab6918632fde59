/*
 * Device identities: certificate fingerprints and client id / username
 * validation.
 */
#ifndef FG_IDENT_H
#define FG_IDENT_H

#include "fg_common.h"

/* A SHA-256 fingerprint as 64 lowercase hex digits plus NUL. */
#define FG_FP_HEXLEN 64
typedef struct {
	char hex[FG_FP_HEXLEN + 1];
} fg_fingerprint;

/*
 * Parse a fingerprint written either as openssl prints it
 * ("AB:CD:...", 32 colon-separated pairs) or as 64 hex digits in any case
 * (what sha256sum prints). Surrounding blanks and an optional
 * "sha256 Fingerprint=" / "SHA256:" prefix are accepted.
 * Returns 0 and fills out on success, -1 on malformed input.
 */
FG_API int fg_fingerprint_parse(const char *text, fg_fingerprint *out);

/*
 * Fingerprint of an X509 certificate (an X509 *, passed as void * so that
 * callers need not include OpenSSL). Returns 0 on success, -1 on failure.
 */
FG_API int fg_fingerprint_of_cert(void *x509, fg_fingerprint *out);

/*
 * Validity window of an X509 certificate, as epoch seconds.
 * Returns 0 on success, -1 if the times cannot be read.
 */
FG_API int fg_cert_validity(void *x509, int64_t *not_before,
                            int64_t *not_after);

enum fg_ident_error {
	FG_IDENT_OK = 0,
	FG_IDENT_EMPTY,
	FG_IDENT_TOO_LONG,
	FG_IDENT_BAD_UTF8,
	FG_IDENT_CONTROL,   /* C0/C1 control character or DEL */
	FG_IDENT_WILDCARD,  /* '+' or '#' */
	FG_IDENT_SEPARATOR, /* '/' */
};

/*
 * Check a client id or username before it is used as an identity or
 * substituted into a topic pattern. Refuses empty strings, strings longer
 * than max_len bytes, invalid UTF-8 (overlongs, surrogates, > U+10FFFF),
 * control characters, '+', '#' and '/'.
 */
FG_API enum fg_ident_error fg_ident_check(const char *s, size_t max_len);

/*
 * Copy untrusted text (a client id, an address) for a log line or an audit
 * row: at most outlen - 1 bytes, invalid UTF-8 and control characters
 * replaced by '?', never cutting a character in two. NULL becomes "-".
 * Returns out.
 */
FG_API char *fg_sanitize(const char *in, char *out, size_t outlen);

/* A short name for an fg_ident_error, for log lines. */
FG_API const char *fg_ident_error_str(enum fg_ident_error e);

#endif
