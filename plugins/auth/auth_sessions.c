/*
 * The table of connected clients, a chained hash keyed by the client
 * pointer (client ids can be taken over; the pointer is what the broker's
 * DISCONNECT event names).
 */
#include <stdlib.h>
#include <string.h>

#include "auth.h"

static size_t bucket_of(const struct auth_sessions *t, const void *client)
{
	return (size_t)(fg_hash_ptr(client) % t->nbuckets);
}

int auth_sessions_init(struct auth_sessions *t, size_t nbuckets)
{
	t->buckets = calloc(nbuckets, sizeof(*t->buckets));
	t->nbuckets = nbuckets;
	t->count = 0;
	return t->buckets ? 0 : -1;
}

void auth_sessions_free(struct auth_sessions *t)
{
	size_t i;

	for (i = 0; t->buckets != NULL && i < t->nbuckets; i++) {
		struct auth_session *s = t->buckets[i], *next;
		for (; s != NULL; s = next) {
			next = s->next;
			free(s);
		}
	}
	free(t->buckets);
	t->buckets = NULL;
	t->count = 0;
}

struct auth_session *auth_sessions_get(struct auth_sessions *t, void *client)
{
	struct auth_session *s = t->buckets[bucket_of(t, client)];

	while (s != NULL && s->client != client)
		s = s->next;
	return s;
}

struct auth_session *auth_sessions_put(struct auth_sessions *t,
                                       const struct auth_session *s)
{
	struct auth_session *e = auth_sessions_get(t, s->client);
	struct auth_session *next;
	size_t b;

	if (e != NULL) {
		next = e->next;
		*e = *s;
		e->next = next;
		return e;
	}
	e = malloc(sizeof(*e));
	if (e == NULL)
		return NULL;
	*e = *s;
	b = bucket_of(t, s->client);
	e->next = t->buckets[b];
	t->buckets[b] = e;
	t->count++;
	return e;
}

void auth_sessions_remove(struct auth_sessions *t, void *client)
{
	struct auth_session **pp = &t->buckets[bucket_of(t, client)];

	while (*pp != NULL) {
		if ((*pp)->client == client) {
			struct auth_session *dead = *pp;
			*pp = dead->next;
			free(dead);
			t->count--;
			return;
		}
		pp = &(*pp)->next;
	}
}
