/*
 * Small helpers used everywhere: clocks, error strings, string hashing.
 */
#include "fg_common.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto_broker.h>

#include "fg_log.h"

int64_t fg_time_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

int64_t fg_time_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t fg_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fg_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

#define FNV_OFFSET 14695981039346656037ULL
#define FNV_PRIME 1099511628211ULL

uint64_t fg_hash_str(const char *s)
{
	uint64_t h = FNV_OFFSET;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * FNV_PRIME;
	return h;
}

void fg_hex(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0x0f];
	}
	out[2 * n] = '\0';
}

uint64_t fg_hash_bytes(const void *p, size_t len)
{
	const unsigned char *b = p;
	uint64_t h = FNV_OFFSET;

	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * FNV_PRIME;
	return h;
}

uint64_t fg_hash_ptr(const void *ptr)
{
	uint64_t p = (uint64_t)(uintptr_t)ptr;

	p ^= p >> 17;
	p *= 0x9e3779b97f4a7c15ULL;
	return p >> 20;
}

/* Close the descriptors from lo to hi (inclusive) of the calling thread's
 * table; -1 when close_range is not there (kernel before 5.9). */
static int close_between(unsigned lo, unsigned hi)
{
	if (lo > hi)
		return 0;
	return (int)syscall(SYS_close_range, lo, hi, 0);
}

static bool kept(int fd, const int *keep, size_t nkeep)
{
	for (size_t i = 0; i < nkeep; i++)
		if (keep[i] == fd)
			return true;
	return false;
}

/* Without close_range: close what /proc lists. The numbers are read
 * first, since closing while reading the directory would skip entries. */
static void close_listed(const int *keep, size_t nkeep)
{
	DIR *d = opendir("/proc/thread-self/fd");
	int *fds = NULL, self;
	size_t n = 0, cap = 0;
	struct dirent *e;

	if (d == NULL)
		return;
	self = dirfd(d);
	while ((e = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);

		if (*end != '\0' || end == e->d_name || fd < 3 || fd == self ||
		    kept((int)fd, keep, nkeep))
			continue;
		if (fg_grow(&fds, &cap, n, sizeof(*fds)) != 0)
			break;
		fds[n++] = (int)fd;
	}
	closedir(d);
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
}

void fg_worker_begin(const char *name, const int *keep, size_t nkeep)
{
	static atomic_flag told = ATOMIC_FLAG_INIT;
	unsigned lo = 3;
	bool ok = true;

	if (name != NULL)
		(void)pthread_setname_np(pthread_self(), name);
	if (unshare(CLONE_FILES) != 0) {
		if (!atomic_flag_test_and_set(&told))
			fg_log(MOSQ_LOG_WARNING,
			       "fleetgate: worker threads share the broker's "
			       "descriptor table (unshare: %s); each system "
			       "call of the broker thread costs a little more",
			       strerror(errno));
		return;
	}
	/* Close the gaps between the kept descriptors, lowest first. */
	while (ok) {
		int next = -1; /* the lowest kept descriptor from lo up */

		for (size_t i = 0; i < nkeep; i++)
			if (keep[i] >= (int)lo && (next < 0 || keep[i] < next))
				next = keep[i];
		if (next < 0) {
			ok = close_between(lo, ~0U) == 0;
			break;
		}
		ok = close_between(lo, (unsigned)next - 1) == 0;
		lo = (unsigned)next + 1;
	}
	if (!ok)
		close_listed(keep, nkeep);
}

int fg_buf_reserve(struct fg_buf *b, size_t more)
{
	size_t cap;
	char *p;

	if (b->failed)
		return -1;
	if (b->len + more <= b->cap)
		return 0;
	for (cap = b->cap ? b->cap : 256; cap < b->len + more; cap *= 2)
		;
	p = realloc(b->p, cap);
	if (p == NULL) {
		b->failed = true;
		return -1;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

int fg_buf_add(struct fg_buf *b, const void *p, size_t n)
{
	if (fg_buf_reserve(b, n) != 0)
		return -1;
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

void fg_buf_clear(struct fg_buf *b)
{
	b->len = 0;
	b->failed = false;
}

bool fg_tick_due(int64_t *last)
{
	struct timespec ts;
	int64_t now;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	if (now == *last)
		return false;
	*last = now;
	return true;
}

void fg_timespec_in(struct timespec *ts, clockid_t clk, int ms)
{
	clock_gettime(clk, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

char *fg_strdup_or_null(const char *s, bool *failed)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*failed = true;
	return d;
}

int fg_grow(void *arr, size_t *cap, size_t n, size_t elem)
{
	void **a = arr, *na;
	size_t ncap;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 64;
	na = realloc(*a, ncap * elem);
	if (na == NULL)
		return -1;
	*a = na;
	*cap = ncap;
	return 0;
}
