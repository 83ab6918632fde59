/*
 * Entry points of the persist plugin and its broker callbacks.
 *
 * MESSAGE: a message on a readings filter is validated, then appended to
 * the journal before the callback returns, so before the broker
 * acknowledges it; the writer thread (persist_writer.c) stores it later.
 * The callback never touches the network. Load it after auth (readings
 * carry the identity auth established), after ratelimit and acl (what they
 * refuse is not stored).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "fg_audit.h"
#include "fg_ident.h"
#include "fg_log.h"
#include "fg_opts.h"
#include "fg_plugin.h"
#include "fg_runtime.h"
#include "persist.h"
#include "persist_journal.h"
#include "persist_json.h"
#include "persist_resend.h"
#include "persist_writer.h"

#define MAX_FILTERS 32
#define INVALID_SLOTS 1024
#define INVALID_EVERY_MS 60000

struct invalid_slot {
	uint64_t hash;
	int64_t last_ms;
	uint64_t suppressed;
};

struct persist_plugin {
	mosquitto_plugin_id_t *id;
	struct persist_config cfg;
	struct fg_runtime *rt;
	struct journal *journal;
	int64_t last_tick_ms; /* fg_tick_due */
	struct writer *writer;
	struct resend *resend;
	struct pj_limits limits;
	char *filters[MAX_FILTERS];
	int nfilters;
	struct invalid_slot invalid[INVALID_SLOTS];

	/* counters since start */
	uint64_t stored, resent, refused_full, unstored_full, invalid_total;
	bool full; /* the journal was full at the last message */
	struct fg_throttle full_throttle, error_throttle;
	int64_t stats_at_ms;
};

static const char *const fsync_names[] = {"never", "batch", "always", NULL};
static const char *const full_names[] = {"pushback", "stop", NULL};
static const char *const invalid_names[] = {"drop", "pass", NULL};

#define OFF(f) offsetof(struct persist_config, f)
static const struct fg_opt_spec persist_specs[] = {
    {"topics", FG_OPT_STRING, OFF(topics), 0, 0, NULL},
    {"journal_dir", FG_OPT_STRING, OFF(journal_dir), 0, 0, NULL},
    {"journal_budget_mb", FG_OPT_INT, OFF(journal_budget_mb), 1, 1048576, NULL},
    {"journal_segment_kb", FG_OPT_INT, OFF(journal_segment_kb), 64, 1048576,
     NULL},
    {"fsync", FG_OPT_ENUM, OFF(fsync), 0, 0, fsync_names},
    {"when_full", FG_OPT_ENUM, OFF(when_full), 0, 0, full_names},
    {"invalid", FG_OPT_ENUM, OFF(invalid), 0, 0, invalid_names},
    {"max_payload", FG_OPT_INT, OFF(max_payload), 2, 1 << 20, NULL},
    {"max_depth", FG_OPT_INT, OFF(max_depth), 1, 1000, NULL},
    {"timestamp_field", FG_OPT_STRING, OFF(timestamp_field), 0, 0, NULL},
    {"max_future_s", FG_OPT_INT, OFF(max_future_s), 0, 100000000, NULL},
    {"max_past_s", FG_OPT_INT, OFF(max_past_s), 0, 1000000000, NULL},
    {"batch_rows", FG_OPT_INT, OFF(batch_rows), 1, 100000, NULL},
    {"flush_ms", FG_OPT_INT, OFF(flush_ms), 1, 60000, NULL},
    {"resend_window_s", FG_OPT_INT, OFF(resend_window_s), 0, 86400, NULL},
    {"audit", FG_OPT_BOOL, OFF(audit), 0, 0, NULL},
};
#undef OFF

static int on_message(int event, void *event_data, void *userdata);
static int on_tick(int event, void *event_data, void *userdata);
static int on_disconnect(int event, void *event_data, void *userdata);

