/*
 * The ratelimit plugin: per-device budgets of messages and payload bytes
 * per window, counted fleet-wide through Redis, and a cool-down for
 * devices that reconnect too often.
 *
 * Every decision is made on the broker thread from memory (rl_account.c).
 * A worker thread (rl_redis.c) exchanges this broker's counts with Redis
 * every sync_interval_ms, in one script call; what comes back (the fleet's
 * totals and how many brokers share each device) sets how much more this
 * broker may accept locally until the next exchange (rl_exchange.c).
 * Limits come from the registry (rl_limits.c); the device table is
 * rl_devices.c; rl_plugin.c wires it to the broker.
 */
#ifndef RL_H
#define RL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fg_registry.h"

#define RL_LOG "fleetgate-ratelimit:"

/* Connect attempts are counted in windows of one minute. */
#define RL_CONNECT_WINDOW_MS 60000

/* A device's budget. messages and bytes of 0 mean no limit. */
struct rl_limits {
	int64_t messages; /* per window */
	int64_t bytes;    /* payload bytes per window */
	int64_t window_ms;
	int64_t burst; /* extra messages carried over from a quiet window */
};

/*
 * What this broker knows of the fleet for one counter in the current
 * window, from the last exchange. Every broker reports what it accepted
 * and what it may still accept (its claim, its allowance); a broker may
 * grow its own claim only into what the others' claims leave free, so the
 * claims never add up to more than the budget.
 */
struct rl_fleet {
	bool known;         /* an exchange for this window came back */
	int64_t others;     /* the other active brokers' claims */
	int64_t base;       /* this broker's count as reported */
	int64_t fleet_used; /* every broker's count, this one's included */
	int nbrokers; /* active brokers, this one included; >= 1; kept from
	                 the last window as the first guess */
	int rank;     /* 0 .. nbrokers - 1 */
};

/* How decisions are made right now. */
struct rl_policy {
	bool fleet;          /* Redis answers: share the fleet's budget */
	double local_share;  /* without Redis: this share of each budget */
	int64_t connect_max; /* connects per minute; 0: no limit */
	int64_t cooldown_ms; /* refusal period after too many connects */
	int kick_after;      /* windows over the limit in a row; 0: never */
};

enum rl_verdict {
	RL_ACCEPT = 0,
	RL_REFUSE,          /* over the message or byte budget */
	RL_REFUSE_COOLDOWN, /* connect during a cool-down */
	RL_REFUSE_FLAPPING, /* this connect started a cool-down */
};

/* Which limit refused messages in a window (bit set). */
#define RL_HIT_MESSAGES 1u
#define RL_HIT_BYTES 2u

/* A window that closed with refusals, for the audit and the kick. */
struct rl_closed {
	int64_t win;
	int64_t refused;
	int64_t att_m, att_b; /* asked for since the last report */
	unsigned hit;
	int streak; /* windows in a row with refusals, this one included */
};

/* One device's state on this broker (broker thread only). */
struct rl_dev {
	char *name;
	char *client_id; /* of the last client seen publishing, for a kick */
	uint64_t hash;
	struct rl_dev *next; /* hash chain */

	uint64_t generation; /* registry generation lim was resolved at */
	struct rl_limits lim;

	/* Messages and bytes, current window. */
	int64_t win;
	int64_t used_m, used_b;   /* accepted here */
	int64_t allow_m, allow_b; /* accepted here at most */
	int64_t refused;
	int64_t att_m, att_b; /* asked for since the last report */
	unsigned hit;
	struct rl_fleet fm, fb;
	int64_t prev_m; /* fleet total of the previous window, for the burst */
	bool prev_known;
	int64_t last_refused_win;
	int streak;

	/* Connects, current minute. */
	int64_t cwin;
	int64_t used_c, allow_c;
	struct rl_fleet fc;
	int64_t cool_until_ms; /* wall clock; 0: none */
	int64_t cool_refused;
	int64_t cool_started; /* connects counted when it started (audit) */
	bool cool_report;     /* tell Redis this broker started a cool-down */

	/* Exchange bookkeeping. */
	bool dirty;     /* changed since it was last reported */
	bool report_m;  /* messages or bytes to report */
	bool report_c;  /* connects to report */
	bool want_prev; /* ask Redis for the previous window's total */
	int64_t last_active_ms;
	bool watched; /* on the plugin's list of open refusals/cool-downs */
};

/* ------------------------------------------------------ rl_account.c -- */

/* The index of the window holding now_ms (floor division). */
int64_t rl_window_of(int64_t now_ms, int64_t window_ms);

/* Messages allowed in a window whose predecessor had prev_m messages:
 * the budget, plus up to burst of what the previous window left unused. */
int64_t rl_message_cap(const struct rl_limits *lim, int64_t prev_m);

