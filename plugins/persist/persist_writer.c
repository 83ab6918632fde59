/*
 * The writer thread: journal entries to PostgreSQL. See persist_writer.h.
 *
 * A batch is sent in one transaction: the readings by COPY, the audit
 * events by one INSERT, and the progress row moved to the batch's last
 * sequence number. The progress row is the authority on what is stored;
 * entries at or below it are skipped when read again (after a reconnect,
 * a restart, or a broker killed between commit and checkpoint).
 *
 * A batch the database refuses for its data (not for a lost connection) is
 * sent again entry by entry, each under a savepoint; an entry refused
 * alone is set aside in readings_rejected (audit events: logged and
 * counted), and the rest are stored.
 */
#include "persist_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fg_audit.h"
#include "fg_common.h"
#include "fg_log.h"

#define LOG_PREFIX "fleetgate-persist:"
#define COPY_CHUNK (256u << 10)
#define PARTITIONS_EVERY_MS (3600 * 1000)
/* A stop lets the batch in flight finish this long, then makes the
 * writer's database calls give up (the journal keeps what they were
 * sending), and waits this long again for the thread to return. */
#define STOP_WAIT_MS 1000
#define WRITER_NICE 10

static const char COPY_SQL[] =
    "COPY fleetgate.readings (broker_id, seq, received_at, measured_at, "
    "device_id, municipality_id, account, client_id, topic, payload) "
    "FROM STDIN";
static const char ROW_SQL[] =
    "INSERT INTO fleetgate.readings (broker_id, seq, received_at, "
    "measured_at, device_id, municipality_id, account, client_id, topic, "
    "payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb) "
    "ON CONFLICT DO NOTHING";
static const char REJECT_SQL[] =
    "INSERT INTO fleetgate.readings_rejected (broker_id, seq, received_at, "
    "device_id, client_id, topic, payload, error) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING";
static const char PROGRESS_SQL[] =
    "UPDATE fleetgate.persist_progress SET seq = $2, updated_at = now() "
    "WHERE broker_id = $1 AND journal_id = $3";
static const char CLAIM_SQL[] =
    "INSERT INTO fleetgate.persist_progress (broker_id, journal_id, seq) "
    "VALUES ($1, $2, $3) ON CONFLICT (broker_id) DO NOTHING";
static const char READ_PROGRESS_SQL[] =
    "SELECT journal_id, seq FROM fleetgate.persist_progress "
    "WHERE broker_id = $1";
static const char TAKE_OVER_SQL[] =
    "UPDATE fleetgate.persist_progress SET journal_id = $2, seq = $3, "
    "updated_at = now() WHERE broker_id = $1 AND journal_id = $4";

/* A formatted second, reused while timestamps stay within it. */
struct ts_cache {
	int64_t secs;
	char text[32];
	size_t len;
};

struct writer {
	struct writer_settings s;
	char *conninfo, *broker_id;
	struct journal *j;
	pthread_t thread;
	pthread_mutex_t lock; /* guards stop and stats */
	pthread_cond_t cond;
	bool stop, done;
	struct writer_stats stats;
	int abort_pipe[2]; /* written when a stop cannot wait any longer */

	/* writer thread only */
	PGconn *conn;
	struct fg_pg_io io;
	uint64_t stored_upto; /* entries <= are in the database */
	int64_t partitions_at_ms;
	struct journal_cursor cur;
	struct fg_buf copy, audit;
	struct fg_buf broker_id_copy; /* the broker id as a COPY field */
	struct ts_cache recv_cache, meas_cache;
	struct fg_throttle down_throttle;
	bool was_down;
	int64_t next_sync_ms; /* fsync batch while no batch is sent */
};

enum send_result { SEND_OK, SEND_RETRY, SEND_DATA };

/* Buffers ----------------------------------------------------------------- */

/* Bytes COPY's text format escapes, and the letter after the backslash. */
static const char copy_escape[256] = {
    ['\\'] = '\\',
    ['\n'] = 'n',
    ['\r'] = 'r',
    ['\t'] = 't',
};

/* A field for COPY's text format: backslash, tab, newline and carriage
 * return escaped; absent is \N. Followed by sep. Runs of ordinary bytes
 * are copied whole: the writer formats every stored reading. */