static const struct fg_callback callbacks[] = {
    {MOSQ_EVT_MESSAGE, on_message},
    {MOSQ_EVT_TICK, on_tick},
    {MOSQ_EVT_DISCONNECT, on_disconnect},
};
#define NCALLBACKS (sizeof(callbacks) / sizeof(callbacks[0]))

static bool is_reading(const struct persist_plugin *p, const char *topic)
{
	for (int i = 0; i < p->nfilters; i++) {
		bool match = false;
		if (mosquitto_topic_matches_sub(p->filters[i], topic, &match) ==
		        MOSQ_ERR_SUCCESS &&
		    match)
			return true;
	}
	return false;
}

/* Audit one refused or passed payload, at most once a minute per client,
 * with the number of payloads since the last event. */
static void note_invalid(struct persist_plugin *p, const char *client_id,
                         const struct fg_identity *who, const char *topic,
                         const char *reason, int64_t now)
{
	uint64_t h = fg_hash_str(client_id != NULL ? client_id : "");
	struct invalid_slot *s = &p->invalid[h % INVALID_SLOTS];
	struct fg_audit_event ev;
	char cid[130], t[130];

	p->invalid_total++;
	mosquitto_log_printf(
	    MOSQ_LOG_DEBUG,
	    PERSIST_LOG " invalid reading %s: client_id=%s "
	                "topic=%s reason=\"%s\"",
	    p->cfg.invalid == PERSIST_INVALID_DROP ? "dropped" : "passed",
	    fg_sanitize(client_id ? client_id : "-", cid, sizeof(cid)),
	    fg_sanitize(topic, t, sizeof(t)), reason);
	if (s->hash == h && now - s->last_ms < INVALID_EVERY_MS) {
		s->suppressed++;
		return;
	}
	memset(&ev, 0, sizeof(ev));
	ev.source = "persist";
	ev.event = "invalid_payload";
	ev.outcome =
	    p->cfg.invalid == PERSIST_INVALID_DROP ? "dropped" : "passed";
	ev.reason = reason;
	ev.device_id = who != NULL && who->is_device ? who->name : NULL;
	ev.username = who != NULL ? who->name : NULL;
	ev.client_id = client_id;
	ev.topic = topic;
	ev.count = s->hash == h ? s->suppressed + 1 : 1;
	fg_runtime_audit(p->rt, &ev);
	mosquitto_log_printf(
	    MOSQ_LOG_NOTICE,
	    PERSIST_LOG " invalid reading %s: client_id=%s "
	                "topic=%s reason=\"%s\" count=%llu",
	    ev.outcome,
	    fg_sanitize(client_id ? client_id : "-", cid, sizeof(cid)),
	    fg_sanitize(topic, t, sizeof(t)), reason,
	    (unsigned long long)ev.count);
	s->hash = h;
	s->last_ms = now;
	s->suppressed = 0;
}

/* Validate; fills *measured_ms. Returns NULL or the reason it failed. */
static const char *check_payload(struct persist_plugin *p,
                                 const struct mosquitto_evt_message *ed,
                                 int64_t now, int64_t *measured_ms)
{
	struct pj_result res;

	if (pj_validate(ed->payload, ed->payloadlen, &p->limits, &res) != 0)
		return res.reason;
	*measured_ms = now;
	if (!res.has_ts)
		return NULL;
	if (res.ts_ms > now + (int64_t)p->cfg.max_future_s * 1000)
		return "timestamp too far in the future";
	if (res.ts_ms < now - (int64_t)p->cfg.max_past_s * 1000)
		return "timestamp too far in the past";
	*measured_ms = res.ts_ms;
	return NULL;
}

static void set_field(struct journal_bytes *f, const char *s)
{
	f->p = s;
	f->len = s != NULL ? (uint32_t)strlen(s) : 0;
}

