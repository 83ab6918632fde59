/*
 * Unit tests: the ratelimit plugin's window arithmetic, shares of a
 * fleet's budget, per-device accounting, connect cool-downs, limit
 * inheritance, and a simulation of brokers exchanging counts through a
 * model of the Redis script.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include "fg_registry.h"
#include "rl.h"
#include "rl_config.h"
#include "rl_redis.h"

static const struct rl_policy FLEET = {
    .fleet = true, .local_share = 0.5, .connect_max = 5, .cooldown_ms = 60000};
static const struct rl_policy LOCAL = {
    .fleet = false, .local_share = 0.5, .connect_max = 5, .cooldown_ms = 60000};

static struct rl_dev *dev_with(struct rl_devices *t, const char *name,
                               int64_t messages, int64_t bytes,
                               int64_t window_ms, int64_t burst,
                               const struct rl_policy *pol)
{
	struct rl_limits lim = {messages, bytes, window_ms, burst};
	struct rl_closed closed;
	struct rl_dev *d = rl_devices_get(t, name);

	ck_assert_ptr_nonnull(d);
	ck_assert(!rl_dev_set_limits(d, &lim, pol, &closed));
	return d;
}

START_TEST(windows_are_floor_divisions_of_the_clock)
{
	ck_assert_int_eq(rl_window_of(0, 1000), 0);
	ck_assert_int_eq(rl_window_of(999, 1000), 0);
	ck_assert_int_eq(rl_window_of(1000, 1000), 1);
	ck_assert_int_eq(rl_window_of(1733224861234, 60000), 28887081);
	ck_assert_int_eq(rl_window_of(-1, 1000), -1);
	ck_assert_int_eq(rl_window_of(-1000, 1000), -1);
	ck_assert_int_eq(rl_window_of(-1001, 1000), -2);
	ck_assert_int_eq(rl_window_of(12345, 0), 0);
}
END_TEST

START_TEST(burst_carries_over_what_a_quiet_window_left_unused)
{
	struct rl_limits lim = {100, 0, 1000, 30};

	ck_assert_int_eq(rl_message_cap(&lim, 0), 130);
	ck_assert_int_eq(rl_message_cap(&lim, 80), 120);
	ck_assert_int_eq(rl_message_cap(&lim, 100), 100);
	ck_assert_int_eq(rl_message_cap(&lim, 500), 100);
	lim.burst = 0;
	ck_assert_int_eq(rl_message_cap(&lim, 0), 100);
	lim.messages = 0;
	ck_assert_int_eq(rl_message_cap(&lim, 0), 0);
}
END_TEST

START_TEST(shares_of_what_is_left_add_up_to_exactly_what_is_left)
{
	int64_t cap, total;
	int n, rank;

	for (cap = 1; cap <= 60; cap++) {
		for (total = 0; total <= cap + 3; total++) {
			for (n = 1; n <= 5; n++) {
				int64_t sum = 0;

				for (rank = 0; rank < n; rank++) {
					struct rl_fleet f = {true, total, 0,
					                     0,    n,     rank};
					sum += rl_allowance(cap, &f, &FLEET);
				}
				ck_assert_int_eq(sum,
				                 total < cap ? cap - total : 0);
			}
		}
	}
}
END_TEST

START_TEST(allowance_counts_this_brokers_own_usage_once)
{
	/* The other broker claims 40 of 100, we counted 20: we may accept
	 * up to our 20 plus half of the 40 left. */
	struct rl_fleet f = {true, 40, 20, 60, 2, 0};

	ck_assert_int_eq(rl_allowance(100, &f, &FLEET), 40);
	f.known = false;
	ck_assert_int_eq(rl_allowance(100, &f, &FLEET), 50);
	ck_assert_int_eq(rl_allowance(100, &f, &LOCAL), 50);
	ck_assert_int_eq(rl_allowance(1, &f, &LOCAL), 1);
	ck_assert_int_eq(rl_allowance(0, &f, &FLEET), INT64_MAX);
}
END_TEST

