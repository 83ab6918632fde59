/*
 * Entry points of the ratelimit plugin and its broker callbacks. This
 * file wires things together: decisions are in rl_account.c, the device
 * table in rl_devices.c, limits in rl_limits.c, the exchange with Redis in
 * rl_exchange.c and rl_redis.c, options in rl_config.c.
 *
 * Load it first, before the auth and acl plugins. Before acl, because
 * the first ACL answer that is not DEFER wins: a message over budget must
 * be refused here, before acl allows it (and before persist stores it).
 * Before auth, because the first BASIC_AUTH answer that is not DEFER wins
 * as well: once auth accepts a connect, this plugin would never see it,
 * and could not refuse a device in its cool-down.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <openssl/x509.h>

#include "fg_ident.h"
#include "fg_log.h"
#include "fg_plugin.h"
#include "fg_runtime.h"
#include "rl.h"
#include "rl_config.h"
#include "rl_redis.h"

/* Devices reported to Redis in one exchange at most. */
#define BATCH_MAX 2000
/* How often open windows and cool-downs are looked at. */
#define SWEEP_INTERVAL_MS 100
/* How often idle devices are forgotten, and after how long. */
#define PURGE_INTERVAL_MS 60000
#define IDLE_MS (10 * 60 * 1000)

struct rl_plugin {
	mosquitto_plugin_id_t *id;
	struct rl_config cfg;
	struct fg_runtime *rt;
	struct rl_redis *redis;
	struct rl_devices *devs;
	struct rl_policy pol;
	struct rl_limits defaults;

	struct rl_limits_index *limits;
	uint64_t limits_gen;   /* runtime generation the index was built at */
	uint64_t limits_epoch; /* changes with every index */
	bool warned_no_limits;

	struct rl_batch batch;
	bool in_flight;
	bool heard_from_redis;
	int64_t offset_ms; /* Redis clock minus ours */
	int64_t next_sync_ms, next_sweep_ms, next_purge_ms, local_since_ms;
	int64_t last_tick_ms;

	/* Devices with refusals in an open window or in a cool-down. */
	struct rl_dev **watch;
	size_t nwatch, cap_watch;
	/* Client ids to disconnect on the next TICK. */
	char **kicks;
	size_t nkicks, cap_kicks;
};

static int on_acl_check(int event, void *event_data, void *userdata);
/* Whether this BASIC_AUTH re-checks a connected client (SIGHUP does that
 * for all of them) rather than a new connect. An identity left offline
 * (a persistent session) may belong to a freed client whose memory the
 * new connection reuses: that is a connect. */
static bool reauth(struct rl_plugin *p, const struct mosquitto *client)
{
	const struct fg_identity *who = fg_runtime_identity(p->rt, client);

	return who != NULL && !who->gone && !who->offline;
}

static int on_basic_auth(int event, void *event_data, void *userdata);
static int on_tick(int event, void *event_data, void *userdata);

/* Registered and unregistered from this one table. */
static const struct fg_callback callbacks[] = {
    {MOSQ_EVT_ACL_CHECK, on_acl_check},
    {MOSQ_EVT_BASIC_AUTH, on_basic_auth},
    {MOSQ_EVT_TICK, on_tick},
};
#define NCALLBACKS (sizeof(callbacks) / sizeof(callbacks[0]))

/* The clock windows are counted by: Redis's, as well as we can tell, so
 * that brokers on machines whose clocks differ agree on the windows. */
static int64_t now_ms(const struct rl_plugin *p)
{
	return fg_time_ms() + p->offset_ms;
}

/* The index of limits for the registry now installed. */
static const struct rl_limits_index *limits_index(struct rl_plugin *p)
{
	uint64_t gen = fg_runtime_generation(p->rt);
	struct rl_limits_index *ix;

	if (p->limits != NULL && p->limits_gen == gen)
		return p->limits;
	ix = rl_limits_index_new(fg_runtime_registry(p->rt), &p->defaults);
	if (ix == NULL)
		return p->limits; /* out of memory: keep the old */
	rl_limits_index_free(p->limits);
	p->limits = ix;
	p->limits_gen = gen;
	p->limits_epoch++;
	return ix;
}

