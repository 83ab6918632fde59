/*
 * Unit tests: admission decisions and re-checks of connected clients,
 * as a table of registry state, what the client presents, and the answer.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "unit_run.h"

#define NOW 1000000

/* Written by `mosquitto_passwd -b -c file dash s3cret` (2.0.11). */
static const char HASH[] =
    "$7$101$SmYvxLSDVDliPOav$gsiV7wzolJE6vz9E2VdRzSd6qnrFAef5KmNHnenvvty"
    "GIaz7Rt1oCjp0xzPHzDCtNY8S2IZ0qX/knt01OsHg5g==";

static fg_fingerprint fp_of(int n)
{
	fg_fingerprint fp;

	snprintf(fp.hex, sizeof(fp.hex), "%064x", n);
	return fp;
}

/* Devices: ok (cert 1), revoked (2), expired (3), future (4), suspended
 * (5), decommissioned (6), keyed with key s3cret (7), keyed without a
 * hash (8), rotating with old cert 9 and new cert 10 both valid, and a
 * revocation scheduled after NOW (11). */
static struct fg_registry *fleet(void)
{
	struct fg_registry *r = fg_registry_new();
	fg_fingerprint fp;

#define DEV(id, st, key, hash)                                                 \
	fg_registry_add_device(r, id, "north", st, key, hash)
#define CERT(n, id, nb, na, rev)                                               \
	(fp = fp_of(n), fg_registry_add_cert(r, &fp, id, nb, na, rev))
	DEV("ok", FG_DEVICE_ACTIVE, false, NULL);
	DEV("rev", FG_DEVICE_ACTIVE, false, NULL);
	DEV("old", FG_DEVICE_ACTIVE, false, NULL);
	DEV("new", FG_DEVICE_ACTIVE, false, NULL);
	DEV("susp", FG_DEVICE_SUSPENDED, false, NULL);
	DEV("gone", FG_DEVICE_DECOMMISSIONED, false, NULL);
	DEV("keyed", FG_DEVICE_ACTIVE, true, HASH);
	DEV("nokey", FG_DEVICE_ACTIVE, true, NULL);
	DEV("rot", FG_DEVICE_ACTIVE, false, NULL);
	DEV("later", FG_DEVICE_ACTIVE, false, NULL);
	CERT(1, "ok", 0, NOW + 100, 0);
	CERT(2, "rev", 0, NOW + 100, NOW - 5);
	CERT(3, "old", 0, NOW - 1, 0);
	CERT(4, "new", NOW + 1, NOW + 100, 0);
	CERT(5, "susp", 0, NOW + 100, 0);
	CERT(6, "gone", 0, NOW + 100, 0);
	CERT(7, "keyed", 0, NOW + 100, 0);
	CERT(8, "nokey", 0, NOW + 100, 0);
	CERT(9, "rot", 0, NOW + 100, 0);
	CERT(10, "rot", 0, NOW + 200, 0);
	CERT(11, "later", 0, NOW + 100, NOW + 10);
	fg_registry_add_account(r, "dash", HASH, "dashboard", "north", false,
	                        false);
	fg_registry_add_account(r, "off", HASH, "dashboard", NULL, false, true);
	fg_registry_add_account(r, "broken", "not-a-hash", "service", NULL,
	                        false, false);
#undef DEV
#undef CERT
	ck_assert_int_eq(fg_registry_finalise(r, NULL, 0), 0);
	return r;
}

struct decide_case {
	const char *desc;
	int api_key;
	int cert; /* 0: no certificate */
	const char *client_id, *username, *password;
	enum auth_reason want;
};

