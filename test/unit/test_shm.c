/*
 * Unit tests: the worker process's arena and the shared mappings and
 * robust locks the broker and the worker process meet in (fg_shm.c).
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fg_registry.h"
#include "fg_shm.h"
#include "unit_run.h"

#define ARENA (64u << 20)

struct block {
	unsigned char *p;
	size_t len;
	unsigned char fill;
};

static void check_block(const struct block *b)
{
	size_t i = 0;

	while (i < b->len && b->p[i] == b->fill)
		i++;
	ck_assert_uint_eq(i, b->len);
}

/*
 * Random allocations, growths and frees of sizes from a byte to half a
 * megabyte: every block keeps its contents, none overlaps another, and
 * when all are freed nothing is counted in use and the whole arena can be
 * had again in one piece (the free runs were coalesced). */
START_TEST(blocks_keep_their_contents_and_the_space_comes_back)
{
	struct fg_arena *a = fg_arena_new(ARENA, ARENA);
	struct block b[300];
	unsigned seed = 7;
	void *whole;

	ck_assert_ptr_nonnull(a);
	memset(b, 0, sizeof(b));
	for (int step = 0; step < 6000; step++) {
		struct block *x = &b[rand_r(&seed) % 300];
		int op = rand_r(&seed) % 3;
		size_t len = (size_t)1 << (rand_r(&seed) % 18);

		len += (size_t)rand_r(&seed) % len;
		if (x->p == NULL) {
			x->p = fg_arena_alloc(a, len);
			ck_assert_ptr_nonnull(x->p);
			ck_assert(fg_arena_contains(a, x->p));
			x->len = len;
			x->fill = (unsigned char)(step & 0xff);
			memset(x->p, x->fill, len);
		} else if (op == 0) {
			check_block(x);
			x->p = fg_arena_realloc(a, x->p, x->len + len);
			ck_assert_ptr_nonnull(x->p);
			check_block(x);
			memset(x->p + x->len, x->fill, len);
			x->len += len;
		} else {
			check_block(x);
			fg_arena_free(a, x->p);
			x->p = NULL;
		}
	}
	for (int i = 0; i < 300; i++) {
		if (b[i].p != NULL) {
			check_block(&b[i]);
			fg_arena_free(a, b[i].p);
		}
	}
	/* Small blocks' chunks stay with their class. */
	ck_assert_uint_eq(fg_arena_in_use(a), 0);
	whole = fg_arena_alloc(a, ARENA / 2);
	ck_assert_ptr_nonnull(whole);
	fg_arena_free(a, whole);
	ck_assert_ptr_null(fg_arena_alloc(a, ARENA));
	fg_arena_destroy(a);
}
END_TEST

/* A registry built in the arena by a forked process is read in place by
 * its parent: the worker process's way of handing one over. */
START_TEST(a_registry_built_by_a_child_is_read_by_the_parent)
{
	struct fg_arena *a = fg_arena_new(ARENA, ARENA);
	struct fg_registry **slot = fg_shm_map(sizeof(*slot));
	const struct fg_device *d;
	int st;
	pid_t pid;

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(slot);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct fg_registry *reg;

		fg_mem_use(a);
		reg = fg_registry_new();
		for (int i = 0; i < 5000; i++) {
			char id[32];

			snprintf(id, sizeof(id), "meter-%d", i);
			if (reg == NULL ||
			    fg_registry_add_device(reg, id, "north",
			                           FG_DEVICE_ACTIVE, false,
			                           NULL) != 0)
				_exit(2);
		}
		if (fg_registry_finalise(reg, NULL, 0) != 0 ||
		    !fg_arena_contains(a, reg))
			_exit(3);
		*slot = reg;
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st));
	ck_assert_int_eq(WEXITSTATUS(st), 0);
	ck_assert(fg_arena_contains(a, *slot));
	ck_assert_uint_eq(fg_registry_device_count(*slot), 5000);
	d = fg_registry_device(*slot, "meter-4321");
	ck_assert_ptr_nonnull(d);
	ck_assert_str_eq(d->municipality, "north");
	ck_assert_ptr_null(fg_registry_device(*slot, "meter-5000"));
	fg_shm_unmap(slot, sizeof(*slot));
	fg_arena_destroy(a);
}
END_TEST

/* A process that dies holding a shared lock does not hang the other. */
START_TEST(a_lock_held_by_a_dead_process_is_taken_over)
{
	pthread_mutex_t *m = fg_shm_map(sizeof(*m));
	int st;
	pid_t pid;

	ck_assert_ptr_nonnull(m);
	ck_assert_int_eq(fg_shm_mutex_init(m, true), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		pthread_mutex_lock(m);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	fg_shm_lock(m);
	ck_assert_int_eq(pthread_mutex_unlock(m), 0);
	fg_shm_lock(m);
	ck_assert_int_eq(pthread_mutex_unlock(m), 0);
	pthread_mutex_destroy(m);
	fg_shm_unmap(m, sizeof(*m));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("shm");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, blocks_keep_their_contents_and_the_space_comes_back);
	tcase_add_test(tc, a_registry_built_by_a_child_is_read_by_the_parent);
	tcase_add_test(tc, a_lock_held_by_a_dead_process_is_taken_over);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
