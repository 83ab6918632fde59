/*
 * The ratelimit plugin's Redis worker: one thread that takes a batch of
 * this broker's counts, sends it to Redis in one script call and hands the
 * fleet's totals back. The broker thread never waits for it: it submits a
 * batch when the worker is idle and picks the answer up on a later TICK.
 */
#ifndef RL_REDIS_H
#define RL_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Device ids longer than this are not counted fleet-wide (the registry
 * allows 64 characters). */
#define RL_NAME_MAX 256

struct rl_redis_settings {
	const char *host; /* NULL when unix_socket is used */
	int port;
	const char *unix_socket; /* NULL: TCP */
	const char *username;    /* NULL: AUTH with the password alone */
	const char *password;    /* NULL: no AUTH; copied, wiped at stop */
	const char *prefix;      /* of every key */
	const char *broker_id;
	int timeout_ms;      /* connect and command timeout */
	int retry_max_ms;    /* reconnect backoff ceiling */
	int active_ms;       /* a broker that reported within this long
	                        shares a device's budget */
	int64_t connect_max; /* connects per minute, fleet-wide */
	int64_t cooldown_ms;
};

/* One counter report and its answer. */
struct rl_entry {
	char kind; /* 'm': messages and bytes; 'c': connects */
	char device[RL_NAME_MAX + 1];
	int64_t win;          /* window index */
	int64_t window_s;     /* window length ('m'); 60 for 'c' */
	int64_t a, b;         /* counts: 'm' messages, bytes; 'c' connects, 0 */
	int64_t ca, cb;       /* claims on the same (allowances) */
	int64_t cap_a, cap_b; /* 'm': the budgets, for brokers yet to report */
	int64_t dem_a, dem_b; /* 'm': asked for since the last report */
	bool flag;            /* 'm': want the previous window's total;
	                         'c': this broker started a cool-down */
	/* The answer: the fleet's count of a; the other active brokers'
	 * claims on a and on b; active brokers; this one's rank; for 'm' the
	 * previous window's message count (-1: not asked), for 'c' the
	 * cool-down left in ms (0: none). */
	int64_t r_used, r_oa, r_ob;
	int r_n, r_rank;
	int64_t r_x;
};

struct rl_batch {
	struct rl_entry *e;
	size_t n, cap;
	bool ok;
	char err[160];     /* why it failed; never holds credentials */
	int64_t offset_ms; /* Redis clock minus this machine's, when ok */
};

struct rl_redis;

/* Start the worker (no connection is made yet). NULL with err set. */
struct rl_redis *rl_redis_start(const struct rl_redis_settings *s, char *err,
                                size_t errlen);
/* Stop it; waits for a call in progress (at most timeout_ms). */
void rl_redis_stop(struct rl_redis *r);

/* Broker thread: hand b to the worker. Returns false (and keeps b) when
 * the previous batch is not back yet. */
bool rl_redis_submit(struct rl_redis *r, struct rl_batch *b);
/* Broker thread: the batch handed over, once answered; else NULL. */
struct rl_batch *rl_redis_poll(struct rl_redis *r);

/* Make room for one more entry; NULL when out of memory. */
struct rl_entry *rl_batch_add(struct rl_batch *b);
void rl_batch_free(struct rl_batch *b);

#endif