static int copy_field(struct fg_buf *b, const struct journal_bytes *f, char sep)
{
	const unsigned char *s = f->p;
	uint32_t i = 0, run;

	if (fg_buf_reserve(b, (size_t)f->len * 2 + 3) != 0)
		return -1;
	if (s == NULL) {
		memcpy(b->p + b->len, "\\N", 2);
		b->len += 2;
	}
	while (s != NULL && i < f->len) {
		for (run = i; run < f->len && copy_escape[s[run]] == 0; run++)
			;
		memcpy(b->p + b->len, s + i, run - i);
		b->len += run - i;
		if (run < f->len) {
			b->p[b->len++] = '\\';
			b->p[b->len++] = copy_escape[s[run]];
			run++;
		}
		i = run;
	}
	b->p[b->len++] = sep;
	return 0;
}

/* "2026-12-03 11:22:33.123+00" into out (at least 40 bytes); returns its
 * length. The date and time of day are formatted once per second. */

static size_t format_ts_cached(struct ts_cache *c, int64_t ms, char *out)
{
	int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
	int frac = (int)(ms - secs * 1000);

	if (c->len == 0 || c->secs != secs) {
		time_t t = (time_t)secs;
		struct tm tm;

		gmtime_r(&t, &tm);
		c->len = strftime(c->text, sizeof(c->text), "%Y-%m-%d %H:%M:%S",
		                  &tm);
		c->secs = secs;
	}
	memcpy(out, c->text, c->len);
	out[c->len] = '.';
	out[c->len + 1] = (char)('0' + frac / 100);
	out[c->len + 2] = (char)('0' + frac / 10 % 10);
	out[c->len + 3] = (char)('0' + frac % 10);
	memcpy(out + c->len + 4, "+00", 4);
	return c->len + 7;
}

static void format_ts(int64_t ms, char *out, size_t len)
{
	struct ts_cache c = {0, "", 0};
	char buf[48];

	format_ts_cached(&c, ms, buf);
	snprintf(out, len, "%s", buf);
}

static size_t format_u64(uint64_t v, char *out)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

static int copy_line(struct writer *w, const struct journal_record *r)
{
	char head[128];
	size_t n;

	if (fg_buf_add(&w->copy, w->broker_id_copy.p, w->broker_id_copy.len) !=
	    0)
		return -1;
	n = format_u64(r->seq, head);
	head[n++] = '\t';
	n += format_ts_cached(&w->recv_cache, r->received_ms, head + n);
	head[n++] = '\t';
	n += format_ts_cached(&w->meas_cache, r->measured_ms, head + n);
	head[n++] = '\t';
	if (fg_buf_add(&w->copy, head, n) != 0)
		return -1;
	for (int i = JF_DEVICE; i <= JF_PAYLOAD; i++)
		if (copy_field(&w->copy, &r->f[i],
		               i == JF_PAYLOAD ? '\n' : '\t') != 0)
			return -1;
	return 0;
}

/* Connection ---------------------------------------------------------------*/

static void disconnect(struct writer *w)
{
	fg_pg_finish(w->conn);
	w->conn = NULL;
}

static PGresult *exec_params(struct writer *w, const char *sql, int n,
                             const char *const *vals)
{
	return fg_pg_exec_params(w->conn, &w->io, sql, n, vals, NULL, NULL);
}

static bool ok_result(PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);
	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

static void log_db_error(struct writer *w, const char *what, PGresult *res)
{
	char line[300];
	const char *msg = res != NULL ? PQresultErrorMessage(res) : "";

	if (msg == NULL || msg[0] == '\0')
		msg = fg_pg_error(w->conn, line, sizeof(line));
	fg_log(MOSQ_LOG_ERR, LOG_PREFIX " %s failed: %.200s", what, msg);
}

static void ensure_partitions(struct writer *w)
{
	PGresult *res;

	if (fg_mono_ms() - w->partitions_at_ms < PARTITIONS_EVERY_MS &&
	    w->partitions_at_ms != 0)
		return;
	res = fg_pg_exec(w->conn, &w->io,
	                 "SELECT fleetgate.ensure_reading_partitions()");
	if (!ok_result(res)) {
		/* Rows still land in the default partition; try again in a
		 * minute rather than on every pass. */
		log_db_error(w, "creating reading partitions", res);
		w->partitions_at_ms =
		    fg_mono_ms() - PARTITIONS_EVERY_MS + 60000;
	} else {
		w->partitions_at_ms = fg_mono_ms();
	}
	PQclear(res);
}

