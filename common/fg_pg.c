/*
 * PostgreSQL connection setup shared by the worker threads.
 */
#include "fg_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

PGconn *fg_pg_connect(const struct fg_pg_settings *s, char *err, size_t errlen)
{
	char timeout[16], st[64], line[256];
	PGconn *conn;
	PGresult *res;

	snprintf(timeout, sizeof(timeout), "%d", s->connect_timeout_s);
	/* Our defaults come first; the user's conninfo (expanded from
	 * dbname) comes last, so anything it sets wins. */
	const char *const keys[] = {
	    "connect_timeout",     "keepalives",       "keepalives_idle",
	    "keepalives_interval", "keepalives_count", "tcp_user_timeout",
	    "application_name",    "dbname",           NULL,
	};
	const char *const vals[] = {
	    timeout,
	    "1",
	    "10",
	    "5",
	    "3",
	    "15000",
	    s->application_name,
	    s->conninfo ? s->conninfo : "",
	    NULL,
	};

	conn = PQconnectdbParams(keys, vals, 1);
	if (conn == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		fg_seterr(err, errlen, "%s",
		          fg_pg_error(conn, line, sizeof(line)));
		PQfinish(conn);
		return NULL;
	}
	snprintf(st, sizeof(st), "SET statement_timeout = %d",
	         s->statement_timeout_ms);
	res = PQexec(conn, st);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		fg_seterr(err, errlen, "%s",
		          fg_pg_error(conn, line, sizeof(line)));
		PQclear(res);
		PQfinish(conn);
		return NULL;
	}
	PQclear(res);
	return conn;
}

const char *fg_pg_error(PGconn *conn, char *buf, size_t len)
{
	const char *msg = conn ? PQerrorMessage(conn) : "no connection";
	size_t i;

	snprintf(buf, len, "%s", msg && *msg ? msg : "unknown error");
	/* libpq messages span lines; a log line must not. */
	for (i = 0; buf[i] != '\0'; i++) {
		if (buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t')
			buf[i] = ' ';
	}
	while (i > 0 && buf[i - 1] == ' ')
		buf[--i] = '\0';
	return buf;
}

void fg_backoff_reset(struct fg_backoff *b, int max_ms)
{
	b->cur_ms = 0;
	b->max_ms = max_ms;
}

int fg_backoff_next(struct fg_backoff *b)
{
	int d;

	b->cur_ms = b->cur_ms == 0 ? 100 : b->cur_ms * 2;
	if (b->cur_ms > b->max_ms)
		b->cur_ms = b->max_ms;
	/* Up to 25% jitter, so that brokers restarted together do not
	 * reconnect in lockstep. */
	d = b->cur_ms - (int)(random() % (b->cur_ms / 4 + 1));
	return d > 0 ? d : 1;
}