/* The journal is full or failing: apply when_full. */
static int refuse(struct persist_plugin *p,
                  const struct mosquitto_evt_message *ed, const char *client_id,
                  const char *why)
{
	uint64_t suppressed;
	char cid[130];
	bool push = p->cfg.when_full == PERSIST_FULL_PUSHBACK;

	if (push)
		p->refused_full++;
	else
		p->unstored_full++;
	if (fg_throttle_hit(&p->full_throttle, 10000, &suppressed))
		mosquitto_log_printf(
		    MOSQ_LOG_ERR,
		    PERSIST_LOG " %s: %s client_id=%s qos=%d "
		                "(refused_total=%llu not_stored_total=%llu)",
		    why,
		    push ? (ed->qos > 0 ? "disconnecting the publisher "
		                          "before acknowledging"
		                        : "refusing QoS 0 readings")
		         : "NOT STORING readings",
		    fg_sanitize(client_id ? client_id : "-", cid, sizeof(cid)),
		    ed->qos, (unsigned long long)p->refused_full,
		    (unsigned long long)p->unstored_full);
	if (!push)
		return MOSQ_ERR_SUCCESS;
	/* An error other than ACL_DENIED makes the broker drop the
	 * connection without acknowledging; the device sends again later. */
	return ed->qos > 0 ? MOSQ_ERR_ADMINISTRATIVE_ACTION
	                   : MOSQ_ERR_ACL_DENIED;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	struct persist_plugin *p = userdata;
	const char *client_id, *reason;
	const struct fg_identity *who;
	const struct fg_registry *reg;
	struct journal_record r;
	int64_t now, measured = 0;
	char err[FG_ERRLEN];
	int rc;

	(void)event;
	if (!is_reading(p, ed->topic))
		return MOSQ_ERR_SUCCESS;
	now = fg_time_ms();
	client_id = mosquitto_client_id(ed->client);
	who = fg_runtime_identity(p->rt, ed->client);
	reason = check_payload(p, ed, now, &measured);
	if (reason != NULL) {
		note_invalid(p, client_id, who, ed->topic, reason, now);
		return p->cfg.invalid == PERSIST_INVALID_DROP
		           ? MOSQ_ERR_ACL_DENIED
		           : MOSQ_ERR_SUCCESS;
	}

	memset(&r, 0, sizeof(r));
	r.type = JOURNAL_READING;
	r.qos = ed->qos;
	r.received_ms = now;
	r.measured_ms = measured;
	r.hash = resend_hash(ed->topic, ed->payload, ed->payloadlen);
	if (ed->qos > 0 && p->resend != NULL &&
	    resend_seen(p->resend, client_id, ed->client, r.hash, now)) {
		p->resent++;
		return MOSQ_ERR_SUCCESS; /* stored already */
	}
	reg = fg_runtime_registry(p->rt);
	if (who != NULL && who->is_device) {
		const struct fg_device *d =
		    reg ? fg_registry_device(reg, who->name) : NULL;
		set_field(&r.f[JF_DEVICE], who->name);
		set_field(&r.f[JF_MUNICIPALITY], d ? d->municipality : NULL);
	} else if (who != NULL) {
		const struct fg_account *a =
		    reg ? fg_registry_account(reg, who->name) : NULL;
		set_field(&r.f[JF_ACCOUNT], who->name);
		set_field(&r.f[JF_MUNICIPALITY], a ? a->municipality : NULL);
	}
	set_field(&r.f[JF_CLIENT], client_id != NULL ? client_id : "");
	set_field(&r.f[JF_TOPIC], ed->topic);
	r.f[JF_PAYLOAD].p = ed->payload != NULL ? ed->payload : "";
	r.f[JF_PAYLOAD].len = ed->payloadlen;

	/* QoS 0 is acknowledged to nobody, so it may wait for the next
	 * write; QoS 1 and 2 reach the kernel before the broker answers. */
	rc = journal_append(p->journal, &r, ed->qos == 0, err, sizeof(err));
	if (rc == JOURNAL_FULL) {
		p->full = true;
		return refuse(p, ed, client_id, "journal full");
	}
	if (rc != 0) {
		uint64_t suppressed;
		if (fg_throttle_hit(&p->error_throttle, 10000, &suppressed))
			mosquitto_log_printf(MOSQ_LOG_ERR, PERSIST_LOG " %s",
			                     err);
		return refuse(p, ed, client_id, "journal write failed");
	}
	p->full = false;
	p->stored++;
	if (ed->qos > 0 && p->resend != NULL && client_id != NULL &&
	    resend_note(p->resend, client_id, strlen(client_id), ed->client,
	                r.hash, now) != 0)
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PERSIST_LOG " out of memory for resend "
		                                 "detection");
	return MOSQ_ERR_SUCCESS;
}