START_TEST(a_device_within_its_budget_loses_nothing)
{
	struct rl_devices *t = rl_devices_new();
	struct rl_dev *d = dev_with(t, "m1", 10, 0, 1000, 0, &FLEET);
	struct rl_closed closed;
	int64_t w, i;

	for (w = 0; w < 5; w++) {
		rl_dev_roll(d, 10000 + w * 1000, &FLEET, &closed);
		for (i = 0; i < 10; i++)
			ck_assert_int_eq(rl_dev_admit(d, 100, &FLEET),
			                 RL_ACCEPT);
		ck_assert_int_eq(d->refused, 0);
	}
	ck_assert(!rl_dev_roll(d, 16000, &FLEET, &closed));
	rl_devices_free(t);
}
END_TEST

START_TEST(refusals_are_counted_per_window_and_windows_in_a_row)
{
	struct rl_devices *t = rl_devices_new();
	struct rl_dev *d = dev_with(t, "m1", 3, 0, 1000, 0, &FLEET);
	struct rl_closed c;
	int i;

	ck_assert(!rl_dev_roll(d, 5000, &FLEET, &c));
	for (i = 0; i < 10; i++)
		rl_dev_admit(d, 1, &FLEET);
	ck_assert_int_eq(d->used_m, 3);
	ck_assert_int_eq(d->refused, 7);
	ck_assert(rl_dev_roll(d, 6000, &FLEET, &c));
	ck_assert_int_eq(c.win, 5);
	ck_assert_int_eq(c.refused, 7);
	ck_assert_uint_eq(c.hit, RL_HIT_MESSAGES);
	ck_assert_int_eq(c.streak, 1);
	for (i = 0; i < 4; i++)
		rl_dev_admit(d, 1, &FLEET);
	ck_assert(rl_dev_roll(d, 7500, &FLEET, &c));
	ck_assert_int_eq(c.refused, 1);
	ck_assert_int_eq(c.streak, 2);
	/* A quiet window in between starts the count again. */
	for (i = 0; i < 4; i++)
		rl_dev_admit(d, 1, &FLEET);
	ck_assert(rl_dev_roll(d, 9000, &FLEET, &c));
	ck_assert_int_eq(c.streak, 3);
	for (i = 0; i < 4; i++)
		rl_dev_admit(d, 1, &FLEET);
	ck_assert(rl_dev_roll(d, 11000, &FLEET, &c));
	ck_assert_int_eq(c.streak, 1);
	rl_devices_free(t);
}
END_TEST

START_TEST(byte_budget_refuses_large_payloads_on_its_own)
{
	struct rl_devices *t = rl_devices_new();
	struct rl_dev *d = dev_with(t, "m1", 1000, 250000, 1000, 0, &FLEET);
	struct rl_closed c;

	rl_dev_roll(d, 1000, &FLEET, &c);
	/* One broker's first share is the whole budget (no other broker
	 * known yet). */
	ck_assert_int_eq(rl_dev_admit(d, 100000, &FLEET), RL_ACCEPT);
	ck_assert_int_eq(rl_dev_admit(d, 100000, &FLEET), RL_ACCEPT);
	ck_assert_int_eq(rl_dev_admit(d, 100000, &FLEET), RL_REFUSE);
	ck_assert_int_eq(rl_dev_admit(d, 50000, &FLEET), RL_ACCEPT);
	ck_assert_int_eq(rl_dev_admit(d, 1, &FLEET), RL_REFUSE);
	ck_assert_uint_eq(d->hit, RL_HIT_BYTES);
	ck_assert_int_eq(d->used_m, 3);
	ck_assert_int_eq(d->used_b, 250000);
	/* A payload larger than the whole budget never passes. */
	rl_dev_roll(d, 2000, &FLEET, &c);
	ck_assert_int_eq(rl_dev_admit(d, 250001, &FLEET), RL_REFUSE);
	rl_devices_free(t);
}
END_TEST

