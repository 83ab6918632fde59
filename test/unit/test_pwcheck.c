/*
 * Unit tests: password checks with a cache of recent outcomes and a
 * budget of hashing time (auth_pwcheck.c), and the re-check of a
 * connected client that does not hash its password again.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "../tools/fg_passwd_make.h"
#include "fg_common.h"
#include "unit_run.h"

/* A hash of password with a salt of salt_byte repeated. */
static void make_hash(char *out, size_t len, const char *password,
                      int iterations, unsigned char salt_byte)
{
	unsigned char salt[FG_PASSWD_MAKE_SALT];

	memset(salt, salt_byte, sizeof(salt));
	ck_assert_int_eq(fg_passwd_make(out, len, password, iterations, salt),
	                 0);
}

static struct auth_pwcheck_stats stats(const struct auth_pwcheck *pc)
{
	struct auth_pwcheck_stats st;

	auth_pwcheck_get_stats(pc, &st);
	return st;
}

START_TEST(a_repeated_check_is_answered_from_the_cache)
{
	struct auth_pwcheck *pc = auth_pwcheck_new(60, 1000);
	char h[200], h2[200];
	int64_t now = 1000;

	ck_assert_ptr_nonnull(pc);
	make_hash(h, sizeof(h), "s3cret", 101, 1);
	make_hash(h2, sizeof(h2), "s3cret", 101,
	          2); /* same password, new salt */
	ck_assert_int_eq(auth_pwcheck_verify(pc, h, "s3cret", now),
	                 AUTH_PW_MATCH);
	ck_assert_int_eq(auth_pwcheck_verify(pc, h, "s3cret", now + 10),
	                 AUTH_PW_MATCH);
	ck_assert_uint_eq(stats(pc).hashed, 1);
	ck_assert_uint_eq(stats(pc).cached, 1);
	/* A wrong password is remembered as wrong, and only for itself. */
	ck_assert_int_eq(auth_pwcheck_verify(pc, h, "s3cret!", now),
	                 AUTH_PW_MISMATCH);
	ck_assert_int_eq(auth_pwcheck_verify(pc, h, "s3cret!", now),
	                 AUTH_PW_MISMATCH);
	ck_assert_int_eq(auth_pwcheck_verify(pc, h, "s3cre", now),
	                 AUTH_PW_MISMATCH);
	ck_assert_uint_eq(stats(pc).hashed, 3);
	ck_assert_uint_eq(stats(pc).cached, 2);
	/* A new hash in the registry is checked anew, even for the same
	 * password; an entry expires. */
	ck_assert_int_eq(auth_pwcheck_verify(pc, h2, "s3cret", now),
	                 AUTH_PW_MATCH);
	ck_assert_uint_eq(stats(pc).hashed, 4);
	ck_assert_int_eq(auth_pwcheck_verify(pc, h, "s3cret", now + 60000),
	                 AUTH_PW_MATCH);
	ck_assert_uint_eq(stats(pc).hashed, 5);
	/* No password, or a malformed hash: refused, nothing hashed. */
	ck_assert_int_eq(auth_pwcheck_verify(pc, h, NULL, now),
	                 AUTH_PW_MISMATCH);
	ck_assert_int_eq(auth_pwcheck_verify(pc, "$7$101$x", "s3cret", now),
	                 AUTH_PW_MISMATCH);
	auth_pwcheck_free(pc);

	/* Without a cache every check hashes. */
	pc = auth_pwcheck_new(0, 1000);
	ck_assert_ptr_nonnull(pc);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(auth_pwcheck_verify(pc, h, "s3cret", now),
		                 AUTH_PW_MATCH);
	ck_assert_uint_eq(stats(pc).hashed, 3);
	ck_assert_uint_eq(stats(pc).cached, 0);
	auth_pwcheck_free(pc);
}
END_TEST

/* With a budget of 2 ms a second, a hash that costs more (40,000
 * iterations: about 20 ms here) spends it: the next check that would hash
 * is refused as busy until the budget has been refilled, while answers
 * the cache holds are still given. The clock is the caller's: refills
 * follow now_ms, the cost is measured. */