/*
 * Find this broker's progress row (creating it), and check that it
 * belongs to this journal. A row of another journal is taken over only
 * when everything this journal holds is newer than it (the journal was
 * replaced); otherwise two brokers share one broker_id, and storing stops
 * with an error until that is fixed. Returns 0, or -1 to retry later.
 */
static int claim_progress(struct writer *w)
{
	char seqbuf[24], ours[24];
	const char *jid = journal_id(w->j);
	uint64_t theirs;
	PGresult *res;
	int rc = -1;

	snprintf(ours, sizeof(ours), "%" PRIu64, journal_checkpoint(w->j));
	const char *claim[3] = {w->broker_id, jid, ours};
	res = exec_params(w, CLAIM_SQL, 3, claim);
	if (!ok_result(res)) {
		log_db_error(w, "recording progress", res);
		PQclear(res);
		return -1;
	}
	PQclear(res);
	const char *key[1] = {w->broker_id};
	res = exec_params(w, READ_PROGRESS_SQL, 1, key);
	if (!ok_result(res) || PQntuples(res) != 1) {
		log_db_error(w, "reading progress", res);
		goto out;
	}
	theirs = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
	if (strcmp(PQgetvalue(res, 0, 0), jid) == 0) {
		w->stored_upto =
		    theirs > w->stored_upto ? theirs : w->stored_upto;
		rc = 0;
		goto out;
	}
	if (journal_checkpoint(w->j) < theirs) {
		fg_log(MOSQ_LOG_ERR,
		       LOG_PREFIX
		       " broker_id=%s is recorded for another "
		       "journal (journal_id=%.40s at seq=%" PRIu64
		       ", this journal_id=%s at seq=%" PRIu64 "): two "
		       "brokers share one broker_id? Readings wait in "
		       "the journal until this is resolved",
		       w->broker_id, PQgetvalue(res, 0, 0), theirs, jid,
		       journal_checkpoint(w->j));
		goto out;
	}
	snprintf(seqbuf, sizeof(seqbuf), "%" PRIu64, journal_checkpoint(w->j));
	char *old = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	res = NULL;
	if (old == NULL)
		goto out;
	const char *take[4] = {w->broker_id, jid, seqbuf, old};
	res = exec_params(w, TAKE_OVER_SQL, 4, take);
	if (ok_result(res) && strcmp(PQcmdTuples(res), "1") == 0) {
		fg_log(MOSQ_LOG_WARNING,
		       LOG_PREFIX " broker_id=%s now uses journal_id=%s "
		                  "(was %.40s): the journal was replaced",
		       w->broker_id, jid, old);
		rc = 0;
	}
	free(old);
out:
	PQclear(res);
	return rc;
}

static int ensure_conn(struct writer *w)
{
	char err[FG_ERRLEN];
	uint64_t suppressed;

	if (w->conn != NULL && PQstatus(w->conn) == CONNECTION_OK)
		return 0;
	disconnect(w);
	w->conn = fg_pg_connect(&w->s.pg, &w->io, err, sizeof(err));
	if (w->conn != NULL) {
		/* libpq follows the server's report of the change. */
		PGresult *res =
		    fg_pg_exec(w->conn, &w->io, "SET client_encoding = 'UTF8'");

		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			fg_seterr(err, sizeof(err),
			          "cannot set client_encoding");
			disconnect(w);
		}
		PQclear(res);
	}
	if (w->conn != NULL && claim_progress(w) != 0) {
		fg_seterr(err, sizeof(err), "progress row not usable");
		disconnect(w);
	}
	if (w->conn == NULL) {
		pthread_mutex_lock(&w->lock);
		w->stats.db_up = false;
		pthread_mutex_unlock(&w->lock);
		if (!fg_pg_io_aborted(&w->io) &&
		    fg_throttle_hit(&w->down_throttle, 60000, &suppressed))
			fg_log(MOSQ_LOG_WARNING,
			       LOG_PREFIX
			       " database unreachable, readings wait "
			       "in the journal (failed_attempts=%llu): "
			       "%s",
			       (unsigned long long)suppressed + 1, err);
		w->was_down = true;
		return -1;
	}
	w->partitions_at_ms = 0;
	ensure_partitions(w);
	if (w->was_down)
		fg_log(MOSQ_LOG_NOTICE,
		       LOG_PREFIX " database reachable again, sending the "
		                  "journal from seq=%" PRIu64,
		       w->stored_upto + 1);
	w->was_down = false;
	w->down_throttle.last_ms = 0;
	pthread_mutex_lock(&w->lock);
	w->stats.db_up = true;
	pthread_mutex_unlock(&w->lock);
	return 0;
}