START_TEST(without_redis_each_broker_takes_its_local_share)
{
	struct rl_devices *t = rl_devices_new();
	struct rl_dev *d = dev_with(t, "m1", 100, 0, 1000, 0, &LOCAL);
	struct rl_closed c;
	int i, accepted = 0;

	rl_dev_roll(d, 1000, &LOCAL, &c);
	for (i = 0; i < 500; i++)
		accepted += rl_dev_admit(d, 1, &LOCAL) == RL_ACCEPT;
	ck_assert_int_eq(accepted, 50);
	/* Back to fleet-wide counting with the fleet at 90: 10 left, the
	 * broker alone. */
	rl_fleet_set(&d->fm, 40, 50, 90, 1, 0);
	rl_dev_recompute(d, &FLEET);
	for (i = 0, accepted = 0; i < 500; i++)
		accepted += rl_dev_admit(d, 1, &FLEET) == RL_ACCEPT;
	ck_assert_int_eq(accepted, 10);
	rl_devices_free(t);
}
END_TEST

START_TEST(a_limit_edit_applies_to_the_current_window)
{
	struct rl_devices *t = rl_devices_new();
	struct rl_dev *d = dev_with(t, "m1", 10, 0, 1000, 0, &FLEET);
	struct rl_limits lim = {20, 0, 1000, 0};
	struct rl_closed c;
	int i, accepted = 0;

	rl_dev_roll(d, 1000, &FLEET, &c);
	for (i = 0; i < 15; i++)
		accepted += rl_dev_admit(d, 1, &FLEET) == RL_ACCEPT;
	ck_assert_int_eq(accepted, 10);
	ck_assert(!rl_dev_set_limits(d, &lim, &FLEET, &c));
	for (i = 0; i < 15; i++)
		accepted += rl_dev_admit(d, 1, &FLEET) == RL_ACCEPT;
	ck_assert_int_eq(accepted, 20);
	/* A new window length closes the window, with its refusals. */
	lim.window_ms = 5000;
	ck_assert(rl_dev_set_limits(d, &lim, &FLEET, &c));
	ck_assert_int_eq(c.refused, 10);
	ck_assert(!rl_dev_roll(d, 1500, &FLEET, &c));
	ck_assert_int_eq(d->win, 0);
	ck_assert_int_eq(d->used_m, 0);
	rl_devices_free(t);
}
END_TEST

START_TEST(a_clock_stepping_back_does_not_reopen_a_window)
{
	struct rl_devices *t = rl_devices_new();
	struct rl_dev *d = dev_with(t, "m1", 2, 0, 1000, 0, &FLEET);
	struct rl_closed c;

	rl_dev_roll(d, 2000, &FLEET, &c);
	rl_dev_admit(d, 1, &FLEET);
	rl_dev_admit(d, 1, &FLEET);
	ck_assert(!rl_dev_roll(d, 1999, &FLEET, &c));
	ck_assert_int_eq(rl_dev_admit(d, 1, &FLEET), RL_REFUSE);
	rl_devices_free(t);
}
END_TEST

START_TEST(too_many_connects_start_a_cooldown_then_counting_restarts)
{
	struct rl_devices *t = rl_devices_new();
	struct rl_dev *d = dev_with(t, "m1", 0, 0, 1000, 0, &FLEET);
	int64_t now = 600000;
	int i;

	for (i = 0; i < 5; i++)
		ck_assert_int_eq(rl_dev_connect(d, now + i, &FLEET), RL_ACCEPT);
	ck_assert_int_eq(rl_dev_connect(d, now + 5, &FLEET),
	                 RL_REFUSE_FLAPPING);
	ck_assert_int_eq(d->cool_started, 6);
	ck_assert(d->cool_report);
	ck_assert_int_eq(rl_dev_connect(d, now + 1000, &FLEET),
	                 RL_REFUSE_COOLDOWN);
	ck_assert_int_eq(rl_dev_connect(d, now + 60004, &FLEET),
	                 RL_REFUSE_COOLDOWN);
	ck_assert_int_eq(d->cool_refused, 2);
	ck_assert_int_eq(rl_dev_connect(d, now + 60005, &FLEET), RL_ACCEPT);
	ck_assert_int_eq(d->used_c, 1);
	rl_devices_free(t);
}
END_TEST

