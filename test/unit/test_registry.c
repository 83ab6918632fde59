/*
 * Unit tests: the registry cache, its snapshot file, and option parsing.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "fg_opts.h"
#include "fg_registry.h"
#include "fg_runtime.h"
#include "unit_run.h"

static fg_fingerprint fp_of(int n)
{
	fg_fingerprint fp;

	snprintf(fp.hex, sizeof(fp.hex), "%064x", n);
	return fp;
}

static struct fg_registry *sample(size_t ndevices)
{
	struct fg_registry *reg = fg_registry_new();
	char id[32];
	size_t i;

	ck_assert_ptr_nonnull(reg);
	for (i = 0; i < ndevices; i++) {
		fg_fingerprint fp = fp_of((int)i);

		snprintf(id, sizeof(id), "meter-%05zu", i);
		ck_assert_int_eq(
		    fg_registry_add_device(reg, id, i % 2 ? "north" : "south",
		                           FG_DEVICE_ACTIVE, i % 3 == 0,
		                           i % 3 == 0 ? "$7$101$a$b" : NULL),
		    0);
		ck_assert_int_eq(fg_registry_add_cert(reg, &fp, id, 100, 200,
		                                      i == 7 ? 150 : 0),
		                 0);
	}
	ck_assert_int_eq(fg_registry_add_account(reg, "dash", "$7$1$x$y",
	                                         "dashboard", "north", false,
	                                         false),
	                 0);
	ck_assert_int_eq(fg_registry_finalise(reg, NULL, 0), 0);
	return reg;
}

START_TEST(lookups_find_every_row_and_nothing_else)
{
	struct fg_registry *reg = sample(5000);
	fg_fingerprint fp;
	char id[32];
	size_t i;

	ck_assert_uint_eq(fg_registry_device_count(reg), 5000);
	for (i = 0; i < 5000; i++) {
		const struct fg_cert *c;

		fp = fp_of((int)i);
		snprintf(id, sizeof(id), "meter-%05zu", i);
		c = fg_registry_cert(reg, &fp);
		ck_assert_ptr_nonnull(c);
		ck_assert_str_eq(c->device->id, id);
		ck_assert_ptr_eq(fg_registry_device(reg, id), c->device);
	}
	fp = fp_of(5000);
	ck_assert_ptr_null(fg_registry_cert(reg, &fp));
	ck_assert_ptr_null(fg_registry_device(reg, "meter-05000"));
	ck_assert_ptr_null(fg_registry_account(reg, "Dash"));
	ck_assert_str_eq(fg_registry_account(reg, "dash")->role, "dashboard");
	fg_registry_free(reg);
}
END_TEST

/* Strings are kept in 1 MB blocks: a registry whose strings fill several,
 * and one string longer than a block, keeps every byte of each. */
START_TEST(strings_spanning_many_blocks_and_one_larger_than_a_block_are_kept)
{
	struct fg_registry *reg = fg_registry_new();
	size_t n = 12000, big_len = (3u << 20) / 2;
	char *big = malloc(big_len + 1), id[160], muni[160];
	fg_fingerprint fp;

	ck_assert_ptr_nonnull(reg);
	ck_assert_ptr_nonnull(big);
	memset(big, 'm', big_len);
	big[big_len] = '\0';
	for (size_t i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "meter-%06zu-%0120zu", i, i);
		snprintf(muni, sizeof(muni), "muni-%zu", i % 37);
		ck_assert_int_eq(
		    fg_registry_add_device(reg, id, i == 5000 ? big : muni,
		                           FG_DEVICE_ACTIVE, false, NULL),
		    0);
		fp = fp_of((int)i);
		ck_assert_int_eq(
		    fg_registry_add_cert(reg, &fp, id, 0, INT64_MAX, 0), 0);
	}
	ck_assert_int_eq(fg_registry_finalise(reg, NULL, 0), 0);
	for (size_t i = 0; i < n; i++) {
		const struct fg_device *d;

		snprintf(id, sizeof(id), "meter-%06zu-%0120zu", i, i);
		snprintf(muni, sizeof(muni), "muni-%zu", i % 37);
		d = fg_registry_device(reg, id);
		ck_assert_ptr_nonnull(d);
		ck_assert_str_eq(d->id, id);
		ck_assert_str_eq(d->municipality, i == 5000 ? big : muni);
		fp = fp_of((int)i);
		ck_assert_str_eq(fg_registry_cert(reg, &fp)->device_id, id);
	}
	fg_registry_free(reg);
	free(big);
}
END_TEST