/* Batches ----------------------------------------------------------------- */

struct batch {
	struct journal_cursor start, end;
	uint64_t last_seq;
	size_t readings, audits, entries;
};

static enum send_result classify(struct writer *w, PGresult *res,
                                 const char *what)
{
	const char *state =
	    res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	log_db_error(w, what, res);
	if (PQstatus(w->conn) != CONNECTION_OK || state == NULL)
		return SEND_RETRY;
	/* Data exceptions and constraint violations: the batch holds an
	 * entry the database will never take as it is. */
	if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)
		return SEND_DATA;
	return SEND_RETRY;
}

static enum send_result exec_step(struct writer *w, const char *sql,
                                  const char *what)
{
	PGresult *res = fg_pg_exec(w->conn, &w->io, sql);
	enum send_result sr = ok_result(res) ? SEND_OK : classify(w, res, what);
	PQclear(res);
	return sr;
}

static enum send_result start_copy(struct writer *w)
{
	PGresult *res = fg_pg_exec(w->conn, &w->io, COPY_SQL);
	enum send_result sr = SEND_OK;

	if (PQresultStatus(res) != PGRES_COPY_IN)
		sr = classify(w, res, "COPY");
	PQclear(res);
	return sr;
}

/* Send what is buffered (the database parses one part while the next is
 * prepared). */
static enum send_result push_copy(struct writer *w)
{
	if (w->copy.len > 0 &&
	    fg_pg_put_copy(w->conn, &w->io, w->copy.p, w->copy.len) != 0) {
		log_db_error(w, "COPY data", NULL);
		return SEND_RETRY;
	}
	fg_buf_clear(&w->copy);
	return SEND_OK;
}

/* End the COPY; with ok false, abort it. */
static enum send_result end_copy(struct writer *w, bool ok)
{
	enum send_result sr = ok ? push_copy(w) : SEND_RETRY;
	PGresult *res;

	res = fg_pg_end_copy(w->conn, &w->io, sr == SEND_OK ? NULL : "aborted");
	if (sr == SEND_OK && !ok_result(res))
		sr = classify(w, res, "COPY");
	PQclear(res);
	return ok ? sr : SEND_RETRY;
}

static enum send_result put_progress(struct writer *w, uint64_t seq)
{
	char seqbuf[24];
	const char *vals[3] = {w->broker_id, seqbuf, journal_id(w->j)};
	PGresult *res;
	enum send_result sr;

	snprintf(seqbuf, sizeof(seqbuf), "%" PRIu64, seq);
	res = exec_params(w, PROGRESS_SQL, 3, vals);
	if (!ok_result(res)) {
		sr = classify(w, res, "recording progress");
	} else if (strcmp(PQcmdTuples(res), "1") != 0) {
		fg_log(MOSQ_LOG_ERR,
		       LOG_PREFIX " progress row of broker_id=%s was taken by "
		                  "another journal; reconnecting",
		       w->broker_id);
		sr = SEND_RETRY;
	} else {
		sr = SEND_OK;
	}
	PQclear(res);
	return sr;
}

static enum send_result put_audit(struct writer *w)
{
	const char *vals[2] = {w->audit.p, w->broker_id};
	PGresult *res = exec_params(w, fg_audit_insert_sql(), 2, vals);
	enum send_result sr =
	    ok_result(res) ? SEND_OK : classify(w, res, "audit insert");
	PQclear(res);
	return sr;
}

/* Add one entry to the open transaction: readings into the COPY (opened
 * with the first one), audit events into the array inserted at the end. */
static enum send_result add_entry(struct writer *w, struct batch *b,
                                  const struct journal_record *r, bool *in_copy)
{
	enum send_result sr = SEND_OK;

	if (r->type == JOURNAL_READING) {
		if (!*in_copy) {
			sr = start_copy(w);
			*in_copy = sr == SEND_OK;
		}
		if (sr == SEND_OK && copy_line(w, r) != 0)
			sr = SEND_RETRY;
		if (sr == SEND_OK && w->copy.len >= COPY_CHUNK)
			sr = push_copy(w);
		b->readings++;
	} else {
		if ((b->audits > 0 && fg_buf_add(&w->audit, ",", 1) != 0) ||
		    fg_buf_add(&w->audit, r->f[JF_PAYLOAD].p,
		               r->f[JF_PAYLOAD].len) != 0)
			sr = SEND_RETRY;
		b->audits++;
	}
	b->last_seq = r->seq;
	b->entries++;
	return sr;
}