START_TEST(connects_elsewhere_count_against_this_broker)
{
	struct rl_devices *t = rl_devices_new();
	struct rl_dev *d = dev_with(t, "m1", 0, 0, 1000, 0, &FLEET);
	int64_t now = 600000;

	ck_assert_int_eq(rl_dev_connect(d, now, &FLEET), RL_ACCEPT);
	/* Redis says the fleet counted 4 connects, 1 of them ours: 3 were
	 * elsewhere, so 2 more are allowed here (limit 5). */
	rl_fleet_set(&d->fc, 0, 1, 4, 2, 0);
	rl_dev_recompute(d, &FLEET);
	ck_assert_int_eq(d->allow_c, 2);
	ck_assert_int_eq(rl_dev_connect(d, now + 1, &FLEET), RL_ACCEPT);
	ck_assert_int_eq(rl_dev_connect(d, now + 2, &FLEET),
	                 RL_REFUSE_FLAPPING);
	ck_assert_int_eq(d->cool_started, 6);
	/* Without Redis, half the limit on each broker. */
	d->cool_until_ms = 0;
	ck_assert_int_eq(rl_connect_allowance(&LOCAL, &d->fc), 2);
	rl_devices_free(t);
}
END_TEST

START_TEST(limits_are_inherited_field_by_field)
{
	struct fg_registry *reg = fg_registry_new();
	struct rl_limits defaults = {0, 0, 60000, 0}, l;
	struct rl_limits_index *ix;
	char err[256];

	ck_assert_int_eq(fg_registry_add_device(reg, "d1", "north",
	                                        FG_DEVICE_ACTIVE, false, NULL),
	                 0);
	ck_assert_int_eq(fg_registry_add_device(reg, "d2", "south",
	                                        FG_DEVICE_ACTIVE, false, NULL),
	                 0);
	ck_assert_int_eq(
	    fg_registry_add_limit(reg, FG_LIMIT_GLOBAL, NULL, 60, 1000, 60, 5),
	    0);
	ck_assert_int_eq(fg_registry_add_limit(reg, FG_LIMIT_MUNICIPALITY,
	                                       "north", 30, -1, 10, -1),
	                 0);
	ck_assert_int_eq(
	    fg_registry_add_limit(reg, FG_LIMIT_DEVICE, "d1", -1, 500, -1, -1),
	    0);
	ck_assert_int_eq(fg_registry_finalise(reg, err, sizeof(err)), 0);
	ix = rl_limits_index_new(reg, &defaults);
	ck_assert_ptr_nonnull(ix);
	rl_limits_resolve(ix, "d1", &l);
	ck_assert_int_eq(l.messages, 30);
	ck_assert_int_eq(l.bytes, 500);
	ck_assert_int_eq(l.window_ms, 10000);
	ck_assert_int_eq(l.burst, 5);
	rl_limits_resolve(ix, "d2", &l);
	ck_assert_int_eq(l.messages, 60);
	ck_assert_int_eq(l.bytes, 1000);
	ck_assert_int_eq(l.window_ms, 60000);
	rl_limits_index_free(ix);
	/* Without a limit table (a snapshot): the defaults. */
	ix = rl_limits_index_new(NULL, &defaults);
	rl_limits_resolve(ix, "d1", &l);
	ck_assert_int_eq(l.messages, 0);
	ck_assert_int_eq(l.window_ms, 60000);
	rl_limits_index_free(ix);
	fg_registry_free(reg);
}
END_TEST

/* ---------------------------------------------- simulated exchanges -- */

/* A model of the Redis script's message counting: per window (the last
 * two), per broker, the count and claim it last reported, and when. */
#define SIM_BROKERS 2
struct sim_window {
	int64_t win;
	int64_t count[SIM_BROKERS], claim[SIM_BROKERS];
	int64_t reported_at[SIM_BROKERS];
};
struct sim_redis {
	struct sim_window w[2];
};

