/*
 * Shared mappings, robust mutexes and the worker process's arena. See
 * fg_shm.h.
 *
 * The arena hands out blocks with a 16-byte header. Small blocks (up to
 * 2 KB with the header) come from one free list per power-of-two class,
 * carved from 64 KB chunks that stay with their class. Larger ones are
 * runs of whole pages: first fit from a sorted list of free runs, else
 * from the untouched top. A freed run is coalesced with its neighbours
 * and its pages go back to the kernel (MADV_REMOVE: the mapping is
 * shmem, where MADV_DONTNEED would keep the pages). A run that ends at
 * the top, or before a free run, grows in place, so that a table that
 * doubles while a registry is built is rarely copied.
 */
#include "fg_shm.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PAGE 4096u
#define HDR 16u
#define SMALL_MIN_SHIFT 5  /* 32 bytes */
#define SMALL_MAX_SHIFT 11 /* 2048 bytes */
#define NCLASSES (SMALL_MAX_SHIFT - SMALL_MIN_SHIFT + 1)
#define CHUNK (64u * 1024u)
#define MAGIC 0x46474152u /* "FGAR" */
#define CLASS_RUN 0xffffu

struct hdr {
	size_t bytes; /* run: the run's length; small: the class's size */
	uint32_t cls; /* CLASS_RUN or the class */
	uint32_t magic;
};

struct run {
	size_t off, len; /* bytes from the base, page multiples */
};

struct fg_arena {
	char *base;
	size_t size, top; /* top: first byte never handed out */
	size_t in_use;
	pthread_mutex_t lock; /* private: the worker's threads */
	void *free_small[NCLASSES];
	struct run *runs; /* free runs below top, by offset, coalesced */
	size_t nruns, cap_runs;
};

void *fg_shm_map(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
	               MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

void fg_shm_unmap(void *p, size_t bytes)
{
	if (p != NULL)
		munmap(p, bytes);
}

int fg_shm_mutex_init(pthread_mutex_t *m, bool shared)
{
	pthread_mutexattr_t ma;
	int rc;

	if ((rc = pthread_mutexattr_init(&ma)) != 0)
		return rc;
	if (shared &&
	    ((rc = pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED)) !=
	         0 ||
	     (rc = pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST)) !=
	         0)) {
		pthread_mutexattr_destroy(&ma);
		return rc;
	}
	rc = pthread_mutex_init(m, &ma);
	pthread_mutexattr_destroy(&ma);
	return rc;
}

int fg_shm_cond_init(pthread_cond_t *c, bool shared)
{
	pthread_condattr_t ca;
	int rc;

	if ((rc = pthread_condattr_init(&ca)) != 0)
		return rc;
	if ((rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC)) == 0 &&
	    shared)
		rc = pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
	if (rc == 0)
		rc = pthread_cond_init(c, &ca);
	pthread_condattr_destroy(&ca);
	return rc;
}

void fg_shm_lock(pthread_mutex_t *m)
{
	if (pthread_mutex_lock(m) == EOWNERDEAD)
		pthread_mutex_consistent(m);
}

int fg_shm_lock_within(pthread_mutex_t *m, int ms)
{
	struct timespec ts;
	int rc = pthread_mutex_trylock(m);

	if (rc == EBUSY) {
		fg_timespec_in(&ts, CLOCK_MONOTONIC, ms);
		rc = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
	}
	if (rc == EOWNERDEAD)
		rc = pthread_mutex_consistent(m);
	return rc == 0 ? 0 : -1;
}

struct fg_arena *fg_arena_new(size_t bytes, size_t min_bytes)
{
	struct fg_arena *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return NULL;
	bytes = bytes / PAGE * PAGE;
	/* Under strict overcommit a shared mapping is charged in full:
	 * settle for less. */
	while (bytes >= min_bytes && (a->base = fg_shm_map(bytes)) == NULL)
		bytes = bytes / 2 / PAGE * PAGE;
	if (a->base == NULL || fg_shm_mutex_init(&a->lock, false) != 0) {
		if (a->base != NULL)
			fg_shm_unmap(a->base, bytes);
		free(a);
		return NULL;
	}
	a->size = bytes;
	return a;
}

void fg_arena_destroy(struct fg_arena *a)
{
	if (a == NULL)
		return;
	fg_shm_unmap(a->base, a->size);
	pthread_mutex_destroy(&a->lock);
	free(a->runs);
	free(a);
}

bool fg_arena_contains(const struct fg_arena *a, const void *p)
{
	const char *c = p;

	return a != NULL && c >= a->base && c < a->base + a->size;
}

size_t fg_arena_in_use(const struct fg_arena *a)
{
	return a->in_use;
}

