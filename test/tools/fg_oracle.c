/*
 * fg_oracle: a publisher that records exactly which messages the broker
 * acknowledged, for loss tests and publish-throughput benchmarks.
 *
 * It publishes the numbers FIRST..LAST, one message each, and writes every
 * number the broker acknowledged to a file. A loss test then compares that
 * file with what was stored (test/oracle-check.sh): every acknowledged
 * number must have been stored. The tool survives the broker going away
 * (killed, restarted, or closing the connection itself) by reconnecting
 * and publishing again every number that was sent but not acknowledged,
 * with a byte-identical payload.
 *
 * Usage:
 *   fg_oracle --port P --topic T --last N [--first N] [--host H]
 *             [--id CLIENTID] [--cafile F [--cert F --key F]]
 *             [--username U [--password P]] [-V 311|5 | --v311 | --v5]
 *             [--qos 0|1|2] [--rate R] [--inflight W] [--size BYTES]
 *             [-o FILE] [--refused FILE] [--deadline S] [--timeout S]
 *             [--keepalive S] [--pace-us N]
 *
 *   --first, --last  the numbers to publish (default first 1)
 *   --id ID          client id (default fg_oracle-PID); also the payload's
 *                    "device"
 *   -V 311|5         MQTT version (default 5); --v311 and --v5 as in
 *                    fg_client
 *   --qos Q          default 1
 *   --rate R         messages a second, resends included (default 0: as
 *                    fast as the inflight window allows)
 *   --inflight W     most messages published and not yet acknowledged
 *                    (default 20, at most 10000)
 *   --size BYTES     pad each payload with a "pad" member to BYTES bytes
 *                    (no padding when the body is longer than that)
 *   -o FILE          acknowledged numbers, one a line, in the order the
 *                    acknowledgements came
 *   --refused FILE   numbers the broker refused (MQTT 5 reason code 0x80
 *                    or above), one a line
 *   --deadline S     give up S seconds after the start (default 60)
 *   --timeout S      longest wait for a CONNACK (default 5)
 *   --keepalive S    MQTT keepalive (default 10)
 *   --pace-us N      never wait on the socket: each pass of the loop
 *                    publishes what the window allows, reads and writes
 *                    what the socket holds (poll with a zero timeout),
 *                    then sleeps until N microseconds after the pass
 *                    began. A benchmark's publishers on loopback are then
 *                    not woken by each acknowledgement: that wake-up
 *                    would run in the broker's write(), on the broker's
 *                    time, where a publisher on another host costs the
 *                    broker nothing. Default 0: sleep in poll().
 *
 * The payload of number n is
 *   {"n":n,"device":"ID","flow_lps":W.T[,"pad":"xxx..."]}
 * where W.T is (n mod 400) / 10: a function of n alone, so that a resent
 * message is byte-identical to the first copy.
 *
 * "Acknowledged" is a PUBACK (QoS 1) or PUBCOMP (QoS 2) with a reason code
 * below 0x80. A refused number is written to --refused and not sent
 * again. At QoS 0 there is no acknowledgement; a number counts as
 * acknowledged once libmosquitto has written it to the socket.
 *
 * Reconnecting: every connection uses a clean session, and when it ends
 * the libmosquitto object is destroyed, so that the library can neither
 * resend a message by itself nor report an acknowledgement of an earlier
 * connection. The tool resends what the lost connection left
 * unacknowledged, in ascending order, before any new number. The wait
 * between attempts starts at 100 ms and doubles up to 1 s; an accepted
 * CONNACK resets it.
 *
 * The output files are flushed after each pass of the event loop, so
 * that if the tool is killed every line in them is true (an ack may be
 * missing from the file, never invented). A kill during a write can leave
 * a last line without its newline; oracle-check.sh ignores such a line.
 *
 * Output: one line on stdout at the end:
 *   sent=N acked=N refused=N resent=N reconnects=N elapsed_s=S.MMM
 *   acked_per_s=Y
 * sent counts numbers published at least once, resent the further
 * publications of numbers already sent, reconnects the connections
 * accepted after the first. elapsed_s runs from the first publication to
 * the last acknowledgement; acked_per_s is acked divided by it.
 *
 * Exit codes: 0 every number was acknowledged; 1 not all were (refused,
 * deadline passed, or SIGTERM/SIGINT); 2 usage or setup error.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "fg_args.h"
#include "fg_pace.h"

enum { EXIT_ALL_ACKED = 0, EXIT_NOT_ALL = 1, EXIT_SETUP = 2 };

#define NS_PER_MS INT64_C(1000000)
#define NS_PER_S INT64_C(1000000000)
#define MAX_NUMBERS INT64_C(100000000)
#define MAX_INFLIGHT 10000
#define MAX_SIZE (256 * 1024)
#define MID_SLOTS 65536
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000
#define IDLE_POLL_MS 100
/* Packets read in one paced pass at most, before the loop goes on. */
#define PACED_READS 4096
/* A rate schedule that fell further behind than this is restarted, so
 * that a stall (a full window, a reconnect) is not followed by a burst. */
