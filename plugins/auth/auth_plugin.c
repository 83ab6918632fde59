/*
 * Entry points of the auth plugin and its broker callbacks. This file
 * wires things together; decisions live in auth_decide.c and the table of
 * connected clients in auth_sessions.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <openssl/x509.h>

#include "auth.h"
#include "fg_log.h"
#include "fg_opts.h"
#include "fg_plugin.h"

/* Connected clients are re-checked at least this often, so expiry and
 * scheduled revocations apply without a registry change. */
#define SWEEP_INTERVAL_MS 1000
/* Connected devices are reported as seen this often. */
#define SEEN_INTERVAL_MS 60000
/* How long an MQTT 5 clean-start client's identity outlives it. */
#define MQTT5_CLEAN_KEEP_MS (3600 * 1000)
/* Refusal log lines per second before they are summarised. */
#define REFUSAL_LOG_BURST 20

struct auth_plugin {
	mosquitto_plugin_id_t *id;
	struct auth_config cfg;
	struct fg_runtime *rt;
	struct auth_sessions sessions;
	uint64_t swept_generation;
	uint64_t swept_withdrawn; /* fg_runtime_withdrawn_generation */
	int64_t next_sweep_ms, next_seen_ms;
	int64_t last_tick_ms; /* fg_tick_due */
	int64_t refusal_window_ms;
	unsigned refusals_in_window;
	uint64_t refusals_suppressed;
	struct fg_throttle busy_throttle;
};

static const char *const api_key_modes[] = {"off", "per_device", "all", NULL};

static const struct fg_opt_spec auth_specs[] = {
    {"api_key", FG_OPT_ENUM, offsetof(struct auth_config, api_key), 0, 0,
     api_key_modes},
    {"max_id_length", FG_OPT_INT, offsetof(struct auth_config, max_id_length),
     1, 65535, NULL},
    {"password_cache_s", FG_OPT_INT,
     offsetof(struct auth_config, password_cache_s), 0, 604800, NULL},
    {"password_budget_ms", FG_OPT_INT,
     offsetof(struct auth_config, password_budget_ms), 1, 1000, NULL},
};

static int on_basic_auth(int event, void *event_data, void *userdata);
static int on_tick(int event, void *event_data, void *userdata);
static int on_disconnect(int event, void *event_data, void *userdata);

/* Registered and unregistered from this one table. */
static const struct fg_callback callbacks[] = {
    {MOSQ_EVT_BASIC_AUTH, on_basic_auth},
    {MOSQ_EVT_TICK, on_tick},
    {MOSQ_EVT_DISCONNECT, on_disconnect},
};
#define NCALLBACKS (sizeof(callbacks) / sizeof(callbacks[0]))

/* Log one decision; refusals are bounded to a burst per second so that a
 * device retrying in a loop cannot flood the log. */
static void log_decision(struct auth_plugin *p, const char *event,
                         const char *outcome, enum auth_reason r,
                         const char *client_id, const char *username,
                         const char *address, const char *fp)
{
	char cid[130], user[130], addr[64];
	int64_t now = fg_mono_ms();

	if (r != AUTH_OK) {
		if (now - p->refusal_window_ms >= 1000) {
			if (p->refusals_suppressed > 0)
				mosquitto_log_printf(
				    MOSQ_LOG_NOTICE,
				    AUTH_LOG " refusals_not_logged=%llu "
				             "in the last second",
				    (unsigned long long)p->refusals_suppressed);
			p->refusal_window_ms = now;
			p->refusals_in_window = 0;
			p->refusals_suppressed = 0;
		}
		if (++p->refusals_in_window > REFUSAL_LOG_BURST) {
			p->refusals_suppressed++;
			return;
		}
	}
	mosquitto_log_printf(
	    MOSQ_LOG_NOTICE,
	    AUTH_LOG " %s %s client_id=%s username=%s address=%s reason=%s "
	             "fingerprint=%s",
	    event, outcome, fg_sanitize(client_id, cid, sizeof(cid)),
	    fg_sanitize(username, user, sizeof(user)),
	    fg_sanitize(address, addr, sizeof(addr)), auth_reason_str(r),
	    fp ? fp : "-");
}

static void audit(struct auth_plugin *p, const char *event, const char *outcome,
                  enum auth_reason r, const char *device_id,
                  const char *client_id, const char *username, const char *fp,
                  const char *address)
{
	struct fg_audit_event ev = {
	    .source = "auth",
	    .event = event,
	    .outcome = outcome,
	    .reason = auth_reason_str(r),
	    .device_id = device_id,
	    .client_id = client_id,
	    .username = username,
	    .fingerprint = fp,
	    .address = address,
	};

	fg_runtime_audit(p->rt, &ev);
}

