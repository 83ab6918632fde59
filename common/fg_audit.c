/*
 * The audit writer: a bounded queue filled by the broker thread, drained
 * by a worker thread into fleetgate.audit_events in batches of one
 * statement each (the batch travels as one jsonb parameter).
 */
#include "fg_audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <mosquitto_broker.h>

#include "fg_ident.h"
#include "fg_log.h"
#include "fg_shm.h"

#define LOG_PREFIX "fleetgate-audit:"
#define LAST_SEEN_MAX 200000
#define SEEN_SLOTS 524288 /* a power of two above 2 * LAST_SEEN_MAX */
#define SEEN_EMPTY UINT32_MAX
#define STOP_FLUSH_MS 3000
/* How much longer fg_audit_stop waits for the writer to finish before it
 * makes the writer's database calls give up. */
#define STOP_GRACE_MS 1000

struct queued_event {
	int64_t at_ms;
	char source[16];
	char event[32];
	char outcome[16];
	char reason[48];
	char device_id[72];
	char client_id[260];
	char username[260];
	char fingerprint[72];
	char address[72];
	char topic[260];
	uint64_t count;
};

struct seen {
	char id[72];
	int64_t at_ms;
};

/*
 * The structure and its queue live in shared mappings, so that the writer
 * may run in the worker process (fg_shm.h). Events are kept in slots
 * taken from a stack of free ones (the most recently freed first, so that
 * only as many pages are touched as events ever waited at once).
 */
struct fg_audit {
	struct fg_audit_settings s;
	char *conninfo, *broker_id; /* allocated before any fork */
	bool shared;

	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int stopping, done;
	int abort_pipe[2]; /* written when a stop cannot wait any longer */

	struct queued_event **ring;
	size_t head, count;
	/* Broker thread only: it stopped waiting for the lock (see
	 * broker_lock), and the events it dropped for that. */
	bool stalled;
	uint64_t lock_drops;
	struct queued_event *slots; /* queue_size of them */
	struct queued_event **free_slots;
	size_t nfree;
	struct seen *seen; /* one entry per device since the last flush */
	size_t nseen;
	uint32_t *seen_index; /* open addressing over seen, SEEN_SLOTS */

	uint64_t queued, written, dropped, rejected, seen_dropped;
	uint64_t dropped_logged, seen_dropped_logged;
	struct fg_throttle drop_throttle, seen_throttle, stall_throttle;

	/* From here on, the writer thread's own (reset for a new worker
	 * process). */
	PGconn *conn; /* writer thread only, like the three below */
	struct fg_pg_io io;
	int db_down;
	struct fg_throttle conn_throttle;
};

static const char INSERT_SQL[] =
    "INSERT INTO fleetgate.audit_events (at, broker_id, source, event, "
    "outcome, reason, device_id, client_id, username, fingerprint, "
    "address, detail) "
    "SELECT to_timestamp(x.at_ms / 1000.0), $2, x.source, x.event, "
    "x.outcome, x.reason, x.device_id, x.client_id, x.username, "
    "x.fingerprint, x.address, x.detail "
    "FROM jsonb_to_recordset($1::jsonb) AS x(at_ms bigint, source text, "
    "event text, outcome text, reason text, device_id text, "
    "client_id text, username text, fingerprint text, address text, "
    "detail jsonb)";

/* Newest sighting of each device wins; two brokers may race, so the
 * column only ever moves forward. */
static const char SEEN_SQL[] =
    "UPDATE fleetgate.devices d SET last_seen_at = "
    "greatest(d.last_seen_at, s.at) "
    "FROM (SELECT DISTINCT ON (x.id) x.id, "
    "to_timestamp(x.at_ms / 1000.0) AS at "
    "FROM jsonb_to_recordset($1::jsonb) AS x(id text, at_ms bigint) "
    "ORDER BY x.id, x.at_ms DESC) s "
    "WHERE d.id = s.id "
    "AND (d.last_seen_at IS NULL OR d.last_seen_at < s.at)";