#define RATE_MAX_LAG_NS (100 * NS_PER_MS)

struct options {
	const char *host;
	int port;
	const char *id;
	const char *cafile;
	const char *cert;
	const char *key;
	const char *username;
	const char *password;
	int protocol;
	const char *topic;
	int64_t first;
	int64_t last;
	int qos;
	double rate;
	int inflight;
	int size;
	const char *acked_path;
	const char *refused_path;
	int deadline_s;
	int timeout_s;
	int keepalive_s;
	int pace_us;
};

enum num_state {
	NUM_NEW = 0,  /* never published */
	NUM_INFLIGHT, /* published on the current connection, not settled */
	NUM_RESEND,   /* published on a lost connection, queued again */
	NUM_ACKED,
	NUM_REFUSED
};

/* What happened to each number, across all connections. */
struct ledger {
	uint8_t *state; /* enum num_state, by index (number - first) */
	int64_t count;
	int64_t next_new;   /* lowest index never published */
	int64_t *resend;    /* indexes to publish again, ascending */
	size_t resend_head; /* next to take */
	size_t resend_len;  /* end of the queue */
	int64_t *mid_idx;   /* index published under each mid, or -1 */
	size_t inflight;    /* numbers in state NUM_INFLIGHT */
	int64_t settled;    /* acked + refused */
	int64_t sent, acked, refused, resent;
	int64_t first_pub_ns; /* 0 until the first publication */
	int64_t last_ack_ns;
	FILE *acked_out;   /* may be NULL */
	FILE *refused_out; /* may be NULL */
	bool dirty;        /* lines written since the last flush */
	bool io_error;
	/* A QoS 0 publication can be reported from inside mosquitto_publish,
	 * before its mid is in mid_idx: these catch that report. */
	bool in_publish;
	int cur_mid;
	bool cur_settled;
	int cur_rc;
};

enum phase { PHASE_DOWN, PHASE_CONNECTING, PHASE_UP };

/* The current connection, and when to try the next one. */
struct session {
	struct mosquitto *mosq;
	enum phase phase;
	bool lost; /* the library reported a disconnect */
	int64_t connack_deadline_ns;
	int64_t next_attempt_ns;
	int backoff_ms;
	int64_t next_due_ns; /* --rate schedule */
	int64_t accepted;    /* connections that got CONNACK 0 */
	int last_reason;     /* last refusal or error, for stderr */
};

struct oracle {
	struct options opt;
	struct ledger led;
	struct session ses;
	char *payload;
	size_t payload_cap;
	int64_t deadline_ns;
	int64_t next_pass_ns; /* --pace-us schedule */
};

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	/* A write to a socket the broker closed must fail, not kill us. */
	signal(SIGPIPE, SIG_IGN);
}

/* ---- options ---- */

