/*
 * The Redis worker of the ratelimit plugin.
 *
 * Each exchange is one EVALSHA of the script below, whatever the number
 * of devices in the batch: one round trip. Counts are absolute (this
 * broker's total for the window, in a hash field named after the broker),
 * so a report that is lost or repeated changes nothing, and a Redis that
 * restarted empty is whole again after one exchange of every broker. Keys
 * expire by themselves two windows after their window.
 *
 * Connection and command timeouts bound every call; after a failure the
 * worker reconnects with exponential backoff, and batches submitted
 * meanwhile fail at once instead of waiting.
 */
#include "rl_redis.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "fg_common.h"
#include "fg_pg.h"
#include "rl.h"

/*
 * KEYS: two per entry. 'm': the window's hash, the previous window's
 * hash. 'c': the minute's hash of connects, the device's cool-down key.
 * ARGV: broker id, active_ms, connect_max, cooldown_ms, then nine per
 * entry: kind, a, b, cap_a, cap_b, ttl_s, flag, demand_a, demand_b (see
 * rl_entry).
 * Returns Redis's clock in ms, then six integers per entry (the answer
 * fields of rl_entry, in order).
 * Fields of a hash, each suffixed ":<broker id>": m b c counts of
 * messages, bytes and connects, M B the broker's claims on messages and
 * bytes, t the time of its last report. A broker that has not reported
 * for active_ms no longer claims more than it counted. Connects are not
 * claimed: they are few and far between, and a cool-down must not start
 * before the fleet as a whole went over the limit.
 */
static const char SCRIPT[] =
    "local me, active = ARGV[1], tonumber(ARGV[2])\n"
    "local cmax, cool = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local nows = string.format('%.0f', now)\n"
    "local out = {now}\n"
    "local function tally(h)\n"
    "  local by = {}\n"
    "  for j = 1, #h, 2 do\n"
    "    local k, b = string.sub(h[j], 1, 1), string.sub(h[j], 3)\n"
    "    by[b] = by[b] or {}\n"
    "    by[b][k] = tonumber(h[j + 1])\n"
    "  end\n"
    "  return by\n"
    "end\n"
    "local function live(e)\n"
    "  return e ~= nil and e.t ~= nil and now - e.t <= active\n"
    "end\n"
    "local function sums(by, u, c)\n"
    "  local used, others, n, rank = 0, 0, 0, 0\n"
    "  for b, e in pairs(by) do\n"
    "    local x = e[u] or 0\n"
    "    used = used + x\n"
    "    if live(e) then\n"
    "      n = n + 1\n"
    "      if b < me then rank = rank + 1 end\n"
    "    end\n"
    "    if b ~= me then\n"
    "      local cl = e[c] or x\n"
    "      if live(e) and cl > x then x = cl end\n"
    "      others = others + x\n"
    "    end\n"
    "  end\n"
    "  return used, others, n, rank\n"
    "end\n"
    /* What a broker may accept in all, as rl_allowance() computes it:
     * its count plus its share of what the others' claims leave. */
    "local function claim(cap, others, used, n, rank, demand)\n"
    "  local left = cap - others - used\n"
    "  if cap <= 0 or left <= 0 then return used end\n"
    "  local s = math.floor(left / n)\n"
    "  if rank < left % n then s = s + 1 end\n"
    /* Alone, a broker may use what is left, but claims only what it
     * needs soon, so that another broker the device turns up at (a
     * reconnect elsewhere) is not refused for want of a share. */
    "  if n == 1 then\n"
    "    s = math.min(s, math.max(2 * demand, math.ceil(cap / 10)))\n"
    "  end\n"
    "  return used + s\n"
    "end\n"
    "for i = 0, (#ARGV - 4) / 9 - 1 do\n"
    "  local a = 5 + i * 9\n"
    "  local k1, k2 = KEYS[2 * i + 1], KEYS[2 * i + 2]\n"
    "  local r\n"
    "  if ARGV[a] == 'm' then\n"
    "    local ua, ub = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])\n"
    "    local capa, capb = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])\n"
    "    redis.call('HSET', k1, 'm:' .. me, ua, 'b:' .. me, ub,\n"
    "               't:' .. me, nows)\n"
    "    redis.call('EXPIRE', k1, ARGV[a + 5])\n"
    "    local by = tally(redis.call('HGETALL', k1))\n"
    "    local pby = tally(redis.call('HGETALL', k2))\n"
    "    local used, om, n, rank = sums(by, 'm', 'M')\n"
    "    local _, ob = sums(by, 'b', 'B')\n"
    /* Brokers that shared the last window and have not reported in this
     * one yet took their first share of it already. */
    "    local pending = 0\n"
    "    for b, e in pairs(pby) do\n"
    "      if b ~= me and live(e) and by[b] == nil then\n"
    "        pending = pending + 1\n"
    "        if b < me then rank = rank + 1 end\n"
    "      end\n"
    "    end\n"
    "    n = n + pending\n"
    "    om = om + pending * math.floor(capa / n)\n"
    "    ob = ob + pending * math.floor(capb / n)\n"
    /* The claim this broker will take when the answer arrives, stored
     * now: another broker's next exchange must not grow into it. */
    "    redis.call('HSET', k1,\n"
    "      'M:' .. me, claim(capa, om, ua, n, rank, tonumber(ARGV[a + 7])),\n"
    "      'B:' .. me, claim(capb, ob, ub, n, rank, tonumber(ARGV[a + 8])))\n"
    "    local prev = -1\n"
    "    if ARGV[a + 6] == '1' then prev = sums(pby, 'm', 'M') end\n"
    "    r = {used, om, ob, n, rank, prev}\n"
    "  else\n"
    "    local left = redis.call('PTTL', k2)\n"
    "    if left > 0 then\n"
    "      r = {0, 0, 0, 1, 0, left}\n"
    "    else\n"
    "      local uc = tonumber(ARGV[a + 1])\n"
    "      redis.call('HSET', k1, 'c:' .. me, uc, 't:' .. me, nows)\n"
    "      redis.call('EXPIRE', k1, ARGV[a + 5])\n"
    "      local used, _, n, rank =\n"
    "        sums(tally(redis.call('HGETALL', k1)), 'c', 'C')\n"
    "      left = 0\n"
    "      if ARGV[a + 6] == '1' or (cmax > 0 and used > cmax) then\n"
    "        redis.call('SET', k2, '1', 'PX', cool)\n"
    "        redis.call('DEL', k1)\n"
    "        left = cool\n"
    "      end\n"
    "      r = {used, 0, 0, n, rank, left}\n"
    "    end\n"
    "  end\n"
    "  for j = 1, 6 do out[#out + 1] = r[j] end\n"
    "end\n"
    "return out\n";