/* Read what the client presents. Returns AUTH_OK or AUTH_BAD_CERTIFICATE
 * when it sent a certificate that cannot be read. */
static enum auth_reason read_request(struct mosquitto *client,
                                     const struct mosquitto_evt_basic_auth *ed,
                                     struct auth_request *req)
{
	X509 *cert = mosquitto_client_certificate(client);
	enum auth_reason r = AUTH_OK;

	memset(req, 0, sizeof(*req));
	req->client_id = mosquitto_client_id(client);
	req->username = ed->username;
	req->password = ed->password;
	if (cert != NULL) {
		req->has_cert = true;
		if (fg_fingerprint_of_cert(cert, &req->fp) != 0 ||
		    fg_cert_validity(cert, &req->x509_not_before,
		                     &req->x509_not_after) != 0)
			r = AUTH_BAD_CERTIFICATE;
		X509_free(cert);
	}
	return r;
}

static void remember(struct auth_plugin *p, struct mosquitto *client,
                     const struct auth_request *req,
                     const struct auth_identity *id, const char *address)
{
	struct auth_session s;

	memset(&s, 0, sizeof(s));
	s.client = client;
	s.is_device = id->is_device;
	snprintf(s.client_id, sizeof(s.client_id), "%s", req->client_id);
	snprintf(s.address, sizeof(s.address), "%s", address ? address : "");
	if (id->is_device) {
		snprintf(s.name, sizeof(s.name), "%s", id->device->id);
		s.fp = req->fp;
		s.x509_not_after = req->x509_not_after;
		s.secret_hash = id->device->api_key_hash
		                    ? fg_hash_str(id->device->api_key_hash)
		                    : 0;
	} else {
		snprintf(s.name, sizeof(s.name), "%s", id->account->username);
		s.secret_hash = fg_hash_str(id->account->password_hash);
	}
	if (auth_sessions_put(&p->sessions, &s) == NULL)
		mosquitto_log_printf(MOSQ_LOG_ERR,
		                     AUTH_LOG
		                     " out of memory tracking "
		                     "client_id=%s: it will not be re-checked",
		                     s.client_id);
}

/* Logins refused because hashing took its whole budget, once a minute. */
static void warn_busy(struct auth_plugin *p)
{
	struct auth_pwcheck_stats st;
	uint64_t suppressed;

	if (!fg_throttle_hit(&p->busy_throttle, 60000, &suppressed))
		return;
	auth_pwcheck_get_stats(p->cfg.pwcheck, &st);
	mosquitto_log_printf(
	    MOSQ_LOG_WARNING,
	    AUTH_LOG " password checks have used their budget of "
	             "password_budget_ms=%d a second: refusing logins that "
	             "need one as server_busy (refused=%llu since the last "
	             "warning; cached=%llu hashed=%llu busy=%llu so far)",
	    p->cfg.password_budget_ms, (unsigned long long)suppressed + 1,
	    (unsigned long long)st.cached, (unsigned long long)st.hashed,
	    (unsigned long long)st.busy);
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct auth_plugin *p = userdata;
	const char *address = mosquitto_client_address(ed->client);
	struct auth_request req;
	struct auth_identity id;
	enum auth_reason r;
	const char *fp, *device_id;
	/* SIGHUP makes the broker authenticate connected clients again. */
	const struct auth_session *known =
	    auth_sessions_get(&p->sessions, ed->client);
	const char *event_name = known ? "reauth" : "connect";

	(void)event;
	memset(&id, 0, sizeof(id));
	r = read_request(ed->client, ed, &req);
	if (known != NULL)
		req.admitted_secret = known->secret_hash;
	if (r == AUTH_OK)
		r = auth_decide(fg_runtime_registry(p->rt), &p->cfg, &req,
		                fg_time_s(), &id);
	if (r == AUTH_OK)
		r = auth_withdrawn(fg_runtime_withdrawn(p->rt), id.is_device,
		                   id.is_device ? id.device->id : req.username,
		                   req.has_cert ? &req.fp : NULL);
	fp = req.has_cert ? req.fp.hex : NULL;
	/* The identity the other plugins see is the device id. */
	if (r == AUTH_OK && id.is_device &&
	    mosquitto_set_username(ed->client, id.device->id) !=
	        MOSQ_ERR_SUCCESS)
		r = AUTH_INVALID_USERNAME;
	if (r == AUTH_SERVER_BUSY)
		warn_busy(p);
	if (r != AUTH_OK) {
		/* A client refused on a re-check (SIGHUP) must not stay
		 * tracked under its old identity. */
		auth_sessions_remove(&p->sessions, ed->client);
		fg_runtime_forget_identity(p->rt, ed->client);
		log_decision(p, event_name, "refused", r, req.client_id,
		             req.username, address, fp);
		audit(p, event_name, "refused", r,
		      id.device ? id.device->id : NULL, req.client_id,
		      req.username, fp, address);
		return MOSQ_ERR_AUTH;
	}
	remember(p, ed->client, &req, &id, address);
	device_id = id.is_device ? id.device->id : NULL;
	if (fg_runtime_set_identity(p->rt, ed->client, id.is_device,
	                            device_id ? device_id : req.username,
	                            req.client_id) != 0) {
		/* Without an identity the other plugins would deny it all. */
		mosquitto_log_printf(MOSQ_LOG_ERR,
		                     AUTH_LOG " out of memory recording the "
		                              "identity of client_id=%.64s",
		                     req.client_id);
		auth_sessions_remove(&p->sessions, ed->client);
		return MOSQ_ERR_AUTH;
	}
	log_decision(p, event_name, "accepted", r, req.client_id,
	             device_id ? device_id : req.username, address, fp);
	audit(p, event_name, "accepted", r, device_id, req.client_id,
	      device_id ? device_id : req.username, fp, address);
	if (id.is_device)
		fg_runtime_seen(p->rt, id.device->id);
	return MOSQ_ERR_SUCCESS;
}

