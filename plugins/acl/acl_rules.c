/*
 * Compiled rules, their answer cache and the isolation backstop, shared by
 * every client whose rules compile to the same thing, and each client's
 * throttle of denial audits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "acl.h"
#include "fg_ident.h"

/* Topics longer than this are judged every time rather than cached. */
#define CACHE_TOPIC_MAX 512
#define DENIAL_WINDOW_MS 60000

struct crule {
	char *pattern; /* placeholders filled in */
	bool allow;
	int priority;
};

struct rule_list {
	struct crule *v;
	size_t n;
};

struct cache_entry {
	char *topic; /* NULL: empty slot */
	uint64_t hash;
	uint8_t access;
	uint8_t answer;
};

/* Audit throttling of denials, keyed by a hash of topic and access (a
 * collision merges two counts, it never hides a first denial for long). */
#define DENIAL_SLOTS 2048
struct denial {
	uint64_t key; /* 0: empty */
	int64_t window_ms;
	uint64_t unreported;
};

/* The answer cache starts this small and doubles up to twice cache_size
 * slots: a device publishing to three topics needs no more. */
#define CACHE_MIN_SLOTS 16

/*
 * A compiled rule set. The answers depend on nothing else, so clients
 * whose rules compile alike (the dashboards of one role and municipality,
 * say) share one, with one cache: a message fanned out to them is judged
 * once, and its later checks find the answer in memory already at hand.
 */
struct acl_rules {
	struct acl_config cfg;
	const char *problem; /* why there are no rules, or NULL */
	bool cross_municipality;
	char *municipality;        /* NULL: none */
	struct rule_list lists[3]; /* by enum fg_rule_access */
	struct cache_entry *cache;
	size_t cache_slots, cache_count; /* slots: a power of two */
	/* The slot of the last answer given. A message fanned out to the
	 * clients sharing these rules is checked with one topic pointer for
	 * each of them: the pointer finds the slot without hashing, and the
	 * slot's own topic and access confirm it (the pointer alone could be
	 * a new string at an old address, so it is never trusted). */
	const char *memo_topic;
	size_t memo_pos;
	/* Sharing: the set it is in (NULL: private), the registry generation
	 * it was compiled from, its key (everything above, serialised). */
	struct acl_set *set;
	struct acl_rules *next; /* in the set's bucket */
	uint64_t generation, key_hash;
	char *key;
	size_t key_len, refs;
};

struct acl_set {
	struct acl_rules **buckets;
	size_t nbuckets, count; /* nbuckets: a power of two */
};

struct acl_client {
	struct acl_rules *r;
	struct denial *denials; /* DENIAL_SLOTS, from the first denial on */
	size_t ndenials;
};

/* Sorted: higher priority first, deny before allow at equal priority. */
static int crule_cmp(const void *a, const void *b)
{
	const struct crule *x = a, *y = b;

	if (x->priority != y->priority)
		return x->priority > y->priority ? -1 : 1;
	if (x->allow != y->allow)
		return x->allow ? 1 : -1;
	return 0;
}

/*
 * Fill in %c, %u and %m. Returns a new string, or NULL when the rule
 * cannot apply (it names %m and the client has no municipality) or memory
 * ran out (*oom set).
 */
static char *substitute(const char *pattern, const struct acl_identity *id,
                        const char *muni, bool *oom)
{
	size_t cap = strlen(pattern) + 1, len = 0;
	const char *p;
	char *out;

	for (p = pattern; *p != '\0'; p++) {
		if (p[0] == '%' && p[1] == 'c')
			cap += strlen(id->client_id);
		else if (p[0] == '%' && p[1] == 'u')
			cap += strlen(id->username);
		else if (p[0] == '%' && p[1] == 'm' && muni != NULL)
			cap += strlen(muni);
	}
	out = malloc(cap);
	if (out == NULL) {
		*oom = true;
		return NULL;
	}
	for (p = pattern; *p != '\0'; p++) {
		const char *v = NULL;

		if (p[0] == '%' && p[1] == 'c')
			v = id->client_id;
		else if (p[0] == '%' && p[1] == 'u')
			v = id->username;
		else if (p[0] == '%' && p[1] == 'm') {
			if (muni == NULL) {
				free(out);
				return NULL;
			}
			v = muni;
		}
		if (v != NULL) {
			size_t vl = strlen(v);
			memcpy(out + len, v, vl);
			len += vl;
			p++;
		} else {
			out[len++] = *p;
		}
	}
	out[len] = '\0';
	return out;
}