static void copy_field(char *dst, size_t len, const char *src)
{
	if (src == NULL)
		dst[0] = '\0';
	else
		fg_sanitize(src, dst, len);
}

/* Copy ev, sanitised and bounded, into q. */
static void fill_event(struct queued_event *q, const struct fg_audit_event *ev,
                       int64_t at_ms)
{
	q->at_ms = at_ms;
	copy_field(q->source, sizeof(q->source), ev->source);
	copy_field(q->event, sizeof(q->event), ev->event);
	copy_field(q->outcome, sizeof(q->outcome), ev->outcome);
	copy_field(q->reason, sizeof(q->reason), ev->reason);
	copy_field(q->device_id, sizeof(q->device_id), ev->device_id);
	copy_field(q->client_id, sizeof(q->client_id), ev->client_id);
	copy_field(q->username, sizeof(q->username), ev->username);
	copy_field(q->fingerprint, sizeof(q->fingerprint), ev->fingerprint);
	copy_field(q->address, sizeof(q->address), ev->address);
	copy_field(q->topic, sizeof(q->topic), ev->topic);
	q->count = ev->count;
}

/*
 * The broker thread's lock of the queue. The writer holds it for moments
 * (flush_seen's copy is the longest: a few ms with 100,000 devices), but
 * a worker process stopped while it holds it (SIGSTOP, a frozen cgroup)
 * would hold it for good: then the broker thread waits at most
 * BROKER_LOCK_MS once, and after that not at all until it gets the lock
 * again.
 */
#define BROKER_LOCK_MS 50
static int broker_lock(struct fg_audit *a)
{
	if (fg_shm_lock_within(&a->lock, a->stalled ? 0 : BROKER_LOCK_MS) !=
	    0) {
		a->stalled = true;
		return -1;
	}
	a->stalled = false;
	return 0;
}

int fg_audit_push(struct fg_audit *a, const struct fg_audit_event *ev)
{
	struct queued_event *q;

	if (a == NULL)
		return -1;
	if (broker_lock(a) != 0) {
		a->lock_drops++;
		return -1;
	}
	if (a->nfree == 0) {
		a->dropped++;
		pthread_mutex_unlock(&a->lock);
		return -1;
	}
	q = a->free_slots[--a->nfree];
	fill_event(q, ev, fg_time_ms());
	a->ring[(a->head + a->count) % (size_t)a->s.queue_size] = q;
	a->count++;
	a->queued++;
	if (a->count >= (size_t)a->s.batch_size)
		pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
	return 0;
}

void fg_audit_seen(struct fg_audit *a, const char *device_id)
{
	char id[sizeof(a->seen[0].id)];
	size_t pos;

	if (a == NULL || device_id == NULL)
		return;
	copy_field(id, sizeof(id), device_id);
	pos = (size_t)fg_hash_str(id) & (SEEN_SLOTS - 1);
	if (broker_lock(a) != 0)
		return; /* a convenience, not a record */
	/* A device that connects many times between flushes is one entry. */
	while (a->seen_index[pos] != SEEN_EMPTY &&
	       strcmp(a->seen[a->seen_index[pos]].id, id) != 0)
		pos = (pos + 1) & (SEEN_SLOTS - 1);
	if (a->seen_index[pos] != SEEN_EMPTY) {
		a->seen[a->seen_index[pos]].at_ms = fg_time_ms();
	} else if (a->nseen < LAST_SEEN_MAX) {
		memcpy(a->seen[a->nseen].id, id, sizeof(id));
		a->seen[a->nseen].at_ms = fg_time_ms();
		a->seen_index[pos] = (uint32_t)a->nseen;
		a->nseen++;
	} else {
		a->seen_dropped++;
	}
	pthread_mutex_unlock(&a->lock);
}

