/*
 * Unit tests of the workers' database calls (common/fg_pg.c) against a
 * fake server on a loopback socket that speaks just enough of the
 * protocol to let libpq connect, then stops answering, or stops reading.
 * Every wait must end: at the abort descriptor, at the connect timeout,
 * or after the server's silence, with the connection marked bad and a
 * message that says which.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fg_pg.h"
#include "unit_run.h"

enum fake_mode {
	FAKE_MUTE,      /* accepts the TCP connection, never says a word */
	FAKE_SILENT,    /* connects the client, then answers nothing */
	FAKE_NO_READER, /* connects, answers COPY, then reads nothing */
};

struct fake {
	enum fake_mode mode;
	int listen_fd, port;
	pthread_t thread;
	int stop[2]; /* the test tells the server to go */
};

static int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	return write(fd, buf, len) == (ssize_t)len ? 0 : -1;
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

/* One message from the client after startup: its type. */
static int read_message(int fd, char *type)
{
	unsigned char head[5];
	char body[4096];
	uint32_t len;

	if (read_full(fd, head, 5) != 0)
		return -1;
	*type = (char)head[0];
	len = be32(head + 1) - 4;
	while (len > 0) {
		size_t part = len > sizeof(body) ? sizeof(body) : len;
		if (read_full(fd, body, part) != 0)
			return -1;
		len -= (uint32_t)part;
	}
	return 0;
}

static const char READY[] = {'Z', 0, 0, 0, 5, 'I'};

/* The startup exchange: no SSL, trust, ready. */
static int startup(int fd)
{
	static const char auth_ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0};
	unsigned char head[8];
	char rest[1024];
	uint32_t len;

	for (;;) {
		if (read_full(fd, head, 8) != 0)
			return -1;
		len = be32(head);
		if (len < 8 || len - 8 > sizeof(rest) ||
		    read_full(fd, rest, len - 8) != 0)
			return -1;
		if (be32(head + 4) != 80877103) /* not SSLRequest */
			break;
		if (write_full(fd, "N", 1) != 0)
			return -1;
	}
	return write_full(fd, auth_ok, sizeof(auth_ok)) == 0 &&
	               write_full(fd, READY, sizeof(READY)) == 0
	           ? 0
	           : -1;
}

static void *fake_main(void *arg)
{
	static const char set_done[] = {'C', 0, 0, 0, 8, 'S', 'E', 'T', 0};
	static const char copy_in[] = {'G', 0, 0, 0, 7, 0, 0, 0};
	struct fake *f = arg;
	char type, byte;
	int fd = accept(f->listen_fd, NULL, NULL);

	if (fd < 0)
		return NULL;
	if (f->mode == FAKE_MUTE || startup(fd) != 0)
		goto hold;
	/* SET statement_timeout, from fg_pg_connect. */
	if (read_message(fd, &type) != 0 ||
	    write_full(fd, set_done, sizeof(set_done)) != 0 ||
	    write_full(fd, READY, sizeof(READY)) != 0)
		goto hold;
	if (f->mode == FAKE_NO_READER) {
		if (read_message(fd, &type) != 0 ||
		    write_full(fd, copy_in, sizeof(copy_in)) != 0)
			goto hold;
	}
hold:
	/* Keep the connection open and unanswered until the test ends. */
	if (read(f->stop[0], &byte, 1) < 0)
		byte = 0;
	close(fd);
	return NULL;
}