static void usage(void)
{
	fprintf(stderr,
	        "usage: fg_oracle --port P --topic T --last N [--first N]"
	        " [--host H] [--id ID]\n"
	        "                 [--cafile F [--cert F --key F]]"
	        " [--username U [--password P]]\n"
	        "                 [-V 311|5 | --v311 | --v5] [--qos 0|1|2]"
	        " [--rate R] [--inflight W]\n"
	        "                 [--size BYTES] [-o FILE] [--refused FILE]"
	        " [--deadline S]\n"
	        "                 [--timeout S] [--keepalive S]"
	        " [--pace-us N]\n");
}

static bool parse_version(const char *s, int *out)
{
	if (strcmp(s, "311") == 0 || strcmp(s, "mqttv311") == 0)
		*out = MQTT_PROTOCOL_V311;
	else if (strcmp(s, "5") == 0 || strcmp(s, "mqttv5") == 0)
		*out = MQTT_PROTOCOL_V5;
	else
		return false;
	return true;
}

static void set_defaults(struct options *o)
{
	memset(o, 0, sizeof(*o));
	o->host = "127.0.0.1";
	o->protocol = MQTT_PROTOCOL_V5;
	o->first = 1;
	o->last = -1;
	o->qos = 1;
	o->inflight = 20;
	o->deadline_s = 60;
	o->timeout_s = 5;
	o->keepalive_s = 10;
}

/* Applies one option that takes value v; returns false if it is bad. */
static bool apply_option(struct options *o, const char *a, const char *v)
{
	if (strcmp(a, "--host") == 0)
		o->host = v;
	else if (strcmp(a, "--port") == 0)
		return parse_int(v, 1, 65535, &o->port);
	else if (strcmp(a, "--id") == 0)
		o->id = v;
	else if (strcmp(a, "--cafile") == 0)
		o->cafile = v;
	else if (strcmp(a, "--cert") == 0)
		o->cert = v;
	else if (strcmp(a, "--key") == 0)
		o->key = v;
	else if (strcmp(a, "--username") == 0)
		o->username = v;
	else if (strcmp(a, "--password") == 0)
		o->password = v;
	else if (strcmp(a, "-V") == 0)
		return parse_version(v, &o->protocol);
	else if (strcmp(a, "--topic") == 0)
		o->topic = v;
	else if (strcmp(a, "--first") == 0)
		return parse_i64(v, 0, INT64_MAX / 2, &o->first);
	else if (strcmp(a, "--last") == 0)
		return parse_i64(v, 0, INT64_MAX / 2, &o->last);
	else if (strcmp(a, "--qos") == 0)
		return parse_int(v, 0, 2, &o->qos);
	else if (strcmp(a, "--rate") == 0)
		return parse_double(v, 0, 1e7, false, &o->rate);
	else if (strcmp(a, "--inflight") == 0)
		return parse_int(v, 1, MAX_INFLIGHT, &o->inflight);
	else if (strcmp(a, "--size") == 0)
		return parse_int(v, 0, MAX_SIZE, &o->size);
	else if (strcmp(a, "-o") == 0)
		o->acked_path = v;
	else if (strcmp(a, "--refused") == 0)
		o->refused_path = v;
	else if (strcmp(a, "--deadline") == 0)
		return parse_int(v, 1, 86400, &o->deadline_s);
	else if (strcmp(a, "--timeout") == 0)
		return parse_int(v, 1, 3600, &o->timeout_s);
	else if (strcmp(a, "--pace-us") == 0)
		return parse_int(v, 0, 1000000, &o->pace_us);
	else if (strcmp(a, "--keepalive") == 0)
		return parse_int(v, 5, 3600, &o->keepalive_s);
	else {
		fprintf(stderr, "fg_oracle: unknown option %s\n", a);
		return false;
	}
	return true;
}

/* The id goes into the JSON payload unescaped, so it must need no
 * escaping. */
static bool id_is_plain(const char *id)
{
	const unsigned char *p;

	if (*id == '\0')
		return false;
	for (p = (const unsigned char *)id; *p != '\0'; p++) {
		if (*p < 0x21 || *p > 0x7e || *p == '"' || *p == '\\')
			return false;
	}
	return true;
}