void fg_audit_tick(struct fg_audit *a)
{
	uint64_t dropped, seen_dropped, suppressed;

	if (a == NULL)
		return;
	if (broker_lock(a) != 0) {
		if (fg_throttle_hit(&a->stall_throttle, 10000, &suppressed))
			fg_log(MOSQ_LOG_ERR,
			       LOG_PREFIX " the audit writer holds the queue "
			                  "(its process stopped?): "
			                  "events_dropped=%llu meanwhile",
			       (unsigned long long)a->lock_drops);
		return;
	}
	dropped = a->dropped + a->lock_drops;
	seen_dropped = a->seen_dropped;
	pthread_mutex_unlock(&a->lock);
	if (dropped != a->dropped_logged &&
	    fg_throttle_hit(&a->drop_throttle, 10000, &suppressed)) {
		fg_log(MOSQ_LOG_ERR,
		       LOG_PREFIX " queue full, events_dropped=%llu (total) "
		                  "queue_size=%d: audit events are being lost",
		       (unsigned long long)dropped, a->s.queue_size);
		a->dropped_logged = dropped;
	}
	if (seen_dropped != a->seen_dropped_logged &&
	    fg_throttle_hit(&a->seen_throttle, 60000, &suppressed)) {
		fg_log(MOSQ_LOG_WARNING,
		       LOG_PREFIX " more than %d devices seen in one "
		                  "interval, last_seen_updates_skipped=%llu "
		                  "(total); lower last_seen_interval_s",
		       LAST_SEEN_MAX, (unsigned long long)seen_dropped);
		a->seen_dropped_logged = seen_dropped;
	}
}

void fg_audit_stats(struct fg_audit *a, struct fg_audit_stats *out)
{
	fg_shm_lock(&a->lock);
	out->queued = a->queued;
	out->written = a->written;
	out->dropped = a->dropped;
	out->rejected = a->rejected;
	out->pending = a->count;
	pthread_mutex_unlock(&a->lock);
}

static void add_str(cJSON *obj, const char *key, const char *v)
{
	if (v[0] != '\0')
		cJSON_AddStringToObject(obj, key, v);
}

/* One event as the object jsonb_to_recordset in INSERT_SQL reads. */
static cJSON *event_object(const struct queued_event *e)
{
	cJSON *o = cJSON_CreateObject();

	if (o == NULL)
		return NULL;
	cJSON_AddNumberToObject(o, "at_ms", (double)e->at_ms);
	add_str(o, "source", e->source);
	add_str(o, "event", e->event);
	add_str(o, "outcome", e->outcome);
	add_str(o, "reason", e->reason);
	add_str(o, "device_id", e->device_id);
	add_str(o, "client_id", e->client_id);
	add_str(o, "username", e->username);
	add_str(o, "fingerprint", e->fingerprint);
	add_str(o, "address", e->address);
	/* A count without a topic: an aggregated event, such as the
	 * messages a rate limit refused in one window. */
	if (e->topic[0] != '\0' || e->count > 0) {
		cJSON *d = cJSON_AddObjectToObject(o, "detail");
		if (d != NULL && e->topic[0] != '\0')
			cJSON_AddStringToObject(d, "topic", e->topic);
		if (d != NULL)
			cJSON_AddNumberToObject(d, "count", (double)e->count);
	}
	return o;
}

char *fg_audit_event_json(const struct fg_audit_event *ev, int64_t at_ms)
{
	struct queued_event q;
	cJSON *o;
	char *out;

	fill_event(&q, ev, at_ms);
	o = event_object(&q);
	out = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	return out;
}

const char *fg_audit_insert_sql(void)
{
	return INSERT_SQL;
}

static char *batch_json(struct queued_event *const *evs, size_t n)
{
	cJSON *arr = cJSON_CreateArray();
	char *out;
	size_t i;

	for (i = 0; arr != NULL && i < n; i++) {
		const struct queued_event *e = evs[i];
		cJSON *o = event_object(e);

		if (o == NULL || !cJSON_AddItemToArray(arr, o)) {
			cJSON_Delete(o);
			cJSON_Delete(arr);
			return NULL;
		}
	}
	out = arr ? cJSON_PrintUnformatted(arr) : NULL;
	cJSON_Delete(arr);
	return out;
}