/*
 * With fsync batch, sync the journal: before each batch, and every
 * flush_ms while no batch can be sent (sync_while_away), so that a power
 * cut loses as little then as when the database is there.
 */
static void sync_journal(struct writer *w)
{
	char err[FG_ERRLEN];

	if (w->s.sync != JOURNAL_SYNC_BATCH)
		return;
	w->next_sync_ms = fg_mono_ms() + w->s.flush_ms;
	if (journal_sync(w->j, err, sizeof(err)) != 0)
		fg_log(MOSQ_LOG_ERR, LOG_PREFIX " %s", err);
}

/*
 * Read entries from the cursor and send them as one transaction: the
 * readings streamed into a COPY as they are read, then the audit events,
 * then the progress row. Entries already stored are passed over. Returns
 * SEND_OK with b->entries == 0 when there was nothing to send.
 */
static enum send_result send_batch(struct writer *w, struct batch *b)
{
	struct journal_record r;
	char err[FG_ERRLEN];
	enum send_result sr = SEND_OK;
	bool in_tx = false, in_copy = false;

	memset(b, 0, sizeof(*b));
	b->start = b->end = w->cur;
	fg_buf_clear(&w->copy);
	fg_buf_clear(&w->audit);
	fg_buf_add(&w->audit, "[", 1);
	while (sr == SEND_OK && b->entries < (size_t)w->s.batch_rows) {
		int got = journal_next(w->j, &b->end, &r, err, sizeof(err));

		if (got < 0) {
			fg_log(MOSQ_LOG_ERR, LOG_PREFIX " %s", err);
			sr = SEND_RETRY;
		}
		if (got <= 0)
			break;
		if (r.seq <= w->stored_upto)
			continue;
		if (!in_tx) {
			sync_journal(w);
			sr = exec_step(w, "BEGIN", "BEGIN");
			in_tx = sr == SEND_OK;
			if (!in_tx)
				break;
		}
		sr = add_entry(w, b, &r, &in_copy);
	}
	if (in_copy)
		sr = end_copy(w, sr == SEND_OK) == SEND_OK ? sr : SEND_RETRY;
	if (!in_tx)
		return sr;
	if (sr == SEND_OK && b->audits > 0 &&
	    (fg_buf_add(&w->audit, "]", 2) != 0 ||
	     (sr = put_audit(w)) != SEND_OK))
		sr = sr == SEND_OK ? SEND_RETRY : sr;
	if (sr == SEND_OK)
		sr = put_progress(w, b->last_seq);
	if (sr == SEND_OK)
		sr = exec_step(w, "COMMIT", "COMMIT");
	if (sr != SEND_OK && PQstatus(w->conn) == CONNECTION_OK) {
		PGresult *res = fg_pg_exec(w->conn, &w->io, "ROLLBACK");
		PQclear(res);
	}
	return sr;
}

/* Entry by entry ---------------------------------------------------------- */

/* A NUL-terminated copy of a field for a text parameter, or NULL. */
static char *param_str(const struct journal_bytes *f)
{
	char *s;

	if (f->p == NULL)
		return NULL;
	s = malloc((size_t)f->len + 1);
	if (s != NULL) {
		memcpy(s, f->p, f->len);
		s[f->len] = '\0';
	}
	return s;
}

static enum send_result
set_aside(struct writer *w, const struct journal_record *r, const char *why)
{
	char seq[24], recv[96];
	const char *vals[8];
	int lens[8] = {0}, fmts[8] = {0};
	char *dev = param_str(&r->f[JF_DEVICE]);
	char *cli = param_str(&r->f[JF_CLIENT]);
	char *top = param_str(&r->f[JF_TOPIC]);
	PGresult *res;
	enum send_result sr;

	snprintf(seq, sizeof(seq), "%" PRIu64, r->seq);
	format_ts(r->received_ms, recv, sizeof(recv));
	vals[0] = w->broker_id;
	vals[1] = seq;
	vals[2] = recv;
	vals[3] = dev;
	vals[4] = cli;
	vals[5] = top;
	vals[6] = r->f[JF_PAYLOAD].p != NULL ? r->f[JF_PAYLOAD].p : "";
	lens[6] = (int)r->f[JF_PAYLOAD].len;
	fmts[6] = 1; /* bytea, sent as raw bytes */
	vals[7] = why;
	res =
	    fg_pg_exec_params(w->conn, &w->io, REJECT_SQL, 8, vals, lens, fmts);
	sr = ok_result(res) ? SEND_OK : classify(w, res, "setting aside");
	PQclear(res);
	free(dev);
	free(cli);
	free(top);
	if (sr == SEND_OK) {
		fg_log(MOSQ_LOG_ERR,
		       LOG_PREFIX " reading refused by the database, kept in "
		                  "readings_rejected: seq=%" PRIu64
		                  " reason=%.200s",
		       r->seq, why);
		pthread_mutex_lock(&w->lock);
		w->stats.rejected++;
		pthread_mutex_unlock(&w->lock);
	}
	return sr;
}