static bool rule_applies(const struct fg_rule *r, const struct fg_device *dev,
                         const struct fg_account *acc)
{
	switch (r->kind) {
	case FG_RULE_DEVICE:
		return dev != NULL && strcmp(r->subject, dev->id) == 0;
	case FG_RULE_ACCOUNT:
		return acc != NULL && strcmp(r->subject, acc->username) == 0;
	case FG_RULE_ROLE:
		return acc != NULL && strcmp(r->subject, acc->role) == 0;
	case FG_RULE_MUNICIPALITY:
		return dev != NULL &&
		       strcmp(r->subject, dev->municipality) == 0;
	case FG_RULE_ALL_DEVICES:
		return dev != NULL;
	}
	return false;
}

static int compile(struct acl_rules *c, const struct fg_registry *reg,
                   const struct acl_identity *id)
{
	const struct fg_device *dev = NULL;
	const struct fg_account *acc = NULL;
	const struct fg_rule *rules;
	size_t nrules, i, k;
	bool oom = false;

	if (reg == NULL || !fg_registry_has_rules(reg)) {
		c->problem = "no rule set loaded";
		return 0;
	}
	/* Identities go into patterns: no wildcard or separator may. */
	if (fg_ident_check(id->client_id, 65535) != FG_IDENT_OK ||
	    fg_ident_check(id->username, 65535) != FG_IDENT_OK) {
		c->problem = "identity unfit for topic patterns";
		return 0;
	}
	if (id->is_device) {
		dev = fg_registry_device(reg, id->username);
		if (dev == NULL) {
			c->problem = "device not in the registry";
			return 0;
		}
	} else {
		acc = fg_registry_account(reg, id->username);
		if (acc == NULL) {
			c->problem = "account not in the registry";
			return 0;
		}
		c->cross_municipality = acc->cross_municipality;
	}
	if ((dev ? dev->municipality : acc->municipality) != NULL) {
		c->municipality =
		    strdup(dev ? dev->municipality : acc->municipality);
		if (c->municipality == NULL)
			return -1;
	}

	rules = fg_registry_rules(reg, &nrules);
	for (i = 0; i < nrules; i++) {
		const struct fg_rule *r = &rules[i];
		struct rule_list *l = &c->lists[r->access];
		struct crule *nv;
		char *pat;

		if (!rule_applies(r, dev, acc))
			continue;
		pat = substitute(r->pattern, id, c->municipality, &oom);
		if (pat == NULL) {
			if (oom)
				return -1;
			continue;
		}
		if (!acl_filter_valid(pat)) {
			free(pat);
			continue;
		}
		nv = realloc(l->v, (l->n + 1) * sizeof(*nv));
		if (nv == NULL) {
			free(pat);
			return -1;
		}
		l->v = nv;
		l->v[l->n].pattern = pat;
		l->v[l->n].allow = r->allow;
		l->v[l->n].priority = r->priority;
		l->n++;
	}
	for (k = 0; k < 3; k++) {
		if (c->lists[k].n > 1)
			qsort(c->lists[k].v, c->lists[k].n,
			      sizeof(*c->lists[k].v), crule_cmp);
	}
	return 0;
}

static void key_str(struct fg_buf *k, const char *s)
{
	if (s == NULL)
		fg_buf_add(k, "\1", 1); /* absent differs from "" */
	else
		fg_buf_add(k, s, strlen(s) + 1);
}