static void disconnect_db(struct fg_audit *a)
{
	fg_pg_finish(a->conn);
	a->conn = NULL;
}

static int ensure_db(struct fg_audit *a)
{
	char err[FG_ERRLEN];
	PGresult *r1, *r2;
	int ok;

	if (a->conn != NULL && PQstatus(a->conn) == CONNECTION_OK)
		return 0;
	disconnect_db(a);
	a->conn = fg_pg_connect(&a->s.pg, &a->io, err, sizeof(err));
	if (a->conn == NULL) {
		uint64_t suppressed;

		a->db_down = 1;
		if (!fg_pg_io_aborted(&a->io) &&
		    fg_throttle_hit(&a->conn_throttle, 60000, &suppressed))
			fg_log(MOSQ_LOG_WARNING,
			       LOG_PREFIX
			       " database unreachable, events wait "
			       "in memory (failed_attempts=%llu): %s",
			       (unsigned long long)suppressed + 1, err);
		return -1;
	}
	r1 = fg_pg_prepare(a->conn, &a->io, "fg_audit_insert", INSERT_SQL, 2);
	r2 = r1 == NULL ? NULL
	                : fg_pg_prepare(a->conn, &a->io, "fg_seen_update",
	                                SEEN_SQL, 1);
	ok = PQresultStatus(r1) == PGRES_COMMAND_OK &&
	     PQresultStatus(r2) == PGRES_COMMAND_OK;
	PQclear(r1);
	PQclear(r2);
	if (!ok) {
		char line[256];
		fg_log(MOSQ_LOG_ERR,
		       LOG_PREFIX " cannot prepare statements: %s",
		       fg_pg_error(a->conn, line, sizeof(line)));
		disconnect_db(a);
		return -1;
	}
	if (a->db_down)
		fg_log(MOSQ_LOG_NOTICE, LOG_PREFIX " database reachable again");
	a->db_down = 0;
	a->conn_throttle.last_ms = 0;
	return 0;
}

enum write_result { WRITE_OK, WRITE_CONN_LOST, WRITE_REJECTED };

static enum write_result exec_json(struct fg_audit *a, const char *stmt,
                                   const char *json, int nparams)
{
	const char *params[2] = {json, a->broker_id};
	PGresult *res;
	enum write_result wr;

	res = fg_pg_exec_prepared(a->conn, &a->io, stmt, nparams, params);
	if (PQresultStatus(res) == PGRES_COMMAND_OK)
		wr = WRITE_OK;
	else if (PQstatus(a->conn) != CONNECTION_OK)
		wr = WRITE_CONN_LOST;
	else
		wr = WRITE_REJECTED;
	if (wr != WRITE_OK) {
		char line[256];
		fg_log(wr == WRITE_CONN_LOST ? MOSQ_LOG_WARNING : MOSQ_LOG_ERR,
		       LOG_PREFIX " write failed: %s",
		       fg_pg_error(a->conn, line, sizeof(line)));
	}
	PQclear(res);
	return wr;
}

/*
 * Write a batch. A batch the server refuses while the connection is fine
 * is retried event by event, so that one bad row cannot hold the rest
 * back; only the rows refused alone are lost, and each is logged.
 */
static enum write_result write_batch(struct fg_audit *a,
                                     struct queued_event *const *evs, size_t n)
{
	enum write_result wr;
	char *json = batch_json(evs, n);
	size_t i;

	if (json == NULL)
		return WRITE_CONN_LOST; /* out of memory: retry later */
	wr = exec_json(a, "fg_audit_insert", json, 2);
	free(json);
	if (wr != WRITE_REJECTED)
		return wr;
	for (i = 0; i < n; i++) {
		json = batch_json(&evs[i], 1);
		if (json == NULL)
			return WRITE_CONN_LOST;
		wr = exec_json(a, "fg_audit_insert", json, 2);
		free(json);
		if (wr == WRITE_CONN_LOST)
			return wr;
		if (wr == WRITE_REJECTED) {
			fg_log(MOSQ_LOG_ERR,
			       LOG_PREFIX
			       " event refused by the database, "
			       "lost: event=%s reason=%s client_id=%.64s",
			       evs[i]->event, evs[i]->reason,
			       evs[i]->client_id);
			fg_shm_lock(&a->lock);
			a->rejected++;
			pthread_mutex_unlock(&a->lock);
		}
	}
	return WRITE_OK;
}