/* A fake server on ip (IPv4) and port (0: any free one). */
static void fake_start_at(struct fake *f, enum fake_mode mode, const char *ip,
                          int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);

	f->mode = mode;
	ck_assert_int_eq(inet_pton(AF_INET, ip, &a.sin_addr), 1);
	a.sin_port = htons((uint16_t)port);
	f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(f->listen_fd, 0);
	ck_assert_int_eq(bind(f->listen_fd, (struct sockaddr *)&a, sizeof(a)),
	                 0);
	ck_assert_int_eq(listen(f->listen_fd, 4), 0);
	ck_assert_int_eq(
	    getsockname(f->listen_fd, (struct sockaddr *)&a, &alen), 0);
	f->port = ntohs(a.sin_port);
	ck_assert_int_eq(pipe(f->stop), 0);
	ck_assert_int_eq(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_start(struct fake *f, enum fake_mode mode)
{
	fake_start_at(f, mode, "127.0.0.1", 0);
}

/*
 * A resolver for the tests, in place of glibc's getaddrinfo_a family
 * (the test binary's definitions win over libc's for fg_pg.o, linked into
 * it): a lookup either answers at once with dns_addrs, or never ends.
 */
static enum { DNS_ADDRS, DNS_HANG } dns_mode;
static const char *dns_addrs[4];
static char dns_asked[256];
static struct gaicb *dns_req;
static int dns_cancelled;

int getaddrinfo_a(int mode, struct gaicb *list[], int n, struct sigevent *sev)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST,
	                         .ai_socktype = SOCK_STREAM};
	struct addrinfo **tail;

	(void)mode;
	(void)sev;
	ck_assert_int_eq(n, 1);
	dns_req = list[0];
	snprintf(dns_asked, sizeof(dns_asked), "%s", list[0]->ar_name);
	list[0]->ar_result = NULL;
	if (dns_mode == DNS_HANG)
		return 0;
	tail = &list[0]->ar_result;
	for (int i = 0; i < 4 && dns_addrs[i] != NULL; i++) {
		ck_assert_int_eq(getaddrinfo(dns_addrs[i], NULL, &hints, tail),
		                 0);
		while (*tail != NULL)
			tail = &(*tail)->ai_next;
	}
	return 0;
}

int gai_error(struct gaicb *req)
{
	ck_assert_ptr_eq(req, dns_req);
	if (dns_mode == DNS_HANG)
		return dns_cancelled ? EAI_CANCELED : EAI_INPROGRESS;
	return req->ar_result != NULL ? 0 : EAI_NONAME;
}

int gai_suspend(const struct gaicb *const list[], int n,
                const struct timespec *timeout)
{
	(void)list;
	(void)n;
	if (dns_mode == DNS_HANG) {
		nanosleep(timeout, NULL);
		return EAI_AGAIN;
	}
	return 0;
}

int gai_cancel(struct gaicb *req)
{
	ck_assert_ptr_eq(req, dns_req);
	dns_cancelled = 1;
	return EAI_CANCELED;
}

static void fake_stop(struct fake *f)
{
	/* A server thread still in accept returns from it. */
	if (write(f->stop[1], "x", 1) != 1)
		ck_abort_msg("cannot stop the fake server");
	shutdown(f->listen_fd, SHUT_RDWR);
	pthread_join(f->thread, NULL);
	close(f->listen_fd);
	close(f->stop[0]);
	close(f->stop[1]);
}

struct settings {
	char conninfo[160];
	struct fg_pg_settings s;
};

static void settings_for(struct settings *st, const struct fake *f)
{
	snprintf(st->conninfo, sizeof(st->conninfo),
	         "host=127.0.0.1 port=%d user=u dbname=d sslmode=disable "
	         "gssencmode=disable",
	         f->port);
	st->s.conninfo = st->conninfo;
	st->s.application_name = "fg-unit";
	st->s.connect_timeout_s = 2;
	st->s.statement_timeout_ms = 1000;
}

/* An abort pipe, written after a delay by another thread. */
struct later {
	int pipe[2], ms;
	pthread_t thread;
};