static bool check_options(const struct options *o)
{
	const char *why = NULL;

	if (o->port == 0)
		why = "--port is required";
	else if (o->topic == NULL)
		why = "--topic is required";
	else if (o->last < 0)
		why = "--last is required";
	else if (o->last < o->first)
		why = "--last must not be below --first";
	else if (o->last - o->first >= MAX_NUMBERS)
		why = "at most 100000000 numbers";
	else if ((o->cert == NULL) != (o->key == NULL))
		why = "--cert and --key go together";
	else if (o->cert != NULL && o->cafile == NULL)
		why = "--cert needs --cafile";
	else if (o->password != NULL && o->username == NULL)
		why = "--password needs --username";
	else if (!id_is_plain(o->id))
		why = "--id must be printable ASCII without '\"' or '\\'";
	if (why != NULL)
		fprintf(stderr, "fg_oracle: %s\n", why);
	return why == NULL;
}

/* Returns true when argv held a usable set of options. */
static bool parse_args(int argc, char **argv, struct options *o,
                       char *default_id, size_t id_cap)
{
	int i;

	set_defaults(o);
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--v5") == 0) {
			o->protocol = MQTT_PROTOCOL_V5;
		} else if (strcmp(a, "--v311") == 0) {
			o->protocol = MQTT_PROTOCOL_V311;
		} else if (i + 1 >= argc) {
			fprintf(stderr, "fg_oracle: %s needs a value\n", a);
			return false;
		} else if (!apply_option(o, a, argv[++i])) {
			fprintf(stderr, "fg_oracle: bad value for %s\n", a);
			return false;
		}
	}
	if (o->id == NULL) {
		snprintf(default_id, id_cap, "fg_oracle-%ld", (long)getpid());
		o->id = default_id;
	}
	return check_options(o);
}

/* ---- payload ---- */

/* Writes the payload of number n into buf; returns its length, which is
 * the same on every call for the same n. */
static size_t payload_build(const struct options *o, int64_t n, char *buf,
                            size_t cap)
{
	static const char pad_open[] = ",\"pad\":\"";
	size_t fixed = sizeof(pad_open) - 1 + 2; /* and the closing "} */
	int64_t tenths = n % 400;
	int len;
	size_t have;

	len = snprintf(buf, cap,
	               "{\"n\":%" PRId64 ",\"device\":\"%s\","
	               "\"flow_lps\":%" PRId64 ".%" PRId64,
	               n, o->id, tenths / 10, tenths % 10);
	have = (size_t)len;
	if ((size_t)o->size >= have + fixed) {
		size_t pad = (size_t)o->size - have - fixed;

		memcpy(buf + have, pad_open, sizeof(pad_open) - 1);
		have += sizeof(pad_open) - 1;
		memset(buf + have, 'x', pad);
		have += pad;
		buf[have++] = '"';
	}
	buf[have++] = '}';
	return have;
}

/* ---- ledger ---- */

/* Returns 0, or -1 with a message printed. */
static int ledger_init(struct ledger *l, const struct options *o)
{
	size_t i;

	memset(l, 0, sizeof(*l));
	l->count = o->last - o->first + 1;
	l->state = calloc((size_t)l->count, 1);
	l->resend = calloc((size_t)o->inflight, sizeof(*l->resend));
	l->mid_idx = malloc(MID_SLOTS * sizeof(*l->mid_idx));
	if (l->state == NULL || l->resend == NULL || l->mid_idx == NULL) {
		fprintf(stderr, "fg_oracle: out of memory\n");
		return -1;
	}
	for (i = 0; i < MID_SLOTS; i++)
		l->mid_idx[i] = -1;
	if (o->acked_path != NULL &&
	    (l->acked_out = fopen(o->acked_path, "w")) == NULL) {
		fprintf(stderr, "fg_oracle: %s: %s\n", o->acked_path,
		        strerror(errno));
		return -1;
	}
	if (o->refused_path != NULL &&
	    (l->refused_out = fopen(o->refused_path, "w")) == NULL) {
		fprintf(stderr, "fg_oracle: %s: %s\n", o->refused_path,
		        strerror(errno));
		return -1;
	}
	return 0;
}