struct kick {
	char client_id[260];
	char name[260];
	char address[64];
	fg_fingerprint fp;
	bool is_device;
	enum auth_reason reason;
};

/* Re-check every connected client; disconnect those the registry no
 * longer admits. Kicks are collected first: a kick runs DISCONNECT, which
 * edits the table being walked. */
static void sweep(struct auth_plugin *p, bool mark_seen)
{
	const struct fg_registry *reg = fg_runtime_registry(p->rt);
	const struct fg_withdrawn *wd = fg_runtime_withdrawn(p->rt);
	int64_t now = fg_time_s();
	struct kick *kicks = NULL;
	size_t nkicks = 0, cap = 0, i;

	for (i = 0; i < p->sessions.nbuckets; i++) {
		const struct auth_session *s;

		for (s = p->sessions.buckets[i]; s != NULL; s = s->next) {
			enum auth_reason r = auth_recheck(reg, &p->cfg, s, now);

			if (r == AUTH_OK)
				r = auth_withdrawn(wd, s->is_device, s->name,
				                   &s->fp);

			if (r == AUTH_OK) {
				if (mark_seen && s->is_device)
					fg_runtime_seen(p->rt, s->name);
				continue;
			}
			if (nkicks == cap) {
				size_t ncap = cap ? cap * 2 : 16;
				struct kick *nk =
				    realloc(kicks, ncap * sizeof(*nk));
				if (nk == NULL)
					break;
				kicks = nk;
				cap = ncap;
			}
			memcpy(kicks[nkicks].client_id, s->client_id,
			       sizeof(s->client_id));
			memcpy(kicks[nkicks].name, s->name, sizeof(s->name));
			memcpy(kicks[nkicks].address, s->address,
			       sizeof(s->address));
			kicks[nkicks].fp = s->fp;
			kicks[nkicks].is_device = s->is_device;
			kicks[nkicks].reason = r;
			nkicks++;
		}
	}
	for (i = 0; i < nkicks; i++) {
		const struct kick *k = &kicks[i];
		const char *fp = k->is_device ? k->fp.hex : NULL;

		log_decision(p, "kick", "disconnecting", k->reason,
		             k->client_id, k->name, k->address, fp);
		audit(p, "kick", "kicked", k->reason,
		      k->is_device ? k->name : NULL, k->client_id, k->name, fp,
		      k->address);
		mosquitto_kick_client_by_clientid(k->client_id, false);
	}
	free(kicks);
}

