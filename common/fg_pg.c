/*
 * PostgreSQL connections shared by the worker threads. See fg_pg.h.
 */
#include "fg_pg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* A server silent this long beyond the statement timeout is lost. */
#define SILENCE_MARGIN_MS 10000

/*
 * Why the last wait of this thread gave up, and on which connection:
 * fg_pg_error reports it in place of libpq's "server closed the
 * connection" (the closing was ours). Each connection belongs to one
 * thread.
 */
static __thread const PGconn *gave_up_conn;
static __thread char gave_up_why[96];

enum wait_result { WAIT_READY, WAIT_SILENT, WAIT_ABORT };

void fg_pg_io_init(struct fg_pg_io *io, int abort_fd,
                   const struct fg_pg_settings *s)
{
	io->abort_fd = abort_fd;
	io->idle = NULL;
	io->idle_ctx = NULL;
	io->idle_ms = 0;
	io->silence_ms = s->statement_timeout_ms > INT_MAX - SILENCE_MARGIN_MS
	                     ? INT_MAX
	                     : s->statement_timeout_ms + SILENCE_MARGIN_MS;
}

bool fg_pg_io_aborted(const struct fg_pg_io *io)
{
	struct pollfd p = {.fd = io != NULL ? io->abort_fd : -1,
	                   .events = POLLIN};

	return p.fd >= 0 && poll(&p, 1, 0) > 0 && p.revents != 0;
}

/* Wait for events on the connection's socket, the abort descriptor, or
 * the deadline (fg_mono_ms; 0: none). */
static enum wait_result wait_sock(PGconn *conn, const struct fg_pg_io *io,
                                  short events, int64_t deadline)
{
	struct pollfd p[2] = {
	    {.fd = PQsocket(conn), .events = events},
	    {.fd = io != NULL ? io->abort_fd : -1, .events = POLLIN},
	};

	bool idle = io != NULL && io->idle != NULL && io->idle_ms > 0;

	/* No socket: let libpq report the broken connection. */
	if (p[0].fd < 0)
		return WAIT_READY;
	for (;;) {
		int ms = -1, rc;

		if (deadline > 0) {
			int64_t left = deadline - fg_mono_ms();

			if (left <= 0)
				return WAIT_SILENT;
			ms = left > INT_MAX ? INT_MAX : (int)left;
		}
		if (idle && (ms < 0 || ms > io->idle_ms))
			ms = io->idle_ms;
		rc = poll(p, 2, ms); /* poll skips a descriptor of -1 */
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc > 0 && p[1].revents != 0)
			return WAIT_ABORT;
		if (rc != 0)
			return WAIT_READY; /* an error: libpq will see it too */
		if (idle)
			io->idle(io->idle_ctx);
	}
}

static int64_t silence_deadline(const struct fg_pg_io *io)
{
	return io != NULL && io->silence_ms > 0 ? fg_mono_ms() + io->silence_ms
	                                        : 0;
}

/* Close the connection under libpq after a wait gave up: the socket is
 * shut down and libpq, reading its end, marks the connection bad. */
static void give_up(PGconn *conn, const struct fg_pg_io *io,
                    enum wait_result why)
{
	int fd = PQsocket(conn);

	if (fd >= 0)
		(void)shutdown(fd, SHUT_RDWR);
	(void)PQconsumeInput(conn);
	gave_up_conn = conn;
	if (why == WAIT_ABORT)
		snprintf(gave_up_why, sizeof(gave_up_why),
		         "stopped while waiting for the database");
	else
		snprintf(gave_up_why, sizeof(gave_up_why),
		         "no answer from the database for %d ms, connection "
		         "closed",
		         io->silence_ms);
}

/* Send what libpq holds for the server. 0, or -1 when a wait gave up
 * (errors of the connection itself are left for PQgetResult). */
static int flush_out(PGconn *conn, const struct fg_pg_io *io)
{
	int f;

	while ((f = PQflush(conn)) > 0) {
		enum wait_result w =
		    wait_sock(conn, io, POLLIN | POLLOUT, silence_deadline(io));

		if (w != WAIT_READY) {
			give_up(conn, io, w);
			return -1;
		}
		/* The server may answer (an error) before taking it all. */
		if (PQconsumeInput(conn) == 0)
			return 0;
	}
	return 0;
}

/* After a PQsend* call: flush, then collect the results as PQexec does
 * (the last one; stop at a COPY or a broken connection). */