START_TEST(checks_over_the_hashing_budget_are_refused_as_busy)
{
	struct auth_pwcheck *pc = auth_pwcheck_new(60, 2);
	char h[200];
	int64_t now = 5000;

	ck_assert_ptr_nonnull(pc);
	make_hash(h, sizeof(h), "s3cret", 40000, 3);
	ck_assert_int_eq(auth_pwcheck_verify(pc, h, "s3cret", now),
	                 AUTH_PW_MATCH);
	ck_assert_int_eq(auth_pwcheck_verify(pc, h, "guess", now + 1),
	                 AUTH_PW_BUSY);
	ck_assert_int_eq(auth_pwcheck_verify(pc, h, "s3cret", now + 2),
	                 AUTH_PW_MATCH);
	ck_assert_uint_eq(stats(pc).busy, 1);
	ck_assert_uint_eq(stats(pc).hashed, 1);
	/* An hour later the budget is full again (2 ms), whatever the hash
	 * overdrew (7.2 s would be refilled; under valgrind the hash takes
	 * a second or two). */
	ck_assert_int_eq(auth_pwcheck_verify(pc, h, "guess", now + 3600000),
	                 AUTH_PW_MISMATCH);
	ck_assert_uint_eq(stats(pc).hashed, 2);
	auth_pwcheck_free(pc);
}
END_TEST

/* The broker authenticates connected clients again on SIGHUP: while the
 * stored hash is the one the client was admitted with, its password is
 * not hashed again; a changed hash is checked (and here refused, as the
 * password sent at CONNECT no longer matches it). */
START_TEST(a_recheck_with_the_same_stored_hash_does_not_hash_again)
{
	struct fg_registry *reg = fg_registry_new();
	struct auth_config cfg = {.max_id_length = 64};
	struct auth_request req = {
	    .client_id = "dash-1", .username = "dash", .password = "s3cret"};
	struct auth_identity id;
	char h[200], other[200];

	cfg.pwcheck = auth_pwcheck_new(0, 1000);
	ck_assert_ptr_nonnull(cfg.pwcheck);
	make_hash(h, sizeof(h), "s3cret", 101, 4);
	make_hash(other, sizeof(other), "changed", 101, 5);
	ck_assert_int_eq(fg_registry_add_account(reg, "dash", h, "dashboard",
	                                         NULL, false, false),
	                 0);
	ck_assert_int_eq(fg_registry_finalise(reg, NULL, 0), 0);
	ck_assert_int_eq(auth_decide(reg, &cfg, &req, 0, &id), AUTH_OK);
	ck_assert_uint_eq(stats(cfg.pwcheck).hashed, 1);

	req.admitted_secret = fg_hash_str(h);
	ck_assert_int_eq(auth_decide(reg, &cfg, &req, 0, &id), AUTH_OK);
	ck_assert_uint_eq(stats(cfg.pwcheck).hashed, 1);

	req.admitted_secret = fg_hash_str(other);
	ck_assert_int_eq(auth_decide(reg, &cfg, &req, 0, &id), AUTH_OK);
	ck_assert_uint_eq(stats(cfg.pwcheck).hashed, 2);
	req.password = "wrong";
	ck_assert_int_eq(auth_decide(reg, &cfg, &req, 0, &id),
	                 AUTH_BAD_PASSWORD);

	/* Over the budget a login is refused as busy, not as a bad
	 * password. */
	auth_pwcheck_free(cfg.pwcheck);
	cfg.pwcheck = auth_pwcheck_new(0, 1);
	make_hash(other, sizeof(other), "s3cret", 40000, 6);
	fg_registry_free(reg);
	reg = fg_registry_new();
	ck_assert_int_eq(fg_registry_add_account(reg, "dash", other,
	                                         "dashboard", NULL, false,
	                                         false),
	                 0);
	ck_assert_int_eq(fg_registry_finalise(reg, NULL, 0), 0);
	req.admitted_secret = 0;
	req.password = "s3cret";
	ck_assert_int_eq(auth_decide(reg, &cfg, &req, 0, &id), AUTH_OK);
	ck_assert_int_eq(auth_decide(reg, &cfg, &req, 0, &id),
	                 AUTH_SERVER_BUSY);
	ck_assert_str_eq(auth_reason_str(AUTH_SERVER_BUSY), "server_busy");
	auth_pwcheck_free(cfg.pwcheck);
	fg_registry_free(reg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pwcheck");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, a_repeated_check_is_answered_from_the_cache);
	tcase_add_test(tc, checks_over_the_hashing_budget_are_refused_as_busy);
	tcase_add_test(tc,
	               a_recheck_with_the_same_stored_hash_does_not_hash_again);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
