/*
 * Unit tests of common helpers: fg_worker_begin gives a worker thread a
 * descriptor table of its own that holds only the descriptors it was
 * told to keep; fg_tick_due lets a TICK's work through once per step of
 * the coarse clock.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fg_common.h"
#include "unit_run.h"

struct probe {
	int keep[3];
	size_t nkeep;
	int dropped[3]; /* the broker's, not kept */
	size_t ndropped;
	/* filled in by the worker */
	bool dropped_closed[3];
	bool kept_open[3];
	char got; /* read through keep[0], a pipe */
	char name[16];
	int own_fd; /* a file the worker opened */
	ino_t own_ino;
};

static bool is_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

static void *worker(void *arg)
{
	struct probe *pr = arg;
	struct stat st;

	fg_worker_begin("fg-unit", pr->keep, pr->nkeep);
	for (size_t i = 0; i < pr->ndropped; i++)
		pr->dropped_closed[i] = !is_open(pr->dropped[i]);
	for (size_t i = 0; i < pr->nkeep; i++)
		pr->kept_open[i] = is_open(pr->keep[i]);
	if (read(pr->keep[0], &pr->got, 1) != 1)
		pr->got = '\0';
	pthread_getname_np(pthread_self(), pr->name, sizeof(pr->name));
	pr->own_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (pr->own_fd >= 0 && fstat(pr->own_fd, &st) == 0)
		pr->own_ino = st.st_ino;
	/* Left open on purpose: the thread's table closes it when the thread
	 * returns, and the main thread must not see it meanwhile. */
	return NULL;
}

static int open_null(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 3);
	return fd;
}

START_TEST(worker_keeps_only_what_it_is_told_to)
{
	struct probe pr;
	int p[2], extra;
	pthread_t t;
	struct stat st;

	memset(&pr, 0, sizeof(pr));
	pr.own_fd = -1;
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	pr.dropped[0] = open_null();
	extra = open_null();
	pr.dropped[1] = open_null();
	pr.dropped[2] = p[1]; /* the write end stays the broker's */
	pr.ndropped = 3;
	/* Out of order, with a dropped descriptor between the kept ones. */
	pr.keep[0] = p[0];
	pr.keep[1] = extra;
	pr.nkeep = 2;
	ck_assert_int_eq(write(p[1], "k", 1), 1);

	ck_assert_int_eq(pthread_create(&t, NULL, worker, &pr), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);

	for (size_t i = 0; i < pr.ndropped; i++) {
		ck_assert_msg(
		    pr.dropped_closed[i],
		    "descriptor %d not kept is still open in the worker",
		    pr.dropped[i]);
		/* ... and untouched in the broker's table. */
		ck_assert(is_open(pr.dropped[i]));
	}
	for (size_t i = 0; i < pr.nkeep; i++)
		ck_assert_msg(pr.kept_open[i], "kept descriptor %d was closed",
		              pr.keep[i]);
	ck_assert_int_eq(pr.got, 'k');
	ck_assert_str_eq(pr.name, "fg-unit");
	/* What the worker opened was its own: gone with it, and never in
	 * the broker's table. */
	ck_assert_int_ge(pr.own_fd, 3);
	ck_assert(pr.own_ino != 0);
	ck_assert(!is_open(pr.own_fd) ||
	          (fstat(pr.own_fd, &st) == 0 && st.st_ino != pr.own_ino));
	close(p[0]);
	close(p[1]);
	close(extra);
	close(pr.dropped[0]);
	close(pr.dropped[1]);
}
END_TEST

START_TEST(worker_closes_every_copy_it_was_not_given)
{
	struct probe pr;
	int fds[3], p[2];
	pthread_t t;

	memset(&pr, 0, sizeof(pr));
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	for (int i = 0; i < 3; i++)
		fds[i] = pr.dropped[i] = open_null();
	pr.ndropped = 3;
	/* Three neighbours above the one kept: all gone in the worker. */
	pr.keep[0] = p[0];
	pr.nkeep = 1;
	ck_assert_int_eq(write(p[1], "z", 1), 1);
	ck_assert_int_eq(pthread_create(&t, NULL, worker, &pr), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	for (int i = 0; i < 3; i++) {
		ck_assert(pr.dropped_closed[i]);
		ck_assert(is_open(fds[i]));
		close(fds[i]);
	}
	ck_assert_int_eq(pr.got, 'z');
	close(p[0]);
	close(p[1]);
}
END_TEST

START_TEST(tick_work_runs_once_per_clock_step)
{
	int64_t last = 0;
	struct timespec ten_ms = {0, 10 * 1000 * 1000};
	int due = 0, i;

	ck_assert(fg_tick_due(&last)); /* the first TICK does its work */
	ck_assert(last != 0);
	/* A burst of TICKs within a few microseconds: at most the one that
	 * crosses a step of the clock is due. */
	for (i = 0; i < 100; i++)
		due += fg_tick_due(&last);
	ck_assert_int_le(due, 1);
	nanosleep(&ten_ms, NULL);
	ck_assert(fg_tick_due(&last)); /* time moved on: due again */
}
END_TEST

START_TEST(string_and_byte_hashes_agree)
{
	/* The FNV-1a test vectors, and a string hashed either way. */
	ck_assert_uint_eq(fg_hash_bytes("", 0), 0xcbf29ce484222325ULL);
	ck_assert_uint_eq(fg_hash_str("a"), 0xaf63dc4c8601ec8cULL);
	ck_assert_uint_eq(fg_hash_bytes("foobar", 6), 0x85944171f73967e8ULL);
	ck_assert_uint_eq(fg_hash_str("water/north/p/readings"),
	                  fg_hash_bytes("water/north/p/readings", 22));
	/* Bytes after a NUL count. */
	ck_assert_uint_ne(fg_hash_bytes("a\0b", 3), fg_hash_bytes("a\0c", 3));
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("common");
	TCase *tc = tcase_create("worker");
	TCase *tick = tcase_create("helpers");

	tcase_add_test(tc, worker_keeps_only_what_it_is_told_to);
	tcase_add_test(tc, worker_closes_every_copy_it_was_not_given);
	suite_add_tcase(s, tc);
	tcase_add_test(tick, tick_work_runs_once_per_clock_step);
	tcase_add_test(tick, string_and_byte_hashes_agree);
	suite_add_tcase(s, tick);
	return s;
}

int main(void)
{
	return unit_run(suite());
}