/*
 * How many this broker may accept in the window in all (its claim): with
 * the fleet known, its own count so far plus its share of what the
 * others' claims leave free (shared among the active brokers, the
 * remainder to the lowest ranks); before the first exchange of a window,
 * cap divided among as many brokers as shared the last one; without
 * Redis, local_share of cap (at least 1). INT64_MAX when cap is 0 (no
 * limit).
 */
int64_t rl_allowance(int64_t cap, const struct rl_fleet *f,
                     const struct rl_policy *pol);

/*
 * Connects this broker may accept in the minute: the limit less what the
 * other brokers counted at the last exchange (no claims: a cool-down must
 * not start before the fleet went over); before the first exchange, the
 * whole limit; without Redis, local_share of it. INT64_MAX: no limit.
 */
int64_t rl_connect_allowance(const struct rl_policy *pol,
                             const struct rl_fleet *f);

/* Recompute allow_m, allow_b and allow_c from the fleet view, the limits
 * and the policy (after an exchange, a limit change or a mode switch). */
void rl_dev_recompute(struct rl_dev *d, const struct rl_policy *pol);

/*
 * Move the device to the window holding now_ms. When that closes a window
 * with refusals, fills *closed and returns true.
 */
bool rl_dev_roll(struct rl_dev *d, int64_t now_ms, const struct rl_policy *pol,
                 struct rl_closed *closed);

/* Give the device new limits (a registry change), applied to the current
 * window at once. A new window length closes the current window: then
 * *closed is filled (if it had refusals) and true returned. */
bool rl_dev_set_limits(struct rl_dev *d, const struct rl_limits *lim,
                       const struct rl_policy *pol, struct rl_closed *closed);

/* Count one message of len payload bytes: RL_ACCEPT or RL_REFUSE. The
 * window must be current (rl_dev_roll first). */
enum rl_verdict rl_dev_admit(struct rl_dev *d, int64_t len,
                             const struct rl_policy *pol);

/* Count one connect attempt at now_ms: RL_ACCEPT, RL_REFUSE_COOLDOWN or
 * RL_REFUSE_FLAPPING (this one is over the limit: a cool-down starts). */
enum rl_verdict rl_dev_connect(struct rl_dev *d, int64_t now_ms,
                               const struct rl_policy *pol);

/* Take a fleet view for a counter from an answer of Redis for the window
 * the report was made in; base is this broker's count as reported. */
void rl_fleet_set(struct rl_fleet *f, int64_t others, int64_t base,
                  int64_t fleet_used, int nbrokers, int rank);

/* ------------------------------------------------------ rl_devices.c -- */

struct rl_devices;

struct rl_devices *rl_devices_new(void);
void rl_devices_free(struct rl_devices *t);
/* The device's state, created on first use; NULL when out of memory. */
struct rl_dev *rl_devices_get(struct rl_devices *t, const char *name);
/* The device's state, or NULL. */
struct rl_dev *rl_devices_find(struct rl_devices *t, const char *name);
/* Note that d changed, so that the next exchange reports it. */
void rl_devices_mark(struct rl_devices *t, struct rl_dev *d);
/* The devices marked since the last call (at most max); *n their number.
 * Their dirty flag is cleared. The array is valid until the next call. */
struct rl_dev **rl_devices_take_dirty(struct rl_devices *t, size_t max,
                                      size_t *n);
size_t rl_devices_count(const struct rl_devices *t);
/* Call fn for every device. */
void rl_devices_each(struct rl_devices *t, void (*fn)(struct rl_dev *, void *),
                     void *arg);
/* Drop devices idle for min_idle_ms and two of their windows, unless
 * marked or watched; returns how many were dropped. */
size_t rl_devices_purge(struct rl_devices *t, int64_t now_ms,
                        int64_t min_idle_ms);

/* ----------------------------------------------------- rl_exchange.c -- */

struct rl_batch;

/* Fill b (emptied first) with the counts of the devices changed since the
 * last exchange, at most max of them; returns the number of entries. */
size_t rl_exchange_build(struct rl_devices *t, struct rl_batch *b, size_t max);

/* Take the fleet's answer to b into the devices it names (those whose
 * window has moved on since are left alone); after a failed exchange,
 * mark them again so that the next one reports them. */
void rl_exchange_apply(struct rl_devices *t, const struct rl_batch *b,
                       const struct rl_policy *pol, int64_t now_ms);

/* ------------------------------------------------------- rl_limits.c -- */

struct rl_limits_index;

/*
 * Index the limit rows of reg (NULL or without a limit table: only the
 * defaults apply). Returns NULL when out of memory.
 */
struct rl_limits_index *rl_limits_index_new(const struct fg_registry *reg,
                                            const struct rl_limits *defaults);
void rl_limits_index_free(struct rl_limits_index *ix);
/* The limits of a device: field by field, its own row, then its
 * municipality's, then the global row, then the defaults. */
void rl_limits_resolve(const struct rl_limits_index *ix, const char *device_id,
                       struct rl_limits *out);

#endif