static PGresult *collect(PGconn *conn, const struct fg_pg_io *io, int sent)
{
	PGresult *last = NULL, *r;

	if (!sent || flush_out(conn, io) != 0)
		return NULL;
	for (;;) {
		while (PQisBusy(conn)) {
			enum wait_result w =
			    wait_sock(conn, io, POLLIN, silence_deadline(io));

			if (w != WAIT_READY) {
				give_up(conn, io, w);
				PQclear(last);
				return NULL;
			}
			if (PQconsumeInput(conn) == 0)
				break; /* PQgetResult reports the error */
		}
		r = PQgetResult(conn);
		if (r == NULL)
			break;
		PQclear(last);
		last = r;
		switch (PQresultStatus(r)) {
		case PGRES_COPY_IN:
		case PGRES_COPY_OUT:
		case PGRES_COPY_BOTH:
			return last;
		default:
			break;
		}
		if (PQstatus(conn) == CONNECTION_BAD)
			break;
	}
	return last;
}

PGresult *fg_pg_exec(PGconn *conn, const struct fg_pg_io *io, const char *sql)
{
	return collect(conn, io, PQsendQuery(conn, sql));
}

PGresult *fg_pg_exec_params(PGconn *conn, const struct fg_pg_io *io,
                            const char *sql, int n, const char *const *vals,
                            const int *lens, const int *fmts)
{
	return collect(
	    conn, io,
	    PQsendQueryParams(conn, sql, n, NULL, vals, lens, fmts, 0));
}

PGresult *fg_pg_prepare(PGconn *conn, const struct fg_pg_io *io,
                        const char *name, const char *sql, int n)
{
	return collect(conn, io, PQsendPrepare(conn, name, sql, n, NULL));
}

PGresult *fg_pg_exec_prepared(PGconn *conn, const struct fg_pg_io *io,
                              const char *name, int n, const char *const *vals)
{
	return collect(conn, io,
	               PQsendQueryPrepared(conn, name, n, vals, NULL, NULL, 0));
}

int fg_pg_put_copy(PGconn *conn, const struct fg_pg_io *io, const char *buf,
                   size_t len)
{
	bool retried = false;

	while (len > 0) {
		/* libpq takes an int; its buffer grows to what it is given. */
		int part = len > (1u << 20) ? 1 << 20 : (int)len;
		int r = PQputCopyData(conn, buf, part);

		if (r < 0)
			return -1;
		if (r == 0) { /* no room: send what is held, then again */
			if (retried || flush_out(conn, io) != 0 ||
			    PQstatus(conn) != CONNECTION_OK)
				return -1;
			retried = true;
			continue;
		}
		retried = false;
		buf += part;
		len -= (size_t)part;
		if (flush_out(conn, io) != 0)
			return -1;
	}
	return PQstatus(conn) == CONNECTION_OK ? 0 : -1;
}

PGresult *fg_pg_end_copy(PGconn *conn, const struct fg_pg_io *io,
                         const char *errmsg)
{
	int r;

	while ((r = PQputCopyEnd(conn, errmsg)) == 0) {
		if (flush_out(conn, io) != 0 || PQstatus(conn) != CONNECTION_OK)
			return NULL;
	}
	return collect(conn, io, r == 1);
}

void fg_pg_finish(PGconn *conn)
{
	if (conn != NULL && conn == gave_up_conn)
		gave_up_conn = NULL;
	PQfinish(conn);
}

/* A connect timeout in seconds (text, NULL: ours) in ms, by libpq's
 * rules: 0 or less waits for ever, 1 means 2. */
static int timeout_ms_of(const char *text, int ours_s)
{
	long s = text != NULL ? strtol(text, NULL, 10) : ours_s;

	if (s <= 0)
		return 0;
	if (s < 2)
		s = 2;
	return s > INT_MAX / 1000 ? INT_MAX : (int)s * 1000;
}

