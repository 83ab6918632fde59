/*
 * Audit events and last-seen updates, written to PostgreSQL by a worker
 * thread in batches.
 *
 * The broker thread only appends to a bounded in-memory queue. While
 * PostgreSQL is unreachable the writer keeps its batch and retries with
 * backoff; events that do not fit in the queue are counted, and the count
 * is logged, so no event disappears without a trace.
 */
#ifndef FG_AUDIT_H
#define FG_AUDIT_H

#include "fg_common.h"
#include "fg_pg.h"

/* One event; every string may be NULL. Strings are copied (sanitised and
 * bounded) when the event is queued. */
struct fg_audit_event {
	const char *source;  /* "auth", ... */
	const char *event;   /* "connect", "kick", ... */
	const char *outcome; /* "accepted", "refused", "kicked" */
	const char *reason;
	const char *device_id;
	const char *client_id;
	const char *username;
	const char *fingerprint;
	const char *address;
	const char *topic; /* kept in detail with count, when not NULL */
	uint64_t count;
};

struct fg_audit_settings {
	struct fg_pg_settings pg;
	const char *broker_id;
	int queue_size;
	int batch_size;
	int flush_ms;
	int last_seen_interval_s;
	int retry_max_ms;
};

struct fg_audit;

/* Start the writer thread. Returns NULL with err set on failure. */
struct fg_audit *fg_audit_start(const struct fg_audit_settings *s, char *err,
                                size_t errlen);

/* Stop the writer, giving it up to a few seconds to flush what is queued;
 * what cannot be written is counted in the final log line. */
void fg_audit_stop(struct fg_audit *a);

/*
 * The same in steps, for a writer in the worker process (fg_shm.h):
 * create (broker process, before the fork; shared when the writer will
 * run in another process), run and halt (where the writer thread runs),
 * destroy (broker process, once the writer is gone). After a worker
 * process died, adopt readies the queue for the next one and returns
 * how many events went with the old one.
 */
struct fg_audit *fg_audit_create(const struct fg_audit_settings *s, bool shared,
                                 char *err, size_t errlen);
int fg_audit_run(struct fg_audit *a, char *err, size_t errlen);
void fg_audit_halt(struct fg_audit *a);
uint64_t fg_audit_adopt(struct fg_audit *a);
void fg_audit_destroy(struct fg_audit *a);
/* The abort pipe's descriptors, which the worker process keeps. */
void fg_audit_fds(const struct fg_audit *a, int fds[2]);

/* Queue an event (any thread). Returns 0, or -1 when it was dropped
 * because the queue is full (it is counted). */
int fg_audit_push(struct fg_audit *a, const struct fg_audit_event *ev);

/* Note that a device was seen now; flushed every last_seen_interval_s. */
void fg_audit_seen(struct fg_audit *a, const char *device_id);

/* Broker thread, on TICK: log overflow counts (throttled). */
void fg_audit_tick(struct fg_audit *a);

/*
 * The event as one JSON object (sanitised, bounded), the element that
 * fg_audit_insert_sql() reads from its $1 array; $2 is the broker id.
 * Returns a string to free(), or NULL when out of memory. For writers
 * that keep events elsewhere before inserting them (the persist plugin's
 * journal).
 */
FG_API char *fg_audit_event_json(const struct fg_audit_event *ev,
                                 int64_t at_ms);
FG_API const char *fg_audit_insert_sql(void);

struct fg_audit_stats {
	uint64_t queued, written, dropped, rejected;
	size_t pending;
};
void fg_audit_stats(struct fg_audit *a, struct fg_audit_stats *out);

#endif