static size_t round_page(size_t n)
{
	return (n + PAGE - 1) / PAGE * PAGE;
}

static void run_remove(struct fg_arena *a, size_t i)
{
	memmove(&a->runs[i], &a->runs[i + 1],
	        (a->nruns - i - 1) * sizeof(*a->runs));
	a->nruns--;
}

/* Take len bytes off the front of free run i. */
static void run_cut(struct fg_arena *a, size_t i, size_t len)
{
	a->runs[i].off += len;
	a->runs[i].len -= len;
	if (a->runs[i].len == 0)
		run_remove(a, i);
}

/* A run of len bytes (a page multiple), or SIZE_MAX. Locked. */
static size_t run_take(struct fg_arena *a, size_t len)
{
	size_t i, off;

	for (i = 0; i < a->nruns; i++) {
		if (a->runs[i].len < len)
			continue;
		off = a->runs[i].off;
		run_cut(a, i, len);
		return off;
	}
	if (len > a->size - a->top)
		return SIZE_MAX;
	off = a->top;
	a->top += len;
	return off;
}

/* Give back the run [off, off + len): its pages to the kernel, the range
 * to the free list or the top. Locked. Returns -1 when the list cannot
 * grow (the range is then lost to this arena, not corrupted). */
static int run_give(struct fg_arena *a, size_t off, size_t len)
{
	size_t i;

	if (madvise(a->base + off, len, MADV_REMOVE) != 0)
		(void)madvise(a->base + off, len, MADV_DONTNEED);
	for (i = 0; i < a->nruns && a->runs[i].off < off; i++)
		;
	/* Join the run before, the run after, or both. */
	if (i > 0 && a->runs[i - 1].off + a->runs[i - 1].len == off) {
		a->runs[i - 1].len += len;
		if (i < a->nruns && off + len == a->runs[i].off) {
			a->runs[i - 1].len += a->runs[i].len;
			run_remove(a, i);
		}
		i--;
	} else if (i < a->nruns && off + len == a->runs[i].off) {
		a->runs[i].off = off;
		a->runs[i].len += len;
	} else {
		if (a->nruns == a->cap_runs) {
			size_t ncap = a->cap_runs ? a->cap_runs * 2 : 64;
			struct run *nr =
			    realloc(a->runs, ncap * sizeof(*a->runs));
			if (nr == NULL)
				return -1;
			a->runs = nr;
			a->cap_runs = ncap;
		}
		memmove(&a->runs[i + 1], &a->runs[i],
		        (a->nruns - i) * sizeof(*a->runs));
		a->runs[i] = (struct run){off, len};
		a->nruns++;
	}
	/* The last free run, when it reaches the top, becomes top again. */
	if (i == a->nruns - 1 && a->runs[i].off + a->runs[i].len == a->top) {
		a->top = a->runs[i].off;
		a->nruns--;
	}
	return 0;
}

/* Grow the run at off from len to nlen bytes where it lies, if the top
 * or a free run follows it. Locked. */
static bool run_extend(struct fg_arena *a, size_t off, size_t len, size_t nlen)
{
	size_t end = off + len, extra = nlen - len, i;

	if (end == a->top) {
		if (extra > a->size - a->top)
			return false;
		a->top += extra;
		return true;
	}
	for (i = 0; i < a->nruns && a->runs[i].off < end; i++)
		;
	if (i == a->nruns || a->runs[i].off != end || a->runs[i].len < extra)
		return false;
	run_cut(a, i, extra);
	return true;
}

static int class_of(size_t total)
{
	int c = 0;

	while (((size_t)1 << (c + SMALL_MIN_SHIFT)) < total)
		c++;
	return c;
}

static void *alloc_locked(struct fg_arena *a, size_t bytes)
{
	struct hdr *h;
	size_t total = bytes + HDR, off;

	if (bytes > a->size)
		return NULL;
	if (total <= ((size_t)1 << SMALL_MAX_SHIFT)) {
		int c = class_of(total);
		size_t csize = (size_t)1 << (c + SMALL_MIN_SHIFT);

		if (a->free_small[c] == NULL) {
			char *chunk;

			if ((off = run_take(a, CHUNK)) == SIZE_MAX)
				return NULL;
			chunk = a->base + off;
			for (size_t k = CHUNK / csize; k-- > 0;) {
				void **slot =
				    (void **)(void *)(chunk + k * csize);
				*slot = a->free_small[c];
				a->free_small[c] = slot;
			}
		}
		h = a->free_small[c];
		a->free_small[c] = *(void **)a->free_small[c];
		*h = (struct hdr){csize, (uint32_t)c, MAGIC};
		a->in_use += csize;
		return (char *)h + HDR;
	}
	total = round_page(total);
	if ((off = run_take(a, total)) == SIZE_MAX)
		return NULL;
	h = (struct hdr *)(void *)(a->base + off);
	*h = (struct hdr){total, CLASS_RUN, MAGIC};
	a->in_use += total;
	return (char *)h + HDR;
}

