/*
 * Fingerprint parsing and identity validation.
 */
#include "fg_ident.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int fg_fingerprint_parse(const char *text, fg_fingerprint *out)
{
	static const char *const prefixes[] = {"sha256 fingerprint=",
	                                       "sha256:"};
	const char *p = text, *end;
	size_t len, i, stride;

	if (text == NULL)
		return -1;
	while (isspace((unsigned char)*p))
		p++;
	for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		size_t plen = strlen(prefixes[i]);
		if (strncasecmp(p, prefixes[i], plen) == 0) {
			p += plen;
			break;
		}
	}
	end = p + strlen(p);
	while (end > p && isspace((unsigned char)end[-1]))
		end--;
	len = (size_t)(end - p);

	/* Either 64 hex digits, or 32 pairs joined by 31 colons. */
	if (len == FG_FP_HEXLEN)
		stride = 2;
	else if (len == FG_FP_HEXLEN / 2 * 3 - 1)
		stride = 3;
	else
		return -1;
	for (i = 0; i < FG_FP_HEXLEN / 2; i++) {
		const char *pair = p + i * stride;
		if (hexval((unsigned char)pair[0]) < 0 ||
		    hexval((unsigned char)pair[1]) < 0)
			return -1;
		if (stride == 3 && i + 1 < FG_FP_HEXLEN / 2 && pair[2] != ':')
			return -1;
		out->hex[2 * i] = (char)tolower((unsigned char)pair[0]);
		out->hex[2 * i + 1] = (char)tolower((unsigned char)pair[1]);
	}
	out->hex[FG_FP_HEXLEN] = '\0';
	return 0;
}

int fg_fingerprint_of_cert(void *x509, fg_fingerprint *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	if (x509 == NULL ||
	    X509_digest((X509 *)x509, EVP_sha256(), md, &len) != 1 ||
	    len * 2 != FG_FP_HEXLEN)
		return -1;
	fg_hex(md, len, out->hex);
	return 0;
}

static int asn1_to_epoch(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return -1;
	*out = (int64_t)timegm(&tm);
	return 0;
}

int fg_cert_validity(void *x509, int64_t *not_before, int64_t *not_after)
{
	X509 *cert = x509;

	if (cert == NULL ||
	    asn1_to_epoch(X509_get0_notBefore(cert), not_before) != 0 ||
	    asn1_to_epoch(X509_get0_notAfter(cert), not_after) != 0)
		return -1;
	return 0;
}

/*
 * Decode one UTF-8 sequence at s (n bytes available). Returns its length,
 * or 0 if it is malformed, overlong, a surrogate or beyond U+10FFFF.
 */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	size_t len, i;
	uint32_t c;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	} else if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		c = s[0] & 0x1fu;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		c = s[0] & 0x0fu;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		c = s[0] & 0x07u;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3fu);
	}
	if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) ||
	    (len == 4 && c < 0x10000) || c > 0x10ffff ||
	    (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

enum fg_ident_error fg_ident_check(const char *s, size_t max_len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n, i = 0;

	if (s == NULL || s[0] == '\0')
		return FG_IDENT_EMPTY;
	n = strlen(s);
	if (n > max_len)
		return FG_IDENT_TOO_LONG;
	while (i < n) {
		uint32_t cp;
		size_t len = utf8_decode(p + i, n - i, &cp);

		if (len == 0)
			return FG_IDENT_BAD_UTF8;
		if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f))
			return FG_IDENT_CONTROL;
		if (cp == '+' || cp == '#')
			return FG_IDENT_WILDCARD;
		if (cp == '/')
			return FG_IDENT_SEPARATOR;
		i += len;
	}
	return FG_IDENT_OK;
}

char *fg_sanitize(const char *in, char *out, size_t outlen)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t n, i = 0, o = 0;

	if (outlen == 0)
		return out;
	if (in == NULL) {
		snprintf(out, outlen, "-");
		return out;
	}
	n = strlen(in);
	while (i < n) {
		uint32_t cp;
		size_t len = utf8_decode(p + i, n - i, &cp);

		if (len == 0 || cp < 0x20 || cp == 0x7f ||
		    (cp >= 0x80 && cp <= 0x9f)) {
			if (o + 1 >= outlen)
				break;
			out[o++] = '?';
			i += len ? len : 1;
			continue;
		}
		if (o + len >= outlen)
			break;
		memcpy(out + o, p + i, len);
		o += len;
		i += len;
	}
	out[o] = '\0';
	return out;
}

const char *fg_ident_error_str(enum fg_ident_error e)
{
	switch (e) {
	case FG_IDENT_OK:
		return "ok";
	case FG_IDENT_EMPTY:
		return "empty";
	case FG_IDENT_TOO_LONG:
		return "too_long";
	case FG_IDENT_BAD_UTF8:
		return "invalid_utf8";
	case FG_IDENT_CONTROL:
		return "control_character";
	case FG_IDENT_WILDCARD:
		return "wildcard";
	case FG_IDENT_SEPARATOR:
		return "topic_separator";
	}
	return "unknown";
}
