/*
 * The registry loader thread.
 */
#include "fg_sync.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <mosquitto_broker.h>

#include "fg_log.h"
#include "fg_shm.h"

#define LOG_PREFIX "fleetgate-registry:"
/* After a NOTIFY, wait this long for more before reloading, so that one
 * administrator transaction touching many rows costs one reload. */
#define COALESCE_MS 20
/* The snapshot file is written once the registry has not changed for
 * SNAPSHOT_IDLE_MS, and at the latest SNAPSHOT_MAX_MS after the first
 * change it lacks: writing it (60 to 100 ms for 100,000 devices, with
 * the flush to disk) would delay a change arriving meanwhile. */
#define SNAPSHOT_IDLE_MS 1000
#define SNAPSHOT_MAX_MS 5000
/* Rows of one table that a burst of notifications may name and still be
 * read by key (one query a table), to patch the registry and to withdraw
 * access at once (see fg_withdrawn.h); a larger burst waits for the full
 * reload. */
#define NAMED_MAX 256
/* The registry is read in full again after this many patches in a row,
 * which also gives back the strings of the rows they replaced. */
#define PATCH_DEPTH_MAX 1000
/* The full read gives up a lock it cannot get within half a second (an
 * administrator's transaction holding a registry table: LOCK_WAIT_SQL)
 * and is tried again BUSY_RETRY_MS later; notifications are followed
 * meanwhile. */
#define LOCK_WAIT_SQL "'500ms'"
#define BUSY_RETRY_MS 200
/* Registries the broker thread handed back, waiting for the loader to
 * free them; when full, the broker thread frees one itself. */
#define RETIRED_MAX 64

/* The rows a burst of notifications named, per fg_withdrawn_kind, and
 * what else it touched. */
struct named {
	char *keys[FG_WD_KINDS][NAMED_MAX];
	int n[FG_WD_KINDS];
	bool overflow[FG_WD_KINDS];
	bool rules, limits; /* acl_rules, rate_limits: read whole */
	bool other;         /* a table or payload no patch covers */
};

/*
 * With a worker process (arena not NULL) the structure lives in a shared
 * mapping. The broker process then reads registries in place but never
 * frees them: what it no longer reads goes back through retired and
 * retired_wd, and a withdrawn set is copied into its own memory when it
 * is taken.
 */
struct fg_sync {
	struct fg_sync_settings s;
	char *conninfo, *snapshot_file; /* allocated before any fork */
	struct fg_arena *arena;         /* the worker process's, or NULL */
	pthread_t thread;
	int stop_pipe[2];

	pthread_mutex_t lock;
	struct fg_registry *mailbox;
	struct fg_withdrawn *withdrawn_box; /* newer than mailbox, if both */
	struct fg_registry *retired[RETIRED_MAX];
	int nretired;
	struct fg_withdrawn *retired_wd[RETIRED_MAX];
	int nretired_wd;
	/* Broker process only: registries waiting for room in retired. */
	struct fg_registry **overflow;
	size_t noverflow, cap_overflow;

	/* From here on, the loader thread's own (reset for a new worker
	 * process). */
	PGconn *conn; /* loader thread only, like the three below */
	struct fg_pg_io io;
	struct fg_registry *unsaved; /* posted, not yet in the snapshot */
	int64_t unsaved_since;
	int was_connected;
	struct fg_throttle conn_throttle, busy_throttle;
	struct named named;
	/* The newest registry posted. It can be patched with the rows the
	 * next notifications name only while it holds every change notified
	 * before them (fresh); a burst that was not applied leaves the next
	 * ones to a full read. */
	struct fg_registry *base;
	bool base_fresh;
};

static const char VERSION_SQL[] =
    "SELECT coalesce(max(version), 0) FROM fleetgate.schema_version";

/* The columns of each registry table, for the full read and for the rows
 * notifications name. Certificate times are epoch seconds; revoked_at is
 * mapped to at least 1 so that 0 can mean "not revoked". */
#define DEVICES_SQL                                                            \
	"SELECT id, municipality_id, status, require_api_key, api_key_hash "   \
	"FROM fleetgate.devices"
#define CERT_COLUMNS                                                           \
	"SELECT fingerprint, device_id, "                                      \
	"floor(extract(epoch FROM not_before))::bigint, "                      \
	"floor(extract(epoch FROM not_after))::bigint, "                       \
	"CASE WHEN revoked_at IS NULL THEN 0 "                                 \
	"ELSE greatest(1, floor(extract(epoch FROM revoked_at)))::bigint END"
#define CERTS_FROM " FROM fleetgate.device_certificates"
#define ACCOUNTS_SQL                                                           \
	"SELECT username, password_hash, role, municipality_id, "              \
	"cross_municipality, disabled FROM fleetgate.accounts"

/* The full read of the three large tables goes through a cursor, this
 * many rows at a time, so that its results stay small whatever the size
 * of the fleet (with one result a table, 100,000 devices took about 30 MB
 * of query results, which the loader thread's malloc arena kept). */
#define FETCH_ROWS "16384"
#define CURSOR "DECLARE fg_load NO SCROLL CURSOR FOR "

/* Indexed by fg_withdrawn_kind; devices are read first, since
 * certificates name them. */
static const char *const LOAD_CURSOR_SQL[FG_WD_KINDS] = {
    [FG_WD_DEVICE] = CURSOR DEVICES_SQL,
    [FG_WD_CERT] = CURSOR CERT_COLUMNS CERTS_FROM,
    [FG_WD_ACCOUNT] = CURSOR ACCOUNTS_SQL,
};
static const int LOAD_ORDER[FG_WD_KINDS] = {FG_WD_DEVICE, FG_WD_CERT,
                                            FG_WD_ACCOUNT};