static enum send_result one_reading(struct writer *w,
                                    const struct journal_record *r)
{
	char seq[24], recv[96], meas[96];
	char *f[JF_COUNT];
	const char *vals[10];
	PGresult *res;
	enum send_result sr;

	snprintf(seq, sizeof(seq), "%" PRIu64, r->seq);
	format_ts(r->received_ms, recv, sizeof(recv));
	format_ts(r->measured_ms, meas, sizeof(meas));
	for (int i = 0; i < JF_COUNT; i++)
		f[i] = param_str(&r->f[i]);
	vals[0] = w->broker_id;
	vals[1] = seq;
	vals[2] = recv;
	vals[3] = meas;
	for (int i = 0; i < JF_COUNT; i++)
		vals[4 + i] = f[i];
	if (exec_step(w, "SAVEPOINT one", "SAVEPOINT") != SEND_OK) {
		sr = SEND_RETRY;
		goto out;
	}
	res = exec_params(w, ROW_SQL, 10, vals);
	if (ok_result(res)) {
		sr = exec_step(w, "RELEASE SAVEPOINT one", "RELEASE");
	} else if ((sr = classify(w, res, "storing one reading")) ==
	           SEND_DATA) {
		char why[256];
		snprintf(why, sizeof(why), "%s", PQresultErrorMessage(res));
		why[strcspn(why, "\n")] = '\0';
		sr = exec_step(w, "ROLLBACK TO SAVEPOINT one", "ROLLBACK TO");
		if (sr == SEND_OK)
			sr = set_aside(w, r, why);
	}
	PQclear(res);
out:
	for (int i = 0; i < JF_COUNT; i++)
		free(f[i]);
	return sr;
}

static enum send_result one_audit(struct writer *w,
                                  const struct journal_record *r)
{
	enum send_result sr;

	fg_buf_clear(&w->audit);
	if (fg_buf_add(&w->audit, "[", 1) != 0 ||
	    fg_buf_add(&w->audit, r->f[JF_PAYLOAD].p, r->f[JF_PAYLOAD].len) !=
	        0 ||
	    fg_buf_add(&w->audit, "]", 2) != 0)
		return SEND_RETRY;
	if (exec_step(w, "SAVEPOINT one", "SAVEPOINT") != SEND_OK)
		return SEND_RETRY;
	sr = put_audit(w);
	if (sr == SEND_DATA) {
		fg_log(MOSQ_LOG_ERR,
		       LOG_PREFIX " audit event refused by the database, "
		                  "lost: seq=%" PRIu64,
		       r->seq);
		pthread_mutex_lock(&w->lock);
		w->stats.rejected++;
		pthread_mutex_unlock(&w->lock);
		return exec_step(w, "ROLLBACK TO SAVEPOINT one", "ROLLBACK TO");
	}
	return sr == SEND_OK ? exec_step(w, "RELEASE SAVEPOINT one", "RELEASE")
	                     : sr;
}

static enum send_result send_one_by_one(struct writer *w, struct batch *b)
{
	struct journal_cursor c = b->start;
	struct journal_record r;
	char err[FG_ERRLEN];
	enum send_result sr = exec_step(w, "BEGIN", "BEGIN");

	while (sr == SEND_OK &&
	       journal_next(w->j, &c, &r, err, sizeof(err)) == 1) {
		if (r.seq <= w->stored_upto)
			continue;
		if (r.seq > b->last_seq)
			break;
		sr = r.type == JOURNAL_READING ? one_reading(w, &r)
		                               : one_audit(w, &r);
	}
	if (sr == SEND_OK)
		sr = put_progress(w, b->last_seq);
	if (sr == SEND_OK)
		sr = exec_step(w, "COMMIT", "COMMIT");
	if (sr != SEND_OK && w->conn != NULL &&
	    PQstatus(w->conn) == CONNECTION_OK) {
		PGresult *res = fg_pg_exec(w->conn, &w->io, "ROLLBACK");
		PQclear(res);
	}
	return sr;
}