static void watch(struct rl_plugin *p, struct rl_dev *d)
{
	if (d->watched)
		return;
	/* Out of memory: its audit row waits for its next message. */
	if (fg_grow(&p->watch, &p->cap_watch, p->nwatch, sizeof(*p->watch)))
		return;
	p->watch[p->nwatch++] = d;
	d->watched = true;
}

static void queue_kick(struct rl_plugin *p, const char *client_id)
{
	char *copy;

	if (fg_grow(&p->kicks, &p->cap_kicks, p->nkicks, sizeof(*p->kicks)))
		return;
	copy = strdup(client_id);
	if (copy != NULL)
		p->kicks[p->nkicks++] = copy;
}

static const char *hit_name(unsigned hit)
{
	switch (hit) {
	case RL_HIT_MESSAGES:
		return "messages";
	case RL_HIT_BYTES:
		return "bytes";
	}
	return "messages_and_bytes";
}

/* A window closed with refusals: one audit row for it, and a kick when
 * the device has been over its limit for kick_after windows in a row. */
static void window_closed(struct rl_plugin *p, struct rl_dev *d,
                          const struct rl_closed *c)
{
	struct fg_audit_event ev = {
	    .source = "ratelimit",
	    .event = "limit",
	    .outcome = "refused",
	    .reason = hit_name(c->hit),
	    .device_id = d->name,
	    .client_id = d->client_id,
	    .username = d->name,
	    .count = (uint64_t)c->refused,
	};

	fg_runtime_audit(p->rt, &ev);
	if (p->pol.kick_after <= 0 || c->streak < p->pol.kick_after ||
	    d->client_id == NULL)
		return;
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
	                     RL_LOG " kick device=%s client_id=%s "
	                            "reason=over_limit windows_in_a_row=%d",
	                     d->name, d->client_id, c->streak);
	ev.event = "kick";
	ev.outcome = "kicked";
	ev.reason = "over_limit";
	ev.count = (uint64_t)c->streak;
	fg_runtime_audit(p->rt, &ev);
	queue_kick(p, d->client_id);
	d->streak = 0;
}

/* The device's state with the limits of the current registry. */
static struct rl_dev *device(struct rl_plugin *p, const char *name)
{
	const struct rl_limits_index *ix = limits_index(p);
	struct rl_dev *d = rl_devices_get(p->devs, name);
	struct rl_limits lim;
	struct rl_closed closed;

	if (d == NULL || ix == NULL || d->generation == p->limits_epoch)
		return d;
	rl_limits_resolve(ix, name, &lim);
	if (rl_dev_set_limits(d, &lim, &p->pol, &closed))
		window_closed(p, d, &closed);
	d->generation = p->limits_epoch;
	return d;
}

static void note_client(struct rl_dev *d, const char *client_id)
{
	char *copy;

	if (client_id == NULL ||
	    (d->client_id != NULL && strcmp(d->client_id, client_id) == 0))
		return;
	copy = strdup(client_id);
	if (copy == NULL)
		return;
	free(d->client_id);
	d->client_id = copy;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	struct rl_plugin *p = userdata;
	const struct fg_identity *who;
	struct rl_closed closed;
	struct rl_dev *d;
	int64_t now;

	(void)event;
	/* Deliveries run this for every subscriber of every message: two
	 * compares and out. */
	if (ed->access != MOSQ_ACL_WRITE)
		return MOSQ_ERR_PLUGIN_DEFER;
	who = fg_runtime_identity(p->rt, ed->client);
	if (who == NULL || !who->is_device)
		return MOSQ_ERR_PLUGIN_DEFER; /* acl denies the unknown */
	d = device(p, who->name);
	if (d == NULL)
		return MOSQ_ERR_PLUGIN_DEFER;
	now = now_ms(p);
	if (rl_dev_roll(d, now, &p->pol, &closed))
		window_closed(p, d, &closed);
	d->last_active_ms = now;
	d->report_m = true;
	rl_devices_mark(p->devs, d);
	if (rl_dev_admit(d, (int64_t)ed->payloadlen, &p->pol) == RL_ACCEPT)
		return MOSQ_ERR_PLUGIN_DEFER;
	if (d->refused == 1) {
		note_client(d, who->client_id);
		/* Once when a device goes over, not every window it stays
		 * over: the audit rows have the counts. */
		mosquitto_log_printf(
		    d->streak == 0 ? MOSQ_LOG_NOTICE : MOSQ_LOG_DEBUG,
		    RL_LOG " limit reached device=%s client_id=%s limit=%s "
		           "accepted_here=%lld allowed_here=%lld window_s=%lld "
		           "mode=%s",
		    d->name, d->client_id ? d->client_id : "-",
		    hit_name(d->hit), (long long)d->used_m,
		    (long long)d->allow_m, (long long)(d->lim.window_ms / 1000),
		    p->pol.fleet ? "fleet" : "local");
	}
	watch(p, d);
	return MOSQ_ERR_ACL_DENIED;
}