/* Read only at schema version FG_SCHEMA_RULES and later. */
static const char RULES_SQL[] =
    "SELECT id, subject_kind, subject, pattern, access, effect = 'allow', "
    "priority FROM fleetgate.acl_rules";

/* Read only at schema version FG_SCHEMA_LIMITS and later. NULL (a field
 * the row leaves to a wider scope) is read as -1. */
static const char LIMITS_SQL[] =
    "SELECT scope_kind, scope, coalesce(messages_per_window, -1), "
    "coalesce(bytes_per_window, -1), coalesce(window_s, -1), "
    "coalesce(burst, -1) FROM fleetgate.rate_limits";

/* Set by run() when a statement failed for want of a lock (SQLSTATE
 * 55P03, lock_timeout). Loader thread only. */
static _Thread_local bool lock_refused;

static PGresult *run(PGconn *conn, const struct fg_pg_io *io, const char *sql,
                     ExecStatusType want, char *err, size_t errlen)
{
	char line[256];
	PGresult *res = fg_pg_exec(conn, io, sql);

	if (PQresultStatus(res) != want) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (state != NULL && strcmp(state, "55P03") == 0)
			lock_refused = true;
		fg_seterr(err, errlen, "%s",
		          fg_pg_error(conn, line, sizeof(line)));
		PQclear(res);
		return NULL;
	}
	return res;
}