/* Drive the connection attempt to its end. 0, or -1 with err set. */
static int connect_poll(PGconn *conn, const struct fg_pg_io *io, int timeout_ms,
                        char *err, size_t errlen)
{
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	int64_t deadline = timeout_ms > 0 ? fg_mono_ms() + timeout_ms : 0;
	char line[256];

	while (st != PGRES_POLLING_OK) {
		enum wait_result w;

		if (st == PGRES_POLLING_FAILED) {
			fg_seterr(err, errlen, "%s",
			          fg_pg_error(conn, line, sizeof(line)));
			return -1;
		}
		w = wait_sock(conn, io,
		              st == PGRES_POLLING_READING ? POLLIN : POLLOUT,
		              deadline);
		if (w == WAIT_ABORT) {
			fg_seterr(err, errlen,
			          "stopped while connecting to the database");
			return -1;
		}
		if (w == WAIT_SILENT) {
			fg_seterr(err, errlen,
			          "timeout expired after %d ms connecting to "
			          "the database",
			          timeout_ms);
			return -1;
		}
		st = PQconnectPoll(conn);
	}
	return 0;
}

/*
 * One connection attempt: our defaults, then the user's conninfo
 * (expanded from dbname, so anything it sets wins), then the overrides
 * (host, hostaddr, port; NULL: none) that pick one host of a list.
 * timeout_ms bounds the attempt (0: no bound).
 */
static PGconn *connect_one(const struct fg_pg_settings *s,
                           const struct fg_pg_io *io, const char *const over[3],
                           int timeout_ms, char *err, size_t errlen)
{
	char timeout[16], st[64], line[256];
	PGconn *conn;
	PGresult *res;
	size_t n = 8;

	snprintf(timeout, sizeof(timeout), "%d", s->connect_timeout_s);
	const char *keys[12] = {
	    "connect_timeout",     "keepalives",       "keepalives_idle",
	    "keepalives_interval", "keepalives_count", "tcp_user_timeout",
	    "application_name",    "dbname",
	};
	const char *vals[12] = {
	    timeout,
	    "1",
	    "10",
	    "5",
	    "3",
	    "15000",
	    s->application_name,
	    s->conninfo ? s->conninfo : "",
	};
	static const char *const over_keys[3] = {"host", "hostaddr", "port"};

	for (int i = 0; i < 3; i++) {
		if (over != NULL && over[i] != NULL) {
			keys[n] = over_keys[i];
			vals[n++] = over[i];
		}
	}
	keys[n] = vals[n] = NULL;
	/* Host names are resolved in here, before any wait: a conninfo
	 * with hostaddr avoids that lookup. */
	conn = PQconnectStartParams(keys, vals, 1);
	if (conn == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	if (PQstatus(conn) == CONNECTION_BAD ||
	    connect_poll(conn, io, timeout_ms, err, errlen) != 0) {
		if (PQstatus(conn) == CONNECTION_BAD)
			fg_seterr(err, errlen, "%s",
			          fg_pg_error(conn, line, sizeof(line)));
		fg_pg_finish(conn);
		return NULL;
	}
	if (PQsetnonblocking(conn, 1) != 0) {
		fg_seterr(err, errlen,
		          "cannot make the connection nonblocking");
		fg_pg_finish(conn);
		return NULL;
	}
	snprintf(st, sizeof(st), "SET statement_timeout = %d",
	         s->statement_timeout_ms);
	res = fg_pg_exec(conn, io, st);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		fg_seterr(err, errlen, "%s",
		          fg_pg_error(conn, line, sizeof(line)));
		PQclear(res);
		fg_pg_finish(conn);
		return NULL;
	}
	PQclear(res);
	return conn;
}

/* The value of keyword in opts, or NULL when unset or empty. */
static const char *opt_value(const PQconninfoOption *opts, const char *keyword)
{
	for (; opts != NULL && opts->keyword != NULL; opts++)
		if (strcmp(opts->keyword, keyword) == 0)
			return opts->val != NULL && opts->val[0] != '\0'
			           ? opts->val
			           : NULL;
	return NULL;
}

/* Items of a comma-separated list (0 for NULL); *empty is set when one
 * of them is empty. */
static int list_count(const char *list, bool *empty)
{
	int n = 1;

	if (list == NULL)
		return 0;
	for (const char *p = list;; p++) {
		if ((*p == ',' || *p == '\0') && (p == list || p[-1] == ','))
			*empty = true;
		if (*p == '\0')
			break;
		n += *p == ',';
	}
	return n;
}

/* Item i of list, or of a one-item list for every i; NULL for NULL. */
static char *list_item(const char *list, int i)
{
	const char *p = list, *end;

	if (list == NULL)
		return NULL;
	if (strchr(list, ',') != NULL)
		for (; i > 0; i--)
			p = strchr(p, ',') + 1;
	end = strchr(p, ',');
	return strndup(p, end != NULL ? (size_t)(end - p) : strlen(p));
}

