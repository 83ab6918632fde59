/*
 * The runtime shared by every fleetgate plugin in one broker process: one
 * registry loader, one audit writer, one set of database connections.
 *
 * libfleetgate.so is loaded once per process however many plugins link
 * to it, so the runtime is a reference-counted singleton: the first
 * plugin's init starts it, the last plugin's cleanup stops it. Runtime
 * options (database, snapshot, audit tuning) may be given in any one
 * fleetgate plugin's block; giving them again with another value is an
 * error.
 */
#ifndef FG_RUNTIME_H
#define FG_RUNTIME_H

#include "fg_audit.h"
#include "fg_clients.h"
#include "fg_opts.h"
#include "fg_registry.h"
#include "fg_withdrawn.h"

struct fg_runtime_config {
	char *db;            /* libpq conninfo; NULL: not given */
	char *snapshot_file; /* NULL: not given (no snapshot) */
	char *broker_id;     /* NULL: not given (hostname) */
	/* -1: not given */
	int statement_timeout_ms;
	int connect_timeout_s;
	int retry_max_ms;
	int audit_queue_size;
	int audit_batch_size;
	int audit_flush_ms;
	int last_seen_interval_s;
	int registry_reload_s;
	int workers; /* FG_WORKERS_* */
};

/* Where the registry loader and the audit writer run: in a worker
 * process of their own (the default), or as threads of the broker. */
enum { FG_WORKERS_PROCESS, FG_WORKERS_THREAD };

/* Mark every field "not given". */
FG_API void fg_runtime_config_init(struct fg_runtime_config *cfg);
/* The option table for the runtime's plugin_opt_* keys, bound to cfg. */
FG_API struct fg_opt_table fg_runtime_opt_table(struct fg_runtime_config *cfg);
FG_API void fg_runtime_config_free(struct fg_runtime_config *cfg);

struct fg_runtime;

/*
 * Take a reference to the process's runtime, starting it on first use
 * (broker thread, from plugin init). Returns the runtime, or NULL with a
 * message in err when it cannot start or cfg contradicts the options an
 * earlier plugin gave.
 */
FG_API struct fg_runtime *
fg_runtime_acquire(const struct fg_runtime_config *cfg, char *err,
                   size_t errlen);
/* Drop a reference; the last one stops the worker threads. */
FG_API void fg_runtime_release(struct fg_runtime *rt);

/* Broker thread, on every TICK (each plugin may call it; it is cheap and
 * idempotent): writes queued log lines and installs a newly loaded
 * registry. */
FG_API void fg_runtime_tick(struct fg_runtime *rt);

/* The current registry (NULL while none was ever loaded), and a number
 * that changes whenever it is replaced. Broker thread only. */
FG_API const struct fg_registry *fg_runtime_registry(struct fg_runtime *rt);
FG_API uint64_t fg_runtime_generation(struct fg_runtime *rt);
/* Access withdrawn in the database since the registry was read (NULL:
 * none); it refuses on top of the registry until the next one is
 * installed (a new generation). Its own generation counts the sets
 * taken, so that only the auth plugin, not every cache keyed by the
 * registry's generation, looks again. */
FG_API const struct fg_withdrawn *fg_runtime_withdrawn(struct fg_runtime *rt);
FG_API uint64_t fg_runtime_withdrawn_generation(struct fg_runtime *rt);

FG_API const char *fg_runtime_broker_id(struct fg_runtime *rt);
/* The effective runtime settings (defaults filled in), for plugins that
 * open database connections of their own. */
FG_API const struct fg_runtime_config *
fg_runtime_settings(struct fg_runtime *rt);

/*
 * Identities of connected clients (broker thread only). The auth plugin
 * sets them at connect, forgets refused clients and marks disconnected
 * ones gone; other plugins read them. NULL: the client has no identity
 * (the auth plugin did not admit it), so nothing may be allowed to it.
 */
FG_API int fg_runtime_set_identity(struct fg_runtime *rt, const void *client,
                                   bool is_device, const char *name,
                                   const char *client_id);
FG_API const struct fg_identity *fg_runtime_identity(struct fg_runtime *rt,
                                                     const void *client);
FG_API void fg_runtime_forget_identity(struct fg_runtime *rt,
                                       const void *client);
FG_API void fg_runtime_client_gone(struct fg_runtime *rt, const void *client);
/* The connection closed but the session may persist: keep the identity
 * for keep_ms (0: until the client id authenticates again). */
FG_API void fg_runtime_client_offline(struct fg_runtime *rt, const void *client,
                                      int64_t keep_ms);

/* Audit: queue an event / note a device as seen now. */
FG_API void fg_runtime_audit(struct fg_runtime *rt,
                             const struct fg_audit_event *ev);
FG_API void fg_runtime_seen(struct fg_runtime *rt, const char *device_id);

/*
 * Route audit events through a durable sink (the persist plugin's
 * journal) instead of the in-memory queue. The sink returns 0 when it
 * took the event; otherwise the event goes to the in-memory queue, so a
 * full journal still loses nothing silently. fn NULL: back to the queue.
 * Broker thread only; the sink is called on the broker thread.
 */
typedef int (*fg_audit_sink_fn)(void *ctx, const struct fg_audit_event *ev);
FG_API void fg_runtime_set_audit_sink(struct fg_runtime *rt,
                                      fg_audit_sink_fn fn, void *ctx);

#endif
