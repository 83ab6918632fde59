/*
 * The in-memory registry: growable row arrays with open-addressing hash
 * indices built once at finalise.
 */
#include "fg_registry.h"
#include "fg_registry_int.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define EMPTY_SLOT UINT32_MAX
/* The registry's strings are kept in blocks of this size (or one string's
 * size, if larger), mapped outside malloc. See pool_strdup. */
#define POOL_BLOCK ((size_t)1 << 20)

struct pool_block {
	struct pool_block *next;
	size_t size, used; /* of the mapping, header included */
};

struct index {
	uint32_t *slots;
	size_t mask; /* capacity - 1; capacity is a power of two */
};

struct fg_registry {
	struct fg_device *devices;
	size_t ndevices, cap_devices;
	struct fg_cert *certs;
	size_t ncerts, cap_certs;
	struct fg_account *accounts;
	size_t naccounts, cap_accounts;
	struct fg_rule *rules;
	size_t nrules, cap_rules;
	bool has_rules;
	struct fg_limit *limits;
	size_t nlimits, cap_limits;
	bool has_limits;

	struct index by_device, by_cert, by_account;
	bool finalised;

	enum fg_registry_origin origin;
	int schema_version;
	int64_t loaded_at;

	struct pool_block *pool;
	atomic_uint refs;
};

/*
 * A copy of s in the registry's pool (NULL for NULL; sets *failed when out
 * of memory). A registry is built by the loader thread between the query
 * results it is read from; strings allocated one by one would sit between
 * those results' blocks, and once the results are freed the holes could
 * not go back to the system (100,000 devices kept about 50 MB so). In
 * mappings of their own they leave malloc's heap to the results alone.
 * They are freed with the registry, all at once.
 */