static struct sim_window *sim_window(struct sim_redis *r, int64_t win)
{
	struct sim_window *w = &r->w[win & 1];

	if (w->win != win) {
		memset(w, 0, sizeof(*w));
		w->win = win;
		for (int k = 0; k < SIM_BROKERS; k++)
			w->reported_at[k] = -1000000;
	}
	return w;
}

static void sim_answer(struct sim_redis *r, int me, struct rl_batch *b,
                       int64_t now)
{
	size_t i;
	int k;

	for (i = 0; i < b->n; i++) {
		struct rl_entry *e = &b->e[i];
		struct sim_window *w = sim_window(r, e->win);
		struct sim_window *p = &r->w[(e->win - 1) & 1];

		w->count[me] = e->a;
		w->reported_at[me] = now;
		e->r_used = e->r_oa = 0;
		e->r_n = e->r_rank = 0;
		e->r_x = e->flag ? 0 : -1;
		w->claim[me] = 0;
		for (k = 0; k < SIM_BROKERS; k++) {
			/* Shared the last window, not reported in this one. */
			bool pending = k != me && p->win == e->win - 1 &&
			               now - p->reported_at[k] <= 500 &&
			               w->reported_at[k] < 0;

			if (pending) {
				e->r_n++;
				e->r_rank += k < me;
				e->r_oa += e->cap_a / SIM_BROKERS;
			}
			bool live = now - w->reported_at[k] <= 500;

			e->r_used += w->count[k];
			if (k != me)
				e->r_oa += live && w->claim[k] > w->count[k]
				               ? w->claim[k]
				               : w->count[k];
			if (live) {
				e->r_n++;
				e->r_rank += k < me;
			}
			if (e->flag && p->win == e->win - 1)
				e->r_x += p->count[k];
		}
	}
	b->ok = true;
}

/* The claim the script stores for the broker (rl_allowance, known). */
static void sim_claim(struct sim_redis *r, int me, const struct rl_entry *e)
{
	struct rl_fleet f = {true, e->r_oa, e->a, 0, e->r_n, e->r_rank};
	struct rl_policy pol = FLEET;

	int64_t c = rl_allowance(e->cap_a, &f, &pol);
	int64_t need =
	    e->a + (2 * e->dem_a > (e->cap_a + 9) / 10 ? 2 * e->dem_a
	                                               : (e->cap_a + 9) / 10);

	/* Alone, the script claims only what the broker needs soon. */
	if (e->r_n == 1 && c > need)
		c = need;
	sim_window(r, e->win)->claim[me] = c;
}

START_TEST(two_brokers_flooding_get_their_budget_and_no_more)
{
	/* One device, 100 messages a second, publishing 500 a second
	 * through each of two brokers for 30 s; each broker exchanges every
	 * 50 ms, the answer arriving 2 ms later. */
	struct rl_devices *t[SIM_BROKERS];
	struct rl_batch b[SIM_BROKERS];
	struct sim_redis r;
	struct rl_closed c;
	int64_t now, accepted = 0, start = 1000000;
	int k;

	memset(&r, 0, sizeof(r));
	memset(b, 0, sizeof(b));
	for (k = 0; k < SIM_BROKERS; k++) {
		t[k] = rl_devices_new();
		dev_with(t[k], "meter", 100, 0, 1000, 0, &FLEET);
	}
	for (now = start; now < start + 30000; now++) {
		for (k = 0; k < SIM_BROKERS; k++) {
			struct rl_dev *d = rl_devices_find(t[k], "meter");

			/* Broker 1 is 25 ms out of step with broker 0. */
			if ((now + 25 * k) % 50 == 0) {
				rl_exchange_build(t[k], &b[k], 100);
				sim_answer(&r, k, &b[k], now);
				for (size_t i = 0; i < b[k].n; i++)
					sim_claim(&r, k, &b[k].e[i]);
			}
			if ((now + 25 * k) % 50 == 2)
				rl_exchange_apply(t[k], &b[k], &FLEET, now);
			if (now % 2 != 0)
				continue;
			rl_dev_roll(d, now, &FLEET, &c);
			d->report_m = true;
			rl_devices_mark(t[k], d);
			accepted += rl_dev_admit(d, 10, &FLEET) == RL_ACCEPT;
		}
	}
	/* 30 windows of 100; the first may go over by what the second
	 * broker accepts before its first answer. */
	ck_assert_int_ge(accepted, 2950);
	ck_assert_int_le(accepted, 3030);
	for (k = 0; k < SIM_BROKERS; k++) {
		rl_batch_free(&b[k]);
		rl_devices_free(t[k]);
	}
}
END_TEST

