/*
 * The identities of connected clients: a chained hash on the pointer.
 */
#include "fg_clients.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 4096

struct fg_clients {
	struct fg_identity *buckets[NBUCKETS];
	size_t ngone;
	uint64_t next_epoch;
};

static size_t bucket_of(const void *client)
{
	uintptr_t p = (uintptr_t)client;

	p ^= p >> 17;
	p *= 0x9e3779b97f4a7c15ULL;
	return (size_t)(p >> 20) % NBUCKETS;
}

static void free_identity(struct fg_identity *e)
{
	free(e->name);
	free(e->client_id);
	free(e);
}

struct fg_clients *fg_clients_new(void)
{
	struct fg_clients *c = calloc(1, sizeof(*c));

	if (c != NULL)
		c->next_epoch = 1;
	return c;
}

void fg_clients_free(struct fg_clients *c)
{
	size_t i;

	if (c == NULL)
		return;
	for (i = 0; i < NBUCKETS; i++) {
		struct fg_identity *e = c->buckets[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			free_identity(e);
		}
	}
	free(c);
}

static struct fg_identity *find(const struct fg_clients *c, const void *client)
{
	struct fg_identity *e = c->buckets[bucket_of(client)];

	while (e != NULL && e->client != client)
		e = e->next;
	return e;
}

int fg_clients_set(struct fg_clients *c, const void *client, bool is_device,
                   const char *name, const char *client_id)
{
	struct fg_identity *e = find(c, client);
	char *n, *id;

	if (e == NULL) {
		size_t b = bucket_of(client);

		e = calloc(1, sizeof(*e));
		if (e == NULL)
			return -1;
		e->client = client;
		e->next = c->buckets[b];
		c->buckets[b] = e;
	} else if (e->gone) {
		/* The broker reused a freed client's memory for a new one. */
		e->gone = false;
		c->ngone--;
	}
	/* Whole strings: a shortened name could be someone else's. */
	n = strdup(name ? name : "");
	id = strdup(client_id ? client_id : "");
	if (n == NULL || id == NULL) {
		free(n);
		free(id);
		return -1;
	}
	free(e->name);
	free(e->client_id);
	e->name = n;
	e->client_id = id;
	e->is_device = is_device;
	e->epoch = c->next_epoch++;
	return 0;
}

const struct fg_identity *fg_clients_get(const struct fg_clients *c,
                                         const void *client)
{
	return find(c, client);
}

void fg_clients_forget(struct fg_clients *c, const void *client)
{
	struct fg_identity **pp = &c->buckets[bucket_of(client)];

	while (*pp != NULL) {
		if ((*pp)->client == client) {
			struct fg_identity *dead = *pp;

			if (dead->gone)
				c->ngone--;
			*pp = dead->next;
			free_identity(dead);
			return;
		}
		pp = &(*pp)->next;
	}
}

void fg_clients_gone(struct fg_clients *c, const void *client)
{
	struct fg_identity *e = find(c, client);

	if (e != NULL && !e->gone) {
		e->gone = true;
		c->ngone++;
	}
}

void fg_clients_purge(struct fg_clients *c)
{
	size_t i;

	for (i = 0; c->ngone > 0 && i < NBUCKETS; i++) {
		struct fg_identity **pp = &c->buckets[i];

		while (*pp != NULL) {
			if ((*pp)->gone) {
				struct fg_identity *dead = *pp;
				*pp = dead->next;
				free_identity(dead);
				c->ngone--;
			} else {
				pp = &(*pp)->next;
			}
		}
	}
}