/* The registered device whose certificate the client presents, when the
 * certificate is not revoked: a revoked certificate must not let whoever
 * holds it put its device into a cool-down. */
static const char *device_of_client(struct rl_plugin *p,
                                    struct mosquitto *client)
{
	const struct fg_registry *reg = fg_runtime_registry(p->rt);
	X509 *cert;
	fg_fingerprint fp;
	const struct fg_cert *c;
	int rc;

	if (reg == NULL)
		return NULL;
	cert = mosquitto_client_certificate(client);
	if (cert == NULL)
		return NULL;
	rc = fg_fingerprint_of_cert(cert, &fp);
	X509_free(cert);
	if (rc != 0)
		return NULL;
	c = fg_registry_cert(reg, &fp);
	return c != NULL && c->revoked_at == 0 ? c->device_id : NULL;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct rl_plugin *p = userdata;
	const char *name;
	struct rl_dev *d;
	enum rl_verdict v;
	int64_t now;

	(void)event;
	if (p->pol.connect_max <= 0 || reauth(p, ed->client))
		return MOSQ_ERR_PLUGIN_DEFER;
	name = device_of_client(p, ed->client);
	if (name == NULL || (d = device(p, name)) == NULL)
		return MOSQ_ERR_PLUGIN_DEFER; /* the auth plugin decides */
	now = now_ms(p);
	v = rl_dev_connect(d, now, &p->pol);
	d->last_active_ms = now;
	d->report_c = true;
	rl_devices_mark(p->devs, d);
	if (v == RL_ACCEPT)
		return MOSQ_ERR_PLUGIN_DEFER;
	watch(p, d);
	if (v == RL_REFUSE_FLAPPING) {
		struct fg_audit_event ev = {
		    .source = "ratelimit",
		    .event = "flapping",
		    .outcome = "cooldown",
		    .reason = "connects_per_minute",
		    .device_id = d->name,
		    .client_id = mosquitto_client_id(ed->client),
		    .username = d->name,
		    .address = mosquitto_client_address(ed->client),
		    .count = (uint64_t)d->cool_started,
		};
		char cid[130];

		mosquitto_log_printf(
		    MOSQ_LOG_NOTICE,
		    RL_LOG " cooldown device=%s client_id=%s connects=%lld "
		           "limit_per_minute=%lld cooldown_s=%lld mode=%s",
		    d->name,
		    fg_sanitize(mosquitto_client_id(ed->client), cid,
		                sizeof(cid)),
		    (long long)d->cool_started, (long long)p->pol.connect_max,
		    (long long)(p->pol.cooldown_ms / 1000),
		    p->pol.fleet ? "fleet" : "local");
		fg_runtime_audit(p->rt, &ev);
	}
	return MOSQ_ERR_AUTH;
}

static void recompute_one(struct rl_dev *d, void *arg)
{
	rl_dev_recompute(d, arg);
}

/* Switch between fleet-wide and local counting, logging each change
 * once. */
static void set_mode(struct rl_plugin *p, bool fleet, const char *why)
{
	int64_t now = fg_mono_ms();

	if (p->heard_from_redis && fleet == p->pol.fleet)
		return;
	if (fleet && p->heard_from_redis)
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
		                     RL_LOG
		                     " redis reachable again: fleet-wide "
		                     "counting resumed after_ms=%lld",
		                     (long long)(now - p->local_since_ms));
	else if (fleet)
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
		                     RL_LOG " redis reachable: counting "
		                            "fleet-wide");
	else
		mosquitto_log_printf(MOSQ_LOG_ERR,
		                     RL_LOG
		                     " redis unavailable (%s): each "
		                     "budget enforced on this broker alone "
		                     "at local_share=%.2f",
		                     why, p->pol.local_share);
	if (!fleet)
		p->local_since_ms = now;
	p->heard_from_redis = true;
	p->pol.fleet = fleet;
	rl_devices_each(p->devs, recompute_one, &p->pol);
}

