/*
 * The broker thread's side of an exchange with Redis: which counts go
 * into a batch, and how the fleet's answer becomes each device's local
 * allowance until the next exchange.
 */
#include <stdio.h>
#include <string.h>

#include "rl.h"
#include "rl_redis.h"

static void add_messages(struct rl_batch *b, struct rl_dev *d)
{
	struct rl_entry *e;

	if (d->lim.messages <= 0 && d->lim.bytes <= 0)
		return;
	e = rl_batch_add(b);
	if (e == NULL)
		return;
	e->kind = 'm';
	snprintf(e->device, sizeof(e->device), "%s", d->name);
	e->win = d->win;
	e->window_s = d->lim.window_ms / 1000;
	e->a = d->used_m;
	e->b = d->used_b;
	e->cap_a = rl_message_cap(&d->lim, d->prev_known ? d->prev_m : 0);
	e->cap_b = d->lim.bytes;
	e->dem_a = d->att_m;
	e->dem_b = d->att_b;
	d->att_m = d->att_b = 0;
	e->flag = d->want_prev;
}

static void add_connects(struct rl_batch *b, const struct rl_dev *d)
{
	struct rl_entry *e = rl_batch_add(b);

	if (e == NULL)
		return;
	e->kind = 'c';
	snprintf(e->device, sizeof(e->device), "%s", d->name);
	e->win = d->cwin;
	e->window_s = RL_CONNECT_WINDOW_MS / 1000;
	e->a = d->used_c;
	e->flag = d->cool_report;
}

size_t rl_exchange_build(struct rl_devices *t, struct rl_batch *b, size_t max)
{
	size_t n, i;
	struct rl_dev **devs = rl_devices_take_dirty(t, max, &n);

	b->n = 0;
	for (i = 0; i < n; i++) {
		struct rl_dev *d = devs[i];

		if (strlen(d->name) > RL_NAME_MAX)
			continue;
		if (d->report_m)
			add_messages(b, d);
		if (d->report_c)
			add_connects(b, d);
		d->report_m = d->report_c = false;
	}
	return b->n;
}

static void apply_messages(struct rl_dev *d, const struct rl_entry *e)
{
	if (d->win != e->win)
		return;
	rl_fleet_set(&d->fm, e->r_oa, e->a, e->r_used, e->r_n, e->r_rank);
	/* The fleet's byte count is not needed: nothing carries over. */
	rl_fleet_set(&d->fb, e->r_ob, e->b, 0, e->r_n, e->r_rank);
	if (e->flag && e->r_x >= 0) {
		d->prev_m = e->r_x;
		d->prev_known = true;
		d->want_prev = false;
	}
}

static void apply_connects(struct rl_dev *d, const struct rl_entry *e,
                           int64_t now_ms)
{
	if (e->flag)
		d->cool_report = false;
	if (e->r_x > 0) {
		/* A cool-down in force fleet-wide, perhaps started by
		 * another broker. */
		if (d->cool_until_ms <= now_ms) {
			d->used_c = 0;
			d->cool_started = 0;
			d->cool_until_ms = now_ms + e->r_x;
		} else if (d->cool_until_ms < now_ms + e->r_x) {
			d->cool_until_ms = now_ms + e->r_x;
		}
		return;
	}
	if (d->cwin == e->win)
		rl_fleet_set(&d->fc, e->r_oa, e->a, e->r_used, e->r_n,
		             e->r_rank);
}

/* A device that connected more than once this minute may be connecting
 * through other brokers too: keep asking Redis until the minute ends, so
 * that this broker's view of the fleet's count stays fresh without a
 * connect here. An ordinary device connects once and is not asked for. */
static bool poll_connects(const struct rl_dev *d, int64_t now_ms)
{
	return d->used_c >= 2 && d->cool_until_ms <= now_ms &&
	       rl_window_of(now_ms, RL_CONNECT_WINDOW_MS) == d->cwin;
}

void rl_exchange_apply(struct rl_devices *t, const struct rl_batch *b,
                       const struct rl_policy *pol, int64_t now_ms)
{
	size_t i;

	for (i = 0; i < b->n; i++) {
		const struct rl_entry *e = &b->e[i];
		struct rl_dev *d = rl_devices_find(t, e->device);

		if (d == NULL)
			continue;
		if (!b->ok) {
			/* Counts are absolute: sending them again later
			 * loses nothing. */
			if (e->kind == 'm')
				d->report_m = true;
			else
				d->report_c = true;
			rl_devices_mark(t, d);
			continue;
		}
		if (e->kind == 'm') {
			apply_messages(d, e);
		} else {
			apply_connects(d, e, now_ms);
			if (poll_connects(d, now_ms)) {
				d->report_c = true;
				rl_devices_mark(t, d);
			}
		}
		rl_dev_recompute(d, pol);
	}
}
