/*
 * The in-memory registry: growable row arrays with open-addressing hash
 * indices, built once at finalise, or copied from the registry a derived
 * one starts from and kept up to date while it is patched.
 */
#include "fg_registry.h"
#include "fg_registry_int.h"
#include "fg_shm.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define EMPTY_SLOT UINT32_MAX
/* The registry's strings are kept in blocks of this size (or one string's
 * size, if larger), mapped outside malloc. See pool_strdup. A derived
 * registry adds only the strings of the rows it changes, in smaller
 * blocks. */
#define POOL_BLOCK ((size_t)1 << 20)
#define POOL_BLOCK_DERIVED ((size_t)16 << 10)

struct pool_block {
	struct pool_block *next;
	size_t size, used; /* of the mapping, header included */
};

/* The strings one registry added. Registries derived from it use them
 * too, so a pool is freed with the last registry that refers to it. */
struct pool {
	atomic_uint refs;
	struct pool_block *blocks;
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

	struct pool *pool;    /* strings added to this registry, or NULL */
	struct pool **shared; /* the pools of the registries it derives from */
	size_t nshared;
	/* A derived registry: its indices are kept up to date from the
	 * start, and base (held until finalise) tells finalise which
	 * certificates still point at a device row that did not move. */
	bool derived;
	struct fg_registry *base;
	unsigned depth; /* registries derived in a row since a fresh one */
	atomic_uint refs;
};

/*
 * A copy of s in the registry's pool (NULL for NULL; sets *failed when out
 * of memory). A registry is built by the loader thread between the query
 * results it is read from; strings allocated one by one would sit between
 * those results' blocks, and once the results are freed the holes could
 * not go back to the system (100,000 devices kept about 50 MB so). In
 * mappings of their own they leave malloc's heap to the results alone.
 * They are unmapped with the last registry that uses them, all at once,
 * which also gives the pages holding password hashes back to the kernel.
 */
static char *pool_strdup(struct fg_registry *reg, const char *s, bool *failed)
{
	size_t len, need,
	    block = reg->derived ? POOL_BLOCK_DERIVED : POOL_BLOCK;
	struct pool_block *b;
	char *out;

	if (s == NULL)
		return NULL;
	if (reg->pool == NULL) {
		reg->pool = fg_mem_calloc(1, sizeof(*reg->pool));
		if (reg->pool == NULL) {
			*failed = true;
			return NULL;
		}
		atomic_init(&reg->pool->refs, 1);
	}
	len = strlen(s) + 1;
	b = reg->pool->blocks;
	if (b == NULL || b->size - b->used < len) {
		need = sizeof(*b) + len;
		need = need > block ? need : block;
		b = fg_mem_map(need);
		if (b == NULL) {
			*failed = true;
			return NULL;
		}
		b->size = need;
		b->used = sizeof(*b);
		b->next = reg->pool->blocks;
		reg->pool->blocks = b;
	}
	out = (char *)b + b->used;
	memcpy(out, s, len);
	b->used += len;
	return out;
}

