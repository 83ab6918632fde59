/*
 * Password and API key checks on the broker thread.
 *
 * A hash in the mosquitto_passwd format costs what its iteration count
 * says (PBKDF2-SHA512: about 0.1 ms at the default 101, 50 ms at 100,000,
 * 0.5 s at the 1,000,000 allowed), and the plugin API has no asynchronous
 * authentication: the broker waits for every check. Two things keep that
 * bounded:
 *
 * - A cache of recent outcomes, keyed by a keyed digest of the stored
 *   hash and the password presented. A client that logs in again with the
 *   same password (a reconnect, every client on SIGHUP) is answered from
 *   it, and so is a client that repeats a wrong one. An entry is only ever
 *   valid for that exact pair: a changed hash in the registry gives
 *   another digest. The digest's key is random per process, so the cache
 *   reveals nothing without it.
 * - A budget of broker time for hashing: a token bucket refilled at
 *   budget_ms per second and holding at most as much. A check that would
 *   hash while the bucket is empty is refused as busy; the client tries
 *   again later. A flood of new passwords can therefore take at most that
 *   share of the broker thread on average (one check may still overdraw
 *   the bucket by its own cost).
 */
#include "auth.h"

#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "fg_passwd.h"

#define DIGEST_LEN 32
/* Entries; a slot is chosen by the digest, a newer entry replaces an
 * older one in its slot. */
#define CACHE_SLOTS 8192

struct pw_entry {
	unsigned char digest[DIGEST_LEN];
	int64_t expires_ms; /* 0: empty */
	bool match;
};

struct auth_pwcheck {
	unsigned char key[32];
	struct pw_entry slots[CACHE_SLOTS];
	int64_t cache_ms;
	int64_t budget_us, tokens_us; /* per second, and what is left */
	int64_t refilled_ms;
	struct auth_pwcheck_stats stats;
};

struct auth_pwcheck *auth_pwcheck_new(int cache_s, int budget_ms)
{
	struct auth_pwcheck *pc = calloc(1, sizeof(*pc));

	if (pc == NULL)
		return NULL;
	if (RAND_bytes(pc->key, sizeof(pc->key)) != 1) {
		free(pc);
		return NULL;
	}
	pc->cache_ms = (int64_t)cache_s * 1000;
	pc->budget_us = (int64_t)budget_ms * 1000;
	pc->tokens_us = pc->budget_us;
	return pc;
}

void auth_pwcheck_free(struct auth_pwcheck *pc)
{
	if (pc == NULL)
		return;
	OPENSSL_cleanse(pc, sizeof(*pc));
	free(pc);
}

void auth_pwcheck_get_stats(const struct auth_pwcheck *pc,
                            struct auth_pwcheck_stats *out)
{
	*out = pc->stats;
}

/* The keyed digest of (stored, password); -1 on a library failure. */
static int digest_of(const struct auth_pwcheck *pc, const char *stored,
                     const char *password, unsigned char out[DIGEST_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int len = 0;
	int ok;

	/* The stored hash's terminating NUL separates the two strings. */
	ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, pc->key, sizeof(pc->key)) == 1 &&
	     EVP_DigestUpdate(ctx, stored, strlen(stored) + 1) == 1 &&
	     EVP_DigestUpdate(ctx, password, strlen(password)) == 1 &&
	     EVP_DigestFinal_ex(ctx, out, &len) == 1 && len == DIGEST_LEN;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -1;
}

static struct pw_entry *slot_of(struct auth_pwcheck *pc,
                                const unsigned char digest[DIGEST_LEN])
{
	uint32_t h;

	memcpy(&h, digest, sizeof(h));
	return &pc->slots[h % CACHE_SLOTS];
}

static void refill(struct auth_pwcheck *pc, int64_t now_ms)
{
	if (pc->refilled_ms != 0 && now_ms > pc->refilled_ms) {
		pc->tokens_us +=
		    (now_ms - pc->refilled_ms) * pc->budget_us / 1000;
		if (pc->tokens_us > pc->budget_us)
			pc->tokens_us = pc->budget_us;
	}
	if (now_ms > pc->refilled_ms)
		pc->refilled_ms = now_ms;
}

/* Wall time: what every other client waits while the broker hashes. */
static int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

enum auth_pw auth_pwcheck_verify(struct auth_pwcheck *pc, const char *stored,
                                 const char *password, int64_t now_ms)
{
	unsigned char digest[DIGEST_LEN];
	struct pw_entry *e = NULL;
	enum fg_passwd_result r;
	int64_t t0;

	if (stored == NULL || password == NULL)
		return AUTH_PW_MISMATCH;
	if (pc == NULL)
		return fg_passwd_verify(stored, password) == FG_PASSWD_MATCH
		           ? AUTH_PW_MATCH
		           : AUTH_PW_MISMATCH;
	if (pc->cache_ms > 0 && digest_of(pc, stored, password, digest) == 0) {
		e = slot_of(pc, digest);
		if (e->expires_ms > now_ms &&
		    CRYPTO_memcmp(e->digest, digest, DIGEST_LEN) == 0) {
			pc->stats.cached++;
			return e->match ? AUTH_PW_MATCH : AUTH_PW_MISMATCH;
		}
	}
	refill(pc, now_ms);
	if (pc->tokens_us <= 0) {
		pc->stats.busy++;
		return AUTH_PW_BUSY;
	}
	t0 = mono_us();
	r = fg_passwd_verify(stored, password);
	pc->tokens_us -= mono_us() - t0;
	pc->stats.hashed++;
	/* A malformed hash is refused without hashing; nothing to save. */
	if (e != NULL && r != FG_PASSWD_MALFORMED) {
		memcpy(e->digest, digest, DIGEST_LEN);
		e->expires_ms = now_ms + pc->cache_ms;
		e->match = r == FG_PASSWD_MATCH;
	}
	OPENSSL_cleanse(digest, sizeof(digest));
	return r == FG_PASSWD_MATCH ? AUTH_PW_MATCH : AUTH_PW_MISMATCH;
}
