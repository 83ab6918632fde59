/*
 * mosquitto_passwd hash verification.
 */
#include "fg_passwd.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define SALT_MAX 64
#define HASH_LEN 64 /* SHA-512 */

struct parsed_hash {
	int type; /* 6 or 7 */
	int iterations;
	unsigned char salt[SALT_MAX];
	size_t salt_len;
	unsigned char hash[HASH_LEN];
};

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Strict base64 decode of len characters at in (padding optional) into at
 * most cap bytes. Returns the decoded length, or -1 on malformed input or
 * overflow.
 */
static long b64_decode(const char *in, size_t len, unsigned char *out,
                       size_t cap)
{
	uint32_t acc = 0;
	size_t n = 0, i, bits = 0;

	while (len > 0 && in[len - 1] == '=')
		len--;
	for (i = 0; i < len; i++) {
		int v = b64val((unsigned char)in[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n == cap)
				return -1;
			out[n++] = (unsigned char)(acc >> bits);
		}
	}
	return (long)n;
}

static int parse_hash(const char *stored, struct parsed_hash *ph)
{
	const char *p, *salt, *dollar;
	long n;

	if (stored == NULL || stored[0] != '$' ||
	    (stored[1] != '6' && stored[1] != '7') || stored[2] != '$')
		return -1;
	ph->type = stored[1] - '0';
	p = stored + 3;
	ph->iterations = 0;
	if (ph->type == 7) {
		char *end;
		long it = strtol(p, &end, 10);
		if (end == p || *end != '$' || it < 1 ||
		    it > FG_PASSWD_MAX_ITERATIONS)
			return -1;
		ph->iterations = (int)it;
		p = end + 1;
	}
	salt = p;
	dollar = strchr(salt, '$');
	if (dollar == NULL || dollar == salt)
		return -1;
	n = b64_decode(salt, (size_t)(dollar - salt), ph->salt, SALT_MAX);
	if (n <= 0)
		return -1;
	ph->salt_len = (size_t)n;
	n = b64_decode(dollar + 1, strlen(dollar + 1), ph->hash, HASH_LEN);
	if (n != HASH_LEN)
		return -1;
	return 0;
}

int fg_passwd_check_format(const char *stored)
{
	struct parsed_hash ph;

	return parse_hash(stored, &ph);
}

enum fg_passwd_result fg_passwd_verify(const char *stored, const char *password)
{
	struct parsed_hash ph;
	unsigned char calc[HASH_LEN];
	enum fg_passwd_result res = FG_PASSWD_MALFORMED;

	if (parse_hash(stored, &ph) != 0)
		return FG_PASSWD_MALFORMED;
	if (password == NULL)
		return FG_PASSWD_MISMATCH;
	if (ph.type == 6) {
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		unsigned int len = 0;

		if (ctx != NULL &&
		    EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) == 1 &&
		    EVP_DigestUpdate(ctx, password, strlen(password)) == 1 &&
		    EVP_DigestUpdate(ctx, ph.salt, ph.salt_len) == 1 &&
		    EVP_DigestFinal_ex(ctx, calc, &len) == 1 && len == HASH_LEN)
			res = FG_PASSWD_MISMATCH;
		EVP_MD_CTX_free(ctx);
	} else if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), ph.salt,
	                             (int)ph.salt_len, ph.iterations,
	                             EVP_sha512(), HASH_LEN, calc) == 1) {
		res = FG_PASSWD_MISMATCH;
	}
	if (res == FG_PASSWD_MISMATCH &&
	    CRYPTO_memcmp(calc, ph.hash, HASH_LEN) == 0)
		res = FG_PASSWD_MATCH;
	OPENSSL_cleanse(calc, sizeof(calc));
	return res;
}