static bool ledger_complete(const struct ledger *l)
{
	return l->settled == l->count;
}

static void write_number(struct ledger *l, FILE *f, int64_t n)
{
	if (f == NULL)
		return;
	if (fprintf(f, "%" PRId64 "\n", n) < 0)
		l->io_error = true;
	l->dirty = true;
}

/* Flushes both output files if anything was written to them. */
static void ledger_flush(struct ledger *l)
{
	if (!l->dirty)
		return;
	if ((l->acked_out != NULL && fflush(l->acked_out) != 0) ||
	    (l->refused_out != NULL && fflush(l->refused_out) != 0))
		l->io_error = true;
	l->dirty = false;
}

/* Records the broker's answer rc for index idx, once per number. */
static void ledger_settle(struct ledger *l, int64_t first, int64_t idx, int rc)
{
	if (l->state[idx] == NUM_ACKED || l->state[idx] == NUM_REFUSED)
		return;
	l->settled++;
	if (rc < 0x80) {
		l->state[idx] = NUM_ACKED;
		l->acked++;
		l->last_ack_ns = fg_mono_ns();
		write_number(l, l->acked_out, first + idx);
	} else {
		l->state[idx] = NUM_REFUSED;
		l->refused++;
		write_number(l, l->refused_out, first + idx);
	}
}

/* An answer to mid: settles the number published under it, if any. */
static void ledger_answer(struct ledger *l, int64_t first, int mid, int rc)
{
	int64_t idx;

	if (l->in_publish && mid == l->cur_mid) {
		l->cur_settled = true;
		l->cur_rc = rc;
		return;
	}
	if (mid <= 0 || mid >= MID_SLOTS || l->mid_idx[mid] < 0)
		return;
	idx = l->mid_idx[mid];
	l->mid_idx[mid] = -1;
	l->inflight--;
	ledger_settle(l, first, idx, rc);
}

/* The next index to publish, resends first; -1 when there is none. It is
 * taken only by ledger_take, after a successful publication. */
static int64_t ledger_peek(const struct ledger *l)
{
	if (l->resend_head < l->resend_len)
		return l->resend[l->resend_head];
	return l->next_new < l->count ? l->next_new : -1;
}

static void ledger_take(struct ledger *l)
{
	if (l->resend_head < l->resend_len)
		l->resend_head++;
	else
		l->next_new++;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a;
	int64_t y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/*
 * The connection is gone: every number still in flight goes back to the
 * resend queue, and the queue is sorted. It fits, because a new number is
 * published only when the queue is empty, so queue and flight together
 * never hold more than the window.
 */
static void ledger_requeue(struct ledger *l)
{
	size_t left = l->resend_len - l->resend_head;
	size_t i;

	memmove(l->resend, l->resend + l->resend_head,
	        left * sizeof(*l->resend));
	l->resend_head = 0;
	l->resend_len = left;
	for (i = 0; i < MID_SLOTS; i++) {
		int64_t idx = l->mid_idx[i];

		if (idx < 0)
			continue;
		l->mid_idx[i] = -1;
		l->state[idx] = NUM_RESEND;
		l->resend[l->resend_len++] = idx;
	}
	l->inflight = 0;
	qsort(l->resend, l->resend_len, sizeof(*l->resend), cmp_i64);
}

static void ledger_close(struct ledger *l)
{
	ledger_flush(l);
	if (l->acked_out != NULL && fclose(l->acked_out) != 0)
		l->io_error = true;
	if (l->refused_out != NULL && fclose(l->refused_out) != 0)
		l->io_error = true;
	free(l->state);
	free(l->resend);
	free(l->mid_idx);
}

/* ---- libmosquitto callbacks ---- */

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
	struct oracle *o = obj;

	(void)mosq;
	(void)flags;
	(void)props;
	if (rc != 0) {
		o->ses.lost = true;
		o->ses.last_reason = rc;
		return;
	}
	o->ses.phase = PHASE_UP;
	o->ses.accepted++;
	o->ses.backoff_ms = BACKOFF_MIN_MS;
	o->ses.next_due_ns = fg_mono_ns();
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc,
                          const mosquitto_property *props)
{
	struct oracle *o = obj;

	(void)mosq;
	(void)props;
	o->ses.lost = true;
	o->ses.last_reason = rc;
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid,
                       int reason_code, const mosquitto_property *props)
{
	struct oracle *o = obj;

	(void)mosq;
	(void)props;
	ledger_answer(&o->led, o->opt.first, mid, reason_code);
}

