/*
 * Password hashes as mosquitto_passwd writes them ($7$, PBKDF2-SHA512),
 * of any iteration count, for the unit tests and the decision benchmark
 * (mosquitto_passwd 2.0.11 cannot choose the count).
 */
#ifndef FG_PASSWD_MAKE_H
#define FG_PASSWD_MAKE_H

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#define FG_PASSWD_MAKE_SALT 12

/* "$7$iterations$salt$hash" of password at out; 0, or -1 on a library
 * failure. */
static inline int fg_passwd_make(char *out, size_t len, const char *password,
                                 int iterations,
                                 const unsigned char salt[FG_PASSWD_MAKE_SALT])
{
	unsigned char hash[64];
	char salt64[32], hash64[96];

	if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt,
	                      FG_PASSWD_MAKE_SALT, iterations, EVP_sha512(),
	                      sizeof(hash), hash) != 1)
		return -1;
	EVP_EncodeBlock((unsigned char *)salt64, salt, FG_PASSWD_MAKE_SALT);
	EVP_EncodeBlock((unsigned char *)hash64, hash, sizeof(hash));
	snprintf(out, len, "$7$%d$%s$%s", iterations, salt64, hash64);
	return 0;
}

#endif