/*
 * Derived registries against a model: generations of random changes
 * (devices, certificates and accounts added, changed, removed; tables that
 * grow from a few rows to thousands, so that the indices are enlarged and
 * rows move), each a registry derived from the one before. Every
 * generation must answer exactly as the model says, and its base must
 * still answer as the model said before the changes.
 */
#define M_DEVICES 1500
#define M_CERTS 2500
#define M_ACCOUNTS 300

struct model {
	bool dev[M_DEVICES];
	int dev_muni[M_DEVICES], dev_status[M_DEVICES];
	bool cert[M_CERTS];
	int cert_dev[M_CERTS], cert_rev[M_CERTS];
	bool acct[M_ACCOUNTS];
	int acct_role[M_ACCOUNTS];
};

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static unsigned rnd(unsigned n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (unsigned)(rng_state % n);
}

static void dev_name(char *buf, size_t len, int i)
{
	snprintf(buf, len, "dev-%d", i);
}

static void muni_name(char *buf, size_t len, int m)
{
	snprintf(buf, len, "muni-%d", m);
}

static void expect_model(const struct fg_registry *reg, const struct model *m)
{
	size_t ndev = 0, ncert = 0, nacct = 0;
	char id[32], muni[32], role[32];

	for (int i = 0; i < M_DEVICES; i++) {
		const struct fg_device *d;

		dev_name(id, sizeof(id), i);
		d = fg_registry_device(reg, id);
		if (!m->dev[i]) {
			ck_assert_ptr_null(d);
			continue;
		}
		ndev++;
		ck_assert_ptr_nonnull(d);
		ck_assert_str_eq(d->id, id);
		muni_name(muni, sizeof(muni), m->dev_muni[i]);
		ck_assert_str_eq(d->municipality, muni);
		ck_assert_int_eq((int)d->status, m->dev_status[i]);
	}
	for (int i = 0; i < M_CERTS; i++) {
		fg_fingerprint fp = fp_of(i);
		const struct fg_cert *c = fg_registry_cert(reg, &fp);

		if (!m->cert[i]) {
			ck_assert_ptr_null(c);
			continue;
		}
		ncert++;
		ck_assert_ptr_nonnull(c);
		dev_name(id, sizeof(id), m->cert_dev[i]);
		ck_assert_str_eq(c->device_id, id);
		ck_assert_ptr_eq(c->device, fg_registry_device(reg, id));
		ck_assert_int_eq(c->revoked_at, m->cert_rev[i]);
	}
	for (int i = 0; i < M_ACCOUNTS; i++) {
		const struct fg_account *a;

		snprintf(id, sizeof(id), "acct-%d", i);
		a = fg_registry_account(reg, id);
		if (!m->acct[i]) {
			ck_assert_ptr_null(a);
			continue;
		}
		nacct++;
		ck_assert_ptr_nonnull(a);
		snprintf(role, sizeof(role), "role-%d", m->acct_role[i]);
		ck_assert_str_eq(a->role, role);
		ck_assert_str_eq(a->password_hash, "$7$101$salt$hash");
	}
	ck_assert_uint_eq(fg_registry_device_count(reg), ndev);
	ck_assert_uint_eq(fg_registry_cert_count(reg), ncert);
	ck_assert_uint_eq(fg_registry_account_count(reg), nacct);
}

static void put_device(struct fg_registry *reg, struct model *m, int i)
{
	char id[32], muni[32];

	m->dev[i] = true;
	m->dev_muni[i] = (int)rnd(7);
	m->dev_status[i] = (int)rnd(3);
	dev_name(id, sizeof(id), i);
	muni_name(muni, sizeof(muni), m->dev_muni[i]);
	ck_assert_int_eq(
	    fg_registry_add_device(reg, id, muni,
	                           (enum fg_device_status)m->dev_status[i],
	                           false, NULL),
	    0);
}

