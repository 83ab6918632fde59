/*
 * The ratelimit plugin's table of devices (broker thread only): a chained
 * hash table keyed by device id that grows with the fleet, and the list of
 * devices changed since the last exchange with Redis.
 */
#include <stdlib.h>
#include <string.h>

#include "fg_common.h"
#include "rl.h"

struct rl_devices {
	struct rl_dev **buckets;
	size_t nbuckets; /* a power of two */
	size_t count;
	struct rl_dev **dirty;
	size_t ndirty, cap_dirty;
	struct rl_dev **taken; /* handed out by rl_devices_take_dirty */
	size_t cap_taken;
};

struct rl_devices *rl_devices_new(void)
{
	struct rl_devices *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->nbuckets = 1024;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	if (t->buckets == NULL) {
		free(t);
		return NULL;
	}
	return t;
}

static void dev_free(struct rl_dev *d)
{
	free(d->name);
	free(d->client_id);
	free(d);
}

void rl_devices_free(struct rl_devices *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nbuckets; i++) {
		while (t->buckets[i] != NULL) {
			struct rl_dev *d = t->buckets[i];

			t->buckets[i] = d->next;
			dev_free(d);
		}
	}
	free(t->buckets);
	free(t->dirty);
	free(t->taken);
	free(t);
}

static struct rl_dev *find_hashed(struct rl_devices *t, const char *name,
                                  uint64_t h)
{
	struct rl_dev *d = t->buckets[h & (t->nbuckets - 1)];

	while (d != NULL && (d->hash != h || strcmp(d->name, name) != 0))
		d = d->next;
	return d;
}

struct rl_dev *rl_devices_find(struct rl_devices *t, const char *name)
{
	return find_hashed(t, name, fg_hash_str(name));
}

/* Double the buckets; on failure the table keeps working, just slower. */
static void grow(struct rl_devices *t)
{
	size_t n = t->nbuckets * 2, i;
	struct rl_dev **nb = calloc(n, sizeof(*nb));

	if (nb == NULL)
		return;
	for (i = 0; i < t->nbuckets; i++) {
		while (t->buckets[i] != NULL) {
			struct rl_dev *d = t->buckets[i];

			t->buckets[i] = d->next;
			d->next = nb[d->hash & (n - 1)];
			nb[d->hash & (n - 1)] = d;
		}
	}
	free(t->buckets);
	t->buckets = nb;
	t->nbuckets = n;
}

struct rl_dev *rl_devices_get(struct rl_devices *t, const char *name)
{
	uint64_t h = fg_hash_str(name);
	struct rl_dev *d = find_hashed(t, name, h);
	size_t b;

	if (d != NULL)
		return d;
	d = calloc(1, sizeof(*d));
	if (d == NULL || (d->name = strdup(name)) == NULL) {
		free(d);
		return NULL;
	}
	d->hash = h;
	d->win = -1;
	d->cwin = -1;
	d->last_refused_win = -3;
	d->fm.nbrokers = d->fb.nbrokers = d->fc.nbrokers = 1;
	if (t->count >= t->nbuckets * 2)
		grow(t);
	b = d->hash & (t->nbuckets - 1);
	d->next = t->buckets[b];
	t->buckets[b] = d;
	t->count++;
	return d;
}

void rl_devices_mark(struct rl_devices *t, struct rl_dev *d)
{
	if (d->dirty)
		return;
	/* Out of memory: unreported until it changes again; Redis then gets
	 * its whole count, which is absolute, so nothing is lost. */
	if (fg_grow(&t->dirty, &t->cap_dirty, t->ndirty, sizeof(*t->dirty)))
		return;
	t->dirty[t->ndirty++] = d;
	d->dirty = true;
}

struct rl_dev **rl_devices_take_dirty(struct rl_devices *t, size_t max,
                                      size_t *n)
{
	size_t k = t->ndirty < max ? t->ndirty : max, i;

	*n = 0;
	if (k > t->cap_taken) {
		struct rl_dev **nt = realloc(t->taken, k * sizeof(*nt));

		if (nt == NULL)
			return NULL;
		t->taken = nt;
		t->cap_taken = k;
	}
	/* The most recently marked stay for the next exchange. */
	for (i = 0; i < k; i++) {
		t->taken[i] = t->dirty[i];
		t->taken[i]->dirty = false;
	}
	if (t->ndirty > k)
		memmove(t->dirty, t->dirty + k,
		        (t->ndirty - k) * sizeof(*t->dirty));
	t->ndirty -= k;
	*n = k;
	return t->taken;
}

size_t rl_devices_count(const struct rl_devices *t)
{
	return t->count;
}

void rl_devices_each(struct rl_devices *t, void (*fn)(struct rl_dev *, void *),
                     void *arg)
{
	size_t i;
	struct rl_dev *d;

	for (i = 0; i < t->nbuckets; i++) {
		for (d = t->buckets[i]; d != NULL; d = d->next)
			fn(d, arg);
	}
}

size_t rl_devices_purge(struct rl_devices *t, int64_t now_ms,
                        int64_t min_idle_ms)
{
	size_t i, dropped = 0;

	for (i = 0; i < t->nbuckets; i++) {
		struct rl_dev **pp = &t->buckets[i];

		while (*pp != NULL) {
			struct rl_dev *d = *pp;

			int64_t idle = 2 * d->lim.window_ms;

			if (idle < min_idle_ms)
				idle = min_idle_ms;
			/* Its counts must outlive its windows, or a device
			 * could come back for a second budget. */
			if (d->dirty || d->watched ||
			    now_ms - d->last_active_ms < idle ||
			    d->cool_until_ms > now_ms) {
				pp = &d->next;
				continue;
			}
			*pp = d->next;
			dev_free(d);
			t->count--;
			dropped++;
		}
	}
	return dropped;
}