static char *pool_strdup(struct fg_registry *reg, const char *s, bool *failed)
{
	size_t len, need;
	struct pool_block *b;
	char *out;

	if (s == NULL)
		return NULL;
	len = strlen(s) + 1;
	b = reg->pool;
	if (b == NULL || b->size - b->used < len) {
		need = sizeof(*b) + len;
		need = need > POOL_BLOCK ? need : POOL_BLOCK;
		b = mmap(NULL, need, PROT_READ | PROT_WRITE,
		         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (b == MAP_FAILED) {
			*failed = true;
			return NULL;
		}
		b->size = need;
		b->used = sizeof(*b);
		b->next = reg->pool;
		reg->pool = b;
	}
	out = (char *)b + b->used;
	memcpy(out, s, len);
	b->used += len;
	return out;
}

static void pool_free(struct pool_block *b)
{
	while (b != NULL) {
		struct pool_block *next = b->next;

		munmap(b, b->size);
		b = next;
	}
}

struct fg_registry *fg_registry_new(void)
{
	struct fg_registry *reg = calloc(1, sizeof(struct fg_registry));

	if (reg != NULL)
		atomic_init(&reg->refs, 1);
	return reg;
}

struct fg_registry *fg_registry_hold(struct fg_registry *reg)
{
	if (reg != NULL)
		atomic_fetch_add_explicit(&reg->refs, 1, memory_order_relaxed);
	return reg;
}

void fg_registry_free(struct fg_registry *reg)
{
	size_t i;

	/* The last holder frees; acq_rel orders every other holder's reads
	 * before it. */
	if (reg == NULL ||
	    atomic_fetch_sub_explicit(&reg->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (i = 0; i < reg->naccounts; i++)
		if (reg->accounts[i].password_hash != NULL)
			memset(reg->accounts[i].password_hash, 0,
			       strlen(reg->accounts[i].password_hash));
	free(reg->rules);
	free(reg->limits);
	free(reg->devices);
	free(reg->certs);
	free(reg->accounts);
	free(reg->by_device.slots);
	free(reg->by_cert.slots);
	free(reg->by_account.slots);
	pool_free(reg->pool);
	free(reg);
}

int fg_registry_add_device(struct fg_registry *reg, const char *id,
                           const char *municipality,
                           enum fg_device_status status, bool require_api_key,
                           const char *api_key_hash)
{
	struct fg_device *d;
	bool failed = false;

	if (reg->finalised || id == NULL || municipality == NULL ||
	    fg_grow(&reg->devices, &reg->cap_devices, reg->ndevices,
	            sizeof(*d)) != 0)
		return -1;
	d = &reg->devices[reg->ndevices];
	d->id = pool_strdup(reg, id, &failed);
	d->municipality = pool_strdup(reg, municipality, &failed);
	d->api_key_hash = pool_strdup(reg, api_key_hash, &failed);
	d->status = status;
	d->require_api_key = require_api_key;
	if (failed)
		return -1; /* what was copied goes with the registry */
	reg->ndevices++;
	return 0;
}

int fg_registry_add_cert(struct fg_registry *reg, const fg_fingerprint *fp,
                         const char *device_id, int64_t not_before,
                         int64_t not_after, int64_t revoked_at)
{
	struct fg_cert *c;
	bool failed = false;

	if (reg->finalised || device_id == NULL ||
	    fg_grow(&reg->certs, &reg->cap_certs, reg->ncerts, sizeof(*c)) != 0)
		return -1;
	c = &reg->certs[reg->ncerts];
	c->device_id = pool_strdup(reg, device_id, &failed);
	if (failed)
		return -1;
	c->fp = *fp;
	c->device = NULL;
	c->not_before = not_before;
	c->not_after = not_after;
	c->revoked_at = revoked_at;
	reg->ncerts++;
	return 0;
}

int fg_registry_add_account(struct fg_registry *reg, const char *username,
                            const char *password_hash, const char *role,
                            const char *municipality, bool cross_municipality,
                            bool disabled)
{
	struct fg_account *a;
	bool failed = false;

	if (reg->finalised || username == NULL || password_hash == NULL ||
	    role == NULL ||
	    fg_grow(&reg->accounts, &reg->cap_accounts, reg->naccounts,
	            sizeof(*a)) != 0)
		return -1;
	a = &reg->accounts[reg->naccounts];
	a->username = pool_strdup(reg, username, &failed);
	a->password_hash = pool_strdup(reg, password_hash, &failed);
	a->role = pool_strdup(reg, role, &failed);
	a->municipality = pool_strdup(reg, municipality, &failed);
	a->cross_municipality = cross_municipality;
	a->disabled = disabled;
	if (failed)
		return -1;
	reg->naccounts++;
	return 0;
}

int fg_registry_add_rule(struct fg_registry *reg, int64_t id,
                         enum fg_rule_subject kind, const char *subject,
                         const char *pattern, enum fg_rule_access access,
                         bool allow, int priority)
{
	struct fg_rule *r;
	bool failed = false;

	if (reg->finalised || pattern == NULL ||
	    (subject == NULL) != (kind == FG_RULE_ALL_DEVICES) ||
	    fg_grow(&reg->rules, &reg->cap_rules, reg->nrules, sizeof(*r)) != 0)
		return -1;
	r = &reg->rules[reg->nrules];
	r->subject = pool_strdup(reg, subject, &failed);
	r->pattern = pool_strdup(reg, pattern, &failed);
	if (failed)
		return -1;
	r->id = id;
	r->kind = kind;
	r->access = access;
	r->allow = allow;
	r->priority = priority;
	reg->nrules++;
	reg->has_rules = true;
	return 0;
}

const struct fg_rule *fg_registry_rules(const struct fg_registry *reg,
                                        size_t *n)
{
	*n = reg->nrules;
	return reg->rules;
}

bool fg_registry_has_rules(const struct fg_registry *reg)
{
	return reg->has_rules;
}

void fg_registry_set_has_rules(struct fg_registry *reg, bool has)
{
	reg->has_rules = has;
}

int fg_registry_add_limit(struct fg_registry *reg, enum fg_limit_scope kind,
                          const char *scope, int64_t messages, int64_t bytes,
                          int64_t window_s, int64_t burst)
{
	struct fg_limit *l;
	bool failed = false;

	if (reg->finalised || (scope == NULL) != (kind == FG_LIMIT_GLOBAL) ||
	    fg_grow(&reg->limits, &reg->cap_limits, reg->nlimits, sizeof(*l)) !=
	        0)
		return -1;
	l = &reg->limits[reg->nlimits];
	l->scope = pool_strdup(reg, scope, &failed);
	if (failed)
		return -1;
	l->kind = kind;
	l->messages = messages;
	l->bytes = bytes;
	l->window_s = window_s;
	l->burst = burst;
	reg->nlimits++;
	reg->has_limits = true;
	return 0;
}

const struct fg_limit *fg_registry_limits(const struct fg_registry *reg,
                                          size_t *n)
{
	*n = reg->nlimits;
	return reg->limits;
}

bool fg_registry_has_limits(const struct fg_registry *reg)
{
	return reg->has_limits;
}

void fg_registry_set_has_limits(struct fg_registry *reg, bool has)
{
	reg->has_limits = has;
}

static const char *const limit_scopes[] = {
    [FG_LIMIT_GLOBAL] = "global",
    [FG_LIMIT_MUNICIPALITY] = "municipality",
    [FG_LIMIT_DEVICE] = "device",
};

const char *fg_limit_scope_str(enum fg_limit_scope k)
{
	return (unsigned)k < 3 ? limit_scopes[k] : "?";
}

int fg_limit_scope_parse(const char *s, enum fg_limit_scope *out)
{
	int i;

	for (i = 0; s != NULL && i < 3; i++) {
		if (strcmp(s, limit_scopes[i]) == 0) {
			*out = (enum fg_limit_scope)i;
			return 0;
		}
	}
	return -1;
}

static const char *const rule_subjects[] = {
    [FG_RULE_DEVICE] = "device",
    [FG_RULE_ACCOUNT] = "account",
    [FG_RULE_ROLE] = "role",
    [FG_RULE_MUNICIPALITY] = "municipality",
    [FG_RULE_ALL_DEVICES] = "all_devices",
};

static const char *const rule_accesses[] = {
    [FG_RULE_PUBLISH] = "publish",
    [FG_RULE_SUBSCRIBE] = "subscribe",
    [FG_RULE_RECEIVE] = "receive",
};

const char *fg_rule_subject_str(enum fg_rule_subject k)
{
	return (size_t)k < 5 ? rule_subjects[k] : "unknown";
}

int fg_rule_subject_parse(const char *s, enum fg_rule_subject *out)
{
	int i;

	for (i = 0; s != NULL && i < 5; i++) {
		if (strcmp(s, rule_subjects[i]) == 0) {
			*out = (enum fg_rule_subject)i;
			return 0;
		}
	}
	return -1;
}

const char *fg_rule_access_str(enum fg_rule_access a)
{
	return (size_t)a < 3 ? rule_accesses[a] : "unknown";
}

int fg_rule_access_parse(const char *s, enum fg_rule_access *out)
{
	int i;

	for (i = 0; s != NULL && i < 3; i++) {
		if (strcmp(s, rule_accesses[i]) == 0) {
			*out = (enum fg_rule_access)i;
			return 0;
		}
	}
	return -1;
}

static int index_init(struct index *ix, size_t n)
{
	size_t cap = 16, i;

	while (cap < n * 2)
		cap *= 2;
	ix->slots = malloc(cap * sizeof(*ix->slots));
	if (ix->slots == NULL)
		return -1;
	for (i = 0; i < cap; i++)
		ix->slots[i] = EMPTY_SLOT;
	ix->mask = cap - 1;
	return 0;
}

/* Key of row i of a table, for the index helpers. */
typedef const char *(*key_fn)(const struct fg_registry *reg, uint32_t i);

static const char *device_key(const struct fg_registry *reg, uint32_t i)
{
	return reg->devices[i].id;
}

static const char *cert_key(const struct fg_registry *reg, uint32_t i)
{
	return reg->certs[i].fp.hex;
}

static const char *account_key(const struct fg_registry *reg, uint32_t i)
{
	return reg->accounts[i].username;
}

static uint32_t index_find(const struct fg_registry *reg,
                           const struct index *ix, key_fn key,
                           const char *wanted)
{
	size_t pos;

	if (ix->slots == NULL)
		return EMPTY_SLOT;
	pos = (size_t)fg_hash_str(wanted) & ix->mask;
	while (ix->slots[pos] != EMPTY_SLOT) {
		if (strcmp(key(reg, ix->slots[pos]), wanted) == 0)
			return ix->slots[pos];
		pos = (pos + 1) & ix->mask;
	}
	return EMPTY_SLOT;
}

/* Insert row i; -1 if its key is already present. */
static int index_insert(const struct fg_registry *reg, struct index *ix,
                        key_fn key, uint32_t i)
{
	const char *k = key(reg, i);
	size_t pos = (size_t)fg_hash_str(k) & ix->mask;

	while (ix->slots[pos] != EMPTY_SLOT) {
		if (strcmp(key(reg, ix->slots[pos]), k) == 0)
			return -1;
		pos = (pos + 1) & ix->mask;
	}
	ix->slots[pos] = i;
	return 0;
}

int fg_registry_finalise(struct fg_registry *reg, char *err, size_t errlen)
{
	uint32_t i;

	if (reg->finalised)
		return 0;
	if (index_init(&reg->by_device, reg->ndevices) != 0 ||
	    index_init(&reg->by_cert, reg->ncerts) != 0 ||
	    index_init(&reg->by_account, reg->naccounts) != 0) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; i < reg->ndevices; i++) {
		if (index_insert(reg, &reg->by_device, device_key, i) != 0) {
			fg_seterr(err, errlen, "duplicate device id=%.64s",
			          reg->devices[i].id);
			return -1;
		}
	}
	for (i = 0; i < reg->naccounts; i++) {
		if (index_insert(reg, &reg->by_account, account_key, i) != 0) {
			fg_seterr(err, errlen,
			          "duplicate account username=%.64s",
			          reg->accounts[i].username);
			return -1;
		}
	}
	for (i = 0; i < reg->ncerts; i++) {
		struct fg_cert *c = &reg->certs[i];
		uint32_t d =
		    index_find(reg, &reg->by_device, device_key, c->device_id);

		if (d == EMPTY_SLOT) {
			fg_seterr(err, errlen,
			          "certificate fingerprint=%s names unknown "
			          "device id=%.64s",
			          c->fp.hex, c->device_id);
			return -1;
		}
		c->device = &reg->devices[d];
		if (index_insert(reg, &reg->by_cert, cert_key, i) != 0) {
			fg_seterr(err, errlen,
			          "duplicate certificate fingerprint=%s",
			          c->fp.hex);
			return -1;
		}
	}
	reg->finalised = true;
	return 0;
}

const struct fg_cert *fg_registry_cert(const struct fg_registry *reg,
                                       const fg_fingerprint *fp)
{
	uint32_t i = index_find(reg, &reg->by_cert, cert_key, fp->hex);

	return i == EMPTY_SLOT ? NULL : &reg->certs[i];
}

const struct fg_device *fg_registry_device(const struct fg_registry *reg,
                                           const char *id)
{
	uint32_t i = index_find(reg, &reg->by_device, device_key, id);

	return i == EMPTY_SLOT ? NULL : &reg->devices[i];
}

const struct fg_account *fg_registry_account(const struct fg_registry *reg,
                                             const char *username)
{
	uint32_t i = index_find(reg, &reg->by_account, account_key, username);

	return i == EMPTY_SLOT ? NULL : &reg->accounts[i];
}

size_t fg_registry_device_count(const struct fg_registry *reg)
{
	return reg->ndevices;
}

size_t fg_registry_cert_count(const struct fg_registry *reg)
{
	return reg->ncerts;
}

size_t fg_registry_account_count(const struct fg_registry *reg)
{
	return reg->naccounts;
}

void fg_registry_set_meta(struct fg_registry *reg,
                          enum fg_registry_origin origin, int schema_version,
                          int64_t loaded_at)
{
	reg->origin = origin;
	reg->schema_version = schema_version;
	reg->loaded_at = loaded_at;
}

enum fg_registry_origin fg_registry_origin(const struct fg_registry *reg)
{
	return reg->origin;
}

int64_t fg_registry_loaded_at(const struct fg_registry *reg)
{
	return reg->loaded_at;
}

int fg_registry_schema_version(const struct fg_registry *reg)
{
	return reg->schema_version;
}

const char *fg_device_status_str(enum fg_device_status s)
{
	switch (s) {
	case FG_DEVICE_ACTIVE:
		return "active";
	case FG_DEVICE_SUSPENDED:
		return "suspended";
	case FG_DEVICE_DECOMMISSIONED:
		return "decommissioned";
	}
	return "unknown";
}

int fg_device_status_parse(const char *s, enum fg_device_status *out)
{
	if (s == NULL)
		return -1;
	if (strcmp(s, "active") == 0)
		*out = FG_DEVICE_ACTIVE;
	else if (strcmp(s, "suspended") == 0)
		*out = FG_DEVICE_SUSPENDED;
	else if (strcmp(s, "decommissioned") == 0)
		*out = FG_DEVICE_DECOMMISSIONED;
	else
		return -1;
	return 0;
}

const struct fg_device *fg_registry__devices(const struct fg_registry *reg)
{
	return reg->devices;
}

const struct fg_cert *fg_registry__certs(const struct fg_registry *reg)
{
	return reg->certs;
}

const struct fg_account *fg_registry__accounts(const struct fg_registry *reg)
{
	return reg->accounts;
}