static void put_cert(struct fg_registry *reg, struct model *m, int i, int dev)
{
	fg_fingerprint fp = fp_of(i);
	char id[32];

	m->cert[i] = true;
	m->cert_dev[i] = dev;
	m->cert_rev[i] = (int)rnd(2) * 1000;
	dev_name(id, sizeof(id), dev);
	ck_assert_int_eq(
	    fg_registry_add_cert(reg, &fp, id, 0, 1 << 30, m->cert_rev[i]), 0);
}

static void put_account(struct fg_registry *reg, struct model *m, int i)
{
	char id[32], role[32];

	m->acct[i] = true;
	m->acct_role[i] = (int)rnd(5);
	snprintf(id, sizeof(id), "acct-%d", i);
	snprintf(role, sizeof(role), "role-%d", m->acct_role[i]);
	ck_assert_int_eq(fg_registry_add_account(reg, id, "$7$101$salt$hash",
	                                         role, NULL, false, false),
	                 0);
}

/* One random change, kept consistent: a device goes only with its
 * certificates, and a certificate names a device that exists. */
static void random_change(struct fg_registry *reg, struct model *m, int range)
{
	int i, j;
	char id[32];
	fg_fingerprint fp;

	switch (rnd(6)) {
	case 0: /* a device added or changed */
	case 1:
		put_device(reg, m, (int)rnd((unsigned)range));
		break;
	case 2: /* a device removed with its certificates */
		i = (int)rnd((unsigned)range);
		for (j = 0; j < M_CERTS; j++) {
			if (m->cert[j] && m->cert_dev[j] == i) {
				fp = fp_of(j);
				ck_assert_int_eq(
				    fg_registry_remove_cert(reg, &fp), 1);
				m->cert[j] = false;
			}
		}
		dev_name(id, sizeof(id), i);
		ck_assert_int_eq(fg_registry_remove_device(reg, id),
		                 m->dev[i] ? 1 : 0);
		m->dev[i] = false;
		break;
	case 3: /* a certificate added, changed or moved to another device */
		i = (int)rnd(M_CERTS * (unsigned)range / M_DEVICES);
		j = (int)rnd((unsigned)range);
		if (m->dev[j])
			put_cert(reg, m, i, j);
		break;
	case 4: /* a certificate removed */
		i = (int)rnd(M_CERTS * (unsigned)range / M_DEVICES);
		fp = fp_of(i);
		ck_assert_int_eq(fg_registry_remove_cert(reg, &fp),
		                 m->cert[i] ? 1 : 0);
		m->cert[i] = false;
		break;
	default: /* an account added, changed or removed */
		i = (int)rnd(M_ACCOUNTS);
		if (rnd(3) == 0) {
			snprintf(id, sizeof(id), "acct-%d", i);
			ck_assert_int_eq(fg_registry_remove_account(reg, id),
			                 m->acct[i] ? 1 : 0);
			m->acct[i] = false;
		} else {
			put_account(reg, m, i);
		}
		break;
	}
}

START_TEST(derived_registries_answer_like_the_rows_they_were_given)
{
	static struct model m, before;
	struct fg_registry *reg = fg_registry_new(), *next;
	char err[256];

	ck_assert_ptr_nonnull(reg);
	for (int i = 0; i < 10; i++)
		put_device(reg, &m, i);
	for (int i = 0; i < 10; i++)
		put_cert(reg, &m, i, i);
	ck_assert_int_eq(fg_registry_finalise(reg, NULL, 0), 0);
	expect_model(reg, &m);
	for (int gen = 1; gen <= 40; gen++) {
		/* The key range widens over the first generations, so that
		 * the tables grow past several index sizes. */
		int range =
		    gen < 20 ? 10 + gen * (M_DEVICES - 10) / 20 : M_DEVICES;

		before = m;
		next = fg_registry_derive(reg);
		ck_assert_ptr_nonnull(next);
		for (int k = 0; k < 400; k++)
			random_change(next, &m, range);
		ck_assert_int_eq(fg_registry_finalise(next, err, sizeof(err)),
		                 0);
		ck_assert_uint_eq(fg_registry_depth(next), (unsigned)gen);
		expect_model(next, &m);
		expect_model(reg, &before);
		fg_registry_free(reg);
		expect_model(next, &m);
		reg = next;
	}
	ck_assert_uint_gt(fg_registry_device_count(reg), 500);
	fg_registry_free(reg);
}
END_TEST

