/*
 * One client's compiled rules, its answer cache, and the isolation
 * backstop.
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

struct acl_client {
	struct acl_config cfg;
	const char *problem; /* why there are no rules, or NULL */
	bool cross_municipality;
	char *municipality;        /* NULL: none */
	struct rule_list lists[3]; /* by enum fg_rule_access */
	struct cache_entry *cache;
	size_t cache_slots, cache_count; /* slots: a power of two */
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

static int compile(struct acl_client *c, const struct fg_registry *reg,
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

struct acl_client *acl_client_new(const struct fg_registry *reg,
                                  const struct acl_config *cfg,
                                  const struct acl_identity *id)
{
	struct acl_client *c = calloc(1, sizeof(*c));
	size_t slots = 16;

	if (c == NULL)
		return NULL;
	c->cfg = *cfg;
	while (slots < (size_t)cfg->cache_size * 2)
		slots *= 2;
	c->cache = calloc(slots, sizeof(*c->cache));
	c->cache_slots = slots;
	if (c->cache == NULL || compile(c, reg, id) != 0) {
		acl_client_free(c);
		return NULL;
	}
	return c;
}

static void cache_clear(struct acl_client *c)
{
	size_t i;

	for (i = 0; i < c->cache_slots; i++) {
		free(c->cache[i].topic);
		c->cache[i].topic = NULL;
	}
	c->cache_count = 0;
}

void acl_client_free(struct acl_client *c)
{
	size_t k, i;

	if (c == NULL)
		return;
	for (k = 0; k < 3; k++) {
		for (i = 0; i < c->lists[k].n; i++)
			free(c->lists[k].v[i].pattern);
		free(c->lists[k].v);
	}
	if (c->cache != NULL)
		cache_clear(c);
	free(c->cache);
	free(c->municipality);
	free(c->denials);
	free(c);
}

const char *acl_client_problem(const struct acl_client *c)
{
	return c->problem;
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
static bool isolation_allows(const struct acl_client *c, const char *s,
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

static enum acl_answer check_subscribe(struct acl_client *c, const char *f)
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

static struct cache_entry *cache_find(struct acl_client *c, int access,
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

static enum acl_answer decide(const struct acl_client *c, int access,
                              const char *topic)
{
	if (!isolation_allows(c, topic, false))
		return ACL_DENY;
	return first_match(
	    &c->lists[access == MOSQ_ACL_WRITE ? FG_RULE_PUBLISH
	                                       : FG_RULE_RECEIVE],
	    topic);
}

enum acl_answer acl_check(struct acl_client *c, int access, const char *topic)
{
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
	if (strnlen(topic, CACHE_TOPIC_MAX + 1) > CACHE_TOPIC_MAX)
		return decide(c, access, topic);

	h = fg_hash_str(topic) ^ (uint64_t)access;
	e = cache_find(c, access, topic, h, &found);
	if (found)
		return (enum acl_answer)e->answer;
	a = decide(c, access, topic);
	if (c->cache_count >= (size_t)c->cfg.cache_size) {
		/* Full: start over rather than track ages on the hot path. */
		cache_clear(c);
		e = cache_find(c, access, topic, h, &found);
	}
	e->topic = strdup(topic);
	if (e->topic != NULL) {
		e->hash = h;
		e->access = (uint8_t)access;
		e->answer = (uint8_t)a;
		c->cache_count++;
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