/* The durable audit path: events go into the journal like readings. */
static int audit_sink(void *ctx, const struct fg_audit_event *ev)
{
	struct persist_plugin *p = ctx;
	struct journal_record r;
	char err[FG_ERRLEN];
	int64_t now = fg_time_ms();
	char *json = fg_audit_event_json(ev, now);
	int rc;

	if (json == NULL)
		return -1;
	memset(&r, 0, sizeof(r));
	r.type = JOURNAL_AUDIT;
	r.received_ms = r.measured_ms = now;
	set_field(&r.f[JF_PAYLOAD], json);
	rc = journal_append(p->journal, &r, true, err, sizeof(err));
	free(json);
	return rc == 0 ? 0 : -1;
}

static void log_stats(struct persist_plugin *p, int64_t now, bool force)
{
	struct journal_stats js;
	struct writer_stats ws;

	if (!force && now - p->stats_at_ms < 60000)
		return;
	p->stats_at_ms = now;
	journal_stats(p->journal, &js);
	writer_stats(p->writer, &ws);
	mosquitto_log_printf(
	    js.pending_entries > 0 && !ws.db_up ? MOSQ_LOG_WARNING
	                                        : MOSQ_LOG_INFO,
	    PERSIST_LOG " readings_stored=%llu audit_stored=%llu "
	                "backlog_entries=%llu journal_bytes=%llu "
	                "budget_bytes=%llu database=%s resent_skipped=%llu "
	                "invalid=%llu refused_full=%llu not_stored_full=%llu",
	    (unsigned long long)ws.readings,
	    (unsigned long long)ws.audit_events,
	    (unsigned long long)js.pending_entries,
	    (unsigned long long)js.disk_bytes,
	    (unsigned long long)js.budget_bytes, ws.db_up ? "up" : "down",
	    (unsigned long long)p->resent, (unsigned long long)p->invalid_total,
	    (unsigned long long)p->refused_full,
	    (unsigned long long)p->unstored_full);
}

static int on_tick(int event, void *event_data, void *userdata)
{
	struct persist_plugin *p = userdata;
	char err[FG_ERRLEN];
	int64_t now;

	(void)event;
	(void)event_data;
	if (!fg_tick_due(&p->last_tick_ms))
		return MOSQ_ERR_SUCCESS;
	fg_runtime_tick(p->rt);
	now = fg_time_ms();
	if (journal_flush(p->journal, err, sizeof(err)) != 0)
		mosquitto_log_printf(MOSQ_LOG_ERR, PERSIST_LOG " %s", err);
	if (p->resend != NULL)
		resend_purge(p->resend, now);
	log_stats(p, now, false);
	return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	struct persist_plugin *p = userdata;

	(void)event;
	if (p->resend != NULL)
		resend_disconnect(p->resend, mosquitto_client_id(ed->client),
		                  ed->client);
	return MOSQ_ERR_SUCCESS;
}

/* Entries of the recent past, read back at start: their clients may be
 * about to resend them. */
