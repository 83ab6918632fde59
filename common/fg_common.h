/*
 * Definitions shared by every fleetgate source file: symbol visibility,
 * printf-format checking and small time helpers.
 */
#ifndef FG_COMMON_H
#define FG_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Everything is built with -fvisibility=hidden; the runtime library marks
 * the functions the plugins call with FG_API, and the plugins mark their
 * three entry points with FG_PLUGIN_ENTRY. */
#define FG_API __attribute__((visibility("default")))
#define FG_PLUGIN_ENTRY __attribute__((visibility("default")))

#define FG_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

/* Error message buffers handed down to helpers are this large. */
#define FG_ERRLEN 256

/* Wall-clock time in seconds and milliseconds since the epoch. */
FG_API int64_t fg_time_s(void);
FG_API int64_t fg_time_ms(void);
/* Monotonic time in milliseconds, for intervals and timeouts. */
FG_API int64_t fg_mono_ms(void);
/*
 * TICK fires on every pass of the broker's loop, for every plugin:
 * thousands of times a second under load. True when the coarse monotonic
 * clock (4 ms steps at HZ 250, read in a few nanoseconds where a precise
 * read takes 20) moved since *last, which it then records: the work of a
 * TICK is done at most once per step.
 */
FG_API bool fg_tick_due(int64_t *last);
/* The time ms milliseconds from now on clock clk, for timed waits. */
FG_API void fg_timespec_in(struct timespec *ts, clockid_t clk, int ms);

/* snprintf into err (if not NULL), always NUL-terminated. */
FG_API void fg_seterr(char *err, size_t errlen, const char *fmt, ...)
    FG_PRINTF(3, 4);

/*
 * Called first by every worker thread: name the thread (at most 15
 * characters, shown by top -H and in /proc) and give it a file descriptor
 * table of its own. While threads share the table, the kernel counts a
 * reference on every descriptor the broker thread uses in every system
 * call; with the table private again, the broker's sends and polls take
 * the single-owner fast path.
 *
 * The private table starts as a copy of the broker's. Every copied
 * descriptor from 3 up is closed again except the nkeep in keep (a stop
 * pipe, a journal directory), so that the thread holds nothing of the
 * broker's open: no listener, no client socket, no rotated log file, no
 * deleted journal segment. From then on what the thread opens is its
 * own, and no other thread may close it: the thread must close its
 * descriptors (database sockets) before it returns.
 *
 * Where unshare is refused (a seccomp filter, say), the thread keeps
 * sharing the broker's table and nothing is closed; the first such
 * thread logs it once.
 */
FG_API void fg_worker_begin(const char *name, const int *keep, size_t nkeep);

/* strdup that keeps NULL; sets *failed when out of memory. */
FG_API char *fg_strdup_or_null(const char *s, bool *failed);

/*
 * Make room for one more element of size elem in the array *arr (a
 * pointer to the array pointer) holding n of *cap, doubling it. Returns
 * 0, or -1 when out of memory (the array is left as it was).
 */
FG_API int fg_grow(void *arr, size_t *cap, size_t n, size_t elem);

/*
 * A growing byte buffer (zero-initialised to start). An allocation that
 * fails sets failed (as a caller may, for an error of its own); from then
 * on every add fails and changes nothing,
 * so that a run of adds needs one check at its end. fg_buf_clear empties
 * the buffer (keeping its memory) and forgets a failure.
 */
struct fg_buf {
	char *p;
	size_t len, cap;
	bool failed;
};
/* Room for more bytes after len: 0, or -1 when out of memory. */
FG_API int fg_buf_reserve(struct fg_buf *b, size_t more);
/* Append n bytes: 0, or -1 when out of memory. */
FG_API int fg_buf_add(struct fg_buf *b, const void *p, size_t n);
FG_API void fg_buf_clear(struct fg_buf *b);

/* 64-bit FNV-1a hash of a string, for hash tables and change detection;
 * fg_hash_bytes: the same of len bytes (fg_hash_str(s) equals
 * fg_hash_bytes(s, strlen(s))). */
FG_API uint64_t fg_hash_str(const char *s);
FG_API uint64_t fg_hash_bytes(const void *p, size_t len);

/* The n bytes at in as 2n lowercase hex digits and a NUL, at out. */
FG_API void fg_hex(const unsigned char *in, size_t n, char *out);

/* A well-mixed hash of a pointer, for tables keyed by client. */
FG_API uint64_t fg_hash_ptr(const void *ptr);

#endif