static const char *val(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

/* Rate limit rows; returns how many were skipped as unreadable. */
static int load_limits(const PGresult *res, struct fg_registry *reg)
{
	int i, skipped = 0;

	for (i = 0; i < PQntuples(res); i++) {
		enum fg_limit_scope kind;

		if (fg_limit_scope_parse(val(res, i, 0), &kind) != 0 ||
		    fg_registry_add_limit(reg, kind, val(res, i, 1),
		                          strtoll(val(res, i, 2), NULL, 10),
		                          strtoll(val(res, i, 3), NULL, 10),
		                          strtoll(val(res, i, 4), NULL, 10),
		                          strtoll(val(res, i, 5), NULL, 10)) !=
		        0)
			skipped++;
	}
	fg_registry_set_has_limits(reg, true);
	return skipped;
}

/* Add row i of a result of the devices, certificates or accounts query
 * (LOAD_CURSOR_SQL, NAMED_SQL): 0 when added, 1 when skipped as
 * unreadable, -1 when out of memory. */
static int add_device_row(const PGresult *r, int i, struct fg_registry *reg)
{
	enum fg_device_status st;
	const char *id = val(r, i, 0);

	if (id == NULL || fg_ident_check(id, 256) != FG_IDENT_OK ||
	    fg_device_status_parse(val(r, i, 2), &st) != 0)
		return 1;
	return fg_registry_add_device(reg, id, val(r, i, 1), st,
	                              val(r, i, 3)[0] == 't', val(r, i, 4));
}

static int add_cert_row(const PGresult *r, int i, struct fg_registry *reg)
{
	fg_fingerprint fp;
	const char *dev = val(r, i, 1);

	if (fg_fingerprint_parse(val(r, i, 0), &fp) != 0 || dev == NULL)
		return 1;
	return fg_registry_add_cert(
	    reg, &fp, dev, strtoll(val(r, i, 2), NULL, 10),
	    strtoll(val(r, i, 3), NULL, 10), strtoll(val(r, i, 4), NULL, 10));
}

static int add_account_row(const PGresult *r, int i, struct fg_registry *reg)
{
	const char *user = val(r, i, 0);

	if (user == NULL || fg_ident_check(user, 65535) != FG_IDENT_OK ||
	    val(r, i, 1) == NULL || val(r, i, 2) == NULL)
		return 1;
	return fg_registry_add_account(reg, user, val(r, i, 1), val(r, i, 2),
	                               val(r, i, 3), val(r, i, 4)[0] == 't',
	                               val(r, i, 5)[0] == 't');
}

typedef int (*add_row_fn)(const PGresult *r, int i, struct fg_registry *reg);

/* Indexed by fg_withdrawn_kind, like the named rows. */
static const add_row_fn ADD_ROW[FG_WD_KINDS] = {
    [FG_WD_CERT] = add_cert_row,
    [FG_WD_DEVICE] = add_device_row,
    [FG_WD_ACCOUNT] = add_account_row,
};

/* ACL rule rows; returns how many were skipped as unreadable. */
static int load_rules(const PGresult *res, struct fg_registry *reg)
{
	int i, skipped = 0;

	for (i = 0; i < PQntuples(res); i++) {
		enum fg_rule_subject kind;
		enum fg_rule_access access;

		if (fg_rule_subject_parse(val(res, i, 1), &kind) != 0 ||
		    fg_rule_access_parse(val(res, i, 4), &access) != 0 ||
		    fg_registry_add_rule(
		        reg, strtoll(val(res, i, 0), NULL, 10), kind,
		        val(res, i, 2), val(res, i, 3), access,
		        val(res, i, 5)[0] == 't',
		        (int)strtol(val(res, i, 6), NULL, 10)) != 0)
			skipped++;
	}
	fg_registry_set_has_rules(reg, true);
	return skipped;
}

static void log_skipped(int skipped)
{
	if (skipped > 0)
		fg_log(MOSQ_LOG_WARNING,
		       LOG_PREFIX
		       " skipped rows=%d with an invalid id, "
		       "fingerprint or status: those identities are refused",
		       skipped);
}

/* One registry table read in full through a cursor (LOAD_CURSOR_SQL),
 * each row added to reg as its chunk arrives. 0, or -1 with err set. */
static int load_table(PGconn *conn, const struct fg_pg_io *io, int kind,
                      struct fg_registry *reg, int *skipped, char *err,
                      size_t errlen)
{
	PGresult *r;
	int n, rc = 0;

	r = run(conn, io, LOAD_CURSOR_SQL[kind], PGRES_COMMAND_OK, err, errlen);
	if (r == NULL)
		return -1;
	PQclear(r);
	do {
		r = run(conn, io, "FETCH FORWARD " FETCH_ROWS " FROM fg_load",
		        PGRES_TUPLES_OK, err, errlen);
		if (r == NULL)
			return -1;
		n = PQntuples(r);
		for (int i = 0; i < n && rc >= 0; i++) {
			rc = ADD_ROW[kind](r, i, reg);
			*skipped += rc > 0;
		}
		PQclear(r);
		if (rc < 0) {
			fg_seterr(err, errlen, "out of memory");
			return -1;
		}
	} while (n > 0);
	r = run(conn, io, "CLOSE fg_load", PGRES_COMMAND_OK, err, errlen);
	if (r == NULL)
		return -1;
	PQclear(r);
	return 0;
}

/* A small table read whole (the rules, the limits): 0, or -1. */
static int load_small(PGconn *conn, const struct fg_pg_io *io, const char *sql,
                      int (*add)(const PGresult *, struct fg_registry *),
                      struct fg_registry *reg, int *skipped, char *err,
                      size_t errlen)
{
	PGresult *r = run(conn, io, sql, PGRES_TUPLES_OK, err, errlen);

	if (r == NULL)
		return -1;
	*skipped += add(r, reg);
	PQclear(r);
	return 0;
}

struct fg_registry *fg_sync_load(PGconn *conn, const struct fg_pg_io *io,
                                 char *err, size_t errlen)
{
	PGresult *r;
	struct fg_registry *reg = NULL;
	int version, skipped = 0, ok = 0;

	lock_refused = false;
	r = run(conn, io, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
	        PGRES_COMMAND_OK, err, errlen);
	if (r == NULL)
		return NULL;
	PQclear(r);
	r = run(conn, io, VERSION_SQL, PGRES_TUPLES_OK, err, errlen);
	if (r == NULL)
		goto out;
	version = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	if (version < FG_SCHEMA_MIN) {
		fg_seterr(err, errlen,
		          "database schema version %d is older than the "
		          "oldest this plugin reads (%d): run sql/migrate.sh",
		          version, FG_SCHEMA_MIN);
		goto out;
	}
	reg = fg_registry_new();
	if (reg == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	for (int t = 0; t < FG_WD_KINDS; t++)
		if (load_table(conn, io, LOAD_ORDER[t], reg, &skipped, err,
		               errlen) != 0)
			goto out;
	if ((version >= FG_SCHEMA_RULES &&
	     load_small(conn, io, RULES_SQL, load_rules, reg, &skipped, err,
	                errlen) != 0) ||
	    (version >= FG_SCHEMA_LIMITS &&
	     load_small(conn, io, LIMITS_SQL, load_limits, reg, &skipped, err,
	                errlen) != 0))
		goto out;
	if (fg_registry_finalise(reg, err, errlen) != 0)
		goto out;
	log_skipped(skipped);
	fg_registry_set_meta(reg, FG_REGISTRY_FROM_DATABASE, version,
	                     fg_time_s());
	if (version > FG_SCHEMA_KNOWN)
		fg_log(MOSQ_LOG_WARNING,
		       LOG_PREFIX
		       " database schema version %d is newer than "
		       "this plugin knows (%d); reading it as version %d",
		       version, FG_SCHEMA_KNOWN, FG_SCHEMA_KNOWN);
	ok = 1;
out:
	/* After a failure the connection may be gone; then the server ends
	 * the transaction itself. */
	if (PQstatus(conn) == CONNECTION_OK) {
		r = run(conn, io, ok ? "COMMIT" : "ROLLBACK", PGRES_COMMAND_OK,
		        NULL, 0);
		PQclear(r);
	}
	if (!ok) {
		fg_registry_free(reg);
		return NULL;
	}
	return reg;
}

/* Hand a loaded registry to the broker thread, replacing one not taken.
 * It holds every change a withdrawn set not yet taken was read from. */
static void post(struct fg_sync *sy, struct fg_registry *reg)
{
	struct fg_registry *old;
	struct fg_withdrawn *stale;

	fg_shm_lock(&sy->lock);
	old = sy->mailbox;
	sy->mailbox = reg;
	stale = sy->withdrawn_box;
	sy->withdrawn_box = NULL;
	pthread_mutex_unlock(&sy->lock);
	fg_registry_free(old);
	fg_withdrawn_free(stale);
}

/* Hand a withdrawn set (sealed) to the broker thread, added to one not
 * taken yet. Returns 0, or -1 when out of memory (w is freed). */
static int post_withdrawn(struct fg_sync *sy, struct fg_withdrawn *w)
{
	int rc = 0;

	fg_shm_lock(&sy->lock);
	if (sy->withdrawn_box == NULL) {
		sy->withdrawn_box = w;
		w = NULL;
	} else if (fg_withdrawn_merge(sy->withdrawn_box, w) == 0) {
		fg_withdrawn_seal(sy->withdrawn_box);
	} else {
		rc = -1;
	}
	pthread_mutex_unlock(&sy->lock);
	fg_withdrawn_free(w);
	return rc;
}

/* A copy of w in this process's own memory, or NULL. */
static struct fg_withdrawn *withdrawn_copy(const struct fg_withdrawn *w)
{
	struct fg_withdrawn *c = fg_withdrawn_new();

	if (c != NULL && fg_withdrawn_merge(c, w) != 0) {
		fg_withdrawn_free(c);
		return NULL;
	}
	fg_withdrawn_seal(c);
	return c;
}

struct fg_registry *fg_sync_take(struct fg_sync *sy, struct fg_withdrawn **w)
{
	struct fg_registry *reg;
	struct fg_withdrawn *c;

	/* A worker process stopped while it held the lock must not stop
	 * the broker thread: try again on the next TICK. */
	*w = NULL;
	if (fg_shm_lock_within(&sy->lock, 0) != 0)
		return NULL;
	reg = sy->mailbox;
	sy->mailbox = NULL;
	*w = sy->withdrawn_box;
	if (*w != NULL && sy->arena != NULL) {
		/* Out of memory or out of room to hand it back, it waits for
		 * the next TICK. */
		if (sy->nretired_wd < RETIRED_MAX &&
		    (c = withdrawn_copy(*w)) != NULL) {
			sy->retired_wd[sy->nretired_wd++] = *w;
			*w = c;
		} else {
			*w = NULL;
		}
	}
	if (*w != NULL)
		sy->withdrawn_box = NULL;
	pthread_mutex_unlock(&sy->lock);
	return reg;
}

void fg_sync_retire(struct fg_sync *sy, struct fg_registry *reg)
{
	/* A registry waits in overflow while retired is full or its lock
	 * is held. */
	if (reg != NULL) {
		if (fg_grow(&sy->overflow, &sy->cap_overflow, sy->noverflow,
		            sizeof(*sy->overflow)) == 0)
			sy->overflow[sy->noverflow++] = reg;
		else if (sy->arena == NULL)
			fg_registry_free(reg);
		else
			fg_log(MOSQ_LOG_WARNING,
			       LOG_PREFIX " out of memory: a replaced registry "
			                  "stays mapped until the worker "
			                  "process restarts");
	}
	if (sy->noverflow > 0 && fg_shm_lock_within(&sy->lock, 0) == 0) {
		while (sy->noverflow > 0 && sy->nretired < RETIRED_MAX)
			sy->retired[sy->nretired++] =
			    sy->overflow[--sy->noverflow];
		pthread_mutex_unlock(&sy->lock);
	}
	/* With the loader in this process, what finds no room is freed
	 * here; the worker process frees what it allocated, so its
	 * registries wait (at worst they stay mapped a little longer). */
	if (sy->arena == NULL)
		while (sy->noverflow > 0)
			fg_registry_free(sy->overflow[--sy->noverflow]);
}

/* Free what the broker thread handed back (loader thread, or at stop). */
static void free_retired(struct fg_sync *sy)
{
	struct fg_registry *batch[RETIRED_MAX];
	struct fg_withdrawn *wbatch[RETIRED_MAX];
	int n, nw;

	fg_shm_lock(&sy->lock);
	n = sy->nretired;
	memcpy(batch, sy->retired, (size_t)n * sizeof(batch[0]));
	sy->nretired = 0;
	nw = sy->nretired_wd;
	memcpy(wbatch, sy->retired_wd, (size_t)nw * sizeof(wbatch[0]));
	sy->nretired_wd = 0;
	pthread_mutex_unlock(&sy->lock);
	for (int i = 0; i < n; i++)
		fg_registry_free(batch[i]);
	for (int i = 0; i < nw; i++)
		fg_withdrawn_free(wbatch[i]);
}

/* Wait for fd to become readable or for stop, up to ms (-1: forever).
 * Returns 1 when fd is readable, 0 on timeout, -1 when told to stop. */
static int wait_fd(struct fg_sync *sy, int fd, int ms)
{
	struct pollfd pfd[2] = {
	    {.fd = sy->stop_pipe[0], .events = POLLIN},
	    {.fd = fd, .events = POLLIN},
	};
	int rc;

	do {
		rc = poll(pfd, fd >= 0 ? 2 : 1, ms);
	} while (rc < 0 && errno == EINTR);
	if (rc > 0 && (pfd[0].revents & POLLIN))
		return -1;
	if (rc > 0 && fd >= 0 && pfd[1].revents != 0)
		return 1;
	return 0;
}

static void drop_conn(struct fg_sync *sy)
{
	fg_pg_finish(sy->conn);
	sy->conn = NULL;
}

static int connect_and_listen(struct fg_sync *sy)
{
	char err[FG_ERRLEN];
	PGresult *r;
	uint64_t suppressed;

	sy->conn = fg_pg_connect(&sy->s.pg, &sy->io, err, sizeof(err));
	if (sy->conn != NULL) {
		r = run(sy->conn, &sy->io,
		        "SET lock_timeout = " LOCK_WAIT_SQL
		        "; LISTEN " FG_REGISTRY_CHANNEL,
		        PGRES_COMMAND_OK, err, sizeof(err));
		if (r != NULL) {
			PQclear(r);
			return 0;
		}
		drop_conn(sy);
	}
	if (!fg_pg_io_aborted(&sy->io) &&
	    fg_throttle_hit(&sy->conn_throttle, 60000, &suppressed))
		fg_log(MOSQ_LOG_ERR,
		       LOG_PREFIX
		       " database unreachable (failed_attempts=%llu),"
		       " keeping the registry in memory and retrying: %s",
		       (unsigned long long)suppressed + 1, err);
	return -1;
}

/* Hand reg (whose reference the caller gives up) to the broker thread,
 * keep it as the base of the next patch, and have the snapshot written
 * from it later. Neither thread changes it (save_snapshot). */
static void publish(struct fg_sync *sy, struct fg_registry *reg)
{
	post(sy, fg_registry_hold(reg));
	fg_registry_free(sy->base);
	sy->base = fg_registry_hold(reg);
	sy->base_fresh = true;
	if (sy->snapshot_file == NULL) {
		fg_registry_free(reg);
		return;
	}
	if (sy->unsaved == NULL)
		sy->unsaved_since = fg_mono_ms();
	fg_registry_free(sy->unsaved);
	sy->unsaved = reg;
}

/* Load and publish the registry; 0 on success, 1 when a registry table
 * was locked (the connection is kept: try again soon), -1 with the
 * connection dropped on any other failure. */
static int reload(struct fg_sync *sy)
{
	char err[FG_ERRLEN];
	int64_t t0 = fg_mono_ms();
	struct fg_registry *reg =
	    fg_sync_load(sy->conn, &sy->io, err, sizeof(err));
	uint64_t suppressed;

	if (reg == NULL && lock_refused &&
	    PQstatus(sy->conn) == CONNECTION_OK) {
		if (fg_throttle_hit(&sy->busy_throttle, 10000, &suppressed))
			fg_log(MOSQ_LOG_WARNING,
			       LOG_PREFIX " a registry table is locked by "
			                  "another transaction; reading it "
			                  "again in %d ms (times=%llu): %s",
			       BUSY_RETRY_MS,
			       (unsigned long long)suppressed + 1, err);
		return 1;
	}
	if (reg == NULL) {
		if (!fg_pg_io_aborted(&sy->io))
			fg_log(MOSQ_LOG_ERR,
			       LOG_PREFIX " cannot load the registry, keeping "
			                  "the previous one: %s",
			       err);
		drop_conn(sy);
		return -1;
	}
	fg_log(MOSQ_LOG_INFO,
	       LOG_PREFIX " read the whole registry: devices=%zu in %lld ms",
	       fg_registry_device_count(reg), (long long)(fg_mono_ms() - t0));
	publish(sy, reg);
	return 0;
}

/* Write the newest registry the snapshot lacks: when force, or when the
 * registry has been quiet long enough (see SNAPSHOT_IDLE_MS). */
static void save_snapshot(struct fg_sync *sy, bool force)
{
	char err[FG_ERRLEN];

	if (sy->unsaved == NULL ||
	    (!force && fg_mono_ms() - sy->unsaved_since < SNAPSHOT_MAX_MS))
		return;
	if (fg_registry_save(sy->unsaved, sy->snapshot_file, err,
	                     sizeof(err)) != 0)
		fg_log(MOSQ_LOG_ERR,
		       LOG_PREFIX " cannot write the snapshot file: %s", err);
	fg_registry_free(sy->unsaved);
	sy->unsaved = NULL;
}

static void named_clear(struct named *nm)
{
	for (int k = 0; k < FG_WD_KINDS; k++) {
		for (int i = 0; i < nm->n[k]; i++)
			free(nm->keys[k][i]);
		nm->n[k] = 0;
		nm->overflow[k] = false;
	}
	nm->rules = nm->limits = nm->other = false;
}

static void named_key(struct named *nm, int k, const char *key)
{
	if (key == NULL || nm->overflow[k])
		return;
	for (int i = 0; i < nm->n[k]; i++)
		if (strcmp(nm->keys[k][i], key) == 0)
			return;
	if (nm->n[k] == NAMED_MAX)
		nm->overflow[k] = true;
	else if ((nm->keys[k][nm->n[k]] = strdup(key)) != NULL)
		nm->n[k]++;
	else
		nm->overflow[k] = true;
}

/* Note what a notification names ({"table": ..., "id": ..., "old_id":
 * ...}, see fleetgate.audit_registry_change): a row by its key (and by
 * its old key after a rename), or a table read whole. */
static void named_add(struct named *nm, const char *payload)
{
	cJSON *j = cJSON_Parse(payload);
	const char *table =
	    cJSON_GetStringValue(cJSON_GetObjectItem(j, "table"));
	const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(j, "id"));
	const char *old_id =
	    cJSON_GetStringValue(cJSON_GetObjectItem(j, "old_id"));
	int k = -1;

	if (table == NULL || id == NULL)
		nm->other = true;
	else if (strcmp(table, "device_certificates") == 0)
		k = FG_WD_CERT;
	else if (strcmp(table, "devices") == 0)
		k = FG_WD_DEVICE;
	else if (strcmp(table, "accounts") == 0)
		k = FG_WD_ACCOUNT;
	else if (strcmp(table, "acl_rules") == 0)
		nm->rules = true;
	else if (strcmp(table, "rate_limits") == 0)
		nm->limits = true;
	else
		nm->other = true;
	if (k >= 0) {
		named_key(nm, k, id);
		named_key(nm, k, old_id);
	}
	cJSON_Delete(j);
}

/* Consume pending input; returns the number of notifications seen, or
 * -1 when the connection is gone. */
static int drain_notifies(struct fg_sync *sy)
{
	PGnotify *n;
	int count = 0;

	if (PQconsumeInput(sy->conn) != 1 ||
	    PQstatus(sy->conn) != CONNECTION_OK)
		return -1;
	while ((n = PQnotifies(sy->conn)) != NULL) {
		count++;
		named_add(&sy->named, n->extra != NULL ? n->extra : "");
		PQfreemem(n);
	}
	return count;
}

/* The named rows of a table, in the columns of its full read;
 * a key without a row was deleted. Certificates add whether the row is
 * revoked by now. */
static const char *const NAMED_SQL[FG_WD_KINDS] = {
    [FG_WD_CERT] =
        CERT_COLUMNS ", revoked_at IS NOT NULL AND revoked_at "
                     "<= now()" CERTS_FROM " WHERE fingerprint = ANY($1)",
    [FG_WD_DEVICE] = DEVICES_SQL " WHERE id = ANY($1)",
    [FG_WD_ACCOUNT] = ACCOUNTS_SQL " WHERE username = ANY($1)",
};

/* The keys as a text[] literal: each one quoted, with " and \ escaped. */
static char *array_literal(char *const *keys, int n)
{
	size_t len = 3;
	char *out, *p;

	for (int i = 0; i < n; i++)
		len += 2 * strlen(keys[i]) + 3;
	out = malloc(len);
	if (out == NULL)
		return NULL;
	p = out;
	*p++ = '{';
	for (int i = 0; i < n; i++) {
		if (i > 0)
			*p++ = ',';
		*p++ = '"';
		for (const char *c = keys[i]; *c != '\0'; c++) {
			if (*c == '"' || *c == '\\')
				*p++ = '\\';
			*p++ = *c;
		}
		*p++ = '"';
	}
	*p++ = '}';
	*p = '\0';
	return out;
}

/* The row of res whose key (column 0) is key, or -1. */
static int row_of(const PGresult *res, const char *key)
{
	for (int i = 0; i < PQntuples(res); i++)
		if (strcmp(PQgetvalue(res, i, 0), key) == 0)
			return i;
	return -1;
}

/* Whether a named row (row of res, -1: deleted) no longer admits: the
 * reason, else -1. */
static int named_verdict(int kind, const PGresult *res, int row)
{
	const char *v;

	if (row < 0)
		return FG_WD_GONE;
	switch (kind) {
	case FG_WD_CERT:
		v = PQgetvalue(res, row, 5);
		return v[0] == 't' ? FG_WD_REVOKED : -1;
	case FG_WD_DEVICE:
		v = PQgetvalue(res, row, 2);
		if (strcmp(v, "suspended") == 0)
			return FG_WD_SUSPENDED;
		if (strcmp(v, "active") == 0)
			return -1;
		return FG_WD_DECOMMISSIONED; /* and any other status */
	default:
		v = PQgetvalue(res, row, 5);
		return v[0] == 't' ? FG_WD_DISABLED : -1;
	}
}

/*
 * Read the rows the last notifications named, one query a table, into
 * res. Returns 0 when every table was read, 1 when one could not be (the
 * full reload follows), -1 when the connection is gone.
 */
static int read_named(struct fg_sync *sy, PGresult *res[FG_WD_KINDS])
{
	struct named *nm = &sy->named;
	char err[FG_ERRLEN];

	for (int k = 0; k < FG_WD_KINDS; k++) {
		const char *vals[1];
		char *arr;

		if (nm->n[k] == 0 || nm->overflow[k])
			continue;
		arr = array_literal(nm->keys[k], nm->n[k]);
		if (arr == NULL)
			return 1;
		vals[0] = arr;
		res[k] = fg_pg_exec_params(sy->conn, &sy->io, NAMED_SQL[k], 1,
		                           vals, NULL, NULL);
		free(arr);
		if (PQresultStatus(res[k]) != PGRES_TUPLES_OK) {
			if (!fg_pg_io_aborted(&sy->io))
				fg_log(MOSQ_LOG_WARNING,
				       LOG_PREFIX
				       " cannot read the changed rows, they "
				       "wait for the reload: %s",
				       fg_pg_error(sy->conn, err, sizeof(err)));
			PQclear(res[k]);
			res[k] = NULL;
			return PQstatus(sy->conn) == CONNECTION_OK ? 1 : -1;
		}
	}
	return 0;
}

/* The access the named rows withdraw, sealed; NULL when none (or out of
 * memory: the full reload still follows). */
static struct fg_withdrawn *withdrawn_of(const struct named *nm,
                                         PGresult *const res[FG_WD_KINDS])
{
	struct fg_withdrawn *w = NULL;

	for (int k = 0; k < FG_WD_KINDS; k++) {
		for (int i = 0; res[k] != NULL && i < nm->n[k]; i++) {
			fg_fingerprint fp;
			const char *key = nm->keys[k][i];
			int why;

			/* The registry keys certificates by their parsed
			 * form; the row by its text. */
			if (k == FG_WD_CERT &&
			    fg_fingerprint_parse(key, &fp) != 0)
				continue;
			why = named_verdict(k, res[k], row_of(res[k], key));
			if (why < 0)
				continue;
			if ((w == NULL && (w = fg_withdrawn_new()) == NULL) ||
			    fg_withdrawn_add(w, (enum fg_withdrawn_kind)k,
			                     k == FG_WD_CERT ? fp.hex : key,
			                     (enum fg_withdrawn_why)why) != 0)
				goto out;
		}
	}
out:
	/* A set cut short by want of memory still holds only withdrawals. */
	if (w != NULL && fg_withdrawn_count(w, FG_WD_CERT) +
	                         fg_withdrawn_count(w, FG_WD_DEVICE) +
	                         fg_withdrawn_count(w, FG_WD_ACCOUNT) ==
	                     0) {
		fg_withdrawn_free(w);
		return NULL;
	}
	if (w != NULL)
		fg_withdrawn_seal(w);
	return w;
}

/* Whether the burst in nm can be applied to the base as a patch. */
static bool patchable(const struct fg_sync *sy,
                      PGresult *const res[FG_WD_KINDS])
{
	const struct named *nm = &sy->named;

	if (sy->base == NULL || !sy->base_fresh || nm->other ||
	    fg_registry_origin(sy->base) != FG_REGISTRY_FROM_DATABASE ||
	    fg_registry_schema_version(sy->base) < FG_SCHEMA_PATCH ||
	    fg_registry_depth(sy->base) >= PATCH_DEPTH_MAX)
		return false;
	for (int k = 0; k < FG_WD_KINDS; k++)
		if (nm->overflow[k] || (nm->n[k] > 0 && res[k] == NULL))
			return false;
	return true;
}

/* Replace a whole table the burst named (sql: RULES_SQL or LIMITS_SQL,
 * read as the full read does); 0, or -1 when it cannot be read. */
static int patch_table(struct fg_sync *sy, struct fg_registry *next,
                       const char *sql, bool rules, int *skipped)
{
	char err[FG_ERRLEN];

	if (rules)
		fg_registry_clear_rules(next);
	else
		fg_registry_clear_limits(next);
	lock_refused = false;
	if (load_small(sy->conn, &sy->io, sql, rules ? load_rules : load_limits,
	               next, skipped, err, sizeof(err)) == 0)
		return 0;
	if (!fg_pg_io_aborted(&sy->io) && !lock_refused)
		fg_log(MOSQ_LOG_WARNING,
		       LOG_PREFIX " cannot read a changed table, it "
		                  "waits for the reload: %s",
		       err);
	return -1;
}

/*
 * The base with the named rows as they are now: each key's row replaced,
 * or removed when it has none (or none that can be read), and the rule
 * and limit tables read again when named. Returns 0 when published, -1
 * when the full reload must do it.
 */
static int patch(struct fg_sync *sy, PGresult *const res[FG_WD_KINDS])
{
	const struct named *nm = &sy->named;
	struct fg_registry *next = fg_registry_derive(sy->base);
	char err[FG_ERRLEN] = "out of memory";
	int64_t t0 = fg_mono_ms();
	int skipped = 0, rows = 0;

	if (next == NULL)
		goto fail;
	/* Devices first: a new certificate may name a new device. */
	for (int t = 0; t < FG_WD_KINDS; t++) {
		int k = LOAD_ORDER[t];

		for (int i = 0; i < nm->n[k]; i++) {
			const char *key = nm->keys[k][i];
			int row = row_of(res[k], key), rc = 1;
			fg_fingerprint fp;

			if (row >= 0)
				rc = ADD_ROW[k](res[k], row, next);
			if (rc < 0)
				goto fail;
			skipped += row >= 0 && rc > 0;
			rows++;
			if (rc == 0)
				continue;
			/* Deleted, or no longer readable: gone, as a full
			 * read would leave it out. */
			if (k == FG_WD_CERT)
				rc = fg_fingerprint_parse(key, &fp) != 0
				         ? 0
				         : fg_registry_remove_cert(next, &fp);
			else if (k == FG_WD_DEVICE)
				rc = fg_registry_remove_device(next, key);
			else
				rc = fg_registry_remove_account(next, key);
			if (rc < 0)
				goto fail;
		}
	}
	if ((nm->rules &&
	     patch_table(sy, next, RULES_SQL, true, &skipped) != 0) ||
	    (nm->limits &&
	     patch_table(sy, next, LIMITS_SQL, false, &skipped) != 0))
		goto fail_quiet;
	if (fg_registry_finalise(next, err, sizeof(err)) != 0)
		goto fail;
	fg_registry_set_meta(next, FG_REGISTRY_FROM_DATABASE,
	                     fg_registry_schema_version(sy->base), fg_time_s());
	log_skipped(skipped);
	fg_log(MOSQ_LOG_INFO,
	       LOG_PREFIX " patched the registry: rows=%d%s%s in %lld ms", rows,
	       nm->rules ? " and the rules" : "",
	       nm->limits ? " and the rate limits" : "",
	       (long long)(fg_mono_ms() - t0));
	publish(sy, next);
	return 0;
fail:
	/* Out of memory, or rows read after further changes whose
	 * notifications have not arrived (a certificate of a device not
	 * yet known): the full read is consistent. */
	fg_log(MOSQ_LOG_NOTICE,
	       LOG_PREFIX " cannot patch the registry (%s), reading "
	                  "all of it",
	       err);
fail_quiet:
	fg_registry_free(next);
	return -1;
}

/*
 * Apply the burst of notifications just drained: read the rows they
 * named, then publish the base patched with them, or else hand the
 * broker thread what they withdraw and leave the rest to a full reload.
 * Returns 0 when the registry was patched, 1 when a full reload must
 * follow, -1 when the connection is gone.
 */
static int apply_named(struct fg_sync *sy)
{
	PGresult *res[FG_WD_KINDS] = {NULL};
	struct fg_withdrawn *w;
	int rc = read_named(sy, res);

	if (rc != 0 || !patchable(sy, res) || patch(sy, res) != 0) {
		if (rc >= 0 && (w = withdrawn_of(&sy->named, res)) != NULL &&
		    post_withdrawn(sy, w) != 0)
			fg_log(MOSQ_LOG_WARNING, LOG_PREFIX
			       " out of memory for access withdrawn "
			       "ahead of the reload; it waits for the "
			       "reload");
		sy->base_fresh = false;
		rc = rc < 0 || PQstatus(sy->conn) != CONNECTION_OK ? -1 : 1;
	}
	for (int k = 0; k < FG_WD_KINDS; k++)
		PQclear(res[k]);
	named_clear(&sy->named);
	return rc;
}

static void *loader_main(void *arg)
{
	struct fg_sync *sy = arg;
	struct fg_backoff backoff;
	int64_t next_full = 0;
	bool pending = false; /* the last read met a locked table */

	fg_worker_begin("fg-registry", &sy->stop_pipe[0], 1);
	/* Nothing to finish at a stop: every wait ends with it. */
	fg_pg_io_init(&sy->io, sy->stop_pipe[0], &sy->s.pg);

	fg_backoff_reset(&backoff, sy->s.retry_max_ms);
	for (;;) {
		int rc, n, more, applied;

		free_retired(sy);
		if (sy->conn == NULL) {
			int first = -1;

			if (connect_and_listen(sy) == 0)
				first = reload(sy);
			if (first < 0) {
				save_snapshot(sy, true);
				if (wait_fd(sy, -1, fg_backoff_next(&backoff)) <
				    0)
					break;
				continue;
			}
			pending = first > 0;
			fg_backoff_reset(&backoff, sy->s.retry_max_ms);
			next_full = fg_mono_ms() + sy->s.full_reload_s * 1000;
			fg_log(MOSQ_LOG_NOTICE,
			       LOG_PREFIX " %s, following changes on "
			                  "channel " FG_REGISTRY_CHANNEL,
			       sy->was_connected ? "reconnected to database"
			                         : "connected to database");
			sy->was_connected = 1;
			sy->conn_throttle.last_ms = 0;
		}
		/* Notifications that came in with the answers to the last
		 * queries are already held by libpq: the socket will not
		 * signal them, and they must not wait for the next change. */
		n = drain_notifies(sy);
		if (n == 0) {
			/* Also the pace of the periodic reload's check. */
			rc =
			    wait_fd(sy, PQsocket(sy->conn),
			            pending ? BUSY_RETRY_MS : SNAPSHOT_IDLE_MS);
			if (rc < 0)
				break;
			/* Quiet for SNAPSHOT_IDLE_MS, or changing for too
			 * long. */
			save_snapshot(sy, rc == 0 && !pending);
			n = rc > 0 ? drain_notifies(sy) : 0;
		} else {
			save_snapshot(sy, false); /* changing for too long */
		}
		if (n > 0) {
			/* Let the rest of a burst arrive, then load once. */
			if (wait_fd(sy, -1, COALESCE_MS) < 0)
				break;
			more = drain_notifies(sy);
			n = more < 0 ? -1 : n + more;
		}
		/* The rows the notifications named patch the registry, or
		 * else go to the broker thread ahead of the reload. */
		applied = n > 0 ? apply_named(sy) : 0;
		if (n < 0 || applied < 0) {
			fg_log(MOSQ_LOG_ERR, LOG_PREFIX
			       " lost the database connection, "
			       "keeping the registry in memory and retrying");
			named_clear(&sy->named);
			sy->base_fresh = false;
			drop_conn(sy);
			save_snapshot(sy, true);
			continue;
		}
		if (applied > 0 || pending || fg_mono_ms() >= next_full) {
			int r = reload(sy);

			pending = r > 0;
			if (r == 0)
				next_full =
				    fg_mono_ms() + sy->s.full_reload_s * 1000;
		}
	}
	drop_conn(sy);
	/* A clean stop leaves the newest registry in the snapshot. */
	save_snapshot(sy, true);
	return NULL;
}

struct fg_sync *fg_sync_create(const struct fg_sync_settings *s,
                               struct fg_arena *arena, char *err, size_t errlen)
{
	struct fg_sync *sy =
	    arena ? fg_shm_map(sizeof(*sy)) : calloc(1, sizeof(*sy));

	if (sy == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	sy->s = *s;
	sy->arena = arena;
	sy->conninfo = strdup(s->pg.conninfo ? s->pg.conninfo : "");
	sy->snapshot_file = s->snapshot_file ? strdup(s->snapshot_file) : NULL;
	if (sy->conninfo == NULL ||
	    (s->snapshot_file != NULL && sy->snapshot_file == NULL)) {
		fg_seterr(err, errlen, "out of memory");
		goto fail;
	}
	sy->s.pg.conninfo = sy->conninfo;
	sy->s.snapshot_file = sy->snapshot_file;
	if (pipe2(sy->stop_pipe, O_CLOEXEC) != 0) {
		fg_seterr(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	if (fg_shm_mutex_init(&sy->lock, arena != NULL) != 0) {
		fg_seterr(err, errlen, "cannot make the registry mailbox lock");
		close(sy->stop_pipe[0]);
		close(sy->stop_pipe[1]);
		goto fail;
	}
	return sy;
fail:
	free(sy->conninfo);
	free(sy->snapshot_file);
	if (arena)
		fg_shm_unmap(sy, sizeof(*sy));
	else
		free(sy);
	return NULL;
}

int fg_sync_run(struct fg_sync *sy, char *err, size_t errlen)
{
	if (pthread_create(&sy->thread, NULL, loader_main, sy) != 0) {
		fg_seterr(err, errlen, "cannot start registry thread: %s",
		          strerror(errno));
		return -1;
	}
	return 0;
}

void fg_sync_halt(struct fg_sync *sy)
{
	if (write(sy->stop_pipe[1], "x", 1) != 1)
		fg_log(MOSQ_LOG_ERR, LOG_PREFIX " cannot signal the loader");
	pthread_join(sy->thread, NULL);
}

void fg_sync_adopt(struct fg_sync *sy, struct fg_arena *arena)
{
	/* What the old worker process posted is still mapped, and the
	 * caller took it first. Nothing else of its own outlives it: what
	 * it was handed back goes with its arena. */
	(void)fg_shm_mutex_init(&sy->lock, true);
	sy->mailbox = NULL;
	sy->withdrawn_box = NULL;
	sy->nretired = 0;
	sy->nretired_wd = 0;
	sy->noverflow = 0;
	memset(&sy->conn, 0, sizeof(*sy) - offsetof(struct fg_sync, conn));
	sy->arena = arena;
}

void fg_sync_fds(const struct fg_sync *sy, int fds[2])
{
	fds[0] = sy->stop_pipe[0];
	fds[1] = sy->stop_pipe[1];
}

void fg_sync_destroy(struct fg_sync *sy)
{
	if (sy == NULL)
		return;
	close(sy->stop_pipe[0]);
	close(sy->stop_pipe[1]);
	pthread_mutex_destroy(&sy->lock);
	free(sy->conninfo);
	free(sy->snapshot_file);
	free(sy->overflow);
	if (sy->arena != NULL) {
		/* Every registry is in the arena, which its owner unmaps. */
		fg_shm_unmap(sy, sizeof(*sy));
		return;
	}
	free_retired(sy);
	fg_registry_free(sy->mailbox);
	fg_registry_free(sy->base);
	fg_withdrawn_free(sy->withdrawn_box);
	named_clear(&sy->named);
	free(sy);
}

struct fg_sync *fg_sync_start(const struct fg_sync_settings *s, char *err,
                              size_t errlen)
{
	struct fg_sync *sy = fg_sync_create(s, NULL, err, errlen);

	if (sy != NULL && fg_sync_run(sy, err, errlen) != 0) {
		fg_sync_destroy(sy);
		sy = NULL;
	}
	return sy;
}

void fg_sync_stop(struct fg_sync *sy)
{
	if (sy == NULL)
		return;
	fg_sync_halt(sy);
	fg_sync_destroy(sy);
}