/* A derived registry refuses what a fresh one refuses: a certificate
 * whose device was removed, or that names a device it does not hold. */
START_TEST(a_derived_registry_refuses_a_certificate_without_its_device)
{
	struct fg_registry *base = sample(20), *next;
	fg_fingerprint fp = fp_of(900);
	char err[256];

	next = fg_registry_derive(base);
	ck_assert_ptr_nonnull(next);
	ck_assert_int_eq(fg_registry_remove_device(next, "meter-00003"), 1);
	ck_assert_int_eq(fg_registry_remove_device(next, "meter-00003"), 0);
	ck_assert_int_ne(fg_registry_finalise(next, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "meter-00003"));
	fg_registry_free(next);

	next = fg_registry_derive(base);
	ck_assert_ptr_nonnull(next);
	ck_assert_int_eq(
	    fg_registry_add_cert(next, &fp, "meter-99999", 0, 1, 0), 0);
	ck_assert_int_ne(fg_registry_finalise(next, err, sizeof(err)), 0);
	fg_registry_free(next);

	/* Removing is for derived registries only. */
	ck_assert_int_eq(fg_registry_remove_device(base, "meter-00001"), -1);
	ck_assert_ptr_nonnull(fg_registry_device(base, "meter-00003"));
	fg_registry_free(base);
}
END_TEST

/* The registry loader posts a registry to the broker thread and writes
 * the snapshot from it afterwards: both read it at once, and whichever
 * lets go last frees it. */
struct reader {
	const struct fg_registry *reg;
	size_t found;
};

static void *read_all(void *arg)
{
	struct reader *r = arg;

	for (int round = 0; round < 20; round++)
		for (int i = 0; i < 2000; i++) {
			fg_fingerprint fp = fp_of(i);

			r->found += fg_registry_cert(r->reg, &fp) != NULL;
		}
	return NULL;
}

START_TEST(a_held_registry_outlives_the_first_free_and_is_read_by_two)
{
	struct fg_registry *reg = sample(2000);
	struct reader a = {reg, 0}, b = {reg, 0};
	pthread_t ta, tb;

	ck_assert_ptr_eq(fg_registry_hold(reg), reg);
	ck_assert_ptr_null(fg_registry_hold(NULL));
	ck_assert_int_eq(pthread_create(&ta, NULL, read_all, &a), 0);
	ck_assert_int_eq(pthread_create(&tb, NULL, read_all, &b), 0);
	pthread_join(ta, NULL);
	fg_registry_free(reg); /* one holder done: still readable */
	pthread_join(tb, NULL);
	ck_assert_uint_eq(a.found, 40000);
	ck_assert_uint_eq(b.found, 40000);
	ck_assert_uint_eq(fg_registry_cert_count(reg), 2000);
	/* The last reference: under ASan or valgrind a leak or a second
	 * free would show here. */
	fg_registry_free(reg);
}
END_TEST

START_TEST(duplicate_fingerprints_and_orphan_certificates_are_refused)
{
	struct fg_registry *reg = fg_registry_new();
	fg_fingerprint fp = fp_of(1);
	char err[256] = "";

	fg_registry_add_device(reg, "a", "m", FG_DEVICE_ACTIVE, false, NULL);
	fg_registry_add_cert(reg, &fp, "a", 0, 1, 0);
	fg_registry_add_cert(reg, &fp, "a", 0, 1, 0);
	ck_assert_int_ne(fg_registry_finalise(reg, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "duplicate certificate"));
	fg_registry_free(reg);

	reg = fg_registry_new();
	fg_registry_add_cert(reg, &fp, "ghost", 0, 1, 0);
	ck_assert_int_ne(fg_registry_finalise(reg, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "unknown device"));
	fg_registry_free(reg);
}
END_TEST

static void tmp_path(char *buf, size_t len)
{
	snprintf(buf, len, "/tmp/fg-unit-%d.snapshot", (int)getpid());
}