static void rebuild_resend(void *ctx, const struct journal_record *r)
{
	struct persist_plugin *p = ctx;

	if (r->type == JOURNAL_READING && r->qos > 0 &&
	    r->f[JF_CLIENT].p != NULL)
		resend_note(p->resend, r->f[JF_CLIENT].p, r->f[JF_CLIENT].len,
		            NULL, r->hash, r->received_ms);
}

static int parse_filters(struct persist_plugin *p, char *err, size_t errlen)
{
	char *save = NULL, *tok;

	if (p->cfg.topics == NULL) {
		fg_seterr(err, errlen,
		          "plugin_opt_topics is required (the topic "
		          "filters of readings)");
		return -1;
	}
	for (tok = strtok_r(p->cfg.topics, " ,\t", &save); tok != NULL;
	     tok = strtok_r(NULL, " ,\t", &save)) {
		if (p->nfilters == MAX_FILTERS) {
			fg_seterr(err, errlen,
			          "plugin_opt_topics: more than %d "
			          "filters",
			          MAX_FILTERS);
			return -1;
		}
		if (mosquitto_sub_topic_check(tok) != MOSQ_ERR_SUCCESS) {
			fg_seterr(err, errlen,
			          "plugin_opt_topics: invalid topic "
			          "filter");
			return -1;
		}
		p->filters[p->nfilters++] = tok;
	}
	if (p->nfilters == 0) {
		fg_seterr(err, errlen, "plugin_opt_topics names no filter");
		return -1;
	}
	return 0;
}

