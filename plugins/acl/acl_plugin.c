/*
 * Entry points of the acl plugin and its broker callbacks. Decisions live
 * in acl_rules.c, matching in acl_match.c.
 *
 * Load it after the auth plugin: the identities it judges by are the ones
 * the auth plugin established (a client without one is denied all).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "acl.h"
#include "fg_ident.h"
#include "fg_log.h"
#include "fg_opts.h"
#include "fg_plugin.h"
#include "fg_runtime.h"

#define NBUCKETS 4096

/* One client's compiled rules, valid for one identity and registry. */
struct client_state {
	const void *client;
	uint64_t epoch, generation;
	struct acl_client *acl;
	struct client_state *next;
};

struct acl_plugin {
	mosquitto_plugin_id_t *id;
	struct acl_config cfg;
	struct fg_runtime *rt;
	struct client_state *buckets[NBUCKETS];
	struct acl_set *sets; /* compiled rule sets, shared where alike */
	/* Clients that disconnected: freed on the next TICK, because the
	 * broker checks a Will after DISCONNECT. */
	const void **gone;
	size_t ngone, cap_gone;
	bool warned_no_rules;
	int64_t last_tick_ms; /* fg_tick_due */
};

static const struct fg_opt_spec acl_specs[] = {
    {"isolation", FG_OPT_BOOL, offsetof(struct acl_config, isolation), 0, 0,
     NULL},
    {"municipality_level", FG_OPT_INT,
     offsetof(struct acl_config, municipality_level), 0, 16, NULL},
    {"cache_size", FG_OPT_INT, offsetof(struct acl_config, cache_size), 16,
     1000000, NULL},
};

static int on_acl_check(int event, void *event_data, void *userdata);
static int on_tick(int event, void *event_data, void *userdata);
static int on_disconnect(int event, void *event_data, void *userdata);

/* Registered and unregistered from this one table. */
static const struct fg_callback callbacks[] = {
    {MOSQ_EVT_ACL_CHECK, on_acl_check},
    {MOSQ_EVT_TICK, on_tick},
    {MOSQ_EVT_DISCONNECT, on_disconnect},
};
#define NCALLBACKS (sizeof(callbacks) / sizeof(callbacks[0]))

static size_t bucket_of(const void *client)
{
	return (size_t)(fg_hash_ptr(client) % NBUCKETS);
}

static struct client_state **find(struct acl_plugin *p, const void *client)
{
	struct client_state **pp = &p->buckets[bucket_of(client)];

	while (*pp != NULL && (*pp)->client != client)
		pp = &(*pp)->next;
	return pp;
}

static void drop_state(struct acl_plugin *p, const void *client)
{
	struct client_state **pp = find(p, client), *dead = *pp;

	if (dead == NULL)
		return;
	*pp = dead->next;
	acl_client_free(dead->acl);
	free(dead);
}

/* The client's compiled rules, rebuilt when its identity or the registry
 * changed. NULL when out of memory. */
static struct acl_client *client_rules(struct acl_plugin *p, const void *client,
                                       const struct fg_identity *who)
{
	const struct fg_registry *reg = fg_runtime_registry(p->rt);
	uint64_t gen = fg_runtime_generation(p->rt);
	struct client_state **pp = find(p, client), *s = *pp;
	struct acl_identity id = {who->client_id, who->name, who->is_device};

	if (s != NULL && s->epoch == who->epoch && s->generation == gen)
		return s->acl;
	if (s == NULL) {
		size_t b = bucket_of(client);

		s = calloc(1, sizeof(*s));
		if (s == NULL)
			return NULL;
		s->client = client;
		s->next = p->buckets[b];
		p->buckets[b] = s;
	}
	acl_client_free(s->acl);
	s->acl = acl_client_new(p->sets, gen, reg, &p->cfg, &id);
	s->epoch = who->epoch;
	s->generation = gen;
	if (s->acl != NULL && acl_client_problem(s->acl) != NULL) {
		char cid[130], user[130];

		mosquitto_log_printf(
		    MOSQ_LOG_NOTICE,
		    ACL_LOG " client_id=%s username=%s "
		            "denied everything: %s",
		    fg_sanitize(who->client_id, cid, sizeof(cid)),
		    fg_sanitize(who->name, user, sizeof(user)),
		    acl_client_problem(s->acl));
	}
	return s->acl;
}

static const char *access_name(int access)
{
	switch (access) {
	case MOSQ_ACL_WRITE:
		return "publish";
	case MOSQ_ACL_READ:
		return "receive";
	case MOSQ_ACL_SUBSCRIBE:
		return "subscribe";
	}
	return "other";
}

