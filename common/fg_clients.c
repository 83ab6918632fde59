/*
 * The identities of clients: a chained hash on the pointer, and a second
 * chain on the client id to find the earlier contexts of a client.
 */
#include "fg_clients.h"

#include <stdlib.h>
#include <string.h>

#define NBUCKETS 4096
#define DEADLINE_SCAN_MS 60000

struct fg_clients {
	struct fg_identity *buckets[NBUCKETS];
	struct fg_identity *by_id[NBUCKETS];
	size_t ngone, noffline_deadline;
	uint64_t next_epoch;
	int64_t next_deadline_scan_ms;
};

static size_t bucket_of(const void *client)
{
	return (size_t)(fg_hash_ptr(client) % NBUCKETS);
}

static size_t id_bucket_of(const char *client_id)
{
	return (size_t)(fg_hash_str(client_id) % NBUCKETS);
}

static void unlink_by_id(struct fg_clients *c, struct fg_identity *e)
{
	struct fg_identity **pp;

	if (e->client_id == NULL)
		return;
	pp = &c->by_id[id_bucket_of(e->client_id)];
	while (*pp != NULL && *pp != e)
		pp = &(*pp)->next_by_id;
	if (*pp != NULL)
		*pp = e->next_by_id;
	e->next_by_id = NULL;
}

static void set_state(struct fg_clients *c, struct fg_identity *e, bool gone,
                      bool offline, int64_t until)
{
	if (e->gone)
		c->ngone--;
	if (e->offline && e->offline_until_ms != 0)
		c->noffline_deadline--;
	e->gone = gone;
	e->offline = offline;
	e->offline_until_ms = offline ? until : 0;
	if (gone)
		c->ngone++;
	if (offline && until != 0)
		c->noffline_deadline++;
}

static void free_identity(struct fg_clients *c, struct fg_identity *e)
{
	set_state(c, e, false, false, 0);
	unlink_by_id(c, e);
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
		while (c->buckets[i] != NULL) {
			struct fg_identity *e = c->buckets[i];
			c->buckets[i] = e->next;
			free_identity(c, e);
		}
	}
	free(c);
}

static struct fg_identity **find(struct fg_clients *c, const void *client)
{
	struct fg_identity **pp = &c->buckets[bucket_of(client)];

	while (*pp != NULL && (*pp)->client != client)
		pp = &(*pp)->next;
	return pp;
}

int fg_clients_set(struct fg_clients *c, const void *client, bool is_device,
                   const char *name, const char *client_id)
{
	struct fg_identity *e = *find(c, client), *o;
	char *n, *id;

	/* Whole strings: a shortened name could be someone else's. */
	n = strdup(name ? name : "");
	id = strdup(client_id ? client_id : "");
	if (n == NULL || id == NULL) {
		free(n);
		free(id);
		return -1;
	}
	if (e == NULL) {
		size_t b = bucket_of(client);

		e = calloc(1, sizeof(*e));
		if (e == NULL) {
			free(n);
			free(id);
			return -1;
		}
		e->client = client;
		e->next = c->buckets[b];
		c->buckets[b] = e;
	} else {
		unlink_by_id(c, e);
	}
	/* Earlier contexts of this client id: a session taken over or
	 * resumed here. They may still be asked about once (a Will). */
	for (o = c->by_id[id_bucket_of(id)]; o != NULL; o = o->next_by_id) {
		if (o != e && strcmp(o->client_id, id) == 0)
			set_state(c, o, true, false, 0);
	}
	free(e->name);
	free(e->client_id);
	e->name = n;
	e->client_id = id;
	e->next_by_id = c->by_id[id_bucket_of(id)];
	c->by_id[id_bucket_of(id)] = e;
	set_state(c, e, false, false, 0);
	e->is_device = is_device;
	e->epoch = c->next_epoch++;
	return 0;
}

const struct fg_identity *fg_clients_get(const struct fg_clients *c,
                                         const void *client)
{
	return *find((struct fg_clients *)c, client);
}

void fg_clients_forget(struct fg_clients *c, const void *client)
{
	struct fg_identity **pp = find(c, client), *dead = *pp;

	if (dead == NULL)
		return;
	*pp = dead->next;
	free_identity(c, dead);
}

void fg_clients_gone(struct fg_clients *c, const void *client)
{
	struct fg_identity *e = *find(c, client);

	if (e != NULL)
		set_state(c, e, true, false, 0);
}

void fg_clients_offline(struct fg_clients *c, const void *client,
                        int64_t deadline_ms)
{
	struct fg_identity *e = *find(c, client);

	if (e != NULL && !e->gone)
		set_state(c, e, false, true, deadline_ms);
}

void fg_clients_purge(struct fg_clients *c, int64_t now_ms)
{
	bool deadlines =
	    c->noffline_deadline > 0 && now_ms >= c->next_deadline_scan_ms;
	size_t i;

	if (c->ngone == 0 && !deadlines)
		return;
	if (deadlines)
		c->next_deadline_scan_ms = now_ms + DEADLINE_SCAN_MS;
	for (i = 0; i < NBUCKETS; i++) {
		struct fg_identity **pp = &c->buckets[i];

		while (*pp != NULL) {
			struct fg_identity *e = *pp;
			bool expired = deadlines && e->offline &&
			               e->offline_until_ms != 0 &&
			               now_ms >= e->offline_until_ms;

			if (e->gone || expired) {
				*pp = e->next;
				free_identity(c, e);
			} else {
				pp = &e->next;
			}
		}
	}
}
