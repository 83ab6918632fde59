/*
 * Sets of withdrawn identities. See fg_withdrawn.h.
 */
#include "fg_withdrawn.h"
#include "fg_shm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	char *key;
	enum fg_withdrawn_why why;
	uint64_t order; /* of addition: the last of equal keys wins */
};

struct list {
	struct entry *v;
	size_t n, cap;
};

struct fg_withdrawn {
	struct list kinds[FG_WD_KINDS];
	uint64_t added;
};

struct fg_withdrawn *fg_withdrawn_new(void)
{
	return fg_mem_calloc(1, sizeof(struct fg_withdrawn));
}

void fg_withdrawn_free(struct fg_withdrawn *w)
{
	if (w == NULL)
		return;
	for (int k = 0; k < FG_WD_KINDS; k++) {
		for (size_t i = 0; i < w->kinds[k].n; i++)
			fg_mem_free(w->kinds[k].v[i].key);
		fg_mem_free(w->kinds[k].v);
	}
	fg_mem_free(w);
}

int fg_withdrawn_add(struct fg_withdrawn *w, enum fg_withdrawn_kind k,
                     const char *key, enum fg_withdrawn_why why)
{
	struct list *l;
	char *copy;

	if (w == NULL || key == NULL || (unsigned)k >= FG_WD_KINDS)
		return -1;
	l = &w->kinds[k];
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 16;
		struct entry *nv = fg_mem_realloc(l->v, ncap * sizeof(*l->v));

		if (nv == NULL)
			return -1;
		l->v = nv;
		l->cap = ncap;
	}
	copy = fg_mem_strdup(key);
	if (copy == NULL)
		return -1;
	l->v[l->n++] = (struct entry){copy, why, w->added++};
	return 0;
}

int fg_withdrawn_merge(struct fg_withdrawn *w, const struct fg_withdrawn *from)
{
	if (from == NULL)
		return 0;
	/* Added after w's own, so that from's reasons win. A sealed set
	 * holds each key once; an unsealed one is in its order of addition. */
	for (int k = 0; k < FG_WD_KINDS; k++)
		for (size_t i = 0; i < from->kinds[k].n; i++)
			if (fg_withdrawn_add(w, (enum fg_withdrawn_kind)k,
			                     from->kinds[k].v[i].key,
			                     from->kinds[k].v[i].why) != 0)
				return -1;
	return 0;
}

static int by_key_then_order(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	if (c != 0)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

void fg_withdrawn_seal(struct fg_withdrawn *w)
{
	if (w == NULL)
		return;
	for (int k = 0; k < FG_WD_KINDS; k++) {
		struct list *l = &w->kinds[k];
		size_t out = 0;

		if (l->n == 0)
			continue;
		qsort(l->v, l->n, sizeof(*l->v), by_key_then_order);
		/* Keep the last of each run of equal keys. */
		for (size_t i = 0; i < l->n; i++) {
			if (i + 1 < l->n &&
			    strcmp(l->v[i].key, l->v[i + 1].key) == 0) {
				fg_mem_free(l->v[i].key);
				continue;
			}
			l->v[out++] = l->v[i];
		}
		l->n = out;
	}
}

bool fg_withdrawn_has(const struct fg_withdrawn *w, enum fg_withdrawn_kind k,
                      const char *key, enum fg_withdrawn_why *why)
{
	const struct list *l;
	size_t lo = 0, hi;

	if (w == NULL || key == NULL || (unsigned)k >= FG_WD_KINDS)
		return false;
	l = &w->kinds[k];
	hi = l->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(key, l->v[mid].key);

		if (c == 0) {
			if (why != NULL)
				*why = l->v[mid].why;
			return true;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return false;
}

size_t fg_withdrawn_count(const struct fg_withdrawn *w,
                          enum fg_withdrawn_kind k)
{
	if (w == NULL || (unsigned)k >= FG_WD_KINDS)
		return 0;
	return w->kinds[k].n;
}
