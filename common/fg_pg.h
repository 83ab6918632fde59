/*
 * PostgreSQL connections of the worker threads.
 *
 * Every call here that waits on the server waits in poll(), together with
 * the worker's abort descriptor: a server that is frozen, or a network
 * that drops packets, can delay a worker but cannot keep the broker from
 * stopping. The connections are in libpq's nonblocking mode throughout,
 * so that PQfinish on a connection whose send buffer is full returns at
 * once as well.
 */
#ifndef FG_PG_H
#define FG_PG_H

#include <libpq-fe.h>

#include "fg_common.h"

struct fg_pg_settings {
	const char *conninfo; /* libpq conninfo or URI; "" uses PG* env */
	const char *application_name;
	int connect_timeout_s;
	int statement_timeout_ms;
};

/*
 * What a worker's database calls wait for besides the server. abort_fd
 * (-1: none) is the read end of a pipe: once it is readable, every wait
 * gives up at once. silence_ms (0: no limit) is how long the server may
 * send and accept nothing while a reply is due before the connection is
 * taken for lost; fg_pg_io_init sets it above the statement timeout, so
 * that only a server that stopped answering (frozen, or its host gone
 * without a reset) reaches it.
 */
struct fg_pg_io {
	int abort_fd;
	int silence_ms;
	/* Called every idle_ms while a wait for the server goes on (0 or no
	 * function: never): work of the waiting thread that must not wait
	 * for a slow or frozen database. It must not use the connection. */
	void (*idle)(void *ctx);
	void *idle_ctx;
	int idle_ms;
};
FG_API void fg_pg_io_init(struct fg_pg_io *io, int abort_fd,
                          const struct fg_pg_settings *s);
/* True once io's abort descriptor is readable: a failure seen since was
 * (or may have been) caused by it, and is not worth a log line. */
FG_API bool fg_pg_io_aborted(const struct fg_pg_io *io);

/*
 * Connect with TCP keepalives, a TCP user timeout (so a dead server is
 * noticed) and the connect timeout (given to each address of each host
 * of the conninfo in turn, and to each host name lookup, which is done
 * here so that an abort ends it), then set the statement timeout.
 * Settings in conninfo override these defaults. Returns the connection,
 * or NULL with a message (no credentials in it) in err.
 */
FG_API PGconn *fg_pg_connect(const struct fg_pg_settings *s,
                             const struct fg_pg_io *io, char *err,
                             size_t errlen);

/*
 * PQexec, PQexecParams, PQprepare and PQexecPrepared, with their results,
 * but waiting as described above. When a wait gives up, the connection
 * is closed under libpq (PQstatus turns CONNECTION_BAD), NULL is
 * returned and fg_pg_error says why.
 */
FG_API PGresult *fg_pg_exec(PGconn *conn, const struct fg_pg_io *io,
                            const char *sql);
FG_API PGresult *fg_pg_exec_params(PGconn *conn, const struct fg_pg_io *io,
                                   const char *sql, int n,
                                   const char *const *vals, const int *lens,
                                   const int *fmts);
FG_API PGresult *fg_pg_prepare(PGconn *conn, const struct fg_pg_io *io,
                               const char *name, const char *sql, int n);
FG_API PGresult *fg_pg_exec_prepared(PGconn *conn, const struct fg_pg_io *io,
                                     const char *name, int n,
                                     const char *const *vals);

/*
 * COPY FROM STDIN data, sent before returning (so that the server parses
 * one part while the caller prepares the next). 0, or -1 when the
 * connection failed or a wait gave up.
 */
FG_API int fg_pg_put_copy(PGconn *conn, const struct fg_pg_io *io,
                          const char *buf, size_t len);
/* End the COPY (abort it with errmsg not NULL) and return its result. */
FG_API PGresult *fg_pg_end_copy(PGconn *conn, const struct fg_pg_io *io,
                                const char *errmsg);

/* PQfinish (NULL is fine); forgets why a wait on conn gave up. */
FG_API void fg_pg_finish(PGconn *conn);

/* The connection's last error on one line, bounded, for log messages. */
FG_API const char *fg_pg_error(PGconn *conn, char *buf, size_t len);

/*
 * Exponential backoff with jitter: 100 ms doubling up to max_ms.
 * fg_backoff_next() returns the delay to wait before the next attempt.
 */
struct fg_backoff {
	int cur_ms;
	int max_ms;
};
FG_API void fg_backoff_reset(struct fg_backoff *b, int max_ms);
FG_API int fg_backoff_next(struct fg_backoff *b);

#endif