static void audit_denial(struct acl_plugin *p, struct acl_client *acl,
                         const struct fg_identity *who, int access,
                         const char *topic)
{
	struct fg_audit_event ev;
	uint64_t count;
	char t[130];

	if (!acl_note_denial(acl, access, topic, fg_mono_ms(), &count))
		return;
	memset(&ev, 0, sizeof(ev));
	ev.source = "acl";
	ev.event = "deny";
	ev.outcome = "denied";
	ev.reason = access_name(access);
	ev.device_id = who && who->is_device ? who->name : NULL;
	ev.client_id = who ? who->client_id : NULL;
	ev.username = who ? who->name : NULL;
	ev.topic = topic;
	ev.count = count;
	fg_runtime_audit(p->rt, &ev);
	mosquitto_log_printf(MOSQ_LOG_DEBUG,
	                     ACL_LOG " deny access=%s client_id=%.64s topic=%s "
	                             "count=%llu",
	                     access_name(access), who ? who->client_id : "-",
	                     fg_sanitize(topic, t, sizeof(t)),
	                     (unsigned long long)count);
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	struct acl_plugin *p = userdata;
	const struct fg_identity *who;
	struct acl_client *acl = NULL;

	(void)event;
	if (ed->access == MOSQ_ACL_UNSUBSCRIBE)
		return MOSQ_ERR_SUCCESS; /* leaving a topic reveals nothing */
	who = fg_runtime_identity(p->rt, ed->client);
	if (who != NULL)
		acl = client_rules(p, ed->client, who);
	if (acl != NULL && acl_check(acl, ed->access, ed->topic) == ACL_ALLOW)
		return MOSQ_ERR_SUCCESS;
	if (acl != NULL)
		audit_denial(p, acl, who, ed->access, ed->topic);
	return MOSQ_ERR_ACL_DENIED;
}

static int on_tick(int event, void *event_data, void *userdata)
{
	struct acl_plugin *p = userdata;
	const struct fg_registry *reg;
	size_t i;

	(void)event;
	(void)event_data;
	if (!fg_tick_due(&p->last_tick_ms))
		return MOSQ_ERR_SUCCESS;
	fg_runtime_tick(p->rt);
	for (i = 0; i < p->ngone; i++)
		drop_state(p, p->gone[i]);
	p->ngone = 0;
	reg = fg_runtime_registry(p->rt);
	if (reg != NULL && !fg_registry_has_rules(reg) && !p->warned_no_rules) {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     ACL_LOG " the registry has no rule table "
		                             "(schema older than version 2): "
		                             "everything is denied");
		p->warned_no_rules = true;
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	struct acl_plugin *p = userdata;

	(void)event;
	if (*find(p, ed->client) == NULL)
		return MOSQ_ERR_SUCCESS;
	if (p->ngone == p->cap_gone) {
		size_t ncap = p->cap_gone ? p->cap_gone * 2 : 64;
		const void **ng = realloc(p->gone, ncap * sizeof(*ng));

		if (ng == NULL) {
			/* No room to defer: the Will check rebuilds it. */
			drop_state(p, ed->client);
			return MOSQ_ERR_SUCCESS;
		}
		p->gone = ng;
		p->cap_gone = ncap;
	}
	p->gone[p->ngone++] = ed->client;
	return MOSQ_ERR_SUCCESS;
}

static void plugin_free(struct acl_plugin *p)
{
	size_t i;

	if (p == NULL)
		return;
	fg_plugin_unregister(p->id, callbacks, NCALLBACKS);
	for (i = 0; i < NBUCKETS; i++) {
		while (p->buckets[i] != NULL)
			drop_state(p, p->buckets[i]->client);
	}
	free(p->gone);
	acl_set_free(p->sets);
	fg_runtime_release(p->rt);
	free(p);
}

FG_PLUGIN_ENTRY int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier,
                                          void **userdata,
                                          struct mosquitto_opt *options,
                                          int option_count)
{
	struct fg_opt_table own;
	char err[FG_ERRLEN] = "";
	struct acl_plugin *p;

	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR, ACL_LOG " out of memory");
		return MOSQ_ERR_NOMEM;
	}
	p->cfg.isolation = true;
	p->cfg.municipality_level = 1;
	p->cfg.cache_size = 1024;
	p->sets = acl_set_new();
	if (p->sets == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR, ACL_LOG " out of memory");
		free(p);
		return MOSQ_ERR_NOMEM;
	}
	own = (struct fg_opt_table){
	    acl_specs, sizeof(acl_specs) / sizeof(acl_specs[0]), &p->cfg};
	p->rt =
	    fg_plugin_runtime(&own, options, option_count, err, sizeof(err));
	if (p->rt == NULL ||
	    fg_plugin_register(identifier, callbacks, NCALLBACKS, p, err,
	                       sizeof(err)) != 0)
		goto fail;
	p->id = identifier;
	*userdata = p;
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
	                     ACL_LOG " started isolation=%s "
	                             "municipality_level=%d cache_size=%d",
	                     p->cfg.isolation ? "on" : "off",
	                     p->cfg.municipality_level, p->cfg.cache_size);
	return MOSQ_ERR_SUCCESS;
fail:
	mosquitto_log_printf(MOSQ_LOG_ERR, ACL_LOG " cannot start: %s", err);
	plugin_free(p);
	return MOSQ_ERR_INVAL;
}

/* mosquitto_plugin_version and mosquitto_plugin_cleanup. */
FG_PLUGIN_COMMON_ENTRY_POINTS(plugin_free)