static void flush_seen(struct fg_audit *a)
{
	struct seen *batch;
	size_t n, i;
	cJSON *arr;
	char *json;

	fg_shm_lock(&a->lock);
	n = a->nseen;
	if (n == 0) {
		pthread_mutex_unlock(&a->lock);
		return;
	}
	batch = malloc(n * sizeof(*batch));
	if (batch == NULL) {
		pthread_mutex_unlock(&a->lock);
		return;
	}
	memcpy(batch, a->seen, n * sizeof(*batch));
	a->nseen = 0;
	memset(a->seen_index, 0xff, SEEN_SLOTS * sizeof(*a->seen_index));
	pthread_mutex_unlock(&a->lock);

	arr = cJSON_CreateArray();
	for (i = 0; arr != NULL && i < n; i++) {
		cJSON *o = cJSON_CreateObject();
		if (o == NULL || !cJSON_AddItemToArray(arr, o)) {
			cJSON_Delete(o);
			break;
		}
		cJSON_AddStringToObject(o, "id", batch[i].id);
		cJSON_AddNumberToObject(o, "at_ms", (double)batch[i].at_ms);
	}
	json = arr ? cJSON_PrintUnformatted(arr) : NULL;
	cJSON_Delete(arr);
	free(batch);
	/* Last-seen is a convenience, not a record: a failed update is
	 * logged and superseded by the next one. */
	if (json != NULL && ensure_db(a) == 0)
		exec_json(a, "fg_seen_update", json, 1);
	free(json);
}

/* Sleep up to ms, waking early on stop. Called with the lock held. */
static void wait_locked(struct fg_audit *a, int ms)
{
	struct timespec ts;

	fg_timespec_in(&ts, CLOCK_MONOTONIC, ms);
	if (pthread_cond_timedwait(&a->cond, &a->lock, &ts) == EOWNERDEAD)
		pthread_mutex_consistent(&a->lock);
}