static int on_tick(int event, void *event_data, void *userdata)
{
	struct auth_plugin *p = userdata;
	int64_t now;
	uint64_t gen, wgen;
	bool mark_seen;

	(void)event;
	(void)event_data;
	if (!fg_tick_due(&p->last_tick_ms))
		return MOSQ_ERR_SUCCESS;
	fg_runtime_tick(p->rt);
	now = fg_mono_ms();
	gen = fg_runtime_generation(p->rt);
	wgen = fg_runtime_withdrawn_generation(p->rt);
	if (gen == p->swept_generation && wgen == p->swept_withdrawn &&
	    now < p->next_sweep_ms)
		return MOSQ_ERR_SUCCESS;
	mark_seen = now >= p->next_seen_ms;
	sweep(p, mark_seen);
	p->swept_generation = gen;
	p->swept_withdrawn = wgen;
	p->next_sweep_ms = now + SWEEP_INTERVAL_MS;
	if (mark_seen)
		p->next_seen_ms = now + SEEN_INTERVAL_MS;
	return MOSQ_ERR_SUCCESS;
}

/*
 * At DISCONNECT, how long the other plugins may still need to know who
 * the client is. A 3.1.1 clean session ends here (only its Will is still
 * checked). A persistent session receives messages while offline, each
 * checked against the ACL: keep its identity until the client id
 * authenticates again. An MQTT 5 session persists if its expiry interval
 * says so, which the plugin API does not show: keep it for an hour.
 */
static void keep_identity(struct auth_plugin *p, struct mosquitto *client)
{
	bool clean = mosquitto_client_clean_session(client);

	if (mosquitto_client_protocol_version(client) != 5 && clean)
		fg_runtime_client_gone(p->rt, client);
	else
		fg_runtime_client_offline(p->rt, client,
		                          clean ? MQTT5_CLEAN_KEEP_MS : 0);
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	struct auth_plugin *p = userdata;
	struct auth_session *s;

	(void)event;
	keep_identity(p, ed->client);
	s = auth_sessions_get(&p->sessions, ed->client);
	if (s == NULL)
		return MOSQ_ERR_SUCCESS;
	if (s->is_device)
		fg_runtime_seen(p->rt, s->name);
	auth_sessions_remove(&p->sessions, ed->client);
	return MOSQ_ERR_SUCCESS;
}

static void plugin_free(struct auth_plugin *p)
{
	if (p == NULL)
		return;
	fg_plugin_unregister(p->id, callbacks, NCALLBACKS);
	auth_sessions_free(&p->sessions);
	auth_pwcheck_free(p->cfg.pwcheck);
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
	struct auth_plugin *p;

	p = calloc(1, sizeof(*p));
	if (p == NULL || auth_sessions_init(&p->sessions, 4096) != 0) {
		mosquitto_log_printf(MOSQ_LOG_ERR, AUTH_LOG " out of memory");
		free(p);
		return MOSQ_ERR_NOMEM;
	}
	p->cfg.api_key = AUTH_API_KEY_OFF;
	p->cfg.max_id_length = 64;
	p->cfg.password_cache_s = 3600;
	p->cfg.password_budget_ms = 100;
	own = (struct fg_opt_table){
	    auth_specs, sizeof(auth_specs) / sizeof(auth_specs[0]), &p->cfg};
	p->rt =
	    fg_plugin_runtime(&own, options, option_count, err, sizeof(err));
	if (p->rt == NULL)
		goto fail;
	p->cfg.pwcheck = auth_pwcheck_new(p->cfg.password_cache_s,
	                                  p->cfg.password_budget_ms);
	if (p->cfg.pwcheck == NULL) {
		snprintf(err, sizeof(err), "out of memory");
		goto fail;
	}
	if (fg_plugin_register(identifier, callbacks, NCALLBACKS, p, err,
	                       sizeof(err)) != 0)
		goto fail;
	p->id = identifier;
	*userdata = p;
	mosquitto_log_printf(
	    MOSQ_LOG_NOTICE,
	    AUTH_LOG " started api_key=%s max_id_length=%d "
	             "password_cache_s=%d password_budget_ms=%d broker_id=%s",
	    api_key_modes[p->cfg.api_key], p->cfg.max_id_length,
	    p->cfg.password_cache_s, p->cfg.password_budget_ms,
	    fg_runtime_broker_id(p->rt));
	return MOSQ_ERR_SUCCESS;
fail:
	mosquitto_log_printf(MOSQ_LOG_ERR, AUTH_LOG " cannot start: %s", err);
	plugin_free(p);
	return MOSQ_ERR_INVAL;
}

/* mosquitto_plugin_version and mosquitto_plugin_cleanup. */
FG_PLUGIN_COMMON_ENTRY_POINTS(plugin_free)