static const struct decide_case cases[] = {
    {"registered certificate with its device id is admitted", 0, 1, "ok", NULL,
     NULL, AUTH_OK},
    {"a username sent by a device is ignored", 0, 1, "ok", "someone", "x",
     AUTH_OK},
    {"unknown certificate is refused", 0, 99, "ok", NULL, NULL,
     AUTH_UNKNOWN_CERTIFICATE},
    {"revoked certificate is refused", 0, 2, "rev", NULL, NULL,
     AUTH_CERTIFICATE_REVOKED},
    {"certificate past its registry window is refused", 0, 3, "old", NULL, NULL,
     AUTH_CERTIFICATE_EXPIRED},
    {"certificate before its registry window is refused", 0, 4, "new", NULL,
     NULL, AUTH_CERTIFICATE_NOT_YET_VALID},
    {"suspended device is refused", 0, 5, "susp", NULL, NULL,
     AUTH_DEVICE_SUSPENDED},
    {"decommissioned device is refused", 0, 6, "gone", NULL, NULL,
     AUTH_DEVICE_DECOMMISSIONED},
    {"another device's client id is refused", 0, 1, "rev", NULL, NULL,
     AUTH_CLIENT_ID_MISMATCH},
    {"both certificates of a rotating device are admitted (old)", 0, 9, "rot",
     NULL, NULL, AUTH_OK},
    {"both certificates of a rotating device are admitted (new)", 0, 10, "rot",
     NULL, NULL, AUTH_OK},
    {"a revocation scheduled in the future does not apply yet", 0, 11, "later",
     NULL, NULL, AUTH_OK},
    {"client id with + is refused", 0, 1, "o+k", NULL, NULL,
     AUTH_INVALID_CLIENT_ID},
    {"client id with # is refused", 0, 1, "ok#", NULL, NULL,
     AUTH_INVALID_CLIENT_ID},
    {"client id with / is refused", 0, 1, "o/k", NULL, NULL,
     AUTH_INVALID_CLIENT_ID},
    {"client id with a control character is refused", 0, 1, "ok\x01", NULL,
     NULL, AUTH_INVALID_CLIENT_ID},
    {"hostile username is refused even with a good certificate", 0, 1, "ok",
     "a/#", NULL, AUTH_INVALID_USERNAME},
    {"key mode per_device: keyed device with its key is admitted", 1, 7,
     "keyed", NULL, "s3cret", AUTH_OK},
    {"key mode per_device: keyed device with a wrong key is refused", 1, 7,
     "keyed", NULL, "wrong", AUTH_BAD_API_KEY},
    {"key mode per_device: keyed device without a key is refused", 1, 7,
     "keyed", NULL, NULL, AUTH_BAD_API_KEY},
    {"key mode per_device: device flagged but without a hash is refused", 1, 8,
     "nokey", NULL, "anything", AUTH_BAD_API_KEY},
    {"key mode per_device: unflagged device needs no key", 1, 1, "ok", NULL,
     NULL, AUTH_OK},
    {"key mode all: unflagged device without a key is refused", 2, 1, "ok",
     NULL, NULL, AUTH_BAD_API_KEY},
    {"key mode off: a keyed device needs no key", 0, 7, "keyed", NULL, NULL,
     AUTH_OK},
    {"account with the right password is admitted", 0, 0, "dash-1", "dash",
     "s3cret", AUTH_OK},
    {"account with a wrong password is refused", 0, 0, "dash-1", "dash",
     "S3cret", AUTH_BAD_PASSWORD},
    {"account without a password is refused", 0, 0, "dash-1", "dash", NULL,
     AUTH_BAD_PASSWORD},
    {"unknown account is refused", 0, 0, "x", "nobody", "s3cret",
     AUTH_UNKNOWN_ACCOUNT},
    {"disabled account is refused", 0, 0, "x", "off", "s3cret",
     AUTH_ACCOUNT_DISABLED},
    {"account with a malformed stored hash is refused", 0, 0, "x", "broken",
     "not-a-hash", AUTH_BAD_PASSWORD},
    {"no certificate and no username is refused", 0, 0, "x", NULL, NULL,
     AUTH_NO_CREDENTIALS},
    {"a device id is not an account", 0, 0, "ok", "ok", "s3cret",
     AUTH_UNKNOWN_ACCOUNT},
};

START_TEST(decision_table)
{
	struct fg_registry *reg = fleet();
	const struct decide_case *c = &cases[_i];
	struct auth_config cfg = {.api_key = c->api_key, .max_id_length = 64};
	struct auth_request req;
	struct auth_identity id;
	enum auth_reason got;

	memset(&req, 0, sizeof(req));
	req.client_id = c->client_id;
	req.username = c->username;
	req.password = c->password;
	if (c->cert != 0) {
		req.has_cert = true;
		req.fp = fp_of(c->cert);
		req.x509_not_before = 0;
		req.x509_not_after = NOW + 1000;
	}
	got = auth_decide(reg, &cfg, &req, NOW, &id);
	ck_assert_msg(got == c->want, "%s: got %s, want %s", c->desc,
	              auth_reason_str(got), auth_reason_str(c->want));
	if (got == AUTH_OK && c->cert != 0)
		ck_assert_str_eq(id.device->id, c->client_id);
	fg_registry_free(reg);
}
END_TEST