/* Everything the answers depend on, serialised unambiguously: the
 * configuration, the isolation inputs and the sorted rule lists. */
static int make_key(struct acl_rules *c)
{
	struct fg_buf k = {0};
	int v[3] = {c->cfg.isolation, c->cfg.municipality_level,
	            c->cfg.cache_size};

	fg_buf_add(&k, v, sizeof(v));
	fg_buf_add(&k, &c->cross_municipality, 1);
	key_str(&k, c->municipality);
	for (size_t l = 0; l < 3; l++) {
		size_t n = c->lists[l].n;

		fg_buf_add(&k, &n, sizeof(n));
		for (size_t i = 0; i < n; i++) {
			const struct crule *r = &c->lists[l].v[i];

			fg_buf_add(&k, &r->priority, sizeof(r->priority));
			fg_buf_add(&k, &r->allow, 1);
			key_str(&k, r->pattern);
		}
	}
	if (k.failed) {
		free(k.p);
		return -1;
	}
	c->key = k.p;
	c->key_len = k.len;
	c->key_hash = fg_hash_bytes(k.p, k.len);
	return 0;
}

static void cache_clear(struct acl_rules *c)
{
	size_t i;

	for (i = 0; i < c->cache_slots; i++) {
		free(c->cache[i].topic);
		c->cache[i].topic = NULL;
	}
	c->cache_count = 0;
}

static void rules_free(struct acl_rules *c)
{
	size_t k, i;

	for (k = 0; k < 3; k++) {
		for (i = 0; i < c->lists[k].n; i++)
			free(c->lists[k].v[i].pattern);
		free(c->lists[k].v);
	}
	if (c->cache != NULL)
		cache_clear(c);
	free(c->cache);
	free(c->municipality);
	free(c->key);
	free(c);
}

static struct acl_rules *rules_new(const struct fg_registry *reg,
                                   const struct acl_config *cfg,
                                   const struct acl_identity *id)
{
	struct acl_rules *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->cfg = *cfg;
	c->refs = 1;
	c->cache = calloc(CACHE_MIN_SLOTS, sizeof(*c->cache));
	c->cache_slots = CACHE_MIN_SLOTS;
	if (c->cache == NULL || compile(c, reg, id) != 0) {
		rules_free(c);
		return NULL;
	}
	return c;
}

struct acl_set *acl_set_new(void)
{
	struct acl_set *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->nbuckets = 64;
	s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
	if (s->buckets == NULL) {
		free(s);
		return NULL;
	}
	return s;
}

void acl_set_free(struct acl_set *s)
{
	if (s == NULL)
		return;
	/* Rule sets still referenced by a client become private. */
	for (size_t b = 0; b < s->nbuckets; b++) {
		struct acl_rules *r = s->buckets[b], *next;

		for (; r != NULL; r = next) {
			next = r->next;
			r->set = NULL;
			r->next = NULL;
		}
	}
	free(s->buckets);
	free(s);
}

size_t acl_set_count(const struct acl_set *s)
{
	return s != NULL ? s->count : 0;
}

static void set_grow(struct acl_set *s)
{
	size_t n = s->nbuckets * 2;
	struct acl_rules **nb = calloc(n, sizeof(*nb));

	if (nb == NULL)
		return; /* longer chains, still correct */
	for (size_t b = 0; b < s->nbuckets; b++) {
		struct acl_rules *r = s->buckets[b], *next;

		for (; r != NULL; r = next) {
			size_t pos = (size_t)r->key_hash & (n - 1);

			next = r->next;
			r->next = nb[pos];
			nb[pos] = r;
		}
	}
	free(s->buckets);
	s->buckets = nb;
	s->nbuckets = n;
}

/* The set's rule set equal to fresh (taking a reference, and freeing
 * fresh), or fresh itself, added to the set. */
static struct acl_rules *set_intern(struct acl_set *s, uint64_t generation,
                                    struct acl_rules *fresh)
{
	struct acl_rules **head, *r;

