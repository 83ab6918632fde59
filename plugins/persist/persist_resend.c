/*
 * Resend detection: per client id, a ring of the newest stored messages.
 * See persist_resend.h.
 */
#include "persist_resend.h"

#include <stdlib.h>
#include <string.h>

#include "fg_common.h"

#define NBUCKETS 4096
/* More than a client's inflight window (20 by default in mosquitto and
 * libmosquitto), so that all of a reconnecting client's resends are
 * still remembered. */
#define RING 32

struct seen {
	uint64_t hash;
	int64_t at_ms;
	uint32_t conn_no;
};

struct client {
	char *id;
	size_t id_len;
	const void *conn; /* current connection, NULL when none */
	uint32_t conn_no; /* changes with every connection */
	uint32_t in_conn; /* messages seen on the current connection */
	unsigned head;
	int64_t last_ms;
	struct seen ring[RING];
	struct client *next;
};

struct resend {
	int64_t window_ms;
	int64_t purged_ms;
	size_t nclients;
	struct client *buckets[NBUCKETS];
};

struct resend *resend_new(int64_t window_ms)
{
	struct resend *rs = calloc(1, sizeof(*rs));

	if (rs != NULL)
		rs->window_ms = window_ms;
	return rs;
}

void resend_free(struct resend *rs)
{
	if (rs == NULL)
		return;
	for (size_t i = 0; i < NBUCKETS; i++) {
		struct client *c = rs->buckets[i], *next;
		for (; c != NULL; c = next) {
			next = c->next;
			free(c->id);
			free(c);
		}
	}
	free(rs);
}

uint64_t resend_hash(const char *topic, const void *payload, size_t len)
{
	const unsigned char *p = payload;
	uint64_t h = fg_hash_str(topic) ^ (len * 0x9e3779b97f4a7c15u);

	/* Eight bytes at a time: this runs for every stored reading. */
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdu;
		h ^= h >> 32;
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		h = (h ^ *p++) * 0x100000001b3u;
	h ^= h >> 29;
	h *= 0xc4ceb9fe1a85ec53u;
	return h ^ (h >> 32);
}

static struct client **find(struct resend *rs, const char *id, size_t len)
{
	struct client **pp = &rs->buckets[fg_hash_bytes(id, len) % NBUCKETS];

	while (*pp != NULL &&
	       ((*pp)->id_len != len || memcmp((*pp)->id, id, len) != 0))
		pp = &(*pp)->next;
	return pp;
}

/* The client's entry, moved to conn when that is a new connection. */
static struct client *client_for(struct client *c, const void *conn)
{
	if (c != NULL && conn != NULL && c->conn != conn) {
		c->conn = conn;
		c->conn_no++;
		c->in_conn = 0;
	}
	return c;
}

bool resend_seen(struct resend *rs, const char *client_id, const void *conn,
                 uint64_t hash, int64_t now_ms)
{
	struct client *c;

	if (client_id == NULL)
		return false;
	c = client_for(*find(rs, client_id, strlen(client_id)), conn);
	if (c == NULL)
		return false;
	/* A client resends what was unacknowledged first thing after
	 * reconnecting; later messages of the connection are new. */
	if (c->in_conn++ >= RING)
		return false;
	for (unsigned i = 0; i < RING; i++) {
		const struct seen *s = &c->ring[i];
		if (s->hash == hash && s->at_ms != 0 &&
		    s->conn_no != c->conn_no &&
		    now_ms - s->at_ms <= rs->window_ms)
			return true;
	}
	return false;
}

int resend_note(struct resend *rs, const char *client_id, size_t id_len,
                const void *conn, uint64_t hash, int64_t at_ms)
{
	struct client **pp, *c;

	if (client_id == NULL)
		return 0;
	pp = find(rs, client_id, id_len);
	c = *pp;
	if (c == NULL) {
		c = calloc(1, sizeof(*c));
		if (c == NULL || (c->id = malloc(id_len + 1)) == NULL) {
			free(c);
			return -1;
		}
		memcpy(c->id, client_id, id_len);
		c->id[id_len] = '\0';
		c->id_len = id_len;
		c->conn_no = 1;
		*pp = c;
		rs->nclients++;
	}
	client_for(c, conn);
	c->ring[c->head].hash = hash;
	c->ring[c->head].at_ms = at_ms;
	/* Entries of an earlier run belong to no connection of this one. */
	c->ring[c->head].conn_no = conn != NULL ? c->conn_no : 0;
	c->head = (c->head + 1) % RING;
	if (at_ms > c->last_ms)
		c->last_ms = at_ms;
	return 0;
}

void resend_disconnect(struct resend *rs, const char *client_id,
                       const void *conn)
{
	struct client *c;

	if (client_id == NULL)
		return;
	c = *find(rs, client_id, strlen(client_id));
	if (c != NULL && c->conn == conn)
		c->conn = NULL;
}

void resend_purge(struct resend *rs, int64_t now_ms)
{
	if (now_ms - rs->purged_ms < 60000)
		return;
	rs->purged_ms = now_ms;
	for (size_t i = 0; i < NBUCKETS; i++) {
		struct client **pp = &rs->buckets[i];
		while (*pp != NULL) {
			struct client *c = *pp;
			if (c->conn == NULL &&
			    now_ms - c->last_ms > rs->window_ms) {
				*pp = c->next;
				free(c->id);
				free(c);
				rs->nclients--;
			} else {
				pp = &c->next;
			}
		}
	}
}

size_t resend_clients(const struct resend *rs)
{
	return rs->nclients;
}