/* The thread -------------------------------------------------------------- */

static bool stopping(struct writer *w)
{
	bool s;

	pthread_mutex_lock(&w->lock);
	s = w->stop;
	pthread_mutex_unlock(&w->lock);
	return s;
}

/*
 * While no batch can be sent (the database away, or a wait for it that
 * goes on): the journal's pages ahead made writable, and the journal
 * synced every flush_ms (none sooner after the sync before a batch).
 */
static void writer_idle(void *ctx)
{
	struct writer *w = ctx;

	journal_prefault(w->j);
	if (fg_mono_ms() >= w->next_sync_ms)
		sync_journal(w);
}

/* Wait ms (or until told to stop), keeping the broker's next journal
 * pages writable and the journal synced meanwhile: the appends go on
 * while the database is away. */
static void pause_ms(struct writer *w, int ms)
{
	int64_t until = fg_mono_ms() + ms;
	int slice = w->s.flush_ms > 10 ? w->s.flush_ms : 10;

	for (;;) {
		int64_t left = until - fg_mono_ms();
		struct timespec ts;

		writer_idle(w);
		if (left <= 0)
			return;
		fg_timespec_in(&ts, CLOCK_REALTIME,
		               (int)(left < slice ? left : slice));
		pthread_mutex_lock(&w->lock);
		if (w->stop) {
			pthread_mutex_unlock(&w->lock);
			return;
		}
		pthread_cond_timedwait(&w->cond, &w->lock, &ts);
		pthread_mutex_unlock(&w->lock);
	}
}

