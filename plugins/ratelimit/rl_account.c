/*
 * Local accounting of the ratelimit plugin: window arithmetic, shares of
 * the fleet's budget and the per-device decisions. Pure functions of
 * their arguments (no clock, no broker, no Redis), so that the unit tests
 * can drive them through any sequence of windows and exchanges.
 */
#include <stdint.h>

#include "rl.h"

/* A device state no window was ever counted in. */
#define NO_WINDOW (-1)

int64_t rl_window_of(int64_t now_ms, int64_t window_ms)
{
	int64_t w;

	if (window_ms <= 0)
		return 0;
	w = now_ms / window_ms;
	/* Floor, not truncation, so that a clock before the epoch (a
	 * badly set machine) still gets windows of the right length. */
	if (now_ms % window_ms != 0 && now_ms < 0)
		w--;
	return w;
}

int64_t rl_message_cap(const struct rl_limits *lim, int64_t prev_m)
{
	int64_t unused, carry;

	if (lim->messages <= 0)
		return 0;
	unused = lim->messages - prev_m;
	if (unused < 0)
		unused = 0;
	carry = unused < lim->burst ? unused : lim->burst;
	return lim->messages + carry;
}

/* left shared among n brokers, the remainder to the lowest ranks. */
static int64_t share_of(int64_t left, int n, int rank)
{
	if (left <= 0)
		return 0;
	if (n < 1)
		n = 1;
	return left / n + (rank < left % n ? 1 : 0);
}

int64_t rl_allowance(int64_t cap, const struct rl_fleet *f,
                     const struct rl_policy *pol)
{
	int64_t a;

	if (cap <= 0)
		return INT64_MAX;
	if (!pol->fleet) {
		a = (int64_t)((double)cap * pol->local_share);
		return a < 1 ? 1 : a;
	}
	if (!f->known)
		return share_of(cap, f->nbrokers, f->rank);
	return f->base +
	       share_of(cap - f->others - f->base, f->nbrokers, f->rank);
}

int64_t rl_connect_allowance(const struct rl_policy *pol,
                             const struct rl_fleet *f)
{
	int64_t others;

	if (pol->connect_max <= 0)
		return INT64_MAX;
	if (!pol->fleet || !f->known)
		return rl_allowance(pol->connect_max, f, pol);
	others = f->fleet_used - f->base;
	return others < pol->connect_max ? pol->connect_max - others : 0;
}

void rl_dev_recompute(struct rl_dev *d, const struct rl_policy *pol)
{
	int64_t cap_m = rl_message_cap(&d->lim, d->prev_known ? d->prev_m : 0);

	d->allow_m = rl_allowance(cap_m, &d->fm, pol);
	d->allow_b = rl_allowance(d->lim.bytes, &d->fb, pol);
	d->allow_c = rl_connect_allowance(pol, &d->fc);
}

static void fleet_reset(struct rl_fleet *f)
{
	f->known = false;
	f->others = 0;
	f->base = 0;
	f->fleet_used = 0;
	if (f->nbrokers < 1)
		f->nbrokers = 1;
}

/* The fleet's total of the window that is closing, as well as this broker
 * can tell: what Redis said plus what this broker accepted since, or this
 * broker's own count scaled up by its share when Redis is away. */
static int64_t closing_total(const struct rl_dev *d,
                             const struct rl_policy *pol)
{
	if (d->fm.known)
		return d->fm.fleet_used + (d->used_m - d->fm.base);
	if (pol->fleet || pol->local_share <= 0)
		return d->used_m;
	return (int64_t)((double)d->used_m / pol->local_share);
}

bool rl_dev_roll(struct rl_dev *d, int64_t now_ms, const struct rl_policy *pol,
                 struct rl_closed *closed)
{
	int64_t w = rl_window_of(now_ms, d->lim.window_ms);
	bool report = false;