	if (make_key(fresh) != 0)
		return fresh; /* out of memory: stays private, still correct */
	head = &s->buckets[(size_t)fresh->key_hash & (s->nbuckets - 1)];
	for (r = *head; r != NULL; r = r->next) {
		if (r->generation == generation &&
		    r->key_hash == fresh->key_hash &&
		    r->key_len == fresh->key_len &&
		    memcmp(r->key, fresh->key, r->key_len) == 0) {
			r->refs++;
			rules_free(fresh);
			return r;
		}
	}
	fresh->set = s;
	fresh->generation = generation;
	fresh->next = *head;
	*head = fresh;
	if (++s->count > s->nbuckets)
		set_grow(s);
	return fresh;
}

static void rules_release(struct acl_rules *c)
{
	struct acl_set *s = c->set;

	if (--c->refs > 0)
		return;
	if (s != NULL) {
		struct acl_rules **pp =
		    &s->buckets[(size_t)c->key_hash & (s->nbuckets - 1)];

		while (*pp != c)
			pp = &(*pp)->next;
		*pp = c->next;
		s->count--;
	}
	rules_free(c);
}

struct acl_client *acl_client_new(struct acl_set *set, uint64_t generation,
                                  const struct fg_registry *reg,
                                  const struct acl_config *cfg,
                                  const struct acl_identity *id)
{
	struct acl_client *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->r = rules_new(reg, cfg, id);
	if (c->r == NULL) {
		free(c);
		return NULL;
	}
	/* A client without rules keeps its reason to itself. */
	if (set != NULL && c->r->problem == NULL)
		c->r = set_intern(set, generation, c->r);
	return c;
}

bool acl_client_shares(const struct acl_client *a, const struct acl_client *b)
{
	return a != NULL && b != NULL && a->r == b->r;
}

void acl_client_free(struct acl_client *c)
{
	if (c == NULL)
		return;
	rules_release(c->r);
	free(c->denials);
	free(c);
}

const char *acl_client_problem(const struct acl_client *c)
{
	return c->r->problem;
}

/* Start of level n of s and its end, or NULL when s has fewer levels. */
static const char *nth_level(const char *s, int n, const char **end)
{
	for (; n > 0; n--) {
		s = strchr(s, '/');
		if (s == NULL)
			return NULL;
		s++;
	}
	*end = strchr(s, '/');
	if (*end == NULL)
		*end = s + strlen(s);
	return s;
}

/* The isolation backstop for a topic (filter false) or a filter. */
static bool isolation_allows(const struct acl_rules *c, const char *s,
                             bool filter)
{
	const char *lvl, *end = NULL, *p;
	int n = c->cfg.municipality_level, i;

	if (!c->cfg.isolation || c->cross_municipality || s[0] == '$')
		return true;
	if (filter) {
		/* A '#' before the municipality level spans them all. */
		for (i = 0, p = s; i < n; i++) {
			const char *e = strchr(p, '/');
			if ((e ? (size_t)(e - p) : strlen(p)) == 1 &&
			    p[0] == '#')
				return false;
			if (e == NULL)
				return true;
			p = e + 1;
		}
	}
	lvl = nth_level(s, n, &end);
	if (lvl == NULL)
		return true; /* not a municipality topic */
	if (c->municipality == NULL)
		return false;
	return strlen(c->municipality) == (size_t)(end - lvl) &&
	       memcmp(c->municipality, lvl, (size_t)(end - lvl)) == 0;
}

static enum acl_answer first_match(const struct rule_list *l, const char *t)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		if (acl_topic_matches(l->v[i].pattern, t))
			return l->v[i].allow ? ACL_ALLOW : ACL_DENY;
	}
	return ACL_DENY;
}

/* The first rule whose pattern contains the filter: 1 allow, 0 deny, -1
 * none. */
static int first_within(const struct rule_list *l, const char *f)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		if (acl_filter_within(f, l->v[i].pattern))
			return l->v[i].allow ? 1 : 0;
	}
	return -1;
}