/* Take the answer of an exchange, then start the next one when due. */
static void sync_redis(struct rl_plugin *p, int64_t mono)
{
	struct rl_batch *b = rl_redis_poll(p->redis);

	if (b != NULL) {
		p->in_flight = false;
		if (b->ok)
			p->offset_ms = b->offset_ms;
		set_mode(p, b->ok, b->err);
		rl_exchange_apply(p->devs, b, &p->pol, now_ms(p));
	}
	if (p->in_flight || mono < p->next_sync_ms)
		return;
	p->next_sync_ms = mono + p->cfg.sync_interval_ms;
	if (rl_exchange_build(p->devs, &p->batch, BATCH_MAX) == 0)
		return;
	p->in_flight = rl_redis_submit(p->redis, &p->batch);
}

/* A cool-down ended: one audit row for the connects it refused. */
static void cooldown_over(struct rl_plugin *p, struct rl_dev *d)
{
	struct fg_audit_event ev = {
	    .source = "ratelimit",
	    .event = "flapping",
	    .outcome = "refused",
	    .reason = "cooldown",
	    .device_id = d->name,
	    .username = d->name,
	    .count = (uint64_t)d->cool_refused,
	};

	if (d->cool_refused > 0)
		fg_runtime_audit(p->rt, &ev);
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
	                     RL_LOG " cooldown over device=%s refused=%lld",
	                     d->name, (long long)d->cool_refused);
	d->cool_until_ms = 0;
	d->cool_refused = 0;
}

/* Close windows with refusals that ended, and cool-downs that ended. */
static void sweep(struct rl_plugin *p)
{
	int64_t now = now_ms(p);
	size_t i = 0;

	while (i < p->nwatch) {
		struct rl_dev *d = p->watch[i];
		struct rl_closed closed;

		if (d->refused > 0 && rl_dev_roll(d, now, &p->pol, &closed))
			window_closed(p, d, &closed);
		if (d->cool_until_ms != 0 && d->cool_until_ms <= now)
			cooldown_over(p, d);
		if (d->refused > 0 || d->cool_until_ms != 0) {
			i++;
			continue;
		}
		d->watched = false;
		p->watch[i] = p->watch[--p->nwatch];
	}
}

static int on_tick(int event, void *event_data, void *userdata)
{
	struct rl_plugin *p = userdata;
	int64_t mono;
	size_t i;

	(void)event;
	(void)event_data;
	if (!fg_tick_due(&p->last_tick_ms))
		return MOSQ_ERR_SUCCESS;
	fg_runtime_tick(p->rt);
	mono = fg_mono_ms();
	sync_redis(p, mono);
	for (i = 0; i < p->nkicks; i++) {
		mosquitto_kick_client_by_clientid(p->kicks[i], false);
		free(p->kicks[i]);
	}
	p->nkicks = 0;
	if (mono >= p->next_sweep_ms) {
		p->next_sweep_ms = mono + SWEEP_INTERVAL_MS;
		sweep(p);
		if (!p->warned_no_limits && fg_runtime_registry(p->rt) &&
		    !fg_registry_has_limits(fg_runtime_registry(p->rt))) {
			mosquitto_log_printf(
			    MOSQ_LOG_WARNING, RL_LOG
			    " the registry has no limit table (schema "
			    "older than version 4, or a snapshot written "
			    "before limits were kept): the "
			    "default_* options apply to every device");
			p->warned_no_limits = true;
		}
	}
	if (mono >= p->next_purge_ms) {
		p->next_purge_ms = mono + PURGE_INTERVAL_MS;
		rl_devices_purge(p->devs, now_ms(p), IDLE_MS);
	}
	return MOSQ_ERR_SUCCESS;
}

static void plugin_free(struct rl_plugin *p)
{
	size_t i;

	if (p == NULL)
		return;
	fg_plugin_unregister(p->id, callbacks, NCALLBACKS);
	rl_redis_stop(p->redis);
	rl_batch_free(&p->batch);
	rl_devices_free(p->devs);
	rl_limits_index_free(p->limits);
	for (i = 0; i < p->nkicks; i++)
		free(p->kicks[i]);
	free(p->kicks);
	free(p->watch);
	fg_runtime_release(p->rt);
	rl_config_free(&p->cfg);
	free(p);
}

