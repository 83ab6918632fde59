/*
 * The device registry as held in memory: devices, their certificates and
 * the non-device accounts, indexed for lookups on the broker thread.
 *
 * A registry is built once (by the loader thread from PostgreSQL, or from
 * the snapshot file, or derived from the one before with the rows that
 * changed), finalised, and from then on only read. A newer registry
 * replaces it as a whole on the broker thread, so readers need no locks.
 */
#ifndef FG_REGISTRY_H
#define FG_REGISTRY_H

#include <stdbool.h>

#include "fg_common.h"
#include "fg_ident.h"

enum fg_device_status {
	FG_DEVICE_ACTIVE = 0,
	FG_DEVICE_SUSPENDED,
	FG_DEVICE_DECOMMISSIONED,
};

struct fg_device {
	char *id;
	char *municipality;
	enum fg_device_status status;
	bool require_api_key;
	char *api_key_hash; /* NULL when the device has no key */
};

struct fg_cert {
	fg_fingerprint fp;
	char *device_id;
	const struct fg_device *device; /* resolved by finalise */
	int64_t not_before, not_after;  /* epoch seconds */
	int64_t revoked_at;             /* epoch seconds, 0 when not revoked */
};

struct fg_account {
	char *username;
	char *password_hash;
	char *role;
	char *municipality; /* NULL for accounts of no municipality */
	bool cross_municipality;
	bool disabled;
};

/* ACL rules (schema version 2). */
enum fg_rule_subject {
	FG_RULE_DEVICE = 0,
	FG_RULE_ACCOUNT,
	FG_RULE_ROLE,
	FG_RULE_MUNICIPALITY,
	FG_RULE_ALL_DEVICES,
};

enum fg_rule_access {
	FG_RULE_PUBLISH = 0,
	FG_RULE_SUBSCRIBE,
	FG_RULE_RECEIVE,
};

struct fg_rule {
	int64_t id;
	enum fg_rule_subject kind;
	char *subject; /* NULL for FG_RULE_ALL_DEVICES */
	char *pattern;
	enum fg_rule_access access;
	bool allow;
	int priority;
};

/* Rate limits (schema version 4). A field of -1 is not given by the row:
 * it is inherited from a wider scope. */
enum fg_limit_scope {
	FG_LIMIT_GLOBAL = 0,
	FG_LIMIT_MUNICIPALITY,
	FG_LIMIT_DEVICE,
};

struct fg_limit {
	enum fg_limit_scope kind;
	char *scope; /* device or municipality id; NULL for FG_LIMIT_GLOBAL */
	int64_t messages, bytes;
	int64_t window_s, burst;
};

enum fg_registry_origin {
	FG_REGISTRY_FROM_DATABASE = 0,
	FG_REGISTRY_FROM_SNAPSHOT,
};

struct fg_registry;

/*
 * A new, empty registry, or NULL when out of memory. It holds one
 * reference. A finalised registry is never changed again, so threads may
 * read it at once: fg_registry_hold takes one more reference (and returns
 * reg), fg_registry_free drops one and frees the registry with the last.
 */
FG_API struct fg_registry *fg_registry_new(void);
FG_API struct fg_registry *fg_registry_hold(struct fg_registry *reg);
FG_API void fg_registry_free(struct fg_registry *reg);

/*
 * Add rows. Strings are copied; NULL is allowed where the field may be
 * NULL. Returns 0 on success, -1 when out of memory or after finalise.
 */
FG_API int fg_registry_add_device(struct fg_registry *reg, const char *id,
                                  const char *municipality,
                                  enum fg_device_status status,
                                  bool require_api_key,
                                  const char *api_key_hash);
FG_API int fg_registry_add_cert(struct fg_registry *reg,
                                const fg_fingerprint *fp, const char *device_id,
                                int64_t not_before, int64_t not_after,
                                int64_t revoked_at);
FG_API int fg_registry_add_account(struct fg_registry *reg,
                                   const char *username,
                                   const char *password_hash, const char *role,
                                   const char *municipality,
                                   bool cross_municipality, bool disabled);

FG_API int fg_registry_add_rule(struct fg_registry *reg, int64_t id,
                                enum fg_rule_subject kind, const char *subject,
                                const char *pattern, enum fg_rule_access access,
                                bool allow, int priority);

/*
 * A registry to patch: a copy of the rows of base (finalised), whose
 * strings it shares instead of copying them. Until it is finalised, an
 * fg_registry_add_device, _cert or _account with the key of a row it holds
 * replaces that row, the fg_registry_remove_* calls remove rows (1 when
 * removed, 0 when absent, -1 on a registry not derived or finalised), and
 * the rule and limit tables can be emptied to be added again. After any
 * failure it must be freed. NULL when out of memory.
 */