START_TEST(x509_validity_is_enforced_besides_the_registry_window)
{
	struct fg_registry *reg = fleet();
	struct auth_config cfg = {.api_key = 0, .max_id_length = 64};
	struct auth_request req;
	struct auth_identity id;

	memset(&req, 0, sizeof(req));
	req.client_id = "ok";
	req.has_cert = true;
	req.fp = fp_of(1);
	req.x509_not_before = 0;
	req.x509_not_after = NOW - 1;
	ck_assert_int_eq(auth_decide(reg, &cfg, &req, NOW, &id),
	                 AUTH_CERTIFICATE_EXPIRED);
	req.x509_not_before = NOW + 1;
	req.x509_not_after = NOW + 10;
	ck_assert_int_eq(auth_decide(reg, &cfg, &req, NOW, &id),
	                 AUTH_CERTIFICATE_NOT_YET_VALID);
	fg_registry_free(reg);
}
END_TEST

START_TEST(nobody_is_admitted_without_a_registry)
{
	struct auth_config cfg = {.api_key = 0, .max_id_length = 64};
	struct auth_request req;
	struct auth_identity id;

	memset(&req, 0, sizeof(req));
	req.client_id = "ok";
	req.has_cert = true;
	req.fp = fp_of(1);
	req.x509_not_after = NOW + 10;
	ck_assert_int_eq(auth_decide(NULL, &cfg, &req, NOW, &id),
	                 AUTH_REGISTRY_UNAVAILABLE);
	req.has_cert = false;
	req.username = "dash";
	req.password = "s3cret";
	ck_assert_int_eq(auth_decide(NULL, &cfg, &req, NOW, &id),
	                 AUTH_REGISTRY_UNAVAILABLE);
}
END_TEST

static struct auth_session device_session(int cert, const char *id)
{
	struct auth_session s;

	memset(&s, 0, sizeof(s));
	s.client = (void *)0x1;
	s.is_device = true;
	snprintf(s.client_id, sizeof(s.client_id), "%s", id);
	snprintf(s.name, sizeof(s.name), "%s", id);
	s.fp = fp_of(cert);
	s.x509_not_after = NOW + 1000;
	return s;
}

START_TEST(recheck_disconnects_what_the_new_registry_no_longer_admits)
{
	struct fg_registry *reg = fleet();
	struct auth_config cfg = {.api_key = 1, .max_id_length = 64};
	struct auth_session s = device_session(1, "ok");

	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW), AUTH_OK);
	s = device_session(2, "rev");
	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW),
	                 AUTH_CERTIFICATE_REVOKED);
	s = device_session(5, "susp");
	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW),
	                 AUTH_DEVICE_SUSPENDED);
	s = device_session(99, "ok");
	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW),
	                 AUTH_UNKNOWN_CERTIFICATE);
	/* The scheduled revocation applies once its time has come. */
	s = device_session(11, "later");
	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW), AUTH_OK);
	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW + 10),
	                 AUTH_CERTIFICATE_REVOKED);
	/* Expiry while connected. */
	s = device_session(1, "ok");
	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW + 101),
	                 AUTH_CERTIFICATE_EXPIRED);
	/* A device whose key changed since it logged in. */
	s = device_session(7, "keyed");
	s.secret_hash = fg_hash_str(HASH);
	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW), AUTH_OK);
	s.secret_hash = 42;
	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW), AUTH_BAD_API_KEY);
	fg_registry_free(reg);
}
END_TEST

START_TEST(recheck_of_accounts_follows_removal_disabling_and_new_password)
{
	struct fg_registry *reg = fleet();
	struct auth_config cfg = {.api_key = 0, .max_id_length = 64};
	struct auth_session s;

	memset(&s, 0, sizeof(s));
	snprintf(s.name, sizeof(s.name), "dash");
	s.secret_hash = fg_hash_str(HASH);
	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW), AUTH_OK);
	s.secret_hash++;
	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW), AUTH_BAD_PASSWORD);
	snprintf(s.name, sizeof(s.name), "off");
	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW),
	                 AUTH_ACCOUNT_DISABLED);
	snprintf(s.name, sizeof(s.name), "deleted");
	ck_assert_int_eq(auth_recheck(reg, &cfg, &s, NOW),
	                 AUTH_UNKNOWN_ACCOUNT);
	fg_registry_free(reg);
}
END_TEST