/* ---- session ---- */

static void session_schedule_retry(struct session *s)
{
	s->next_attempt_ns = fg_mono_ns() + (int64_t)s->backoff_ms * NS_PER_MS;
	s->backoff_ms *= 2;
	if (s->backoff_ms > BACKOFF_MAX_MS)
		s->backoff_ms = BACKOFF_MAX_MS;
}

/* Ends the connection, if any, and forgets all of libmosquitto's state
 * about it; what it left unacknowledged is queued again. */
static void session_drop(struct oracle *o)
{
	if (o->ses.mosq != NULL) {
		mosquitto_destroy(o->ses.mosq);
		o->ses.mosq = NULL;
	}
	o->ses.phase = PHASE_DOWN;
	o->ses.lost = false;
	ledger_requeue(&o->led);
	session_schedule_retry(&o->ses);
}

/* Returns a configured libmosquitto object, NULL on failure. */
static struct mosquitto *session_new(struct oracle *o)
{
	const struct options *opt = &o->opt;
	struct mosquitto *mosq = mosquitto_new(opt->id, true, o);
	int rc = MOSQ_ERR_SUCCESS;

	if (mosq == NULL)
		return NULL;
	mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, opt->protocol);
	/* The library's own window must not be the smaller one. */
	mosquitto_int_option(mosq, MOSQ_OPT_SEND_MAXIMUM, opt->inflight);
	mosquitto_connect_v5_callback_set(mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(mosq, on_disconnect);
	mosquitto_publish_v5_callback_set(mosq, on_publish);
	if (opt->username != NULL)
		rc = mosquitto_username_pw_set(mosq, opt->username,
		                               opt->password);
	if (rc == MOSQ_ERR_SUCCESS && opt->cafile != NULL)
		rc = mosquitto_tls_set(mosq, opt->cafile, NULL, opt->cert,
		                       opt->key, NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "fg_oracle: client setup: %s\n",
		        mosquitto_strerror(rc));
		mosquitto_destroy(mosq);
		return NULL;
	}
	return mosq;
}

/* Starts a connection attempt. Returns false on a setup error that a
 * retry cannot cure; a failed attempt is scheduled for a retry. */
static bool session_open(struct oracle *o)
{
	struct session *s = &o->ses;
	int rc;

	s->mosq = session_new(o);
	if (s->mosq == NULL)
		return false;
	rc = mosquitto_connect(s->mosq, o->opt.host, o->opt.port,
	                       o->opt.keepalive_s);
	if (rc != MOSQ_ERR_SUCCESS) {
		s->last_reason = rc;
		session_drop(o);
		return true;
	}
	s->phase = PHASE_CONNECTING;
	s->connack_deadline_ns =
	    fg_mono_ns() + (int64_t)o->opt.timeout_s * NS_PER_S;
	return true;
}

/* ---- publishing ---- */

/* Publishes index idx; returns false when libmosquitto refused to. */
static bool publish_one(struct oracle *o, int64_t idx)
{
	struct ledger *l = &o->led;
	size_t len = payload_build(&o->opt, o->opt.first + idx, o->payload,
	                           o->payload_cap);
	bool again = l->state[idx] == NUM_RESEND;
	int rc;

	l->in_publish = true;
	l->cur_mid = 0;
	l->cur_settled = false;
	rc = mosquitto_publish(o->ses.mosq, &l->cur_mid, o->opt.topic, (int)len,
	                       o->payload, o->opt.qos, false);
	l->in_publish = false;
	if (rc != MOSQ_ERR_SUCCESS) {
		o->ses.lost = true;
		o->ses.last_reason = rc;
		return false;
	}
	ledger_take(l);
	if (l->first_pub_ns == 0)
		l->first_pub_ns = fg_mono_ns();
	if (again)
		l->resent++;
	else
		l->sent++;
	if (l->cur_settled) {
		ledger_settle(l, o->opt.first, idx, l->cur_rc);
		return true;
	}
	l->state[idx] = NUM_INFLIGHT;
	l->mid_idx[l->cur_mid] = idx;
	l->inflight++;
	return true;
}