static enum acl_answer check_subscribe(const struct acl_rules *c, const char *f)
{
	int sub;

	f = acl_strip_share(f);
	if (f == NULL || !acl_filter_valid(f) || !isolation_allows(c, f, true))
		return ACL_DENY;
	if (first_within(&c->lists[FG_RULE_RECEIVE], f) != 1)
		return ACL_DENY;
	sub = first_within(&c->lists[FG_RULE_SUBSCRIBE], f);
	return sub == 0 ? ACL_DENY : ACL_ALLOW;
}

static struct cache_entry *cache_find(const struct acl_rules *c, int access,
                                      const char *topic, uint64_t h,
                                      bool *found)
{
	size_t pos = (size_t)h & (c->cache_slots - 1);

	while (c->cache[pos].topic != NULL) {
		struct cache_entry *e = &c->cache[pos];
		if (e->hash == h && e->access == access &&
		    strcmp(e->topic, topic) == 0) {
			*found = true;
			return e;
		}
		pos = (pos + 1) & (c->cache_slots - 1);
	}
	*found = false;
	return &c->cache[pos];
}

static enum acl_answer decide(const struct acl_rules *c, int access,
                              const char *topic)
{
	if (!isolation_allows(c, topic, false))
		return ACL_DENY;
	return first_match(
	    &c->lists[access == MOSQ_ACL_WRITE ? FG_RULE_PUBLISH
	                                       : FG_RULE_RECEIVE],
	    topic);
}

/* FNV-1a of topic, or false when it is longer than CACHE_TOPIC_MAX (one
 * pass for both). */
static bool topic_hash(const char *topic, uint64_t *out)
{
	uint64_t h = 1469598103934665603ULL;
	size_t i;

	for (i = 0; topic[i] != '\0'; i++) {
		if (i == CACHE_TOPIC_MAX)
			return false;
		h = (h ^ (unsigned char)topic[i]) * 1099511628211ULL;
	}
	*out = h;
	return true;
}

/* Double the cache's slots (up to the power of two at or above twice
 * cache_size, so that a full cache is at most half full), keeping its
 * entries;
 * when memory runs out it stays as it is. */
static void cache_grow(struct acl_rules *c)
{
	size_t n = c->cache_slots * 2, max = CACHE_MIN_SLOTS, i;
	struct cache_entry *nc;

	while (max < 2 * (size_t)c->cfg.cache_size)
		max *= 2;
	if (n > max || (nc = calloc(n, sizeof(*nc))) == NULL)
		return;
	for (i = 0; i < c->cache_slots; i++) {
		size_t pos;

		if (c->cache[i].topic == NULL)
			continue;
		pos = (size_t)c->cache[i].hash & (n - 1);
		while (nc[pos].topic != NULL)
			pos = (pos + 1) & (n - 1);
		nc[pos] = c->cache[i];
	}
	free(c->cache);
	c->cache = nc;
	c->cache_slots = n;
}