struct rl_redis {
	struct rl_redis_settings s;
	char *host, *unix_socket, *username, *password, *prefix, *broker_id;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;
	struct rl_batch *pending; /* submitted, not yet taken by the worker */
	struct rl_batch *running; /* being answered */
	struct rl_batch *done;    /* answered, not yet polled */

	/* Worker thread only. */
	redisContext *ctx;
	char sha[48];
	struct fg_backoff backoff;
	int64_t next_try_ms;
	/* Argument vectors, reused between exchanges. */
	const char **argv;
	size_t *argvlen;
	char *arena;
	size_t cap_args, cap_arena;
};

static struct timeval tv_of(int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	return tv;
}

static void drop(struct rl_redis *r)
{
	if (r->ctx != NULL)
		redisFree(r->ctx);
	r->ctx = NULL;
	r->next_try_ms = fg_mono_ms() + fg_backoff_next(&r->backoff);
}

/* A reply of one of the wanted types, or NULL with err set (the
 * connection is then dropped when it is broken). */
static redisReply *check(struct rl_redis *r, redisReply *rep, int want,
                         const char *what, char *err, size_t errlen)
{
	if (rep == NULL) {
		fg_seterr(err, errlen, "%s: %s", what,
		          r->ctx->errstr[0] ? r->ctx->errstr : "no reply");
		drop(r);
		return NULL;
	}
	if (rep->type == want ||
	    (want == REDIS_REPLY_STATUS && rep->type == REDIS_REPLY_STRING))
		return rep;
	fg_seterr(err, errlen, "%s: %.100s", what,
	          rep->type == REDIS_REPLY_ERROR && rep->str
	              ? rep->str
	              : "unexpected reply");
	freeReplyObject(rep);
	return NULL;
}