static void *later_main(void *arg)
{
	struct later *l = arg;
	struct timespec ts = {l->ms / 1000, (long)(l->ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
	if (write(l->pipe[1], "x", 1) != 1)
		return NULL;
	return NULL;
}

static void later_start(struct later *l, int ms)
{
	l->ms = ms;
	ck_assert_int_eq(pipe(l->pipe), 0);
	ck_assert_int_eq(pthread_create(&l->thread, NULL, later_main, l), 0);
}

static void later_end(struct later *l)
{
	pthread_join(l->thread, NULL);
	close(l->pipe[0]);
	close(l->pipe[1]);
}

static int64_t ms_since(int64_t t0)
{
	return fg_mono_ms() - t0;
}

static PGconn *connect_ok(struct settings *st, struct fg_pg_io *io)
{
	char err[FG_ERRLEN] = "";
	PGconn *c = fg_pg_connect(&st->s, io, err, sizeof(err));

	ck_assert_msg(c != NULL, "connect: %s", err);
	ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
	ck_assert_int_eq(PQisnonblocking(c), 1);
	return c;
}

START_TEST(connect_to_a_mute_server_ends_at_the_connect_timeout)
{
	struct fake f;
	struct settings st;
	struct fg_pg_io io;
	char err[FG_ERRLEN] = "";
	int64_t t0;

	fake_start(&f, FAKE_MUTE);
	settings_for(&st, &f);
	fg_pg_io_init(&io, -1, &st.s);
	t0 = fg_mono_ms();
	ck_assert_ptr_null(fg_pg_connect(&st.s, &io, err, sizeof(err)));
	ck_assert_int_ge(ms_since(t0), 1900);
	ck_assert_msg(strstr(err, "timeout expired after 2000 ms") != NULL,
	              "%s", err);
	fake_stop(&f);
}
END_TEST

START_TEST(connect_gives_up_when_aborted)
{
	struct fake f;
	struct settings st;
	struct fg_pg_io io;
	struct later l;
	char err[FG_ERRLEN] = "";
	int64_t t0;

	fake_start(&f, FAKE_MUTE);
	settings_for(&st, &f);
	st.s.connect_timeout_s = 600;
	later_start(&l, 150);
	fg_pg_io_init(&io, l.pipe[0], &st.s);
	t0 = fg_mono_ms();
	ck_assert_ptr_null(fg_pg_connect(&st.s, &io, err, sizeof(err)));
	/* Well before any timeout of the connection's own. */
	ck_assert_int_lt(ms_since(t0), 5000);
	ck_assert_str_eq(err, "stopped while connecting to the database");
	ck_assert(fg_pg_io_aborted(&io));
	later_end(&l);
	fake_stop(&f);
}
END_TEST

START_TEST(a_silent_server_is_given_up_after_the_silence)
{
	struct fake f;
	struct settings st;
	struct fg_pg_io io;
	char line[256];
	PGconn *c;
	int64_t t0;

	fake_start(&f, FAKE_SILENT);
	settings_for(&st, &f);
	fg_pg_io_init(&io, -1, &st.s);
	/* Above the statement timeout, so that only a server that stopped
	 * answering reaches it. */
	ck_assert_int_gt(io.silence_ms, st.s.statement_timeout_ms);
	c = connect_ok(&st, &io);
	io.silence_ms = 300;
	t0 = fg_mono_ms();
	ck_assert_ptr_null(fg_pg_exec(c, &io, "SELECT 1"));
	ck_assert_int_ge(ms_since(t0), 280);
	ck_assert_int_eq(PQstatus(c), CONNECTION_BAD);
	ck_assert_str_eq(fg_pg_error(c, line, sizeof(line)),
	                 "no answer from the database for 300 ms, "
	                 "connection closed");
	fg_pg_finish(c);
	fake_stop(&f);
}
END_TEST

static void count_idle(void *ctx)
{
	(*(int *)ctx)++;
}

/* The waiting thread's own work goes on while the server is silent. */
START_TEST(a_wait_for_a_silent_server_calls_the_idle_hook)
{
	struct fake f;
	struct settings st;
	struct fg_pg_io io;
	PGconn *c;
	int calls = 0;

	fake_start(&f, FAKE_SILENT);
	settings_for(&st, &f);
	fg_pg_io_init(&io, -1, &st.s);
	ck_assert_ptr_null(io.idle);
	c = connect_ok(&st, &io);
	io.silence_ms = 400;
	io.idle = count_idle;
	io.idle_ctx = &calls;
	io.idle_ms = 50;
	ck_assert_ptr_null(fg_pg_exec(c, &io, "SELECT 1"));
	ck_assert_int_eq(PQstatus(c), CONNECTION_BAD);
	/* About one call per 50 ms of the 400: fewer when the machine is
	 * slow, never more. */
	ck_assert_int_ge(calls, 3);
	ck_assert_int_le(calls, 9);
	fg_pg_finish(c);
	fake_stop(&f);
}
END_TEST

START_TEST(a_query_gives_up_when_aborted)
{
	struct fake f;
	struct settings st;
	struct fg_pg_io io;
	struct later l;
	char line[256];
	const char *vals[1] = {"x"};
	PGconn *c;

	fake_start(&f, FAKE_SILENT);
	settings_for(&st, &f);
	later_start(&l, 500);
	fg_pg_io_init(&io, l.pipe[0], &st.s);
	io.silence_ms = 0; /* no limit: only the abort ends the wait */
	c = connect_ok(&st, &io);
	ck_assert(!fg_pg_io_aborted(&io));
	ck_assert_ptr_null(
	    fg_pg_exec_params(c, &io, "SELECT $1", 1, vals, NULL, NULL));
	ck_assert(fg_pg_io_aborted(&io));
	ck_assert_int_eq(PQstatus(c), CONNECTION_BAD);
	ck_assert_str_eq(fg_pg_error(c, line, sizeof(line)),
	                 "stopped while waiting for the database");
	/* A connection given up on takes no more queries. */
	ck_assert_ptr_null(fg_pg_exec(c, &io, "SELECT 2"));
	fg_pg_finish(c);
	later_end(&l);
	fake_stop(&f);
}
END_TEST

START_TEST(each_host_of_a_list_gets_the_whole_connect_timeout)
{
	struct fake mute, good;
	struct settings st;
	struct fg_pg_io io;
	char err[FG_ERRLEN] = "";
	PGconn *c;
	int64_t t0;

	fake_start(&mute, FAKE_MUTE);
	fake_start(&good, FAKE_SILENT);
	settings_for(&st, &mute);
	snprintf(st.conninfo, sizeof(st.conninfo),
	         "host=127.0.0.1,localhost hostaddr=127.0.0.1,127.0.0.1 "
	         "port=%d,%d user=u dbname=d sslmode=disable "
	         "gssencmode=disable",
	         mute.port, good.port);
	fg_pg_io_init(&io, -1, &st.s);
	t0 = fg_mono_ms();
	/* The first host takes the connection and never answers: after its
	 * timeout the second is tried, and answers. */
	c = fg_pg_connect(&st.s, &io, err, sizeof(err));
	ck_assert_msg(c != NULL, "connect: %s", err);
	ck_assert_int_ge(ms_since(t0), 1900);
	ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
	ck_assert_int_eq(strtol(PQport(c), NULL, 10), good.port);
	fg_pg_finish(c);
	fake_stop(&good);
	fake_stop(&mute);

	/* Both mute: each host's failure is reported. */
	fake_start(&mute, FAKE_MUTE);
	fake_start(&good, FAKE_MUTE);
	snprintf(st.conninfo, sizeof(st.conninfo),
	         "postgresql://u@127.0.0.1:%d,127.0.0.2:%d/d?sslmode=disable"
	         "&gssencmode=disable",
	         mute.port, good.port);
	ck_assert_ptr_null(fg_pg_connect(&st.s, &io, err, sizeof(err)));
	ck_assert_msg(strstr(err, "host 127.0.0.1: timeout expired") != NULL &&
	                  strstr(err, "; host 127.0.0.2: ") != NULL,
	              "%s", err);
	fake_stop(&good);
	fake_stop(&mute);
}
END_TEST

START_TEST(each_address_of_a_host_name_gets_the_whole_connect_timeout)
{
	struct fake mute, good;
	struct settings st;
	struct fg_pg_io io;
	char err[FG_ERRLEN] = "";
	PGconn *c;
	int64_t t0;

	fake_start(&good, FAKE_SILENT);
	fake_start_at(&mute, FAKE_MUTE, "127.0.0.2", good.port);
	settings_for(&st, &good);
	snprintf(st.conninfo, sizeof(st.conninfo),
	         "host=db.fleet.test port=%d user=u dbname=d sslmode=disable "
	         "gssencmode=disable",
	         good.port);
	dns_mode = DNS_ADDRS;
	dns_addrs[0] = "127.0.0.2";
	dns_addrs[1] = "127.0.0.1";
	dns_addrs[2] = NULL;
	fg_pg_io_init(&io, -1, &st.s);
	t0 = fg_mono_ms();
	c = fg_pg_connect(&st.s, &io, err, sizeof(err));
	ck_assert_msg(c != NULL, "connect: %s", err);
	ck_assert_str_eq(dns_asked, "db.fleet.test");
	/* The first address took the connection and never answered; after
	 * its timeout the second was tried, under the same name. */
	ck_assert_int_ge(ms_since(t0), 1900);
	ck_assert_str_eq(PQhost(c), "db.fleet.test");
	ck_assert_str_eq(PQhostaddr(c), "127.0.0.1");
	fg_pg_finish(c);

	/* No address at all: the lookup's error, naming the host. */
	dns_addrs[0] = NULL;
	ck_assert_ptr_null(fg_pg_connect(&st.s, &io, err, sizeof(err)));
	ck_assert_msg(strstr(err, "host db.fleet.test: cannot resolve "
	                          "db.fleet.test") != NULL,
	              "%s", err);
	fake_stop(&mute);
	fake_stop(&good);
}
END_TEST

START_TEST(a_lookup_that_never_ends_is_given_up)
{
	struct settings st;
	struct fg_pg_io io;
	struct later l;
	char err[FG_ERRLEN] = "";
	struct fake f;
	int64_t t0;

	fake_start(&f, FAKE_SILENT);
	settings_for(&st, &f);
	snprintf(st.conninfo, sizeof(st.conninfo),
	         "host=db.fleet.test port=%d user=u dbname=d sslmode=disable",
	         f.port);
	dns_mode = DNS_HANG;
	dns_cancelled = 0;
	fg_pg_io_init(&io, -1, &st.s);
	t0 = fg_mono_ms();
	ck_assert_ptr_null(fg_pg_connect(&st.s, &io, err, sizeof(err)));
	ck_assert_int_ge(ms_since(t0), 1900);
	ck_assert_msg(strstr(err, "timeout expired resolving db.fleet.test") !=
	                  NULL,
	              "%s", err);
	ck_assert(dns_cancelled);

	/* With no timeout, an abort ends it. */
	dns_cancelled = 0;
	st.s.connect_timeout_s = 0;
	later_start(&l, 150);
	fg_pg_io_init(&io, l.pipe[0], &st.s);
	t0 = fg_mono_ms();
	ck_assert_ptr_null(fg_pg_connect(&st.s, &io, err, sizeof(err)));
	ck_assert_int_lt(ms_since(t0), 1900);
	ck_assert_str_eq(err, "stopped while connecting to the database");
	ck_assert(dns_cancelled);
	later_end(&l);
	fake_stop(&f);
}
END_TEST

START_TEST(copy_to_a_server_that_stops_reading_ends)
{
	struct fake f;
	struct settings st;
	struct fg_pg_io io;
	char line[256];
	size_t len = 8u << 20, sent = 0;
	char *chunk = malloc(len);
	PGresult *res;
	PGconn *c;
	int rc = 0;

	ck_assert_ptr_nonnull(chunk);
	memset(chunk, 'a', len);
	fake_start(&f, FAKE_NO_READER);
	settings_for(&st, &f);
	fg_pg_io_init(&io, -1, &st.s);
	c = connect_ok(&st, &io);
	io.silence_ms = 300;
	res = fg_pg_exec(c, &io, "COPY t FROM STDIN");
	ck_assert_int_eq(PQresultStatus(res), PGRES_COPY_IN);
	PQclear(res);
	/* The socket's buffers hold a few megabytes; then sending waits,
	 * and the silence ends the wait. */
	while (sent < (256u << 20) &&
	       (rc = fg_pg_put_copy(c, &io, chunk, len)) == 0)
		sent += len;
	ck_assert_int_eq(rc, -1);
	ck_assert_int_eq(PQstatus(c), CONNECTION_BAD);
	ck_assert_str_eq(fg_pg_error(c, line, sizeof(line)),
	                 "no answer from the database for 300 ms, "
	                 "connection closed");
	res = fg_pg_end_copy(c, &io, NULL);
	ck_assert(res == NULL || PQresultStatus(res) == PGRES_FATAL_ERROR);
	PQclear(res);
	/* Closing a connection with unsent data does not wait either. */
	fg_pg_finish(c);
	free(chunk);
	fake_stop(&f);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("pg");
	TCase *tc = tcase_create("waits");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc,
	               connect_to_a_mute_server_ends_at_the_connect_timeout);
	tcase_add_test(tc, connect_gives_up_when_aborted);
	tcase_add_test(tc, a_silent_server_is_given_up_after_the_silence);
	tcase_add_test(tc, a_wait_for_a_silent_server_calls_the_idle_hook);
	tcase_add_test(tc, a_query_gives_up_when_aborted);
	tcase_add_test(tc, copy_to_a_server_that_stops_reading_ends);
	tcase_add_test(tc, each_host_of_a_list_gets_the_whole_connect_timeout);
	tcase_add_test(
	    tc, each_address_of_a_host_name_gets_the_whole_connect_timeout);
	tcase_add_test(tc, a_lookup_that_never_ends_is_given_up);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return unit_run(suite());
}
