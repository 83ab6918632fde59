/*
 * Verification of password hashes in the format mosquitto_passwd writes:
 *   $6$<salt base64>$<sha512(password || salt) base64>
 *   $7$<iterations>$<salt base64>$<pbkdf2-hmac-sha512 base64>
 * Used for account passwords and for device API keys.
 */
#ifndef FG_PASSWD_H
#define FG_PASSWD_H

#include "fg_common.h"

/* PBKDF2 iteration counts above this are refused: verifying runs on the
 * broker thread, and a huge count would stall every client. */
#define FG_PASSWD_MAX_ITERATIONS 1000000

enum fg_passwd_result {
	FG_PASSWD_MATCH = 0,
	FG_PASSWD_MISMATCH,
	FG_PASSWD_MALFORMED, /* the stored hash cannot be parsed */
};

/* Compare password against stored in constant time (for a given hash). */
FG_API enum fg_passwd_result fg_passwd_verify(const char *stored,
                                              const char *password);

/* Check that a stored hash is well formed; 0 if so, -1 if not. */
FG_API int fg_passwd_check_format(const char *stored);

#endif