/* True when the window and the rate allow one more publication now. */
static bool may_publish(const struct oracle *o, int64_t now)
{
	const struct session *s = &o->ses;

	if (s->phase != PHASE_UP || s->lost || ledger_peek(&o->led) < 0 ||
	    o->led.inflight >= (size_t)o->opt.inflight)
		return false;
	return o->opt.rate <= 0.0 || now >= s->next_due_ns;
}

static void publish_due(struct oracle *o)
{
	int64_t now = fg_mono_ns();
	int64_t step = 0;

	if (o->opt.rate > 0.0) {
		step = (int64_t)((double)NS_PER_S / o->opt.rate);
		if (o->ses.next_due_ns < now - RATE_MAX_LAG_NS)
			o->ses.next_due_ns = now;
	}
	while (may_publish(o, now)) {
		if (!publish_one(o, ledger_peek(&o->led)))
			return;
		o->ses.next_due_ns += step;
		if (step > 0)
			now = fg_mono_ns();
	}
}

/* ---- event loop ---- */

/* How long poll may sleep: until the next publication is due, the CONNACK
 * deadline, the overall deadline, or IDLE_POLL_MS. */
static int poll_timeout_ms(const struct oracle *o, int64_t now)
{
	const struct session *s = &o->ses;
	int64_t until = now + IDLE_POLL_MS * NS_PER_MS;

	if (s->phase == PHASE_UP && o->opt.rate > 0.0 &&
	    ledger_peek(&o->led) >= 0 &&
	    o->led.inflight < (size_t)o->opt.inflight && s->next_due_ns < until)
		until = s->next_due_ns;
	if (s->phase == PHASE_CONNECTING && s->connack_deadline_ns < until)
		until = s->connack_deadline_ns;
	if (o->deadline_ns < until)
		until = o->deadline_ns;
	if (until <= now)
		return 0;
	return (int)((until - now + NS_PER_MS - 1) / NS_PER_MS);
}

/*
 * One wait on the socket and the library's read, write and keepalive
 * work: what mosquitto_loop does, with poll and without its wake-up
 * socket pair (publications come from this thread, between waits).
 */
static int session_service(struct oracle *o)
{
	struct mosquitto *mosq = o->ses.mosq;
	struct pollfd pfd;
	int rc = MOSQ_ERR_SUCCESS;

	pfd.fd = mosquitto_socket(mosq);
	if (pfd.fd < 0)
		return MOSQ_ERR_NO_CONN;
	pfd.events = POLLIN;
	if (mosquitto_want_write(mosq))
		pfd.events |= POLLOUT;
	pfd.revents = 0;
	if (poll(&pfd, 1,
	         o->opt.pace_us > 0 ? 0 : poll_timeout_ms(o, fg_mono_ns())) < 0)
		return errno == EINTR ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ERRNO;
	if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
		rc = o->opt.pace_us > 0 ? fg_read_ready(mosq, PACED_READS)
		                        : mosquitto_loop_read(mosq, 1);
	if (rc == MOSQ_ERR_SUCCESS && (pfd.revents & POLLOUT))
		rc = mosquitto_loop_write(mosq, 1);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_loop_misc(mosq);
	return rc;
}