START_TEST(snapshot_round_trip_keeps_every_field_and_is_mode_0600)
{
	struct fg_registry *reg = sample(50), *back;
	const struct fg_cert *c;
	fg_fingerprint fp = fp_of(7);
	char path[128], err[256] = "";
	struct stat st;

	tmp_path(path, sizeof(path));
	fg_registry_set_meta(reg, FG_REGISTRY_FROM_DATABASE, 1, 12345);
	ck_assert_int_eq(fg_registry_save(reg, path, err, sizeof(err)), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	back = fg_registry_load(path, err, sizeof(err));
	ck_assert_msg(back != NULL, "load failed: %s", err);
	ck_assert_int_eq(fg_registry_origin(back), FG_REGISTRY_FROM_SNAPSHOT);
	ck_assert_int_eq(fg_registry_loaded_at(back), 12345);
	ck_assert_uint_eq(fg_registry_device_count(back), 50);
	c = fg_registry_cert(back, &fp);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->revoked_at, 150);
	ck_assert_int_eq(c->not_before, 100);
	ck_assert_int_eq(c->not_after, 200);
	ck_assert_str_eq(c->device->municipality, "north");
	ck_assert(!c->device->require_api_key);
	ck_assert(fg_registry_device(back, "meter-00003")->require_api_key);
	ck_assert_str_eq(fg_registry_device(back, "meter-00003")->api_key_hash,
	                 "$7$101$a$b");
	ck_assert_str_eq(fg_registry_account(back, "dash")->municipality,
	                 "north");
	/* sample() has no limit table: none comes back either. */
	ck_assert(!fg_registry_has_limits(back));
	fg_registry_free(back);
	fg_registry_free(reg);
	unlink(path);
}
END_TEST

/* A broker started from its snapshot enforces the budgets of its last
 * load: every limit row, inherited fields (-1) included. */
/* The snapshot body is written by hand, not by cJSON: every byte of a
 * string and the whole range of the numbers must come back. */
/* A snapshot is written through a buffer of 256 KB: one of many times
 * that size (a registry derived with changes, as the loader writes them)
 * reads back whole, and one of a few bytes, too. */