static int load_script(struct rl_redis *r, char *err, size_t errlen)
{
	redisReply *rep =
	    check(r, redisCommand(r->ctx, "SCRIPT LOAD %s", SCRIPT),
	          REDIS_REPLY_STRING, "SCRIPT LOAD", err, errlen);

	if (rep == NULL)
		return -1;
	snprintf(r->sha, sizeof(r->sha), "%s", rep->str);
	freeReplyObject(rep);
	return 0;
}

static int authenticate(struct rl_redis *r, char *err, size_t errlen)
{
	redisReply *rep;

	if (r->password == NULL)
		return 0;
	if (r->username != NULL)
		rep = redisCommand(r->ctx, "AUTH %s %s", r->username,
		                   r->password);
	else
		rep = redisCommand(r->ctx, "AUTH %s", r->password);
	rep = check(r, rep, REDIS_REPLY_STATUS, "AUTH", err, errlen);
	if (rep == NULL)
		return -1;
	freeReplyObject(rep);
	return 0;
}

/* Connect, authenticate and load the script; 0 or -1 with err set. */
static int ensure_connected(struct rl_redis *r, char *err, size_t errlen)
{
	struct timeval tv = tv_of(r->s.timeout_ms);

	if (r->ctx != NULL)
		return 0;
	if (fg_mono_ms() < r->next_try_ms) {
		fg_seterr(err, errlen, "waiting to reconnect");
		return -1;
	}
	if (r->unix_socket != NULL)
		r->ctx = redisConnectUnixWithTimeout(r->unix_socket, tv);
	else
		r->ctx = redisConnectWithTimeout(r->host, r->s.port, tv);
	if (r->ctx == NULL || r->ctx->err) {
		fg_seterr(err, errlen, "connect: %s",
		          r->ctx ? r->ctx->errstr : "out of memory");
		drop(r);
		return -1;
	}
	if (redisSetTimeout(r->ctx, tv) != REDIS_OK) {
		fg_seterr(err, errlen, "cannot set the timeout");
		drop(r);
		return -1;
	}
	if (authenticate(r, err, errlen) != 0 ||
	    load_script(r, err, errlen) != 0) {
		drop(r);
		return -1;
	}
	fg_backoff_reset(&r->backoff, r->s.retry_max_ms);
	return 0;
}

/* Room for n arguments and len bytes of argument text. */
static int reserve(struct rl_redis *r, size_t n, size_t len)
{
	if (n > r->cap_args) {
		const char **av = realloc(r->argv, n * sizeof(*av));
		size_t *al;

		if (av == NULL)
			return -1;
		r->argv = av;
		al = realloc(r->argvlen, n * sizeof(*al));
		if (al == NULL)
			return -1;
		r->argvlen = al;
		r->cap_args = n;
	}
	if (len > r->cap_arena) {
		char *a = realloc(r->arena, len);

		if (a == NULL)
			return -1;
		r->arena = a;
		r->cap_arena = len;
	}
	return 0;
}

struct args {
	struct rl_redis *r;
	size_t n, used;
};

/* Append one formatted argument; the arena was sized beforehand. */
static void arg(struct args *a, const char *fmt, ...) FG_PRINTF(2, 3);
static void arg(struct args *a, const char *fmt, ...)
{
	va_list ap;
	char *at = a->r->arena + a->used;
	size_t room = a->r->cap_arena - a->used;
	int len;

	va_start(ap, fmt);
	len = vsnprintf(at, room, fmt, ap);
	va_end(ap);
	if (len < 0 || (size_t)len >= room)
		len = room > 0 ? (int)room - 1 : 0;
	a->r->argv[a->n] = at;
	a->r->argvlen[a->n] = (size_t)len;
	a->n++;
	a->used += (size_t)len + 1;
}

static void key_args(struct args *a, const struct rl_entry *e)
{
	const char *p = a->r->prefix;

	/* The device in braces: a Redis Cluster hash tag, so that both keys
	 * of an entry live on one node. */
	if (e->kind == 'm') {
		arg(a, "%sm:{%s}:%lld:%lld", p, e->device,
		    (long long)e->window_s, (long long)e->win);
		arg(a, "%sm:{%s}:%lld:%lld", p, e->device,
		    (long long)e->window_s, (long long)e->win - 1);
	} else {
		arg(a, "%sc:{%s}:%lld", p, e->device, (long long)e->win);
		arg(a, "%scool:{%s}", p, e->device);
	}
}