START_TEST(a_failed_exchange_reports_the_devices_again)
{
	struct rl_devices *t = rl_devices_new();
	struct rl_dev *d = dev_with(t, "m1", 10, 0, 1000, 0, &FLEET);
	struct rl_batch b;
	struct rl_closed c;
	size_t n;

	memset(&b, 0, sizeof(b));
	rl_dev_roll(d, 1000, &FLEET, &c);
	rl_dev_admit(d, 1, &FLEET);
	d->report_m = true;
	rl_devices_mark(t, d);
	ck_assert_uint_eq(rl_exchange_build(t, &b, 10), 1);
	ck_assert_int_eq(b.e[0].a, 1);
	ck_assert(b.e[0].flag);
	ck_assert_uint_eq(rl_exchange_build(t, &b, 10), 0);
	ck_assert_uint_eq(rl_exchange_build(t, &b, 10), 0);
	rl_dev_admit(d, 1, &FLEET);
	d->report_m = true;
	rl_devices_mark(t, d);
	rl_exchange_build(t, &b, 10);
	b.ok = false;
	rl_exchange_apply(t, &b, &FLEET, 1100);
	n = rl_exchange_build(t, &b, 10);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(b.e[0].a, 2);
	rl_batch_free(&b);
	rl_devices_free(t);
}
END_TEST

START_TEST(the_device_table_grows_and_forgets_idle_devices)
{
	struct rl_devices *t = rl_devices_new();
	char name[32];
	int i;

	for (i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "meter-%d", i);
		ck_assert_ptr_nonnull(rl_devices_get(t, name));
		rl_devices_find(t, name)->last_active_ms =
		    i < 100 ? 1000000 : 1;
	}
	ck_assert_uint_eq(rl_devices_count(t), 5000);
	ck_assert_ptr_nonnull(rl_devices_find(t, "meter-4999"));
	ck_assert_ptr_null(rl_devices_find(t, "meter-5000"));
	ck_assert_uint_eq(rl_devices_purge(t, 1000001, 600000), 4900);
	ck_assert_ptr_nonnull(rl_devices_find(t, "meter-99"));
	ck_assert_ptr_null(rl_devices_find(t, "meter-100"));
	rl_devices_free(t);
}
END_TEST

/* rl_config_finish on a configuration with one string option set. */
static int finish_with(struct rl_config *cfg, char **field, const char *v,
                       char *err, size_t errlen)
{
	rl_config_init(cfg);
	*field = v ? strdup(v) : NULL;
	return rl_config_finish(cfg, err, errlen);
}

START_TEST(local_share_is_a_number_above_0_and_at_most_1)
{
	static const char *const bad[] = {"0",   "-0.5", "1.01",
	                                  "abc", "0.5x", ""};
	struct rl_config cfg;
	char err[256];
	size_t i;

	ck_assert_int_eq(
	    finish_with(&cfg, &cfg.local_share, "0.25 ", err, sizeof(err)), 0);
	ck_assert(cfg.local_share_value > 0.249 &&
	          cfg.local_share_value < 0.251);
	ck_assert_str_eq(cfg.redis_key_prefix, "fleetgate:rl:");
	rl_config_free(&cfg);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(finish_with(&cfg, &cfg.local_share, bad[i],
		                             err, sizeof(err)),
		                 -1);
		ck_assert_ptr_nonnull(strstr(err, "plugin_opt_local_share"));
		rl_config_free(&cfg);
	}
}
END_TEST