/* One step of the run: connect, or serve the connection and publish. */
static bool run_step(struct oracle *o)
{
	struct session *s = &o->ses;
	int rc;

	if (s->mosq == NULL) {
		if (fg_mono_ns() < s->next_attempt_ns) {
			fg_sleep_until(s->next_attempt_ns < o->deadline_ns
			                   ? s->next_attempt_ns
			                   : o->deadline_ns);
			return true;
		}
		return session_open(o);
	}
	if (o->opt.pace_us > 0)
		fg_pace_wait(&o->next_pass_ns, o->opt.pace_us, o->deadline_ns);
	publish_due(o);
	ledger_flush(&o->led);
	rc = session_service(o);
	if (rc != MOSQ_ERR_SUCCESS)
		s->last_reason = rc;
	if (s->phase == PHASE_CONNECTING &&
	    fg_mono_ns() > s->connack_deadline_ns)
		s->lost = true;
	if (rc != MOSQ_ERR_SUCCESS || s->lost)
		session_drop(o);
	ledger_flush(&o->led);
	return true;
}

static void print_summary(const struct oracle *o)
{
	const struct ledger *l = &o->led;
	double elapsed = 0.0;
	double rate = 0.0;
	int64_t reconnects = o->ses.accepted > 0 ? o->ses.accepted - 1 : 0;

	if (l->first_pub_ns != 0 && l->last_ack_ns > l->first_pub_ns)
		elapsed = (double)(l->last_ack_ns - l->first_pub_ns) / 1e9;
	if (elapsed > 0.0)
		rate = (double)l->acked / elapsed;
	printf("sent=%" PRId64 " acked=%" PRId64 " refused=%" PRId64
	       " resent=%" PRId64 " reconnects=%" PRId64
	       " elapsed_s=%.3f acked_per_s=%.1f\n",
	       l->sent, l->acked, l->refused, l->resent, reconnects, elapsed,
	       rate);
	fflush(stdout);
}

/* Runs until every number is settled, the deadline, a signal or an
 * error. Returns the exit code. */
static int run(struct oracle *o)
{
	bool setup_ok = true;

	o->deadline_ns = fg_mono_ns() + (int64_t)o->opt.deadline_s * NS_PER_S;
	o->ses.backoff_ms = BACKOFF_MIN_MS;
	while (setup_ok && !ledger_complete(&o->led) && !stop_requested &&
	       !o->led.io_error && fg_mono_ns() < o->deadline_ns)
		setup_ok = run_step(o);
	if (o->ses.mosq != NULL) {
		/* Let a clean DISCONNECT reach the socket before closing. */
		mosquitto_disconnect(o->ses.mosq);
		mosquitto_loop(o->ses.mosq, 10, 1);
		mosquitto_destroy(o->ses.mosq);
		o->ses.mosq = NULL;
	}
	if (!ledger_complete(&o->led) && o->ses.last_reason != 0)
		fprintf(stderr, "fg_oracle: last error or reason code: %d\n",
		        o->ses.last_reason);
	if (!setup_ok)
		return EXIT_SETUP;
	if (o->led.io_error) {
		fprintf(stderr, "fg_oracle: writing an output file failed\n");
		return EXIT_SETUP;
	}
	return o->led.acked == o->led.count ? EXIT_ALL_ACKED : EXIT_NOT_ALL;
}

int main(int argc, char **argv)
{
	static struct oracle o;
	char default_id[64];
	int result = EXIT_SETUP;

	if (!parse_args(argc, argv, &o.opt, default_id, sizeof(default_id))) {
		usage();
		return EXIT_SETUP;
	}
	install_signals();
	mosquitto_lib_init();
	/* Room for the body with a 20-digit number, or for the padding. */
	o.payload_cap = strlen(o.opt.id) + 96 + (size_t)o.opt.size;
	o.payload = malloc(o.payload_cap);
	if (o.payload == NULL) {
		fprintf(stderr, "fg_oracle: out of memory\n");
	} else if (ledger_init(&o.led, &o.opt) == 0) {
		result = run(&o);
		print_summary(&o);
	}
	ledger_close(&o.led);
	if (o.led.io_error && result != EXIT_SETUP) {
		fprintf(stderr, "fg_oracle: closing an output file failed\n");
		result = EXIT_SETUP;
	}
	free(o.payload);
	mosquitto_lib_cleanup();
	return result;
}
