/*
 * Keeping the in-memory registry in step with PostgreSQL.
 *
 * A worker thread loads the whole registry in one read-only snapshot
 * transaction, then LISTENs on fleetgate_registry. After each burst of
 * committed changes it reads the rows the notifications name (devices,
 * certificates, accounts: one query a table; the rule and limit tables
 * whole) and hands the broker thread a registry derived from the last one
 * with those rows replaced or removed. When it cannot (too many rows, a
 * table no patch covers, an earlier burst not applied, a read that
 * failed), what no longer admits reaches the broker thread first
 * (fg_withdrawn.h) and the whole registry is read again. Each registry
 * goes through a one-slot mailbox (a newer one replaces one not yet
 * taken) and is written to the snapshot file. On connection loss it
 * retries with backoff, and reloads in full on reconnect, so changes made
 * meanwhile take effect; a full reload also runs every
 * registry_reload_s as a safety net.
 */
#ifndef FG_SYNC_H
#define FG_SYNC_H

#include "fg_pg.h"
#include "fg_registry.h"
#include "fg_withdrawn.h"

#define FG_REGISTRY_CHANNEL "fleetgate_registry"
/* The oldest schema this code can read, and the newest it knows. */
#define FG_SCHEMA_MIN 1
#define FG_SCHEMA_KNOWN 6
/* The first schema with ACL rules. */
#define FG_SCHEMA_RULES 2
/* The first schema with rate limits. */
#define FG_SCHEMA_LIMITS 4
/* The first schema whose notifications name a renamed row's old key:
 * from it on the registry is patched with the rows they name. */
#define FG_SCHEMA_PATCH 6

struct fg_sync_settings {
	struct fg_pg_settings pg;
	const char *snapshot_file; /* NULL: no snapshot */
	int retry_max_ms;
	int full_reload_s; /* reload even without NOTIFY, as a safety net */
};

struct fg_sync;

/* Start the loader thread; NULL with err set on failure. */
struct fg_sync *fg_sync_start(const struct fg_sync_settings *s, char *err,
                              size_t errlen);
void fg_sync_stop(struct fg_sync *sy);

/*
 * The same in steps, for a loader in the worker process (fg_shm.h):
 * create (broker process, before the fork; in a shared mapping, with
 * registries built in arena), run and halt (worker process: start and
 * stop the loader thread there), destroy (broker process, once the worker
 * process is gone). After a worker process died, adopt readies the
 * structure for the next one, whose registries go to a new arena: take
 * what the old one posted first.
 */
struct fg_arena;
struct fg_sync *fg_sync_create(const struct fg_sync_settings *s,
                               struct fg_arena *arena, char *err,
                               size_t errlen);
int fg_sync_run(struct fg_sync *sy, char *err, size_t errlen);
void fg_sync_halt(struct fg_sync *sy);
void fg_sync_adopt(struct fg_sync *sy, struct fg_arena *arena);
void fg_sync_destroy(struct fg_sync *sy);
/* The stop pipe's descriptors, which the worker process keeps. */
void fg_sync_fds(const struct fg_sync *sy, int fds[2]);

/* Broker thread: the newest registry loaded since the last call, or NULL,
 * and in *w the access withdrawn since that registry was read (or since
 * the registry in use, when none is returned), or NULL. The caller owns
 * both. */
struct fg_registry *fg_sync_take(struct fg_sync *sy, struct fg_withdrawn **w);

/* Broker thread: hand back a registry no longer in use. The loader
 * thread frees it (unmapping a replaced registry took the broker thread
 * about half a millisecond at 100,000 devices). With a worker process,
 * only registries from its arena. */
void fg_sync_retire(struct fg_sync *sy, struct fg_registry *reg);

/* Load the registry over an open connection (exposed for tests). Returns
 * the finalised registry or NULL with err set. */
struct fg_registry *fg_sync_load(PGconn *conn, const struct fg_pg_io *io,
                                 char *err, size_t errlen);

#endif