static void committed(struct writer *w, const struct batch *b)
{
	char err[FG_ERRLEN];

	w->cur = b->end;
	w->stored_upto = b->last_seq;
	if (journal_committed(w->j, b->last_seq, false, err, sizeof(err)) != 0)
		fg_log(MOSQ_LOG_ERR, LOG_PREFIX " %s", err);
	pthread_mutex_lock(&w->lock);
	w->stats.readings += b->readings;
	w->stats.audit_events += b->audits;
	w->stats.batches++;
	w->stats.skipped_bytes = w->cur.skipped_bytes;
	pthread_mutex_unlock(&w->lock);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct fg_backoff backoff;
	struct batch b;
	char err[FG_ERRLEN];
	uint64_t skipped_logged = 0;

	int keep[2] = {journal_dirfd(w->j), w->abort_pipe[0]};

	/* Of the broker's descriptors the writer uses the journal directory
	 * (segments and the checkpoint are opened by name) and the abort
	 * pipe. */
	fg_worker_begin("fg-persist", keep, 2);
	fg_pg_io_init(&w->io, w->abort_pipe[0], &w->s.pg);
	/* A database that answers slowly or not at all (frozen) holds this
	 * thread in a wait; the broker's appends go on meanwhile. */
	w->io.idle = writer_idle;
	w->io.idle_ctx = w;
	w->io.idle_ms = w->s.flush_ms > 10 ? w->s.flush_ms : 10;
	/* The journal absorbs bursts; when the machine is short of CPU the
	 * broker thread, which every client waits on, goes first and the
	 * writer catches up later. (Linux applies nice to the thread.) */
	(void)setpriority(PRIO_PROCESS, (id_t)gettid(), WRITER_NICE);
	fg_backoff_reset(&backoff, w->s.retry_max_ms);
	journal_cursor_init(w->j, &w->cur);
	w->stored_upto = journal_checkpoint(w->j);
	while (!stopping(w)) {
		enum send_result sr;

		journal_prefault(w->j);
		if (ensure_conn(w) != 0) {
			pause_ms(w, fg_backoff_next(&backoff));
			continue;
		}
		sr = send_batch(w, &b);
		if (b.end.skipped_bytes != skipped_logged) {
			skipped_logged = b.end.skipped_bytes;
			fg_log(MOSQ_LOG_ERR,
			       LOG_PREFIX " damaged journal data passed over, "
			                  "skipped_bytes=%" PRIu64 " (total)",
			       skipped_logged);
		}
		if (sr == SEND_OK && b.entries == 0) {
			w->cur = b.end; /* past entries already stored */
			ensure_partitions(w);
			journal_wait(w->j, w->s.flush_ms);
			continue;
		}
		if (sr == SEND_DATA)
			sr = send_one_by_one(w, &b);
		if (sr == SEND_OK) {
			committed(w, &b);
			fg_backoff_reset(&backoff, w->s.retry_max_ms);
		} else {
			/* Read the same entries again after the pause. */
			disconnect(w);
			pause_ms(w, fg_backoff_next(&backoff));
		}
	}
	disconnect(w);
	journal_reader_release(w->j); /* its descriptor is this thread's */
	/* A clean stop leaves an exact checkpoint behind. */
	if (journal_committed(w->j, w->stored_upto, true, err, sizeof(err)) !=
	    0)
		fg_log(MOSQ_LOG_ERR, LOG_PREFIX " %s", err);
	pthread_mutex_lock(&w->lock);
	w->done = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

struct writer *writer_start(struct journal *j, const struct writer_settings *s,
                            char *err, size_t errlen)
{
	struct writer *w = calloc(1, sizeof(*w));

	if (w == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	w->s = *s;
	w->j = j;
	/* From here on only the writer reads the journal. */
	journal_reader_release(j);
	w->conninfo = strdup(s->pg.conninfo != NULL ? s->pg.conninfo : "");
	w->broker_id = strdup(s->broker_id);
	if (w->conninfo == NULL || w->broker_id == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto fail;
	}
	w->s.pg.conninfo = w->conninfo;
	w->s.broker_id = w->broker_id;
	struct journal_bytes id = {w->broker_id,
	                           (uint32_t)strlen(w->broker_id)};
	if (copy_field(&w->broker_id_copy, &id, '\t') != 0) {
		fg_seterr(err, errlen, "out of memory");
		goto fail;
	}
	if (pipe2(w->abort_pipe, O_CLOEXEC) != 0) {
		fg_seterr(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
		fg_seterr(err, errlen, "cannot start the writer thread: %s",
		          strerror(errno));
		pthread_mutex_destroy(&w->lock);
		pthread_cond_destroy(&w->cond);
		close(w->abort_pipe[0]);
		close(w->abort_pipe[1]);
		goto fail;
	}
	return w;
fail:
	free(w->broker_id_copy.p);
	free(w->conninfo);
	free(w->broker_id);
	free(w);
	return NULL;
}

/* Wait up to ms for the thread to finish; true when it has. Called with
 * the lock held. */
static bool wait_done_locked(struct writer *w, int ms)
{
	struct timespec ts;

	fg_timespec_in(&ts, CLOCK_REALTIME, ms);
	while (!w->done && pthread_cond_timedwait(&w->cond, &w->lock, &ts) == 0)
		;
	return w->done;
}

int writer_stop(struct writer *w)
{
	bool done;

	if (w == NULL)
		return 0;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_broadcast(&w->cond);
	journal_wake(w->j);
	done = wait_done_locked(w, STOP_WAIT_MS);
	pthread_mutex_unlock(&w->lock);
	if (!done) {
		/* A database that does not answer: make its calls give up. */
		if (write(w->abort_pipe[1], "x", 1) != 1)
			fg_log(MOSQ_LOG_ERR,
			       LOG_PREFIX " cannot signal the writer");
		pthread_mutex_lock(&w->lock);
		done = wait_done_locked(w, STOP_WAIT_MS);
		pthread_mutex_unlock(&w->lock);
		if (done)
			fg_log(MOSQ_LOG_NOTICE,
			       LOG_PREFIX " stopped waiting for the database "
			                  "at shutdown; what the writer was "
			                  "sending stays in the journal");
	}
	if (!done) {
		/* Stuck outside any wait of ours: leave the thread (and
		 * what it uses) to the process's exit. */
		fg_log(MOSQ_LOG_WARNING,
		       LOG_PREFIX " writer still waiting on the database at "
		                  "shutdown; what it was sending stays in the "
		                  "journal");
		pthread_detach(w->thread);
		return -1;
	}
	pthread_join(w->thread, NULL);
	close(w->abort_pipe[0]);
	close(w->abort_pipe[1]);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w->copy.p);
	free(w->audit.p);
	free(w->broker_id_copy.p);
	free(w->conninfo);
	free(w->broker_id);
	free(w);
	return 0;
}

void writer_stats(struct writer *w, struct writer_stats *out)
{
	pthread_mutex_lock(&w->lock);
	*out = w->stats;
	pthread_mutex_unlock(&w->lock);
}