START_TEST(the_redis_password_comes_from_a_private_file_or_the_environment)
{
	char path[] = "/tmp/fg-rl-test-XXXXXX", err[256];
	struct rl_config cfg;
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "s3cret pw\r\nsecond line\n", 24), 24);
	close(fd);
	chmod(path, 0600);
	ck_assert_int_eq(
	    finish_with(&cfg, &cfg.redis_password_file, path, err, sizeof(err)),
	    0);
	ck_assert_str_eq(cfg.password, "s3cret pw");
	rl_config_free(&cfg);
	ck_assert_ptr_null(cfg.password);
	/* Readable by everyone: refused, and the message names the file,
	 * never what it holds. */
	chmod(path, 0644);
	ck_assert_int_eq(
	    finish_with(&cfg, &cfg.redis_password_file, path, err, sizeof(err)),
	    -1);
	ck_assert_ptr_nonnull(strstr(err, "readable by everyone"));
	ck_assert_ptr_null(strstr(err, "s3cret"));
	rl_config_free(&cfg);
	unlink(path);
	ck_assert_int_eq(
	    finish_with(&cfg, &cfg.redis_password_file, path, err, sizeof(err)),
	    -1);
	ck_assert_ptr_nonnull(strstr(err, "cannot open"));
	rl_config_free(&cfg);

	setenv("FG_RL_UNIT_PW", "from env", 1);
	ck_assert_int_eq(finish_with(&cfg, &cfg.redis_password_env,
	                             "FG_RL_UNIT_PW", err, sizeof(err)),
	                 0);
	ck_assert_str_eq(cfg.password, "from env");
	/* Both at once: which one would win is not obvious, so neither. */
	cfg.redis_password_file = strdup(path);
	free(cfg.password);
	cfg.password = NULL;
	ck_assert_int_eq(rl_config_finish(&cfg, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "give one"));
	rl_config_free(&cfg);
	unsetenv("FG_RL_UNIT_PW");
	ck_assert_int_eq(finish_with(&cfg, &cfg.redis_password_env,
	                             "FG_RL_UNIT_PW", err, sizeof(err)),
	                 -1);
	ck_assert_ptr_nonnull(strstr(err, "FG_RL_UNIT_PW is not set"));
	rl_config_free(&cfg);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("ratelimit");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, windows_are_floor_divisions_of_the_clock);
	tcase_add_test(tc, burst_carries_over_what_a_quiet_window_left_unused);
	tcase_add_test(tc,
	               shares_of_what_is_left_add_up_to_exactly_what_is_left);
	tcase_add_test(tc, allowance_counts_this_brokers_own_usage_once);
	tcase_add_test(tc, a_device_within_its_budget_loses_nothing);
	tcase_add_test(tc,
	               refusals_are_counted_per_window_and_windows_in_a_row);
	tcase_add_test(tc, byte_budget_refuses_large_payloads_on_its_own);
	tcase_add_test(tc, without_redis_each_broker_takes_its_local_share);
	tcase_add_test(tc, a_limit_edit_applies_to_the_current_window);
	tcase_add_test(tc, a_clock_stepping_back_does_not_reopen_a_window);
	tcase_add_test(
	    tc, too_many_connects_start_a_cooldown_then_counting_restarts);
	tcase_add_test(tc, connects_elsewhere_count_against_this_broker);
	tcase_add_test(tc, limits_are_inherited_field_by_field);
	tcase_add_test(tc, two_brokers_flooding_get_their_budget_and_no_more);
	tcase_add_test(tc, a_failed_exchange_reports_the_devices_again);
	tcase_add_test(tc, the_device_table_grows_and_forgets_idle_devices);
	tcase_add_test(tc, local_share_is_a_number_above_0_and_at_most_1);
	tcase_add_test(
	    tc,
	    the_redis_password_comes_from_a_private_file_or_the_environment);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