/* Build EVALSHA sha numkeys KEYS... ARGV...; returns argc or -1. */
static int build(struct rl_redis *r, const struct rl_batch *b)
{
	size_t n = 7 + b->n * 11, len, i;
	struct args a = {r, 0, 0};

	len = 512 + strlen(r->prefix) * 2 * b->n + strlen(r->broker_id);
	len += b->n * (2 * RL_NAME_MAX + 9 * 24 + 64);
	if (reserve(r, n, len) != 0)
		return -1;
	arg(&a, "EVALSHA");
	arg(&a, "%s", r->sha);
	arg(&a, "%zu", b->n * 2);
	for (i = 0; i < b->n; i++)
		key_args(&a, &b->e[i]);
	arg(&a, "%s", r->broker_id);
	arg(&a, "%d", r->s.active_ms);
	arg(&a, "%lld", (long long)r->s.connect_max);
	arg(&a, "%lld", (long long)r->s.cooldown_ms);
	for (i = 0; i < b->n; i++) {
		const struct rl_entry *e = &b->e[i];
		/* Two windows after its own, and never under a minute, so
		 * that the next window can still read it for the burst. */
		long long ttl = e->kind == 'm' ? e->window_s * 2 + 60 : 150;

		arg(&a, "%c", e->kind);
		arg(&a, "%lld", (long long)e->a);
		arg(&a, "%lld", (long long)e->b);
		arg(&a, "%lld", (long long)e->cap_a);
		arg(&a, "%lld", (long long)e->cap_b);
		arg(&a, "%lld", ttl);
		arg(&a, "%d", e->flag ? 1 : 0);
		arg(&a, "%lld", (long long)e->dem_a);
		arg(&a, "%lld", (long long)e->dem_b);
	}
	return (int)a.n;
}

#define ANSWER_LEN 6

static int read_answer(struct rl_batch *b, const redisReply *rep, char *err,
                       size_t errlen)
{
	size_t i, k;

	if (rep->elements != 1 + b->n * ANSWER_LEN) {
		fg_seterr(err, errlen,
		          "script answered %zu values for %zu entries",
		          rep->elements, b->n);
		return -1;
	}
	for (k = 0; k < rep->elements; k++) {
		if (rep->element[k]->type != REDIS_REPLY_INTEGER) {
			fg_seterr(err, errlen, "script answered a non-integer");
			return -1;
		}
	}
	for (i = 0; i < b->n; i++) {
		redisReply *const *v = rep->element + 1 + i * ANSWER_LEN;
		struct rl_entry *e = &b->e[i];

		e->r_used = v[0]->integer;
		e->r_oa = v[1]->integer;
		e->r_ob = v[2]->integer;
		e->r_n = (int)v[3]->integer;
		e->r_rank = (int)v[4]->integer;
		e->r_x = v[5]->integer;
	}
	return 0;
}

/* One exchange: 0, or -1 with err set. */
static int exchange(struct rl_redis *r, struct rl_batch *b, char *err,
                    size_t errlen)
{
	redisReply *rep;
	int64_t t0, t1;
	int argc, attempt, rc;

	if (ensure_connected(r, err, errlen) != 0)
		return -1;
	for (attempt = 0; attempt < 2; attempt++) {
		argc = build(r, b);
		if (argc < 0) {
			fg_seterr(err, errlen, "out of memory");
			return -1;
		}
		t0 = fg_time_ms();
		rep = redisCommandArgv(r->ctx, argc, r->argv, r->argvlen);
		t1 = fg_time_ms();
		if (rep != NULL && rep->type == REDIS_REPLY_ERROR &&
		    strncmp(rep->str, "NOSCRIPT", 8) == 0 && attempt == 0) {
			/* SCRIPT FLUSH, or a failover to a replica without
			 * it: load it again and retry once. */
			freeReplyObject(rep);
			if (load_script(r, err, errlen) != 0)
				return -1;
			continue;
		}
		rep = check(r, rep, REDIS_REPLY_ARRAY, "EVALSHA", err, errlen);
		if (rep == NULL)
			return -1;
		rc = rep->elements > 0 &&
		             rep->element[0]->type == REDIS_REPLY_INTEGER
		         ? read_answer(b, rep, err, errlen)
		         : -1;
		if (rc == 0)
			b->offset_ms = rep->element[0]->integer - (t0 + t1) / 2;
		else if (err[0] == '\0')
			fg_seterr(err, errlen, "script answered no clock");
		freeReplyObject(rep);
		return rc;
	}
	return -1;
}