START_TEST(session_table_is_keyed_by_client_and_removal_is_idempotent)
{
	struct auth_sessions t;
	struct auth_session s;
	uintptr_t i;

	ck_assert_int_eq(auth_sessions_init(&t, 8), 0);
	memset(&s, 0, sizeof(s));
	for (i = 1; i <= 1000; i++) {
		s.client = (void *)(i * 16);
		snprintf(s.client_id, sizeof(s.client_id), "c%zu", (size_t)i);
		ck_assert_ptr_nonnull(auth_sessions_put(&t, &s));
	}
	ck_assert_uint_eq(t.count, 1000);
	/* Re-authentication of the same client replaces its entry. */
	s.client = (void *)(16 * 5);
	snprintf(s.client_id, sizeof(s.client_id), "again");
	auth_sessions_put(&t, &s);
	ck_assert_uint_eq(t.count, 1000);
	ck_assert_str_eq(auth_sessions_get(&t, (void *)80)->client_id, "again");
	auth_sessions_remove(&t, (void *)80);
	auth_sessions_remove(&t, (void *)80);
	ck_assert_uint_eq(t.count, 999);
	ck_assert_ptr_null(auth_sessions_get(&t, (void *)80));
	ck_assert_str_eq(auth_sessions_get(&t, (void *)96)->client_id, "c6");
	auth_sessions_free(&t);
}
END_TEST

/* Sets of withdrawn access ---------------------------------------------- */

START_TEST(withdrawn_sets_find_what_was_added_and_the_last_reason_wins)
{
	struct fg_withdrawn *w = fg_withdrawn_new(),
	                    *later = fg_withdrawn_new();
	enum fg_withdrawn_why why;
	char key[32];

	ck_assert_ptr_nonnull(w);
	ck_assert_ptr_nonnull(later);
	ck_assert(!fg_withdrawn_has(NULL, FG_WD_DEVICE, "x", &why));
	/* Keys added out of order, one twice. */
	for (int i = 40; i >= 0; i--) {
		snprintf(key, sizeof(key), "dev-%02d", i);
		ck_assert_int_eq(
		    fg_withdrawn_add(w, FG_WD_DEVICE, key, FG_WD_SUSPENDED), 0);
	}
	ck_assert_int_eq(
	    fg_withdrawn_add(w, FG_WD_DEVICE, "dev-07", FG_WD_DECOMMISSIONED),
	    0);
	ck_assert_int_eq(fg_withdrawn_add(w, FG_WD_ACCOUNT, "dash", FG_WD_GONE),
	                 0);
	fg_withdrawn_seal(w);
	ck_assert_uint_eq(fg_withdrawn_count(w, FG_WD_DEVICE), 41);
	for (int i = 0; i <= 40; i++) {
		snprintf(key, sizeof(key), "dev-%02d", i);
		ck_assert_msg(fg_withdrawn_has(w, FG_WD_DEVICE, key, &why),
		              "%s", key);
		ck_assert_int_eq(why, i == 7 ? FG_WD_DECOMMISSIONED
		                             : FG_WD_SUSPENDED);
	}
	ck_assert(!fg_withdrawn_has(w, FG_WD_DEVICE, "dev-41", &why));
	ck_assert(!fg_withdrawn_has(w, FG_WD_DEVICE, "dash", &why));
	ck_assert(!fg_withdrawn_has(w, FG_WD_CERT, "dev-01", &why));
	ck_assert(fg_withdrawn_has(w, FG_WD_ACCOUNT, "dash", &why));

	/* A later set's reasons win; what it lacks stays. */
	ck_assert_int_eq(
	    fg_withdrawn_add(later, FG_WD_DEVICE, "dev-03", FG_WD_GONE), 0);
	ck_assert_int_eq(
	    fg_withdrawn_add(later, FG_WD_ACCOUNT, "ops", FG_WD_DISABLED), 0);
	fg_withdrawn_seal(later);
	ck_assert_int_eq(fg_withdrawn_merge(w, later), 0);
	fg_withdrawn_seal(w);
	ck_assert(fg_withdrawn_has(w, FG_WD_DEVICE, "dev-03", &why));
	ck_assert_int_eq(why, FG_WD_GONE);
	ck_assert(fg_withdrawn_has(w, FG_WD_DEVICE, "dev-04", &why));
	ck_assert_int_eq(why, FG_WD_SUSPENDED);
	ck_assert(fg_withdrawn_has(w, FG_WD_ACCOUNT, "ops", &why));
	ck_assert_int_eq(why, FG_WD_DISABLED);
	ck_assert_uint_eq(fg_withdrawn_count(w, FG_WD_DEVICE), 41);
	ck_assert_uint_eq(fg_withdrawn_count(w, FG_WD_ACCOUNT), 2);
	fg_withdrawn_free(later);
	fg_withdrawn_free(w);
}
END_TEST