enum acl_answer acl_check(struct acl_client *client, int access,
                          const char *topic)
{
	struct acl_rules *c = client != NULL ? client->r : NULL;
	struct cache_entry *e;
	enum acl_answer a;
	uint64_t h;
	bool found;

	if (c == NULL || c->problem != NULL || topic == NULL)
		return ACL_DENY;
	if (access == MOSQ_ACL_SUBSCRIBE)
		return check_subscribe(c, topic);
	if (access != MOSQ_ACL_WRITE && access != MOSQ_ACL_READ)
		return ACL_DENY;
	if (topic == c->memo_topic) {
		e = &c->cache[c->memo_pos]; /* memo_pos < cache_slots */
		if (e->topic != NULL && e->access == access &&
		    strcmp(e->topic, topic) == 0)
			return (enum acl_answer)e->answer;
	}
	if (!topic_hash(topic, &h))
		return decide(c, access, topic);

	h ^= (uint64_t)access;
	e = cache_find(c, access, topic, h, &found);
	if (found) {
		c->memo_topic = topic;
		c->memo_pos = (size_t)(e - c->cache);
		return (enum acl_answer)e->answer;
	}
	a = decide(c, access, topic);
	if (c->cache_count >= (size_t)c->cfg.cache_size) {
		/* Full: start over rather than track ages on the hot path. */
		cache_clear(c);
		e = cache_find(c, access, topic, h, &found);
	} else if ((c->cache_count + 1) * 2 > c->cache_slots) {
		size_t before = c->cache_slots;

		cache_grow(c);
		if (c->cache_slots != before)
			e = cache_find(c, access, topic, h, &found);
		else if ((c->cache_count + 1) * 4 > c->cache_slots * 3)
			return a; /* could not grow: answer uncached */
	}
	e->topic = strdup(topic);
	if (e->topic != NULL) {
		e->hash = h;
		e->access = (uint8_t)access;
		e->answer = (uint8_t)a;
		c->cache_count++;
		c->memo_topic = topic;
		c->memo_pos = (size_t)(e - c->cache);
	}
	return a;
}

/* Rebuild the denial table with the windows that are still open; if
 * that leaves it full, start anew (a flood of distinct topics then gets
 * rows again, which is better than counting it wrongly). */
static void prune_denials(struct acl_client *c, int64_t now_ms)
{
	struct denial *old = c->denials, *fresh;
	size_t i;

	fresh = calloc(DENIAL_SLOTS, sizeof(*fresh));
	if (fresh == NULL) {
		memset(old, 0, DENIAL_SLOTS * sizeof(*old));
		c->ndenials = 0;
		return;
	}
	c->denials = fresh;
	c->ndenials = 0;
	for (i = 0; i < DENIAL_SLOTS; i++) {
		size_t pos;

		if (old[i].key == 0 ||
		    now_ms - old[i].window_ms >= DENIAL_WINDOW_MS)
			continue;
		if (c->ndenials >= DENIAL_SLOTS / 4) {
			memset(fresh, 0, DENIAL_SLOTS * sizeof(*fresh));
			c->ndenials = 0;
			break;
		}
		pos = (size_t)old[i].key & (DENIAL_SLOTS - 1);
		while (c->denials[pos].key != 0)
			pos = (pos + 1) & (DENIAL_SLOTS - 1);
		c->denials[pos] = old[i];
		c->ndenials++;
	}
	free(old);
}

bool acl_note_denial(struct acl_client *c, int access, const char *topic,
                     int64_t now_ms, uint64_t *count)
{
	uint64_t key;
	size_t pos;
	struct denial *d;

	*count = 1;
	if (c == NULL || topic == NULL)
		return true;
	if (c->denials == NULL) {
		c->denials = calloc(DENIAL_SLOTS, sizeof(*c->denials));
		if (c->denials == NULL)
			return true; /* cannot throttle: report each */
	}
	key = (fg_hash_str(topic) ^ ((uint64_t)access << 56)) | 1;
	pos = (size_t)key & (DENIAL_SLOTS - 1);
	while (c->denials[pos].key != 0 && c->denials[pos].key != key)
		pos = (pos + 1) & (DENIAL_SLOTS - 1);
	d = &c->denials[pos];
	if (d->key == 0) {
		if (c->ndenials >= DENIAL_SLOTS / 2) {
			/* Full: keep the windows still open, drop the rest. */
			prune_denials(c, now_ms);
			pos = (size_t)key & (DENIAL_SLOTS - 1);
			while (c->denials[pos].key != 0)
				pos = (pos + 1) & (DENIAL_SLOTS - 1);
			d = &c->denials[pos];
		}
		d->key = key;
		d->window_ms = now_ms;
		d->unreported = 0;
		c->ndenials++;
		return true;
	}
	d->unreported++;
	if (now_ms - d->window_ms < DENIAL_WINDOW_MS)
		return false;
	*count = d->unreported;
	d->unreported = 0;
	d->window_ms = now_ms;
	return true;
}