static struct hdr *header_of(void *p)
{
	struct hdr *h = (struct hdr *)(void *)((char *)p - HDR);

	if (h->magic != MAGIC)
		abort(); /* not an arena block: a bug, never to be papered over
		          */
	return h;
}

static void free_locked(struct fg_arena *a, void *p)
{
	struct hdr *h = header_of(p);

	a->in_use -= h->bytes;
	h->magic = 0;
	if (h->cls != CLASS_RUN) {
		*(void **)(void *)h = a->free_small[h->cls];
		a->free_small[h->cls] = h;
		return;
	}
	(void)run_give(a, (size_t)((char *)h - a->base), h->bytes);
}

void *fg_arena_alloc(struct fg_arena *a, size_t bytes)
{
	void *p;

	pthread_mutex_lock(&a->lock);
	p = alloc_locked(a, bytes);
	pthread_mutex_unlock(&a->lock);
	return p;
}

void fg_arena_free(struct fg_arena *a, void *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&a->lock);
	free_locked(a, p);
	pthread_mutex_unlock(&a->lock);
}

void *fg_arena_realloc(struct fg_arena *a, void *p, size_t bytes)
{
	struct hdr *h;
	size_t have, total;
	void *np;

	if (p == NULL)
		return fg_arena_alloc(a, bytes);
	pthread_mutex_lock(&a->lock);
	h = header_of(p);
	have = h->bytes - HDR;
	if (bytes <= have) {
		pthread_mutex_unlock(&a->lock);
		return p;
	}
	total = round_page(bytes + HDR);
	if (h->cls == CLASS_RUN && total <= a->size &&
	    run_extend(a, (size_t)((char *)h - a->base), h->bytes, total)) {
		a->in_use += total - h->bytes;
		h->bytes = total;
		pthread_mutex_unlock(&a->lock);
		return p;
	}
	np = alloc_locked(a, bytes);
	if (np != NULL) {
		memcpy(np, p, have);
		free_locked(a, p);
	}
	pthread_mutex_unlock(&a->lock);
	return np;
}

static struct fg_arena *mem_arena;

void fg_mem_use(struct fg_arena *a)
{
	mem_arena = a;
}

void *fg_mem_malloc(size_t bytes)
{
	return mem_arena ? fg_arena_alloc(mem_arena, bytes) : malloc(bytes);
}

void *fg_mem_calloc(size_t n, size_t size)
{
	void *p;

	if (mem_arena == NULL)
		return calloc(n, size);
	if (size != 0 && n > SIZE_MAX / size)
		return NULL;
	/* Fresh pages and carved chunks are not necessarily zero: a small
	 * block may have been freed before. */
	if ((p = fg_arena_alloc(mem_arena, n * size)) != NULL)
		memset(p, 0, n * size);
	return p;
}

void *fg_mem_realloc(void *p, size_t bytes)
{
	return mem_arena ? fg_arena_realloc(mem_arena, p, bytes)
	                 : realloc(p, bytes);
}

void fg_mem_free(void *p)
{
	if (mem_arena)
		fg_arena_free(mem_arena, p);
	else
		free(p);
}

char *fg_mem_strdup(const char *s)
{
	size_t len = strlen(s) + 1;
	char *c = fg_mem_malloc(len);

	if (c != NULL)
		memcpy(c, s, len);
	return c;
}

void *fg_mem_map(size_t bytes)
{
	void *p;

	if (mem_arena)
		return fg_arena_alloc(mem_arena, bytes ? bytes : 1);
	p = mmap(NULL, round_page(bytes ? bytes : 1), PROT_READ | PROT_WRITE,
	         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void *fg_mem_remap(void *p, size_t old_bytes, size_t new_bytes)
{
	void *np;

	if (mem_arena)
		return fg_arena_realloc(mem_arena, p, new_bytes);
	np = mremap(p, round_page(old_bytes ? old_bytes : 1),
	            round_page(new_bytes ? new_bytes : 1), MREMAP_MAYMOVE);
	return np == MAP_FAILED ? NULL : np;
}

void fg_mem_unmap(void *p, size_t bytes)
{
	if (p == NULL)
		return;
	if (mem_arena)
		fg_arena_free(mem_arena, p);
	else
		munmap(p, round_page(bytes ? bytes : 1));
}