/* A host to resolve here: not a socket directory, not an address. */
static bool is_host_name(const char *h)
{
	unsigned char a[sizeof(struct in6_addr)];

	return h != NULL && h[0] != '/' && h[0] != '@' &&
	       inet_pton(AF_INET, h, a) != 1 && inet_pton(AF_INET6, h, a) != 1;
}

/* A lookup handed to glibc's resolver threads; freed by whoever sees it
 * end (a lookup that cannot be cancelled still writes into it). */
struct lookup {
	struct gaicb req;
	struct addrinfo hints;
	char name[256];
};

/*
 * Resolve name with getaddrinfo_a, waiting in slices so that an abort or
 * the timeout (ms, 0: none) ends the wait: libpq would resolve inside
 * PQconnectStart, where nothing can interrupt it. Returns the addresses,
 * or NULL with err set.
 */
static struct addrinfo *resolve(const char *name, const struct fg_pg_io *io,
                                int timeout_ms, char *err, size_t errlen)
{
	struct lookup *l = calloc(1, sizeof(*l));
	struct gaicb *list[1];
	int64_t deadline = timeout_ms > 0 ? fg_mono_ms() + timeout_ms : 0;
	struct addrinfo *res;
	const char *why;
	int rc;

	if (l == NULL || strlen(name) >= sizeof(l->name)) {
		fg_seterr(err, errlen,
		          l ? "host name too long" : "out of memory");
		free(l);
		return NULL;
	}
	memcpy(l->name, name, strlen(name) + 1);
	l->hints.ai_family = AF_UNSPEC;
	l->hints.ai_socktype = SOCK_STREAM;
	l->req.ar_name = l->name;
	l->req.ar_request = &l->hints;
	list[0] = &l->req;
	rc = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
	if (rc != 0) {
		fg_seterr(err, errlen, "cannot resolve %.100s: %s", name,
		          gai_strerror(rc));
		free(l);
		return NULL;
	}
	while ((rc = gai_error(&l->req)) == EAI_INPROGRESS) {
		struct timespec slice = {0, 50 * 1000000L};

		if (fg_pg_io_aborted(io)) {
			why = "stopped while resolving";
			goto give_up;
		}
		if (deadline > 0 && fg_mono_ms() >= deadline) {
			why = "timeout expired resolving";
			goto give_up;
		}
		(void)gai_suspend((const struct gaicb *const *)list, 1, &slice);
	}
	res = l->req.ar_result;
	free(l);
	if (rc != 0) {
		freeaddrinfo(res);
		fg_seterr(err, errlen, "cannot resolve %.100s: %s", name,
		          gai_strerror(rc));
		return NULL;
	}
	return res;
give_up:
	fg_seterr(err, errlen, "%s %.100s", why, name);
	rc = gai_cancel(&l->req);
	if (rc == EAI_CANCELED || rc == EAI_ALLDONE) {
		if (gai_error(&l->req) == 0)
			freeaddrinfo(l->req.ar_result);
		free(l);
	}
	/* EAI_NOTCANCELED: a resolver thread is still at it and writes into
	 * *l when done; it is left to it (a few hundred bytes, once per
	 * hung lookup). */
	return NULL;
}

/* Append "host what: msg" to err (used bytes so far in *used). */
static void add_error(char *err, size_t errlen, size_t *used, const char *what,
                      const char *msg)
{
	int w;

	if (err == NULL || *used >= errlen)
		return;
	w = snprintf(err + *used, errlen - *used, "%shost %s: %s",
	             *used > 0 ? "; " : "", what, msg);
	*used += w > 0 ? (size_t)w : 0;
}

/*
 * One host of the conninfo (over: host, hostaddr, port; NULL for each
 * not given). A host name without hostaddr is resolved here, and each of
 * its addresses is tried in turn with the whole connect timeout, as
 * libpq's blocking connect does; libpq is then given the address
 * (hostaddr) and keeps the name for TLS verification and the password
 * file.
 */