	/* An earlier window can only come from the clock offset to Redis
	 * moving back by a few milliseconds: stay in the current one. */
	if (w <= d->win)
		return false;
	if (d->refused > 0 && d->win != NO_WINDOW) {
		d->streak =
		    d->last_refused_win == d->win - 1 ? d->streak + 1 : 1;
		d->last_refused_win = d->win;
		closed->win = d->win;
		closed->refused = d->refused;
		closed->hit = d->hit;
		closed->streak = d->streak;
		report = true;
	} else {
		d->streak = 0;
	}
	/* Another broker may have counted the device in the window before
	 * even when this one did not: ask Redis once the window starts. */
	d->prev_m = w == d->win + 1 ? closing_total(d, pol) : 0;
	d->prev_known = true;
	d->want_prev = true;
	d->win = w;
	d->used_m = 0;
	d->used_b = 0;
	d->refused = 0;
	d->hit = 0;
	fleet_reset(&d->fm);
	fleet_reset(&d->fb);
	rl_dev_recompute(d, pol);
	return report;
}

bool rl_dev_set_limits(struct rl_dev *d, const struct rl_limits *lim,
                       const struct rl_policy *pol, struct rl_closed *closed)
{
	bool report = false;

	if (lim->window_ms != d->lim.window_ms && d->win != NO_WINDOW) {
		/* Window indices of another length are not comparable:
		 * close this window now, the next message opens one. */
		if (d->refused > 0) {
			closed->win = d->win;
			closed->refused = d->refused;
			closed->hit = d->hit;
			closed->streak = ++d->streak;
			report = true;
		}
		d->win = NO_WINDOW;
		d->last_refused_win = NO_WINDOW - 2;
		d->refused = 0;
		d->hit = 0;
	}
	d->lim = *lim;
	rl_dev_recompute(d, pol);
	return report;
}

enum rl_verdict rl_dev_admit(struct rl_dev *d, int64_t len,
                             const struct rl_policy *pol)
{
	unsigned hit = 0;

	(void)pol;
	d->att_m++;
	d->att_b += len;
	if (d->lim.messages > 0 && d->used_m + 1 > d->allow_m)
		hit |= RL_HIT_MESSAGES;
	if (d->lim.bytes > 0 && d->used_b + len > d->allow_b)
		hit |= RL_HIT_BYTES;
	if (hit != 0) {
		d->hit |= hit;
		d->refused++;
		return RL_REFUSE;
	}
	d->used_m++;
	d->used_b += len;
	return RL_ACCEPT;
}

enum rl_verdict rl_dev_connect(struct rl_dev *d, int64_t now_ms,
                               const struct rl_policy *pol)
{
	int64_t cw;

	if (d->cool_until_ms > now_ms) {
		d->cool_refused++;
		return RL_REFUSE_COOLDOWN;
	}
	if (pol->connect_max <= 0)
		return RL_ACCEPT;
	cw = rl_window_of(now_ms, RL_CONNECT_WINDOW_MS);
	if (cw > d->cwin) {
		d->cwin = cw;
		d->used_c = 0;
		fleet_reset(&d->fc);
		d->allow_c = rl_connect_allowance(pol, &d->fc);
	}
	d->used_c++;
	if (d->used_c <= d->allow_c)
		return RL_ACCEPT;
	/* Counting starts afresh after the cool-down, here and (through
	 * the report) in Redis. */
	d->cool_until_ms = now_ms + pol->cooldown_ms;
	d->cool_started =
	    d->used_c + (d->fc.known ? d->fc.fleet_used - d->fc.base : 0);
	d->cool_report = true;
	d->used_c = 0;
	return RL_REFUSE_FLAPPING;
}

void rl_fleet_set(struct rl_fleet *f, int64_t others, int64_t base,
                  int64_t fleet_used, int nbrokers, int rank)
{
	f->known = true;
	f->others = others;
	f->base = base;
	f->fleet_used = fleet_used;
	f->nbrokers = nbrokers < 1 ? 1 : nbrokers;
	f->rank = rank < 0 || rank >= f->nbrokers ? 0 : rank;
}