static int start_storage(struct persist_plugin *p, char *err, size_t errlen)
{
	const struct fg_runtime_config *rc = fg_runtime_settings(p->rt);
	struct journal_settings js;
	struct writer_settings ws;

	if (p->cfg.journal_dir == NULL || p->cfg.journal_dir[0] == '\0') {
		fg_seterr(err, errlen, "plugin_opt_journal_dir is required");
		return -1;
	}
	if ((uint64_t)p->cfg.journal_segment_kb * 2 >
	    (uint64_t)p->cfg.journal_budget_mb * 1024) {
		fg_seterr(err, errlen,
		          "plugin_opt_journal_budget_mb must hold "
		          "at least two segments "
		          "(plugin_opt_journal_segment_kb)");
		return -1;
	}
	if (p->cfg.resend_window_s > 0 &&
	    (p->resend = resend_new((int64_t)p->cfg.resend_window_s * 1000)) ==
	        NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	memset(&js, 0, sizeof(js));
	js.dir = p->cfg.journal_dir;
	js.segment_bytes = (uint64_t)p->cfg.journal_segment_kb * 1024;
	js.budget_bytes = (uint64_t)p->cfg.journal_budget_mb * 1024 * 1024;
	js.sync = (enum journal_sync)p->cfg.fsync;
	p->journal =
	    journal_open(&js, (int64_t)p->cfg.resend_window_s * 1000,
	                 p->resend ? rebuild_resend : NULL, p, err, errlen);
	if (p->journal == NULL)
		return -1;

	memset(&ws, 0, sizeof(ws));
	ws.pg.conninfo = rc->db;
	ws.pg.application_name = "fleetgate-persist";
	ws.pg.connect_timeout_s = rc->connect_timeout_s;
	ws.pg.statement_timeout_ms = rc->statement_timeout_ms;
	ws.broker_id = rc->broker_id;
	ws.batch_rows = p->cfg.batch_rows;
	ws.flush_ms = p->cfg.flush_ms;
	ws.retry_max_ms = rc->retry_max_ms;
	ws.sync = js.sync;
	p->writer = writer_start(p->journal, &ws, err, errlen);
	return p->writer != NULL ? 0 : -1;
}

static void plugin_free(struct persist_plugin *p)
{
	struct fg_opt_table own;

	if (p == NULL)
		return;
	fg_plugin_unregister(p->id, callbacks, NCALLBACKS);
	if (p->rt != NULL)
		fg_runtime_set_audit_sink(p->rt, NULL, NULL);
	if (p->journal != NULL && p->writer != NULL)
		log_stats(p, fg_time_ms(), true);
	if (writer_stop(p->writer) == 0)
		journal_close(p->journal);
	resend_free(p->resend);
	fg_runtime_release(p->rt);
	own = (struct fg_opt_table){
	    persist_specs, sizeof(persist_specs) / sizeof(persist_specs[0]),
	    &p->cfg};
	fg_opts_free(&own);
	free(p);
}

static void set_defaults(struct persist_config *c)
{
	c->journal_budget_mb = 1024;
	c->journal_segment_kb = 16384;
	c->fsync = JOURNAL_SYNC_BATCH;
	c->when_full = PERSIST_FULL_PUSHBACK;
	c->invalid = PERSIST_INVALID_DROP;
	c->max_payload = 65536;
	c->max_depth = 32;
	c->max_future_s = 300;
	c->max_past_s = 7 * 86400;
	c->batch_rows = 5000;
	c->flush_ms = 50;
	c->resend_window_s = 30;
	c->audit = true;
}

FG_PLUGIN_ENTRY int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier,
                                          void **userdata,
                                          struct mosquitto_opt *options,
                                          int option_count)
{
	struct fg_opt_table own;
	char err[FG_ERRLEN] = "";
	struct persist_plugin *p;

	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR,
		                     PERSIST_LOG " out of memory");
		return MOSQ_ERR_NOMEM;
	}
	set_defaults(&p->cfg);
	own = (struct fg_opt_table){
	    persist_specs, sizeof(persist_specs) / sizeof(persist_specs[0]),
	    &p->cfg};
	p->rt =
	    fg_plugin_runtime(&own, options, option_count, err, sizeof(err));
	if (p->rt == NULL || parse_filters(p, err, sizeof(err)) != 0)
		goto fail;
	p->limits.max_bytes = (size_t)p->cfg.max_payload;
	p->limits.max_depth = p->cfg.max_depth;
	p->limits.max_number_len = 64;
	p->limits.max_exponent = 1000;
	p->limits.ts_field = p->cfg.timestamp_field == NULL
	                         ? "ts"
	                         : (strcmp(p->cfg.timestamp_field, "none") != 0
	                                ? p->cfg.timestamp_field
	                                : NULL);
	if (start_storage(p, err, sizeof(err)) != 0 ||
	    fg_plugin_register(identifier, callbacks, NCALLBACKS, p, err,
	                       sizeof(err)) != 0)
		goto fail;
	p->id = identifier;
	if (p->cfg.audit)
		fg_runtime_set_audit_sink(p->rt, audit_sink, p);
	p->stats_at_ms = fg_time_ms();
	*userdata = p;
	{
		struct journal_stats js;
		journal_stats(p->journal, &js);
		mosquitto_log_printf(
		    MOSQ_LOG_NOTICE,
		    PERSIST_LOG " started journal_dir=%s fsync=%s when_full=%s "
		                "invalid=%s filters=%d journal_backlog=%llu "
		                "journal_bytes=%llu audit=%s",
		    p->cfg.journal_dir, fsync_names[p->cfg.fsync],
		    full_names[p->cfg.when_full], invalid_names[p->cfg.invalid],
		    p->nfilters, (unsigned long long)js.pending_entries,
		    (unsigned long long)js.disk_bytes,
		    p->cfg.audit ? "journaled" : "in memory");
	}
	return MOSQ_ERR_SUCCESS;
fail:
	mosquitto_log_printf(MOSQ_LOG_ERR, PERSIST_LOG " cannot start: %s",
	                     err);
	plugin_free(p);
	return MOSQ_ERR_INVAL;
}

/* mosquitto_plugin_version and mosquitto_plugin_cleanup. */
FG_PLUGIN_COMMON_ENTRY_POINTS(plugin_free)