static PGconn *connect_host(const struct fg_pg_settings *s,
                            const struct fg_pg_io *io, char *const over[3],
                            int timeout_ms, char *err, size_t errlen,
                            size_t *used)
{
	char one[FG_ERRLEN], what[160], ip[INET6_ADDRSTRLEN];
	const char *name = over[0] ? over[0] : over[1];
	struct addrinfo *res, *ai;
	PGconn *conn = NULL;

	if (over[1] != NULL || !is_host_name(over[0])) {
		conn = connect_one(s, io, (const char *const *)over, timeout_ms,
		                   one, sizeof(one));
		if (conn == NULL)
			add_error(err, errlen, used, name ? name : "default",
			          one);
		return conn;
	}
	res = resolve(over[0], io, timeout_ms, one, sizeof(one));
	if (res == NULL)
		add_error(err, errlen, used, over[0], one);
	for (ai = res; ai != NULL && conn == NULL; ai = ai->ai_next) {
		const char *attempt[3] = {over[0], ip, over[2]};
		const struct addrinfo *seen;

		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip),
		                NULL, 0, NI_NUMERICHOST) != 0)
			continue;
		/* The same address once, whatever the lookup repeats. */
		for (seen = res; seen != ai; seen = seen->ai_next)
			if (seen->ai_addrlen == ai->ai_addrlen &&
			    memcmp(seen->ai_addr, ai->ai_addr,
			           ai->ai_addrlen) == 0)
				break;
		if (seen != ai)
			continue;
		conn =
		    connect_one(s, io, attempt, timeout_ms, one, sizeof(one));
		if (conn == NULL) {
			snprintf(what, sizeof(what), "%.100s (%s)", over[0],
			         ip);
			add_error(err, errlen, used, what, one);
			if (fg_pg_io_aborted(io))
				break;
		}
	}
	freeaddrinfo(res);
	return conn;
}

/*
 * The hosts of the conninfo (or of the environment: PGHOST...) are tried
 * one at a time, in order, each address of each host with the whole
 * connect timeout. Lists libpq itself would refuse, or with empty items,
 * and a conninfo it cannot parse, are left to it, and so is a conninfo
 * naming no host (the default socket).
 */
PGconn *fg_pg_connect(const struct fg_pg_settings *s, const struct fg_pg_io *io,
                      char *err, size_t errlen)
{
	PQconninfoOption *mine, *defs;
	const char *host, *addr, *port;
	char *perr = NULL;
	int nhost, naddr, nport, n, timeout_ms;
	bool empty = false;
	PGconn *conn = NULL;
	size_t used = 0;

	mine = PQconninfoParse(s->conninfo ? s->conninfo : "", &perr);
	PQfreemem(perr);
	defs = PQconndefaults();
	/* The conninfo's value, else the environment's (PGHOST...). */
	host = opt_value(mine, "host") ? opt_value(mine, "host")
	                               : opt_value(defs, "host");
	addr = opt_value(mine, "hostaddr") ? opt_value(mine, "hostaddr")
	                                   : opt_value(defs, "hostaddr");
	port = opt_value(mine, "port") ? opt_value(mine, "port")
	                               : opt_value(defs, "port");
	timeout_ms = timeout_ms_of(opt_value(mine, "connect_timeout"),
	                           s->connect_timeout_s);
	nhost = list_count(host, &empty);
	naddr = list_count(addr, &empty);
	nport = list_count(port, &empty);
	n = nhost > naddr ? nhost : naddr;
	if (mine == NULL || n < 1 || empty || (nhost != 0 && nhost != n) ||
	    (naddr != 0 && naddr != n) || (nport > 1 && nport != n)) {
		conn = connect_one(s, io, NULL, timeout_ms, err, errlen);
		goto out;
	}
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	for (int i = 0; i < n && conn == NULL; i++) {
		char *over[3] = {list_item(host, i), list_item(addr, i),
		                 list_item(port, i)};

		if ((host != NULL && over[0] == NULL) ||
		    (addr != NULL && over[1] == NULL) ||
		    (port != NULL && over[2] == NULL))
			add_error(err, errlen, &used, "-", "out of memory");
		else
			conn = connect_host(s, io, over, timeout_ms, err,
			                    errlen, &used);
		for (int k = 0; k < 3; k++)
			free(over[k]);
		if (conn == NULL && fg_pg_io_aborted(io)) {
			fg_seterr(err, errlen,
			          "stopped while connecting to the database");
			break;
		}
	}
out:
	PQconninfoFree(mine);
	PQconninfoFree(defs);
	return conn;
}

const char *fg_pg_error(PGconn *conn, char *buf, size_t len)
{
	const char *msg = conn ? PQerrorMessage(conn) : "no connection";
	size_t i;

	if (conn != NULL && conn == gave_up_conn)
		msg = gave_up_why;
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
