/*
 * Memory shared between the broker process and fleetgate's worker
 * process.
 *
 * A thread in the broker process costs every client: once a process has
 * a second thread, glibc takes its malloc lock on every allocation the
 * thread cache misses and wraps every socket call in cancellation
 * bookkeeping, for good. So the worker threads (registry loader, audit
 * writer) run in a process of their own, forked from the broker while
 * it still has one thread, and the two processes meet in shared
 * mappings made before the fork, which sit at the same address in both:
 *
 *  - the mailboxes and queues themselves (fg_shm_map), guarded by
 *    process-shared robust mutexes (fg_shm_mutex_init, fg_shm_lock), so
 *    that a worker process that dies holding one cannot hang the broker;
 *  - an arena (fg_arena) in which the worker process builds what it
 *    hands the broker thread to read: registries and withdrawn sets. Only
 *    the worker process allocates and frees there; the broker thread hands
 *    back what it no longer reads. Its bookkeeping is private to the
 *    worker process, so a new worker process after a crash gets an arena
 *    of its own and the old one is unmapped once nothing in it is read.
 *
 * fg_mem_* allocate the memory of registries and withdrawn sets: from the
 * arena chosen with fg_mem_use, or from malloc and private mappings.
 */
#ifndef FG_SHM_H
#define FG_SHM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "fg_common.h"

/* A zeroed mapping shared with processes forked after this call, or NULL.
 * Pages are only allocated when first touched. */
FG_API void *fg_shm_map(size_t bytes);
FG_API void fg_shm_unmap(void *p, size_t bytes);

/* A mutex (robust and process-shared when shared) and a condition
 * variable on CLOCK_MONOTONIC (process-shared when shared). 0 or an errno
 * value. */
FG_API int fg_shm_mutex_init(pthread_mutex_t *m, bool shared);
FG_API int fg_shm_cond_init(pthread_cond_t *c, bool shared);
/* Lock m; when its last owner died holding it, take it over (what it
 * guarded may be half updated; the callers keep their sections to
 * assignments that leave it usable). */
FG_API void fg_shm_lock(pthread_mutex_t *m);
/* The same, giving up after ms milliseconds (-1): for the broker thread,
 * which must not wait on a worker process that was stopped (SIGSTOP, a
 * frozen cgroup) while it held the lock. */
FG_API int fg_shm_lock_within(pthread_mutex_t *m, int ms);

struct fg_arena;
/* Reserve an arena of up to bytes (less when the kernel will not map
 * that much; at least min_bytes), or NULL. */
FG_API struct fg_arena *fg_arena_new(size_t bytes, size_t min_bytes);
/* Unmap the whole arena. */
FG_API void fg_arena_destroy(struct fg_arena *a);
FG_API bool fg_arena_contains(const struct fg_arena *a, const void *p);
/* Bytes handed out and not freed (this process's view). */
FG_API size_t fg_arena_in_use(const struct fg_arena *a);
FG_API void *fg_arena_alloc(struct fg_arena *a, size_t bytes);
FG_API void *fg_arena_realloc(struct fg_arena *a, void *p, size_t bytes);
FG_API void fg_arena_free(struct fg_arena *a, void *p);

/* Where fg_mem_* allocate from now on in this process: a (NULL: malloc
 * and private mappings). */
FG_API void fg_mem_use(struct fg_arena *a);
FG_API void *fg_mem_malloc(size_t bytes);
FG_API void *fg_mem_calloc(size_t n, size_t size);
FG_API void *fg_mem_realloc(void *p, size_t bytes);
FG_API void fg_mem_free(void *p);
FG_API char *fg_mem_strdup(const char *s);
/* Large blocks (tables, string pools): page-granular private mappings,
 * or arena blocks. fg_mem_remap keeps the contents up to the smaller
 * size. */
FG_API void *fg_mem_map(size_t bytes);
FG_API void *fg_mem_remap(void *p, size_t old_bytes, size_t new_bytes);
FG_API void fg_mem_unmap(void *p, size_t bytes);

#endif