FG_API struct fg_registry *fg_registry_derive(struct fg_registry *base);
FG_API int fg_registry_remove_device(struct fg_registry *reg, const char *id);
FG_API int fg_registry_remove_cert(struct fg_registry *reg,
                                   const fg_fingerprint *fp);
FG_API int fg_registry_remove_account(struct fg_registry *reg,
                                      const char *username);
FG_API void fg_registry_clear_rules(struct fg_registry *reg);
FG_API void fg_registry_clear_limits(struct fg_registry *reg);
/* How many registries were derived in a row to reach this one (0 for a
 * registry built from scratch). */
FG_API unsigned fg_registry_depth(const struct fg_registry *reg);

/*
 * Build the indices and link certificates to devices. Fails (returns -1
 * with a message in err) on duplicate keys or a certificate of an unknown
 * device; the registry must then be freed.
 */
FG_API int fg_registry_finalise(struct fg_registry *reg, char *err,
                                size_t errlen);

/* Lookups; NULL when absent. Only valid on a finalised registry. */
FG_API const struct fg_cert *fg_registry_cert(const struct fg_registry *reg,
                                              const fg_fingerprint *fp);
FG_API const struct fg_device *fg_registry_device(const struct fg_registry *reg,
                                                  const char *id);
FG_API const struct fg_account *
fg_registry_account(const struct fg_registry *reg, const char *username);

/* All ACL rules, in no particular order; *n receives their number. */
FG_API const struct fg_rule *fg_registry_rules(const struct fg_registry *reg,
                                               size_t *n);
/* Whether the registry came with a rule table (schema version 2 or a
 * snapshot written from one): without it the acl plugin denies all. */
FG_API bool fg_registry_has_rules(const struct fg_registry *reg);
FG_API void fg_registry_set_has_rules(struct fg_registry *reg, bool has);

FG_API int fg_registry_add_limit(struct fg_registry *reg,
                                 enum fg_limit_scope kind, const char *scope,
                                 int64_t messages, int64_t bytes,
                                 int64_t window_s, int64_t burst);
/* All rate limit rows, in no particular order; *n receives their number. */
FG_API const struct fg_limit *fg_registry_limits(const struct fg_registry *reg,
                                                 size_t *n);
/* Whether the registry came with a limit table (schema version 4); without
 * it the ratelimit plugin applies its built-in defaults. */
FG_API bool fg_registry_has_limits(const struct fg_registry *reg);
FG_API void fg_registry_set_has_limits(struct fg_registry *reg, bool has);
/* Parse "global", "municipality" or "device"; -1 on anything else. */
FG_API int fg_limit_scope_parse(const char *s, enum fg_limit_scope *out);
FG_API const char *fg_limit_scope_str(enum fg_limit_scope k);

FG_API const char *fg_rule_subject_str(enum fg_rule_subject k);
FG_API int fg_rule_subject_parse(const char *s, enum fg_rule_subject *out);
FG_API const char *fg_rule_access_str(enum fg_rule_access a);
FG_API int fg_rule_access_parse(const char *s, enum fg_rule_access *out);

FG_API size_t fg_registry_device_count(const struct fg_registry *reg);
FG_API size_t fg_registry_cert_count(const struct fg_registry *reg);
FG_API size_t fg_registry_account_count(const struct fg_registry *reg);

/* Where the registry came from, the schema version it was read at, and
 * when (epoch seconds) it was read from the database. */
FG_API void fg_registry_set_meta(struct fg_registry *reg,
                                 enum fg_registry_origin origin,
                                 int schema_version, int64_t loaded_at);
FG_API enum fg_registry_origin
fg_registry_origin(const struct fg_registry *reg);
FG_API int64_t fg_registry_loaded_at(const struct fg_registry *reg);
FG_API int fg_registry_schema_version(const struct fg_registry *reg);

/* A short name for a device status, as the SQL schema spells it, and the
 * reverse (returns -1 on an unknown name). */
FG_API const char *fg_device_status_str(enum fg_device_status s);
FG_API int fg_device_status_parse(const char *s, enum fg_device_status *out);

/*
 * Snapshot file: the registry written to disk (mode 0600: it holds
 * password hashes), atomically replaced, with a checksum so a torn or
 * edited file is refused. Both return 0 on success, -1 with err set.
 */
FG_API int fg_registry_save(const struct fg_registry *reg, const char *path,
                            char *err, size_t errlen);
FG_API struct fg_registry *fg_registry_load(const char *path, char *err,
                                            size_t errlen);

#endif
