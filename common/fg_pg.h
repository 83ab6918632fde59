/*
 * PostgreSQL connections of the worker threads.
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
 * Connect with TCP keepalives, a connect timeout and a TCP user timeout
 * (so a dead or frozen server is noticed), then set the statement
 * timeout. Settings in conninfo override these defaults. Returns the
 * connection, or NULL with a message (no credentials in it) in err.
 */
FG_API PGconn *fg_pg_connect(const struct fg_pg_settings *s, char *err,
                             size_t errlen);

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