/* Start the Redis worker with the options. */
static int start_redis(struct rl_plugin *p, char *err, size_t errlen)
{
	struct rl_redis_settings s = {
	    .host = p->cfg.redis_host,
	    .port = p->cfg.redis_port,
	    .unix_socket = p->cfg.redis_unix_socket,
	    .username = p->cfg.redis_username,
	    .password = p->cfg.password,
	    .prefix = p->cfg.redis_key_prefix,
	    .broker_id = fg_runtime_broker_id(p->rt),
	    .timeout_ms = p->cfg.redis_timeout_ms,
	    .retry_max_ms = p->cfg.redis_retry_max_ms,
	    .active_ms = p->cfg.sync_interval_ms * 5 > 500
	                     ? p->cfg.sync_interval_ms * 5
	                     : 500,
	    .connect_max = p->pol.connect_max,
	    .cooldown_ms = p->pol.cooldown_ms,
	};

	p->redis = rl_redis_start(&s, err, errlen);
	return p->redis ? 0 : -1;
}

static void set_policy(struct rl_plugin *p)
{
	p->pol.fleet = true;
	p->pol.local_share = p->cfg.local_share_value;
	p->pol.connect_max = p->cfg.connect_limit_per_minute;
	p->pol.cooldown_ms = (int64_t)p->cfg.connect_cooldown_s * 1000;
	p->pol.kick_after = p->cfg.kick_after_windows;
	p->defaults.messages = p->cfg.default_messages_per_window;
	p->defaults.bytes = p->cfg.default_bytes_per_window;
	p->defaults.window_ms = (int64_t)p->cfg.default_window_s * 1000;
	p->defaults.burst = p->cfg.default_burst;
}

static void log_started(const struct rl_plugin *p)
{
	char redis[300];

	if (p->cfg.redis_unix_socket != NULL)
		snprintf(redis, sizeof(redis), "unix:%s",
		         p->cfg.redis_unix_socket);
	else
		snprintf(redis, sizeof(redis), "%s:%d",
		         p->cfg.redis_host ? p->cfg.redis_host : "127.0.0.1",
		         p->cfg.redis_port);
	mosquitto_log_printf(
	    MOSQ_LOG_NOTICE,
	    RL_LOG " started redis=%s auth=%s sync_interval_ms=%d "
	           "local_share=%.2f connect_limit_per_minute=%d "
	           "kick_after_windows=%d broker_id=%s",
	    redis, p->cfg.password ? "yes" : "no", p->cfg.sync_interval_ms,
	    p->pol.local_share, p->cfg.connect_limit_per_minute,
	    p->cfg.kick_after_windows, fg_runtime_broker_id(p->rt));
}

FG_PLUGIN_ENTRY int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier,
                                          void **userdata,
                                          struct mosquitto_opt *options,
                                          int option_count)
{
	struct fg_opt_table own;
	char err[FG_ERRLEN] = "";
	struct rl_plugin *p;

	p = calloc(1, sizeof(*p));
	if (p == NULL || (p->devs = rl_devices_new()) == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR, RL_LOG " out of memory");
		free(p);
		return MOSQ_ERR_NOMEM;
	}
	rl_config_init(&p->cfg);
	own = rl_config_table(&p->cfg);
	p->rt =
	    fg_plugin_runtime(&own, options, option_count, err, sizeof(err));
	if (p->rt == NULL || rl_config_finish(&p->cfg, err, sizeof(err)) != 0)
		goto fail;
	set_policy(p);
	if (start_redis(p, err, sizeof(err)) != 0 ||
	    fg_plugin_register(identifier, callbacks, NCALLBACKS, p, err,
	                       sizeof(err)) != 0)
		goto fail;
	p->id = identifier;
	*userdata = p;
	log_started(p);
	return MOSQ_ERR_SUCCESS;
fail:
	mosquitto_log_printf(MOSQ_LOG_ERR, RL_LOG " cannot start: %s", err);
	plugin_free(p);
	return MOSQ_ERR_INVAL;
}

/* mosquitto_plugin_version and mosquitto_plugin_cleanup. */
FG_PLUGIN_COMMON_ENTRY_POINTS(plugin_free)