START_TEST(withdrawn_access_refuses_with_the_reason_the_registry_will_give)
{
	struct fg_withdrawn *w = fg_withdrawn_new();
	fg_fingerprint revoked = fp_of(2), gone = fp_of(3), fine = fp_of(1);

	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(auth_withdrawn(NULL, true, "dev-a", &fine), AUTH_OK);
	fg_withdrawn_add(w, FG_WD_CERT, revoked.hex, FG_WD_REVOKED);
	fg_withdrawn_add(w, FG_WD_CERT, gone.hex, FG_WD_GONE);
	fg_withdrawn_add(w, FG_WD_DEVICE, "dev-s", FG_WD_SUSPENDED);
	fg_withdrawn_add(w, FG_WD_DEVICE, "dev-d", FG_WD_DECOMMISSIONED);
	fg_withdrawn_add(w, FG_WD_DEVICE, "dev-x", FG_WD_GONE);
	fg_withdrawn_add(w, FG_WD_ACCOUNT, "dash", FG_WD_DISABLED);
	fg_withdrawn_add(w, FG_WD_ACCOUNT, "old", FG_WD_GONE);
	fg_withdrawn_seal(w);

	ck_assert_int_eq(auth_withdrawn(w, true, "dev-a", &revoked),
	                 AUTH_CERTIFICATE_REVOKED);
	ck_assert_int_eq(auth_withdrawn(w, true, "dev-a", &gone),
	                 AUTH_UNKNOWN_CERTIFICATE);
	ck_assert_int_eq(auth_withdrawn(w, true, "dev-a", &fine), AUTH_OK);
	ck_assert_int_eq(auth_withdrawn(w, true, "dev-s", &fine),
	                 AUTH_DEVICE_SUSPENDED);
	ck_assert_int_eq(auth_withdrawn(w, true, "dev-d", &fine),
	                 AUTH_DEVICE_DECOMMISSIONED);
	ck_assert_int_eq(auth_withdrawn(w, true, "dev-x", &fine),
	                 AUTH_UNKNOWN_CERTIFICATE);
	ck_assert_int_eq(auth_withdrawn(w, false, "dash", NULL),
	                 AUTH_ACCOUNT_DISABLED);
	ck_assert_int_eq(auth_withdrawn(w, false, "old", NULL),
	                 AUTH_UNKNOWN_ACCOUNT);
	ck_assert_int_eq(auth_withdrawn(w, false, "ops", NULL), AUTH_OK);
	/* An account is not a device of the same name, nor the reverse. */
	ck_assert_int_eq(auth_withdrawn(w, false, "dev-s", NULL), AUTH_OK);
	ck_assert_int_eq(auth_withdrawn(w, true, "dash", &fine), AUTH_OK);
	fg_withdrawn_free(w);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("decide");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, decision_table, 0,
	                    (int)(sizeof(cases) / sizeof(cases[0])));
	tcase_add_test(tc,
	               x509_validity_is_enforced_besides_the_registry_window);
	tcase_add_test(tc, nobody_is_admitted_without_a_registry);
	tcase_add_test(
	    tc, recheck_disconnects_what_the_new_registry_no_longer_admits);
	tcase_add_test(
	    tc, recheck_of_accounts_follows_removal_disabling_and_new_password);
	tcase_add_test(
	    tc, session_table_is_keyed_by_client_and_removal_is_idempotent);
	tcase_add_test(
	    tc, withdrawn_sets_find_what_was_added_and_the_last_reason_wins);
	tcase_add_test(
	    tc,
	    withdrawn_access_refuses_with_the_reason_the_registry_will_give);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return unit_run(suite());
}