START_TEST(a_snapshot_larger_than_its_write_buffer_reads_back_whole)
{
	struct fg_registry *base = sample(20000), *reg, *back;
	char path[128], err[256] = "", id[32];
	struct stat st;

	reg = fg_registry_derive(base);
	ck_assert_ptr_nonnull(reg);
	ck_assert_int_eq(fg_registry_remove_account(reg, "dash"), 1);
	ck_assert_int_eq(fg_registry_add_device(reg, "meter-00004", "east",
	                                        FG_DEVICE_SUSPENDED, false,
	                                        NULL),
	                 0);
	ck_assert_int_eq(fg_registry_finalise(reg, err, sizeof(err)), 0);
	fg_registry_free(base);
	tmp_path(path, sizeof(path));
	ck_assert_int_eq(fg_registry_save(reg, path, err, sizeof(err)), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_gt(st.st_size, 8 * (256 << 10));
	back = fg_registry_load(path, err, sizeof(err));
	ck_assert_msg(back != NULL, "load failed: %s", err);
	ck_assert_uint_eq(fg_registry_device_count(back), 20000);
	ck_assert_uint_eq(fg_registry_cert_count(back), 20000);
	ck_assert_uint_eq(fg_registry_account_count(back), 0);
	for (int i = 0; i < 20000; i++) {
		fg_fingerprint fp = fp_of(i);
		const struct fg_cert *c = fg_registry_cert(back, &fp);

		snprintf(id, sizeof(id), "meter-%05d", i);
		ck_assert_ptr_nonnull(c);
		ck_assert_str_eq(c->device->id, id);
		ck_assert_str_eq(c->device->municipality, i == 4  ? "east"
		                                          : i % 2 ? "north"
		                                                  : "south");
	}
	fg_registry_free(back);
	fg_registry_free(reg);

	reg = fg_registry_new();
	ck_assert_int_eq(fg_registry_finalise(reg, NULL, 0), 0);
	ck_assert_int_eq(fg_registry_save(reg, path, err, sizeof(err)), 0);
	back = fg_registry_load(path, err, sizeof(err));
	ck_assert_msg(back != NULL, "load failed: %s", err);
	ck_assert_uint_eq(fg_registry_device_count(back), 0);
	fg_registry_free(back);
	fg_registry_free(reg);
	unlink(path);
}
END_TEST

START_TEST(snapshot_keeps_every_byte_of_a_string_and_large_numbers)
{
	struct fg_registry *reg = fg_registry_new(), *back;
	char all[256], path[128], err[256] = "";
	const struct fg_rule *rule;
	const struct fg_cert *c;
	fg_fingerprint fp = fp_of(1);
	size_t n;

	for (int i = 1; i < 256; i++)
		all[i - 1] = (char)i; /* every byte but NUL, in order */
	all[255] = '\0';
	ck_assert_int_eq(fg_registry_add_device(reg, "d\"q\\b", all,
	                                        FG_DEVICE_ACTIVE, true, all),
	                 0);
	ck_assert_int_eq(fg_registry_add_cert(reg, &fp, "d\"q\\b", -1,
	                                      INT64_C(1) << 50,
	                                      (INT64_C(1) << 53) - 1),
	                 0);
	ck_assert_int_eq(
	    fg_registry_add_account(reg, "u\n\t", all, all, NULL, true, true),
	    0);
	ck_assert_int_eq(fg_registry_add_rule(reg, INT64_C(1) << 52,
	                                      FG_RULE_ALL_DEVICES, NULL, all,
	                                      FG_RULE_RECEIVE, false, -7),
	                 0);
	fg_registry_set_has_rules(reg, true);
	ck_assert_int_eq(fg_registry_finalise(reg, err, sizeof(err)), 0);
	tmp_path(path, sizeof(path));
	ck_assert_int_eq(fg_registry_save(reg, path, err, sizeof(err)), 0);
	back = fg_registry_load(path, err, sizeof(err));
	ck_assert_msg(back != NULL, "load failed: %s", err);
	ck_assert_str_eq(fg_registry_device(back, "d\"q\\b")->municipality,
	                 all);
	ck_assert_str_eq(fg_registry_device(back, "d\"q\\b")->api_key_hash,
	                 all);
	c = fg_registry_cert(back, &fp);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->not_before, -1);
	ck_assert_int_eq(c->not_after, INT64_C(1) << 50);
	ck_assert_int_eq(c->revoked_at, (INT64_C(1) << 53) - 1);
	ck_assert_str_eq(fg_registry_account(back, "u\n\t")->role, all);
	ck_assert_ptr_null(fg_registry_account(back, "u\n\t")->municipality);
	ck_assert(fg_registry_account(back, "u\n\t")->disabled);
	rule = fg_registry_rules(back, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(rule[0].id, INT64_C(1) << 52);
	ck_assert_ptr_null(rule[0].subject);
	ck_assert_str_eq(rule[0].pattern, all);
	ck_assert_int_eq(rule[0].priority, -7);
	ck_assert(!rule[0].allow);
	fg_registry_free(back);
	fg_registry_free(reg);
	unlink(path);
}
END_TEST

START_TEST(snapshot_keeps_the_rate_limits)
{
	struct fg_registry *reg = fg_registry_new(), *back;
	const struct fg_limit *l;
	char path[128], err[256] = "";
	size_t n, i;
	int seen = 0;

	ck_assert_ptr_nonnull(reg);
	ck_assert_int_eq(fg_registry_add_device(reg, "m-1", "north",
	                                        FG_DEVICE_ACTIVE, false, NULL),
	                 0);
	ck_assert_int_eq(
	    fg_registry_add_limit(reg, FG_LIMIT_GLOBAL, NULL, 60, -1, 60, 60),
	    0);
	ck_assert_int_eq(fg_registry_add_limit(reg, FG_LIMIT_MUNICIPALITY,
	                                       "north", 120, 65536, -1, -1),
	                 0);
	ck_assert_int_eq(
	    fg_registry_add_limit(reg, FG_LIMIT_DEVICE, "m-1", 5, -1, 1, 10),
	    0);
	ck_assert_int_eq(fg_registry_finalise(reg, err, sizeof(err)), 0);
	tmp_path(path, sizeof(path));
	ck_assert_int_eq(fg_registry_save(reg, path, err, sizeof(err)), 0);
	back = fg_registry_load(path, err, sizeof(err));
	ck_assert_msg(back != NULL, "load failed: %s", err);
	ck_assert(fg_registry_has_limits(back));
	l = fg_registry_limits(back, &n);
	ck_assert_uint_eq(n, 3);
	for (i = 0; i < n; i++) {
		switch (l[i].kind) {
		case FG_LIMIT_GLOBAL:
			ck_assert_ptr_null(l[i].scope);
			ck_assert(l[i].messages == 60 && l[i].bytes == -1 &&
			          l[i].window_s == 60 && l[i].burst == 60);
			seen |= 1;
			break;
		case FG_LIMIT_MUNICIPALITY:
			ck_assert_str_eq(l[i].scope, "north");
			ck_assert(l[i].messages == 120 && l[i].bytes == 65536 &&
			          l[i].window_s == -1 && l[i].burst == -1);
			seen |= 2;
			break;
		case FG_LIMIT_DEVICE:
			ck_assert_str_eq(l[i].scope, "m-1");
			ck_assert(l[i].messages == 5 && l[i].bytes == -1 &&
			          l[i].window_s == 1 && l[i].burst == 10);
			seen |= 4;
			break;
		}
	}
	ck_assert_int_eq(seen, 7);
	fg_registry_free(back);
	fg_registry_free(reg);
	unlink(path);
}
END_TEST

START_TEST(tampered_truncated_or_world_readable_snapshots_are_refused)
{
	struct fg_registry *reg = sample(10);
	char path[128], err[256] = "";
	FILE *f;
	long size;

	tmp_path(path, sizeof(path));
	ck_assert_int_eq(fg_registry_save(reg, path, err, sizeof(err)), 0);
	fg_registry_free(reg);

	/* Flip one byte of the body. */
	f = fopen(path, "r+");
	fseek(f, -5, SEEK_END);
	fputc('X', f);
	fclose(f);
	ck_assert_ptr_null(fg_registry_load(path, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "checksum"));

	/* A torn write: the file cut in half. */
	reg = sample(10);
	fg_registry_save(reg, path, err, sizeof(err));
	fg_registry_free(reg);
	f = fopen(path, "r");
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fclose(f);
	ck_assert_int_eq(truncate(path, size / 2), 0);
	ck_assert_ptr_null(fg_registry_load(path, err, sizeof(err)));

	chmod(path, 0644);
	ck_assert_ptr_null(fg_registry_load(path, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "0600"));
	unlink(path);
	ck_assert_ptr_null(fg_registry_load(path, err, sizeof(err)));
}
END_TEST

struct test_cfg {
	char *name;
	int count;
	bool flag;
	int mode;
};

static const char *const modes[] = {"off", "per_device", "all", NULL};
static const struct fg_opt_spec specs[] = {
    {"name", FG_OPT_STRING, offsetof(struct test_cfg, name), 0, 0, NULL},
    {"count", FG_OPT_INT, offsetof(struct test_cfg, count), 1, 100, NULL},
    {"flag", FG_OPT_BOOL, offsetof(struct test_cfg, flag), 0, 0, NULL},
    {"mode", FG_OPT_ENUM, offsetof(struct test_cfg, mode), 0, 0, modes},
};

static int parse(struct test_cfg *cfg, struct mosquitto_opt *o, int n,
                 char *err)
{
	struct fg_opt_table t = {specs, 4, cfg};

	return fg_opts_parse(&t, 1, o, n, err, 256);
}

START_TEST(options_parse_with_trailing_blanks_trimmed)
{
	struct test_cfg cfg = {NULL, 5, false, 0};
	struct mosquitto_opt o[] = {
	    {(char *)"name", (char *)"  broker-1  "},
	    {(char *)"count", (char *)"42 "},
	    {(char *)"flag", (char *)"yes"},
	    {(char *)"mode", (char *)"per_device\t"},
	};
	char err[256] = "";
	struct fg_opt_table t = {specs, 4, &cfg};

	ck_assert_msg(parse(&cfg, o, 4, err) == 0, "%s", err);
	ck_assert_str_eq(cfg.name, "broker-1");
	ck_assert_int_eq(cfg.count, 42);
	ck_assert(cfg.flag);
	ck_assert_int_eq(cfg.mode, 1);
	fg_opts_free(&t);
	ck_assert_ptr_null(cfg.name);
}
END_TEST

START_TEST(bad_options_are_refused_with_the_option_named)
{
	static const struct {
		const char *key, *value, *expect;
	} cases[] = {
	    {"colour", "red", "plugin_opt_colour: unknown option"},
	    {"count", "0", "plugin_opt_count: '0' is not an integer"},
	    {"count", "101", "plugin_opt_count"},
	    {"count", "12abc", "plugin_opt_count"},
	    {"count", "", "plugin_opt_count"},
	    {"count", "99999999999999999999", "plugin_opt_count"},
	    {"flag", "maybe", "plugin_opt_flag: 'maybe' is not true"},
	    {"mode", "some", "is not one of: off, per_device, all"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct test_cfg cfg = {NULL, 5, false, 0};
		struct mosquitto_opt o = {(char *)cases[i].key,
		                          (char *)cases[i].value};
		char err[256] = "";

		ck_assert_int_ne(parse(&cfg, &o, 1, err), 0);
		ck_assert_msg(strstr(err, cases[i].expect) != NULL,
		              "case %zu: '%s'", i, err);
		ck_assert_int_eq(cfg.count, 5);
	}
}
END_TEST

START_TEST(an_option_given_twice_is_refused)
{
	struct test_cfg cfg = {NULL, 5, false, 0};
	struct mosquitto_opt o[] = {
	    {(char *)"count", (char *)"1"},
	    {(char *)"count", (char *)"2"},
	};
	char err[256] = "";

	ck_assert_int_ne(parse(&cfg, o, 2, err), 0);
	ck_assert_ptr_nonnull(strstr(err, "more than once"));
}
END_TEST

START_TEST(runtime_options_are_recognised_and_range_checked)
{
	struct fg_runtime_config rc;
	struct fg_opt_table t;
	struct mosquitto_opt ok[] = {
	    {(char *)"db_conninfo", (char *)"host=127.0.0.1 password=hunter2"},
	    {(char *)"audit_flush_ms", (char *)"50"},
	};
	struct mosquitto_opt bad = {(char *)"audit_batch_size", (char *)"0"};
	char err[256] = "";

	fg_runtime_config_init(&rc);
	t = fg_runtime_opt_table(&rc);
	ck_assert_int_eq(fg_opts_parse(&t, 1, ok, 2, err, sizeof(err)), 0);
	ck_assert_str_eq(rc.db, "host=127.0.0.1 password=hunter2");
	ck_assert_int_eq(rc.audit_flush_ms, 50);
	ck_assert_int_eq(rc.retry_max_ms, -1);
	ck_assert_int_ne(fg_opts_parse(&t, 1, &bad, 1, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "plugin_opt_audit_batch_size"));
	/* String values are never echoed: they may hold a password. */
	ok[0].key = (char *)"dbx";
	ck_assert_int_ne(fg_opts_parse(&t, 1, ok, 1, err, sizeof(err)), 0);
	ck_assert_ptr_null(strstr(err, "hunter2"));
	fg_runtime_config_free(&rc);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("registry");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, lookups_find_every_row_and_nothing_else);
	tcase_add_test(tc,
	               derived_registries_answer_like_the_rows_they_were_given);
	tcase_add_test(
	    tc, a_derived_registry_refuses_a_certificate_without_its_device);
	tcase_add_test(
	    tc,
	    strings_spanning_many_blocks_and_one_larger_than_a_block_are_kept);
	tcase_add_test(
	    tc, a_held_registry_outlives_the_first_free_and_is_read_by_two);
	tcase_add_test(
	    tc, duplicate_fingerprints_and_orphan_certificates_are_refused);
	tcase_add_test(tc,
	               snapshot_round_trip_keeps_every_field_and_is_mode_0600);
	tcase_add_test(tc, snapshot_keeps_the_rate_limits);
	tcase_add_test(
	    tc, a_snapshot_larger_than_its_write_buffer_reads_back_whole);
	tcase_add_test(tc,
	               snapshot_keeps_every_byte_of_a_string_and_large_numbers);
	tcase_add_test(
	    tc, tampered_truncated_or_world_readable_snapshots_are_refused);
	tcase_add_test(tc, options_parse_with_trailing_blanks_trimmed);
	tcase_add_test(tc, bad_options_are_refused_with_the_option_named);
	tcase_add_test(tc, an_option_given_twice_is_refused);
	tcase_add_test(tc, runtime_options_are_recognised_and_range_checked);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return unit_run(suite());
}