static void *worker_main(void *arg)
{
	struct rl_redis *r = arg;

	fg_worker_begin("fg-ratelimit", NULL, 0);
	pthread_mutex_lock(&r->lock);
	for (;;) {
		struct rl_batch *b;

		while (!r->stop && r->pending == NULL)
			pthread_cond_wait(&r->wake, &r->lock);
		if (r->stop)
			break;
		b = r->pending;
		r->pending = NULL;
		r->running = b;
		pthread_mutex_unlock(&r->lock);

		b->err[0] = '\0';
		b->ok = exchange(r, b, b->err, sizeof(b->err)) == 0;

		pthread_mutex_lock(&r->lock);
		r->running = NULL;
		r->done = b;
	}
	pthread_mutex_unlock(&r->lock);
	if (r->ctx != NULL)
		redisFree(r->ctx);
	r->ctx = NULL;
	return NULL;
}

bool rl_redis_submit(struct rl_redis *r, struct rl_batch *b)
{
	bool taken = false;

	pthread_mutex_lock(&r->lock);
	if (r->pending == NULL && r->running == NULL && r->done == NULL) {
		r->pending = b;
		taken = true;
		pthread_cond_signal(&r->wake);
	}
	pthread_mutex_unlock(&r->lock);
	return taken;
}

struct rl_batch *rl_redis_poll(struct rl_redis *r)
{
	struct rl_batch *b;

	pthread_mutex_lock(&r->lock);
	b = r->done;
	r->done = NULL;
	pthread_mutex_unlock(&r->lock);
	return b;
}

static void wipe_free(char *s)
{
	if (s != NULL)
		memset(s, 0, strlen(s));
	free(s);
}

static void settings_free(struct rl_redis *r)
{
	free(r->host);
	free(r->unix_socket);
	free(r->username);
	wipe_free(r->password);
	free(r->prefix);
	free(r->broker_id);
	free(r->argv);
	free(r->argvlen);
	free(r->arena);
	free(r);
}

struct rl_redis *rl_redis_start(const struct rl_redis_settings *s, char *err,
                                size_t errlen)
{
	struct rl_redis *r = calloc(1, sizeof(*r));
	bool failed = false;

	if (r == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	r->s = *s;
	r->host = fg_strdup_or_null(s->host ? s->host : "127.0.0.1", &failed);
	r->unix_socket = fg_strdup_or_null(s->unix_socket, &failed);
	r->username = fg_strdup_or_null(s->username, &failed);
	r->password = fg_strdup_or_null(s->password, &failed);
	r->prefix = fg_strdup_or_null(s->prefix ? s->prefix : "", &failed);
	r->broker_id =
	    fg_strdup_or_null(s->broker_id ? s->broker_id : "broker", &failed);
	if (failed) {
		fg_seterr(err, errlen, "out of memory");
		settings_free(r);
		return NULL;
	}
	fg_backoff_reset(&r->backoff, s->retry_max_ms);
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->wake, NULL);
	if (pthread_create(&r->thread, NULL, worker_main, r) != 0) {
		fg_seterr(err, errlen, "cannot start the redis thread: %s",
		          strerror(errno));
		pthread_cond_destroy(&r->wake);
		pthread_mutex_destroy(&r->lock);
		settings_free(r);
		return NULL;
	}
	return r;
}

void rl_redis_stop(struct rl_redis *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->lock);
	r->stop = true;
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->thread, NULL);
	pthread_cond_destroy(&r->wake);
	pthread_mutex_destroy(&r->lock);
	settings_free(r);
}

struct rl_entry *rl_batch_add(struct rl_batch *b)
{
	struct rl_entry *e;

	if (fg_grow(&b->e, &b->cap, b->n, sizeof(*b->e)) != 0)
		return NULL;
	e = &b->e[b->n++];
	memset(e, 0, sizeof(*e));
	return e;
}

void rl_batch_free(struct rl_batch *b)
{
	free(b->e);
	b->e = NULL;
	b->n = b->cap = 0;
}