static void pool_release(struct pool *p)
{
	struct pool_block *b;

	if (p == NULL ||
	    atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
		return;
	b = p->blocks;
	while (b != NULL) {
		struct pool_block *next = b->next;

		fg_mem_unmap(b, b->size);
		b = next;
	}
	fg_mem_free(p);
}

/*
 * The row tables and index slots are mapped too, each in a mapping of its
 * own, and unmapped when freed. Every change builds a new registry, and
 * the tables of a large one are tens of MB: from malloc, the first such
 * block freed raises glibc's mmap threshold, later copies come from the
 * loader thread's arena, and its heap keeps the freed ones (a broker with
 * 100,000 devices grew from 35 to 80 MB over a few dozen patches).
 */
static void *map_alloc(size_t bytes)
{
	return fg_mem_map(bytes);
}

static void map_free(void *p, size_t bytes)
{
	fg_mem_unmap(p, bytes);
}

/* Room for row n of a table of cap rows of elem bytes (fg_grow's
 * contract): the mapping doubles, moved by the kernel if need be. */
static int table_grow(void *arr, size_t *cap, size_t n, size_t elem)
{
	void **a = arr, *na;
	size_t ncap;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 64;
	if (*a == NULL)
		na = map_alloc(ncap * elem);
	else
		na = fg_mem_remap(*a, *cap * elem, ncap * elem);
	if (na == NULL)
		return -1;
	*a = na;
	*cap = ncap;
	return 0;
}

static int index_init(struct index *ix, size_t n)
{
	size_t cap = 16;

	while (cap < n * 2)
		cap *= 2;
	ix->slots = map_alloc(cap * sizeof(*ix->slots));
	if (ix->slots == NULL)
		return -1;
	memset(ix->slots, 0xff, cap * sizeof(*ix->slots)); /* EMPTY_SLOT */
	ix->mask = cap - 1;
	return 0;
}

static void index_free(struct index *ix)
{
	if (ix->slots != NULL)
		map_free(ix->slots, (ix->mask + 1) * sizeof(*ix->slots));
	ix->slots = NULL;
}

struct fg_registry *fg_registry_new(void)
{
	struct fg_registry *reg = fg_mem_calloc(1, sizeof(struct fg_registry));

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
	map_free(reg->rules, reg->cap_rules * sizeof(*reg->rules));
	map_free(reg->limits, reg->cap_limits * sizeof(*reg->limits));
	map_free(reg->devices, reg->cap_devices * sizeof(*reg->devices));
	map_free(reg->certs, reg->cap_certs * sizeof(*reg->certs));
	map_free(reg->accounts, reg->cap_accounts * sizeof(*reg->accounts));
	index_free(&reg->by_device);
	index_free(&reg->by_cert);
	index_free(&reg->by_account);
	pool_release(reg->pool);
	for (i = 0; i < reg->nshared; i++)
		pool_release(reg->shared[i]);
	fg_mem_free(reg->shared);
	fg_registry_free(reg->base);
	fg_mem_free(reg);
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

/* Where key sits in ix, or SIZE_MAX. */
static size_t index_pos(const struct fg_registry *reg, const struct index *ix,
                        key_fn key, const char *wanted)
{
	size_t pos = (size_t)fg_hash_str(wanted) & ix->mask;

	while (ix->slots[pos] != EMPTY_SLOT) {
		if (strcmp(key(reg, ix->slots[pos]), wanted) == 0)
			return pos;
		pos = (pos + 1) & ix->mask;
	}
	return SIZE_MAX;
}

/* The row key names, or EMPTY_SLOT (also before the index is built). */
static uint32_t index_find(const struct fg_registry *reg,
                           const struct index *ix, key_fn key,
                           const char *wanted)
{
	size_t pos;

	if (ix->slots == NULL)
		return EMPTY_SLOT;
	pos = index_pos(reg, ix, key, wanted);
	return pos == SIZE_MAX ? EMPTY_SLOT : ix->slots[pos];
}

/* Put row i in the first free slot of its probe sequence (its key is known
 * to be absent). */
static void index_place(const struct fg_registry *reg, struct index *ix,
                        key_fn key, uint32_t i)
{
	size_t pos = (size_t)fg_hash_str(key(reg, i)) & ix->mask;

	while (ix->slots[pos] != EMPTY_SLOT)
		pos = (pos + 1) & ix->mask;
	ix->slots[pos] = i;
}

/* Make room for n rows, keeping the load at most one half: a larger
 * index, refilled from the one in use. */
static int index_reserve(const struct fg_registry *reg, struct index *ix,
                         key_fn key, size_t n)
{
	struct index bigger;
	size_t i;

	if (n * 2 <= ix->mask + 1)
		return 0;
	if (index_init(&bigger, n * 2) != 0)
		return -1;
	for (i = 0; i <= ix->mask; i++)
		if (ix->slots[i] != EMPTY_SLOT)
			index_place(reg, &bigger, key, ix->slots[i]);
	index_free(ix);
	*ix = bigger;
	return 0;
}

/* Empty slot pos, moving back the entries after it that would no longer
 * be found past the hole (linear probing has no tombstones). */
static void index_delete_at(const struct fg_registry *reg, struct index *ix,
                            key_fn key, size_t pos)
{
	size_t hole = pos, j = pos, home;

	for (;;) {
		j = (j + 1) & ix->mask;
		if (ix->slots[j] == EMPTY_SLOT)
			break;
		home = (size_t)fg_hash_str(key(reg, ix->slots[j])) & ix->mask;
		/* It may fill the hole when the hole lies on its way from
		 * its home slot to j. */
		if (((j - home) & ix->mask) >= ((j - hole) & ix->mask)) {
			ix->slots[hole] = ix->slots[j];
			hole = j;
		}
	}
	ix->slots[hole] = EMPTY_SLOT;
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

/*
 * The row for a key, in a registry being built: in a derived registry the
 * row that already holds key (*fresh false), else a new one at the end of
 * the table (*fresh true; the caller fills it, then calls row_added).
 * NULL when out of memory or after finalise.
 */
static void *row_for(struct fg_registry *reg, struct index *ix, key_fn key,
                     const char *wanted, void *rows, size_t n, size_t *cap,
                     size_t elem, bool *fresh)
{
	void **arr = rows;
	size_t pos;

	if (reg->finalised)
		return NULL;
	if (reg->derived) {
		pos = index_pos(reg, ix, key, wanted);
		if (pos != SIZE_MAX) {
			*fresh = false;
			return (char *)*arr + (size_t)ix->slots[pos] * elem;
		}
		if (index_reserve(reg, ix, key, n + 1) != 0)
			return NULL;
	}
	if (table_grow(arr, cap, n, elem) != 0)
		return NULL;
	*fresh = true;
	return (char *)*arr + n * elem;
}

/* Count in the row row_for returned new; a derived registry indexes it. */
static void row_added(struct fg_registry *reg, struct index *ix, key_fn key,
                      size_t *n)
{
	(*n)++;
	if (reg->derived)
		index_place(reg, ix, key, (uint32_t)(*n - 1));
}

int fg_registry_add_device(struct fg_registry *reg, const char *id,
                           const char *municipality,
                           enum fg_device_status status, bool require_api_key,
                           const char *api_key_hash)
{
	struct fg_device *d;
	bool failed = false, fresh;

	if (id == NULL || municipality == NULL)
		return -1;
	d = row_for(reg, &reg->by_device, device_key, id, &reg->devices,
	            reg->ndevices, &reg->cap_devices, sizeof(*d), &fresh);
	if (d == NULL)
		return -1;
	/* A replaced row keeps its id string: finalise knows the row by it. */
	if (fresh)
		d->id = pool_strdup(reg, id, &failed);
	d->municipality = pool_strdup(reg, municipality, &failed);
	d->api_key_hash = pool_strdup(reg, api_key_hash, &failed);
	d->status = status;
	d->require_api_key = require_api_key;
	if (failed)
		return -1; /* what was copied goes with the registry */
	if (fresh)
		row_added(reg, &reg->by_device, device_key, &reg->ndevices);
	return 0;
}

int fg_registry_add_cert(struct fg_registry *reg, const fg_fingerprint *fp,
                         const char *device_id, int64_t not_before,
                         int64_t not_after, int64_t revoked_at)
{
	struct fg_cert *c;
	bool failed = false, fresh;

	if (device_id == NULL)
		return -1;
	c = row_for(reg, &reg->by_cert, cert_key, fp->hex, &reg->certs,
	            reg->ncerts, &reg->cap_certs, sizeof(*c), &fresh);
	if (c == NULL)
		return -1;
	c->device_id = pool_strdup(reg, device_id, &failed);
	if (failed)
		return -1;
	c->fp = *fp;
	c->device = NULL;
	c->not_before = not_before;
	c->not_after = not_after;
	c->revoked_at = revoked_at;
	if (fresh)
		row_added(reg, &reg->by_cert, cert_key, &reg->ncerts);
	return 0;
}

int fg_registry_add_account(struct fg_registry *reg, const char *username,
                            const char *password_hash, const char *role,
                            const char *municipality, bool cross_municipality,
                            bool disabled)
{
	struct fg_account *a;
	bool failed = false, fresh;

	if (username == NULL || password_hash == NULL || role == NULL)
		return -1;
	a = row_for(reg, &reg->by_account, account_key, username,
	            &reg->accounts, reg->naccounts, &reg->cap_accounts,
	            sizeof(*a), &fresh);
	if (a == NULL)
		return -1;
	if (fresh)
		a->username = pool_strdup(reg, username, &failed);
	a->password_hash = pool_strdup(reg, password_hash, &failed);
	a->role = pool_strdup(reg, role, &failed);
	a->municipality = pool_strdup(reg, municipality, &failed);
	a->cross_municipality = cross_municipality;
	a->disabled = disabled;
	if (failed)
		return -1;
	if (fresh)
		row_added(reg, &reg->by_account, account_key, &reg->naccounts);
	return 0;
}

/* Remove the row of key wanted from a derived registry: the last row
 * takes its place. 1 when removed, 0 when absent, -1 when not allowed. */
static int remove_row(struct fg_registry *reg, struct index *ix, key_fn key,
                      const char *wanted, void *rows, size_t *n, size_t elem)
{
	char *base = rows;
	size_t pos, last;
	uint32_t r;

	if (!reg->derived || reg->finalised)
		return -1;
	pos = index_pos(reg, ix, key, wanted);
	if (pos == SIZE_MAX)
		return 0;
	r = ix->slots[pos];
	index_delete_at(reg, ix, key, pos);
	last = *n - 1;
	if (r != last) {
		ix->slots[index_pos(reg, ix, key, key(reg, (uint32_t)last))] =
		    r;
		memcpy(base + (size_t)r * elem, base + last * elem, elem);
	}
	(*n)--;
	return 1;
}

int fg_registry_remove_device(struct fg_registry *reg, const char *id)
{
	return remove_row(reg, &reg->by_device, device_key, id, reg->devices,
	                  &reg->ndevices, sizeof(*reg->devices));
}

int fg_registry_remove_cert(struct fg_registry *reg, const fg_fingerprint *fp)
{
	return remove_row(reg, &reg->by_cert, cert_key, fp->hex, reg->certs,
	                  &reg->ncerts, sizeof(*reg->certs));
}

int fg_registry_remove_account(struct fg_registry *reg, const char *username)
{
	return remove_row(reg, &reg->by_account, account_key, username,
	                  reg->accounts, &reg->naccounts,
	                  sizeof(*reg->accounts));
}

void fg_registry_clear_rules(struct fg_registry *reg)
{
	if (!reg->finalised)
		reg->nrules = 0;
}

void fg_registry_clear_limits(struct fg_registry *reg)
{
	if (!reg->finalised)
		reg->nlimits = 0;
}

/* A copy of n rows, with room to grow; *dst_n is set once it is made. */
static int copy_rows(void *dst, size_t *dst_n, size_t *cap, const void *src,
                     size_t n, size_t elem)
{
	void **d = dst;
	size_t c = n + n / 8 + 16;

	*d = map_alloc(c * elem);
	if (*d == NULL)
		return -1;
	if (n > 0)
		memcpy(*d, src, n * elem);
	*cap = c;
	*dst_n = n;
	return 0;
}

/* One table of base copied into reg (in fg_registry_derive). */
#define COPY_TABLE(rows, n, cap)                                               \
	copy_rows(&reg->rows, &reg->n, &reg->cap, base->rows, base->n,         \
	          sizeof(*reg->rows))

static int copy_index(struct index *dst, const struct index *src)
{
	dst->slots = map_alloc((src->mask + 1) * sizeof(*dst->slots));
	if (dst->slots == NULL)
		return -1;
	memcpy(dst->slots, src->slots, (src->mask + 1) * sizeof(*dst->slots));
	dst->mask = src->mask;
	return 0;
}

static void share_pool(struct fg_registry *reg, struct pool *p)
{
	atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	reg->shared[reg->nshared++] = p;
}

struct fg_registry *fg_registry_derive(struct fg_registry *base)
{
	struct fg_registry *reg;
	size_t i;

	if (base == NULL || !base->finalised)
		return NULL;
	reg = fg_registry_new();
	if (reg == NULL)
		return NULL;
	reg->derived = true;
	reg->depth = base->depth + 1;
	reg->base = fg_registry_hold(base);
	reg->shared = fg_mem_malloc((base->nshared + 1) * sizeof(*reg->shared));
	if (reg->shared == NULL)
		goto fail;
	for (i = 0; i < base->nshared; i++)
		share_pool(reg, base->shared[i]);
	if (base->pool != NULL)
		share_pool(reg, base->pool);
	if (COPY_TABLE(devices, ndevices, cap_devices) != 0 ||
	    COPY_TABLE(certs, ncerts, cap_certs) != 0 ||
	    COPY_TABLE(accounts, naccounts, cap_accounts) != 0 ||
	    COPY_TABLE(rules, nrules, cap_rules) != 0 ||
	    COPY_TABLE(limits, nlimits, cap_limits) != 0)
		goto fail;
	if (copy_index(&reg->by_device, &base->by_device) != 0 ||
	    copy_index(&reg->by_cert, &base->by_cert) != 0 ||
	    copy_index(&reg->by_account, &base->by_account) != 0)
		goto fail;
	reg->has_rules = base->has_rules;
	reg->has_limits = base->has_limits;
	reg->origin = base->origin;
	reg->schema_version = base->schema_version;
	reg->loaded_at = base->loaded_at;
	return reg;
fail:
	fg_registry_free(reg);
	return NULL;
}

unsigned fg_registry_depth(const struct fg_registry *reg)
{
	return reg->depth;
}

/* Point c at device row d (EMPTY_SLOT: none, an error). */
static int link_cert(struct fg_registry *reg, struct fg_cert *c, uint32_t d,
                     char *err, size_t errlen)
{
	if (d == EMPTY_SLOT) {
		fg_seterr(err, errlen,
		          "certificate fingerprint=%s names unknown device "
		          "id=%.64s",
		          c->fp.hex, c->device_id);
		return -1;
	}
	c->device = &reg->devices[d];
	return 0;
}

/*
 * Point every certificate of a derived registry at its device's row. A
 * certificate copied from the base still points at the base's row k; when
 * row k of this registry has the same id string, it is the same device
 * (changed or not). Others (new or changed certificates, or a device row
 * that moved) are looked up by their device id.
 */
static int relink_derived(struct fg_registry *reg, char *err, size_t errlen)
{
	const struct fg_registry *base = reg->base;
	uintptr_t b0 = (uintptr_t)base->devices;
	size_t i;

	for (i = 0; i < reg->ncerts; i++) {
		struct fg_cert *c = &reg->certs[i];
		uintptr_t p = (uintptr_t)c->device;
		size_t k = (p - b0) / sizeof(struct fg_device);
		uint32_t d;

		if (c->device != NULL && p >= b0 && k < base->ndevices &&
		    k < reg->ndevices &&
		    reg->devices[k].id == base->devices[k].id) {
			c->device = &reg->devices[k];
			continue;
		}
		d = index_find(reg, &reg->by_device, device_key, c->device_id);
		if (link_cert(reg, c, d, err, errlen) != 0)
			return -1;
	}
	fg_registry_free(reg->base);
	reg->base = NULL;
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
	    table_grow(&reg->rules, &reg->cap_rules, reg->nrules, sizeof(*r)) !=
	        0)
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
	    table_grow(&reg->limits, &reg->cap_limits, reg->nlimits,
	               sizeof(*l)) != 0)
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

int fg_registry_finalise(struct fg_registry *reg, char *err, size_t errlen)
{
	uint32_t i;

	if (reg->finalised)
		return 0;
	if (reg->derived) {
		if (relink_derived(reg, err, errlen) != 0)
			return -1;
		reg->finalised = true;
		return 0;
	}
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

		if (link_cert(reg, c, d, err, errlen) != 0)
			return -1;
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
