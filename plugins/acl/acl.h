/*
 * The acl plugin: who may publish, subscribe and receive where.
 *
 * Rules come from the registry (fleetgate.acl_rules). Each client's rules
 * are selected and their %c / %u / %m placeholders filled in once, when
 * the client is first checked after it connected or after the registry
 * changed; answers are then cached per client and topic, so the check on
 * every delivered message is normally one hash lookup.
 */
#ifndef ACL_H
#define ACL_H

#include <stdbool.h>

#include "fg_registry.h"

#define ACL_LOG "fleetgate-acl:"

struct acl_config {
	bool isolation;         /* municipality isolation backstop */
	int municipality_level; /* 0-based topic level naming it */
	int cache_size;         /* cached answers per client */
};

/* Topic matching with MQTT semantics ('+', '#', and wildcards at the
 * first level never matching topics that start with '$'). */
bool acl_topic_matches(const char *pattern, const char *topic);

/* True when every topic filter can match, pattern matches too. May answer
 * false for some contained filters (it is exact for the forms rules use),
 * never true for one that is not contained. */
bool acl_filter_within(const char *filter, const char *pattern);

/* The filter of a shared subscription ("$share/group/filter"), the filter
 * itself when it is not one, or NULL when it is malformed. */
const char *acl_strip_share(const char *filter);

/* True when s is a well-formed topic filter. */
bool acl_filter_valid(const char *s);

struct acl_identity {
	const char *client_id;
	const char *username; /* the device id for devices */
	bool is_device;
};

enum acl_answer {
	ACL_ALLOW = 0,
	ACL_DENY,
};

struct acl_client;

/*
 * The rule sets compiled so far, for sharing: clients whose rules compile
 * to the same lists (same patterns once %c, %u and %m are filled in, same
 * municipality for the isolation backstop) share one compiled set and
 * its answer cache. Broker thread only, like everything here. Free the
 * set after its clients, or before: sets still in use become private.
 */
struct acl_set;
struct acl_set *acl_set_new(void);
void acl_set_free(struct acl_set *s);
/* Distinct rule sets in use. */
size_t acl_set_count(const struct acl_set *s);

/*
 * Compile the rules of one client from the registry (NULL: no registry,
 * everything denied) and, with set not NULL, share them with the clients
 * of the same registry generation whose rules compile alike. Returns NULL
 * only when out of memory.
 */
struct acl_client *acl_client_new(struct acl_set *set, uint64_t generation,
                                  const struct fg_registry *reg,
                                  const struct acl_config *cfg,
                                  const struct acl_identity *id);
/* Whether two clients share their compiled rules and answer cache. */
bool acl_client_shares(const struct acl_client *a, const struct acl_client *b);
void acl_client_free(struct acl_client *c);

/* Why a client has no rules at all, or NULL when it has some. */
const char *acl_client_problem(const struct acl_client *c);

/*
 * Decide one access (MOSQ_ACL_WRITE, MOSQ_ACL_READ or MOSQ_ACL_SUBSCRIBE)
 * to a topic or filter. Answers to WRITE and READ are cached.
 */
enum acl_answer acl_check(struct acl_client *c, int access, const char *topic);

/*
 * Denial bookkeeping for the audit trail: after a denial, returns true
 * when this denial should produce an audit row now (at most one per
 * topic, access and minute) and sets *count to the denials it stands for
 * (this one and those suppressed since the last row).
 */
bool acl_note_denial(struct acl_client *c, int access, const char *topic,
                     int64_t now_ms, uint64_t *count);

#endif