static void *writer_main(void *arg)
{
	struct fg_audit *a = arg;
	struct queued_event **batch;
	struct fg_backoff backoff;
	int64_t next_seen = fg_mono_ms() + a->s.last_seen_interval_s * 1000;
	int64_t stop_deadline = 0;
	size_t n = 0, i;

	fg_worker_begin("fg-audit", &a->abort_pipe[0], 1);
	fg_pg_io_init(&a->io, a->abort_pipe[0], &a->s.pg);

	batch = calloc((size_t)a->s.batch_size, sizeof(*batch));
	fg_backoff_reset(&backoff, a->s.retry_max_ms);
	fg_shm_lock(&a->lock);
	for (;;) {
		if (a->stopping && stop_deadline == 0)
			stop_deadline = fg_mono_ms() + STOP_FLUSH_MS;
		if (a->stopping &&
		    ((a->count == 0 && n == 0) || fg_mono_ms() > stop_deadline))
			break;
		if (n == 0 && a->count < (size_t)a->s.batch_size &&
		    !a->stopping)
			wait_locked(a, a->s.flush_ms);
		while (batch != NULL && n < (size_t)a->s.batch_size &&
		       a->count > 0) {
			batch[n++] = a->ring[a->head];
			a->head = (a->head + 1) % (size_t)a->s.queue_size;
			a->count--;
		}
		pthread_mutex_unlock(&a->lock);

		if (n > 0) {
			enum write_result wr = WRITE_CONN_LOST;

			if (ensure_db(a) == 0)
				wr = write_batch(a, batch, n);
			if (wr == WRITE_OK) {
				fg_shm_lock(&a->lock);
				for (i = 0; i < n; i++)
					a->free_slots[a->nfree++] = batch[i];
				a->written += n;
				pthread_mutex_unlock(&a->lock);
				n = 0;
				fg_backoff_reset(&backoff, a->s.retry_max_ms);
			} else {
				/* Keep the batch and try again later. */
				disconnect_db(a);
				fg_shm_lock(&a->lock);
				wait_locked(a, a->stopping
				                   ? 200
				                   : fg_backoff_next(&backoff));
				continue;
			}
		}
		if (fg_mono_ms() >= next_seen || a->stopping) {
			flush_seen(a);
			next_seen =
			    fg_mono_ms() + a->s.last_seen_interval_s * 1000;
		}
		fg_shm_lock(&a->lock);
	}
	/* Stopping with events still unwritten: count them as lost. */
	a->dropped += n + a->count;
	for (i = 0; i < n; i++)
		a->free_slots[a->nfree++] = batch[i];
	pthread_mutex_unlock(&a->lock);
	free(batch);
	disconnect_db(a);
	fg_shm_lock(&a->lock);
	a->done = 1;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

/* A zeroed shared mapping of n elements of size bytes, or NULL. */
static void *shared_array(size_t n, size_t size)
{
	return n > SIZE_MAX / size ? NULL : fg_shm_map(n * size);
}

static void unmap_arrays(struct fg_audit *a)
{
	size_t q = (size_t)a->s.queue_size;

	fg_shm_unmap(a->ring, q * sizeof(*a->ring));
	fg_shm_unmap(a->slots, q * sizeof(*a->slots));
	fg_shm_unmap(a->free_slots, q * sizeof(*a->free_slots));
	fg_shm_unmap(a->seen, LAST_SEEN_MAX * sizeof(*a->seen));
	fg_shm_unmap(a->seen_index, SEEN_SLOTS * sizeof(*a->seen_index));
}

/* Every slot not in the ring is free. */
static void refill_free(struct fg_audit *a)
{
	size_t q = (size_t)a->s.queue_size, i;
	unsigned char *queued = calloc(q, 1);

	a->nfree = 0;
	if (queued == NULL)
		return;
	for (i = 0; i < a->count; i++)
		queued[a->ring[(a->head + i) % q] - a->slots] = 1;
	for (i = q; i-- > 0;)
		if (!queued[i])
			a->free_slots[a->nfree++] = &a->slots[i];
	free(queued);
}

struct fg_audit *fg_audit_create(const struct fg_audit_settings *s, bool shared,
                                 char *err, size_t errlen)
{
	struct fg_audit *a = fg_shm_map(sizeof(*a));
	size_t q = (size_t)s->queue_size;

	if (a == NULL)
		goto oom;
	a->s = *s;
	a->shared = shared;
	a->conninfo = strdup(s->pg.conninfo ? s->pg.conninfo : "");
	a->broker_id = strdup(s->broker_id);
	a->ring = shared_array(q, sizeof(*a->ring));
	a->slots = shared_array(q, sizeof(*a->slots));
	a->free_slots = shared_array(q, sizeof(*a->free_slots));
	a->seen = shared_array(LAST_SEEN_MAX, sizeof(*a->seen));
	a->seen_index = shared_array(SEEN_SLOTS, sizeof(*a->seen_index));
	if (a->conninfo == NULL || a->broker_id == NULL || a->ring == NULL ||
	    a->slots == NULL || a->free_slots == NULL || a->seen == NULL ||
	    a->seen_index == NULL)
		goto oom;
	memset(a->seen_index, 0xff, SEEN_SLOTS * sizeof(*a->seen_index));
	refill_free(a);
	if (a->nfree != q)
		goto oom;
	a->s.pg.conninfo = a->conninfo;
	a->s.broker_id = a->broker_id;
	if (pipe2(a->abort_pipe, O_CLOEXEC) != 0) {
		fg_seterr(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	if (fg_shm_mutex_init(&a->lock, shared) != 0 ||
	    fg_shm_cond_init(&a->cond, shared) != 0) {
		fg_seterr(err, errlen, "cannot make the audit queue's lock");
		close(a->abort_pipe[0]);
		close(a->abort_pipe[1]);
		goto fail;
	}
	return a;
oom:
	fg_seterr(err, errlen, "out of memory");
fail:
	if (a != NULL) {
		free(a->conninfo);
		free(a->broker_id);
		unmap_arrays(a);
		fg_shm_unmap(a, sizeof(*a));
	}
	return NULL;
}

int fg_audit_run(struct fg_audit *a, char *err, size_t errlen)
{
	if (pthread_create(&a->thread, NULL, writer_main, a) != 0) {
		fg_seterr(err, errlen, "cannot start audit thread: %s",
		          strerror(errno));
		return -1;
	}
	return 0;
}

void fg_audit_halt(struct fg_audit *a)
{
	struct timespec ts;
	int rc = 0;

	/* The writer has STOP_FLUSH_MS to write what is queued. A call to a
	 * database that does not answer is then made to give up, so that
	 * the join below returns. */
	fg_timespec_in(&ts, CLOCK_MONOTONIC, STOP_FLUSH_MS + STOP_GRACE_MS);
	fg_shm_lock(&a->lock);
	a->stopping = 1;
	pthread_cond_signal(&a->cond);
	while (!a->done && rc == 0)
		rc = pthread_cond_timedwait(&a->cond, &a->lock, &ts);
	pthread_mutex_unlock(&a->lock);
	if (write(a->abort_pipe[1], "x", 1) != 1)
		fg_log(MOSQ_LOG_ERR, LOG_PREFIX " cannot signal the writer");
	pthread_join(a->thread, NULL);
}

void fg_audit_fds(const struct fg_audit *a, int fds[2])
{
	fds[0] = a->abort_pipe[0];
	fds[1] = a->abort_pipe[1];
}

uint64_t fg_audit_adopt(struct fg_audit *a)
{
	size_t q = (size_t)a->s.queue_size;
	uint64_t lost;

	/* Events the writer had taken from the queue and not written went
	 * with it. */
	(void)fg_shm_mutex_init(&a->lock, true);
	(void)fg_shm_cond_init(&a->cond, true);
	if (a->count > q || a->head >= q) {
		a->count = 0;
		a->head = 0;
	}
	lost = q - a->nfree - a->count;
	refill_free(a);
	a->dropped += lost;
	a->stopping = 0;
	a->done = 0;
	memset(&a->conn, 0, sizeof(*a) - offsetof(struct fg_audit, conn));
	return lost;
}

void fg_audit_destroy(struct fg_audit *a)
{
	if (a == NULL)
		return;
	close(a->abort_pipe[0]);
	close(a->abort_pipe[1]);
	if (a->dropped > 0 || a->rejected > 0)
		fg_log(MOSQ_LOG_ERR,
		       LOG_PREFIX " stopped with events_lost=%llu "
		                  "events_refused=%llu events_written=%llu",
		       (unsigned long long)a->dropped,
		       (unsigned long long)a->rejected,
		       (unsigned long long)a->written);
	else
		fg_log(MOSQ_LOG_INFO,
		       LOG_PREFIX " stopped, events_written=%llu",
		       (unsigned long long)a->written);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->cond);
	unmap_arrays(a);
	free(a->conninfo);
	free(a->broker_id);
	fg_shm_unmap(a, sizeof(*a));
}

struct fg_audit *fg_audit_start(const struct fg_audit_settings *s, char *err,
                                size_t errlen)
{
	struct fg_audit *a = fg_audit_create(s, false, err, errlen);

	if (a != NULL && fg_audit_run(a, err, errlen) != 0) {
		fg_audit_destroy(a);
		a = NULL;
	}
	return a;
}

void fg_audit_stop(struct fg_audit *a)
{
	if (a == NULL)
		return;
	fg_audit_halt(a);
	fg_audit_destroy(a);
}
