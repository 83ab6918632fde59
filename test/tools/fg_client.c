/*
 * fg_client: MQTT test client for the fleetgate integration tests.
 *
 * It connects to a broker (TLS with a client certificate, or plain TCP),
 * reports the broker's answer to CONNECT as one line and exits with a code
 * the test scripts can assert on. It can also stay connected and report
 * when, and how fast, the broker disconnects it.
 *
 * Usage:
 *   fg_client --host H --port P --id CLIENTID
 *             [--cafile F --cert F --key F]   TLS (all three, or --cafile
 *                                             alone for TLS without a
 *                                             client certificate)
 *             [--username U] [--password P]
 *             [--v5 | --v311]                 protocol (default v5)
 *             [--timeout S]                   wait for CONNACK (default 5)
 *             [--hold S]                      stay connected S seconds
 *             [--wait-disconnect S]           expect a disconnect within S
 *             [--raw --id-hex HEX]            hand-built CONNECT (see below)
 *             [--raw-subscribe-hex HEX | --raw-publish-hex HEX]
 *                                             (--raw) then one SUBSCRIBE or
 *                                             QoS 1 PUBLISH (see below)
 *             [--script]                      after CONNACK, run commands
 *                                             from standard input (below)
 *             [--will-topic T [--will-payload P] [--will-qos Q]
 *              [--will-retain]]               a Will for the connection
 *             [--no-clean]                    keep the session: clean
 *                                             session (3.1.1) / clean
 *                                             start (5) off, and in MQTT 5
 *                                             a session expiry of 3600 s
 *
 * Output (stdout, one line each, flushed at once):
 *   connack rc=N reason=TEXT      the broker's CONNACK; N is the MQTT 3.1.1
 *                                 return code or the MQTT 5 reason code
 *   error stage=S rc=N text=TEXT  TLS or network failure before a CONNACK
 *   ready                         (--wait-disconnect) connected; the test
 *                                 may now make the change under test
 *   disconnected after_ms=N ms_since_signal=N epoch_ms=N rc=N
 *                                 the broker closed the connection:
 *                                 after_ms counts from the CONNACK,
 *                                 ms_since_signal from the last SIGUSR1
 *                                 (-1 if none arrived), epoch_ms is the
 *                                 CLOCK_REALTIME time of the disconnect in
 *                                 milliseconds, for comparison with a time
 *                                 the test script took; rc is the MQTT 5
 *                                 DISCONNECT reason or the library error
 *   held ms=N                     (--hold) still connected at the end
 *   timeout waited_ms=N           (--wait-disconnect) still connected
 *
 * Exit codes:
 *   0  CONNACK accepted (with --hold: and still connected at the end;
 *      with --wait-disconnect: and the broker disconnected the client
 *      within the time allowed)
 *   1  usage error or local failure (bad files, out of memory)
 *   2  CONNACK received with a refusal code
 *   3  TLS or network error, or the connection closed before any CONNACK,
 *      or no CONNACK within --timeout
 *   4  with --hold: the broker disconnected the client early;
 *      with --wait-disconnect: the broker did not disconnect it in time
 *
 * SIGUSR1 marks the reference time for ms_since_signal. SIGTERM and SIGINT
 * end the client with a clean DISCONNECT and exit code 0.
 *
 * --raw sends a CONNECT built by hand (over OpenSSL for TLS), with the
 * client identifier given as hex bytes by --id-hex. It exists to send
 * identifiers that libmosquitto refuses to put on the wire, such as ones
 * holding control characters, so that the broker's answer to them can be
 * tested. It reports the CONNACK (or its absence). With --raw-subscribe-hex
 * or --raw-publish-hex it then sends one SUBSCRIBE (QoS 0) or one QoS 1
 * PUBLISH (payload "raw") whose topic is the given bytes, so that topics
 * libmosquitto refuses to send (invalid UTF-8) can be tried, and prints
 *   suback rc=N | puback rc=N     the broker's answer (N: the granted QoS
 *                                 or reason code; a v5 PUBACK without one
 *                                 is 0)
 *   error stage=subscribe|publish rc=N text=TEXT
 *                                 the broker closed the connection instead
 *                                 (exit code 4)
 *
 * --script: once the CONNACK accepted the client, fg_client prints "ready"
 * and reads one command a line from standard input, while it keeps serving
 * the connection. Fields are separated by single blanks; the topic or filter
 * is the rest of the line, so it may hold blanks. TAG is a word of the
 * test's choice that names the command in the answers (and is the payload
 * of a published message).
 *   sub TAG QOS FILTER       SUBSCRIBE   -> suback tag=TAG rc=N (N >= 128:
 *                                           refused, 0x80 in 3.1.1, 0x87
 *                                           and others in 5)
 *   unsub TAG FILTER         UNSUBSCRIBE -> unsuback tag=TAG
 *   pub TAG QOS RETAIN TOPIC PUBLISH with payload TAG (RETAIN 0 or 1)
 *                                        -> QoS 0: sent tag=TAG ms=EPOCH_MS
 *                                           once queued;
 *                                           QoS 1/2: puback tag=TAG rc=N
 *                                           (N: the v5 reason code, 0x87 is
 *                                           a refusal; 3.1.1 has none: 0)
 *   echo TEXT                prints "echo TEXT" (a marker in the output)
 *   sleep MS                 serves the connection MS ms before the next
 *                            command
 *   quit                     clean DISCONNECT and exit (also at end of input)
 *   die                      exit at once without DISCONNECT, so that the
 *                            broker publishes the Will
 * A command libmosquitto refuses prints "suberr|puberr|unsuberr tag=TAG
 * rc=N text=TEXT". Every message received prints
 *   msg qos=Q retain=R ms=EPOCH_MS payload=PAYLOAD topic=TOPIC
 * (payload: at most 64 bytes, bytes outside 0x21..0x7e as '.'; topic: the
 * rest of the line, control characters as '?'). When the broker closes the
 * connection, "disconnected ..." is printed as with --wait-disconnect; the
 * client keeps reading (and ignoring) commands until the end of its input,
 * then exits 4. Otherwise the exit code is 0.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "fg_args.h"

enum {
	EXIT_ACCEPTED = 0,
	EXIT_USAGE = 1,
	EXIT_REFUSED = 2,
	EXIT_NETWORK = 3,
	EXIT_UNEXPECTED = 4
};

#define RAW_ID_MAX 1024
#define RAW_TOPIC_MAX 16384
#define RAW_BUF_MAX (RAW_TOPIC_MAX + 256)
#define RAW_IN_MAX 65536
#define SCRIPT_LINE_MAX (1024 * 1024)

enum raw_action { RAW_CONNECT_ONLY, RAW_SUBSCRIBE, RAW_PUBLISH };

struct options {
	const char *host;
	int port;
	const char *cafile;
	const char *cert;
	const char *key;
	const char *id;
	const char *username;
	const char *password;
	int protocol;
	int timeout_s;
	int hold_s;
	int wait_disconnect_s;
	bool raw;
	unsigned char raw_id[RAW_ID_MAX];
	size_t raw_id_len;
	enum raw_action raw_action;
	unsigned char raw_topic[RAW_TOPIC_MAX];
	size_t raw_topic_len;
	bool script;
	const char *will_topic;
	const char *will_payload;
	int will_qos;
	bool will_retain;
	bool no_clean;
};

struct script;

struct state {
	bool got_connack;
	int connack_rc;
	bool disconnected;
	int disconnect_rc;
	int64_t connack_ms;
	int64_t disconnect_ms;
	int64_t disconnect_epoch_ms;
	struct script *script;
};

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t signal_seen;
static struct timespec signal_time;

static int64_t ts_ms(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000 + (int64_t)(ts->tv_nsec / 1000000);
}

static int64_t now_ms(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts_ms(&ts);
}

static void on_usr1(int sig)
{
	(void)sig;
	/* clock_gettime is async-signal-safe. */
	clock_gettime(CLOCK_MONOTONIC, &signal_time);
	signal_seen = 1;
}

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
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void usage(void)
{
	fprintf(stderr, "usage: fg_client --host H --port P --id ID"
	                " [--cafile F [--cert F --key F]]\n"
	                "                 [--username U] [--password P]"
	                " [--v5|--v311] [--timeout S]\n"
	                "                 [--hold S | --wait-disconnect S]"
	                " [--raw --id-hex HEX]\n"
	                "                 [--raw-subscribe-hex HEX |"
	                " --raw-publish-hex HEX] [--script]\n"
	                "                 [--will-topic T [--will-payload P]"
	                " [--will-qos Q] [--will-retain]] [--no-clean]\n");
}

static int hex_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool parse_hex(const char *s, unsigned char *out, size_t cap,
                      size_t *len)
{
	size_t n = strlen(s);
	size_t i;

	if (n % 2 != 0 || n / 2 > cap)
		return false;
	for (i = 0; i < n / 2; i++) {
		int hi = hex_nibble(s[2 * i]);
		int lo = hex_nibble(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		out[i] = (unsigned char)(hi * 16 + lo);
	}
	*len = n / 2;
	return true;
}

/* Returns true when argv held a usable set of options. */
static bool parse_args(int argc, char **argv, struct options *o)
{
	int i;
	const char *id_hex = NULL;
	const char *topic_hex = NULL;

	memset(o, 0, sizeof(*o));
	o->host = "127.0.0.1";
	o->protocol = MQTT_PROTOCOL_V5;
	o->timeout_s = 5;
	o->hold_s = -1;
	o->wait_disconnect_s = -1;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;
		bool takes_value = true;

		if (strcmp(a, "--v5") == 0) {
			o->protocol = MQTT_PROTOCOL_V5;
			takes_value = false;
		} else if (strcmp(a, "--v311") == 0) {
			o->protocol = MQTT_PROTOCOL_V311;
			takes_value = false;
		} else if (strcmp(a, "--raw") == 0) {
			o->raw = true;
			takes_value = false;
		} else if (strcmp(a, "--script") == 0) {
			o->script = true;
			takes_value = false;
		} else if (strcmp(a, "--will-retain") == 0) {
			o->will_retain = true;
			takes_value = false;
		} else if (strcmp(a, "--no-clean") == 0) {
			o->no_clean = true;
			takes_value = false;
		} else if (v == NULL) {
			fprintf(stderr, "fg_client: %s needs a value\n", a);
			return false;
		} else if (strcmp(a, "--host") == 0) {
			o->host = v;
		} else if (strcmp(a, "--port") == 0) {
			if (!parse_int(v, 1, 65535, &o->port))
				return false;
		} else if (strcmp(a, "--cafile") == 0) {
			o->cafile = v;
		} else if (strcmp(a, "--cert") == 0) {
			o->cert = v;
		} else if (strcmp(a, "--key") == 0) {
			o->key = v;
		} else if (strcmp(a, "--id") == 0) {
			o->id = v;
		} else if (strcmp(a, "--id-hex") == 0) {
			id_hex = v;
		} else if (strcmp(a, "--raw-subscribe-hex") == 0 ||
		           strcmp(a, "--raw-publish-hex") == 0) {
			if (topic_hex != NULL) {
				fprintf(stderr, "fg_client: one raw SUBSCRIBE "
				                "or PUBLISH only\n");
				return false;
			}
			topic_hex = v;
			o->raw_action =
			    a[6] == 's' ? RAW_SUBSCRIBE : RAW_PUBLISH;
		} else if (strcmp(a, "--will-topic") == 0) {
			o->will_topic = v;
		} else if (strcmp(a, "--will-payload") == 0) {
			o->will_payload = v;
		} else if (strcmp(a, "--will-qos") == 0) {
			if (!parse_int(v, 0, 2, &o->will_qos))
				return false;
		} else if (strcmp(a, "--username") == 0) {
			o->username = v;
		} else if (strcmp(a, "--password") == 0) {
			o->password = v;
		} else if (strcmp(a, "--timeout") == 0) {
			if (!parse_int(v, 1, 3600, &o->timeout_s))
				return false;
		} else if (strcmp(a, "--hold") == 0) {
			if (!parse_int(v, 0, 86400, &o->hold_s))
				return false;
		} else if (strcmp(a, "--wait-disconnect") == 0) {
			if (!parse_int(v, 0, 86400, &o->wait_disconnect_s))
				return false;
		} else {
			fprintf(stderr, "fg_client: unknown option %s\n", a);
			return false;
		}
		if (takes_value)
			i++;
	}

	if (o->port == 0) {
		fprintf(stderr, "fg_client: --port is required\n");
		return false;
	}
	if ((o->cert == NULL) != (o->key == NULL)) {
		fprintf(stderr, "fg_client: --cert and --key go together\n");
		return false;
	}
	if (o->cert != NULL && o->cafile == NULL) {
		fprintf(stderr, "fg_client: --cert needs --cafile\n");
		return false;
	}
	if (o->hold_s >= 0 && o->wait_disconnect_s >= 0) {
		fprintf(stderr, "fg_client: --hold or --wait-disconnect, "
		                "not both\n");
		return false;
	}
	if (o->raw && (o->script || o->will_topic != NULL || o->no_clean)) {
		fprintf(stderr, "fg_client: --raw takes neither --script, "
		                "--no-clean nor a Will\n");
		return false;
	}
	if (o->script && (o->hold_s >= 0 || o->wait_disconnect_s >= 0)) {
		fprintf(stderr, "fg_client: --script goes with neither --hold "
		                "nor --wait-disconnect\n");
		return false;
	}
	if (o->will_topic == NULL &&
	    (o->will_payload != NULL || o->will_qos != 0 || o->will_retain)) {
		fprintf(stderr, "fg_client: Will options need --will-topic\n");
		return false;
	}
	if (topic_hex != NULL &&
	    (!o->raw || !parse_hex(topic_hex, o->raw_topic,
	                           sizeof(o->raw_topic), &o->raw_topic_len))) {
		fprintf(stderr, "fg_client: --raw-subscribe-hex and "
		                "--raw-publish-hex need --raw and an even "
		                "number of hex digits\n");
		return false;
	}
	if (o->raw) {
		if (id_hex == NULL ||
		    !parse_hex(id_hex, o->raw_id, sizeof(o->raw_id),
		               &o->raw_id_len)) {
			fprintf(stderr, "fg_client: --raw needs --id-hex "
			                "with an even number of hex digits\n");
			return false;
		}
		if (o->hold_s >= 0 || o->wait_disconnect_s >= 0) {
			fprintf(stderr, "fg_client: --raw reports the "
			                "CONNACK only\n");
			return false;
		}
	} else if (o->id == NULL) {
		fprintf(stderr, "fg_client: --id is required\n");
		return false;
	}
	return true;
}

static void print_connack(int protocol, int rc)
{
	const char *text;

	if (protocol == MQTT_PROTOCOL_V5)
		text = mosquitto_reason_string(rc);
	else
		text = mosquitto_connack_string(rc);
	printf("connack rc=%d reason=%s\n", rc, text);
	fflush(stdout);
}

static void print_disconnected(const struct state *st)
{
	int64_t since_signal = -1;

	if (signal_seen)
		since_signal = st->disconnect_ms - ts_ms(&signal_time);
	printf("disconnected after_ms=%lld ms_since_signal=%lld "
	       "epoch_ms=%lld rc=%d\n",
	       (long long)(st->disconnect_ms - st->connack_ms),
	       (long long)since_signal, (long long)st->disconnect_epoch_ms,
	       st->disconnect_rc);
	fflush(stdout);
}

static void print_error(const char *stage, int rc, const char *text)
{
	printf("error stage=%s rc=%d text=%s\n", stage, rc, text);
	fflush(stdout);
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
	struct state *st = obj;

	(void)mosq;
	(void)flags;
	(void)props;
	st->got_connack = true;
	st->connack_rc = rc;
	st->connack_ms = now_ms(CLOCK_MONOTONIC);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc,
                          const mosquitto_property *props)
{
	struct state *st = obj;

	(void)mosq;
	(void)props;
	if (st->disconnected)
		return;
	st->disconnected = true;
	st->disconnect_rc = rc;
	st->disconnect_ms = now_ms(CLOCK_MONOTONIC);
	st->disconnect_epoch_ms = now_ms(CLOCK_REALTIME);
}

/*
 * Runs the network loop until the client is disconnected, the deadline
 * (monotonic ms) passes or a stop signal arrives. Returns the last
 * libmosquitto error seen, MOSQ_ERR_SUCCESS when none.
 */
static int run_loop(struct mosquitto *mosq, struct state *st, int64_t deadline,
                    bool until_connack)
{
	int last = MOSQ_ERR_SUCCESS;

	while (!stop_requested && !st->disconnected) {
		int rc;

		if (until_connack && st->got_connack)
			break;
		if (now_ms(CLOCK_MONOTONIC) >= deadline)
			break;
		rc = mosquitto_loop(mosq, 20, 1);
		if (rc != MOSQ_ERR_SUCCESS) {
			last = rc;
			if (!st->disconnected && rc != MOSQ_ERR_NOMEM) {
				/* The library did not call back: the
				 * connection broke under it. */
				on_disconnect(mosq, st, rc, NULL);
			}
		}
	}
	return last;
}

/* ---- script mode: commands on standard input ---- */

struct script {
	struct mosquitto *mosq;
	struct state *st;
	const struct options *o;
	/* What each outstanding SUBSCRIBE, UNSUBSCRIBE or QoS 1/2 PUBLISH
	 * was called; message ids are 16 bits. */
	char *tag_of_mid[65536];
	char *buf;
	size_t len;
	size_t cap;
	bool eof;
	bool quit;
	bool reported_disconnect;
	int64_t sleep_until;
};

static void script_set_tag(struct script *sc, int mid, const char *tag)
{
	if (mid < 0 || mid > 65535)
		return;
	free(sc->tag_of_mid[mid]);
	sc->tag_of_mid[mid] = strdup(tag);
}

/* Returns the tag of mid (to be freed), NULL when there is none. */
static char *script_take_tag(struct script *sc, int mid)
{
	char *tag;

	if (sc == NULL || mid < 0 || mid > 65535)
		return NULL;
	tag = sc->tag_of_mid[mid];
	sc->tag_of_mid[mid] = NULL;
	return tag;
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid,
                         int qos_count, const int *granted,
                         const mosquitto_property *props)
{
	struct state *st = obj;
	char *tag = script_take_tag(st->script, mid);
	int i;

	(void)mosq;
	(void)props;
	for (i = 0; i < qos_count; i++)
		printf("suback tag=%s rc=%d\n", tag ? tag : "?", granted[i]);
	fflush(stdout);
	free(tag);
}

static void on_unsubscribe(struct mosquitto *mosq, void *obj, int mid,
                           const mosquitto_property *props)
{
	struct state *st = obj;
	char *tag = script_take_tag(st->script, mid);

	(void)mosq;
	(void)props;
	printf("unsuback tag=%s\n", tag ? tag : "?");
	fflush(stdout);
	free(tag);
}

/* QoS 0 messages are reported when queued (see script_pub): their
 * callback may run inside mosquitto_publish, before the tag is known. */
static void on_publish(struct mosquitto *mosq, void *obj, int mid,
                       int reason_code, const mosquitto_property *props)
{
	struct state *st = obj;
	char *tag = script_take_tag(st->script, mid);

	(void)mosq;
	(void)props;
	if (tag == NULL)
		return;
	printf("puback tag=%s rc=%d\n", tag, reason_code);
	fflush(stdout);
	free(tag);
}

static void on_message(struct mosquitto *mosq, void *obj,
                       const struct mosquitto_message *m,
                       const mosquitto_property *props)
{
	char payload[65];
	const unsigned char *p = m->payload;
	size_t n = m->payloadlen > 64 ? 64 : (size_t)m->payloadlen;
	size_t i;

	(void)mosq;
	(void)obj;
	(void)props;
	for (i = 0; i < n; i++)
		payload[i] = (p[i] > 0x20 && p[i] < 0x7f) ? (char)p[i] : '.';
	payload[n] = '\0';
	printf("msg qos=%d retain=%d ms=%lld payload=%s topic=", m->qos,
	       m->retain ? 1 : 0, (long long)now_ms(CLOCK_REALTIME), payload);
	for (p = (const unsigned char *)m->topic; *p != '\0'; p++)
		putchar(*p < 0x20 || *p == 0x7f ? '?' : *p);
	putchar('\n');
	fflush(stdout);
}

/* Splits off the next blank-separated field of *rest; NULL when none. */
static char *next_field(char **rest)
{
	char *f = *rest;
	char *sp;

	if (f == NULL || *f == '\0')
		return NULL;
	sp = strchr(f, ' ');
	if (sp != NULL) {
		*sp = '\0';
		*rest = sp + 1;
	} else {
		*rest = f + strlen(f);
	}
	return f;
}

static void script_error(const char *what, const char *tag, int rc)
{
	printf("%s tag=%s rc=%d text=%s\n", what, tag, rc,
	       rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
}

static void script_sub(struct script *sc, char *rest)
{
	char *tag = next_field(&rest);
	char *qos_s = next_field(&rest);
	int qos, mid = 0, rc;

	if (tag == NULL || qos_s == NULL || !parse_int(qos_s, 0, 2, &qos) ||
	    *rest == '\0') {
		printf(
		    "error stage=script rc=0 text=usage: sub TAG QOS FILTER\n");
		return;
	}
	rc = mosquitto_subscribe_v5(sc->mosq, &mid, rest, qos, 0, NULL);
	if (rc != MOSQ_ERR_SUCCESS)
		script_error("suberr", tag, rc);
	else
		script_set_tag(sc, mid, tag);
}

static void script_unsub(struct script *sc, char *rest)
{
	char *tag = next_field(&rest);
	int mid = 0, rc;

	if (tag == NULL || *rest == '\0') {
		printf(
		    "error stage=script rc=0 text=usage: unsub TAG FILTER\n");
		return;
	}
	rc = mosquitto_unsubscribe_v5(sc->mosq, &mid, rest, NULL);
	if (rc != MOSQ_ERR_SUCCESS)
		script_error("unsuberr", tag, rc);
	else
		script_set_tag(sc, mid, tag);
}

static void script_pub(struct script *sc, char *rest)
{
	char *tag = next_field(&rest);
	char *qos_s = next_field(&rest);
	char *retain_s = next_field(&rest);
	int qos, retain, mid = 0, rc;

	if (tag == NULL || qos_s == NULL || retain_s == NULL ||
	    !parse_int(qos_s, 0, 2, &qos) ||
	    !parse_int(retain_s, 0, 1, &retain) || *rest == '\0') {
		printf("error stage=script rc=0 text=usage: pub TAG QOS RETAIN "
		       "TOPIC\n");
		return;
	}
	rc = mosquitto_publish_v5(sc->mosq, &mid, rest, (int)strlen(tag), tag,
	                          qos, retain != 0, NULL);
	if (rc != MOSQ_ERR_SUCCESS)
		script_error("puberr", tag, rc);
	else if (qos == 0)
		printf("sent tag=%s ms=%lld\n", tag,
		       (long long)now_ms(CLOCK_REALTIME));
	else
		script_set_tag(sc, mid, tag);
}

static void script_command(struct script *sc, char *line)
{
	char *rest = line;
	char *cmd = next_field(&rest);
	int ms;

	if (cmd == NULL)
		return;
	if (strcmp(cmd, "die") == 0) {
		fflush(stdout);
		_exit(EXIT_ACCEPTED);
	}
	if (strcmp(cmd, "quit") == 0) {
		sc->quit = true;
	} else if (strcmp(cmd, "echo") == 0) {
		printf("echo %s\n", rest);
	} else if (strcmp(cmd, "sleep") == 0) {
		if (parse_int(rest, 0, 3600000, &ms))
			sc->sleep_until = now_ms(CLOCK_MONOTONIC) + ms;
		else
			printf(
			    "error stage=script rc=0 text=usage: sleep MS\n");
	} else if (sc->st->disconnected) {
		/* Nothing to send it on; the disconnect was reported. */
	} else if (strcmp(cmd, "sub") == 0) {
		script_sub(sc, rest);
	} else if (strcmp(cmd, "unsub") == 0) {
		script_unsub(sc, rest);
	} else if (strcmp(cmd, "pub") == 0) {
		script_pub(sc, rest);
	} else {
		printf("error stage=script rc=0 text=unknown command %.40s\n",
		       cmd);
	}
	fflush(stdout);
}

/* Runs the complete lines in the input buffer, as long as no sleep is
 * pending. */
static void script_run_lines(struct script *sc)
{
	size_t start = 0;

	while (!sc->quit && now_ms(CLOCK_MONOTONIC) >= sc->sleep_until) {
		char *nl = memchr(sc->buf + start, '\n', sc->len - start);

		if (nl == NULL)
			break;
		*nl = '\0';
		script_command(sc, sc->buf + start);
		start = (size_t)(nl - sc->buf) + 1;
	}
	memmove(sc->buf, sc->buf + start, sc->len - start);
	sc->len -= start;
}

/* Reads what standard input has; returns false on a local failure. */
static bool script_read_input(struct script *sc)
{
	ssize_t n;

	if (sc->cap - sc->len < 4096) {
		size_t cap = sc->cap * 2;
		char *b;

		if (cap > SCRIPT_LINE_MAX * 2) {
			fprintf(stderr, "fg_client: script line too long\n");
			return false;
		}
		b = realloc(sc->buf, cap);
		if (b == NULL)
			return false;
		sc->buf = b;
		sc->cap = cap;
	}
	n = read(STDIN_FILENO, sc->buf + sc->len, sc->cap - sc->len - 1);
	if (n < 0 && errno != EINTR && errno != EAGAIN)
		sc->eof = true;
	if (n == 0)
		sc->eof = true;
	if (n > 0)
		sc->len += (size_t)n;
	return true;
}

static void script_serve_network(struct script *sc, short revents)
{
	struct mosquitto *mosq = sc->mosq;
	int rc;

	if (revents & (POLLIN | POLLHUP | POLLERR)) {
		rc = mosquitto_loop_read(mosq, 1);
		if (rc != MOSQ_ERR_SUCCESS && !sc->st->disconnected)
			on_disconnect(mosq, sc->st, rc, NULL);
	}
	if (!sc->st->disconnected && (revents & POLLOUT)) {
		rc = mosquitto_loop_write(mosq, 1);
		if (rc != MOSQ_ERR_SUCCESS && !sc->st->disconnected)
			on_disconnect(mosq, sc->st, rc, NULL);
	}
	if (!sc->st->disconnected)
		mosquitto_loop_misc(mosq);
}

/* Serves the connection and the commands until the input ends, "quit" or
 * a stop signal. Returns the exit code. */
static int run_script(struct mosquitto *mosq, struct state *st,
                      const struct options *o)
{
	struct script *sc = calloc(1, sizeof(*sc));
	int result = EXIT_USAGE;
	int i;

	if (sc == NULL)
		return EXIT_USAGE;
	sc->mosq = mosq;
	sc->st = st;
	sc->o = o;
	sc->cap = 65536;
	sc->buf = malloc(sc->cap);
	if (sc->buf == NULL)
		goto out;
	st->script = sc;
	printf("ready\n");
	fflush(stdout);

	while (!stop_requested && !sc->quit) {
		struct pollfd pfd[2];
		int64_t now = now_ms(CLOCK_MONOTONIC);
		int timeout = 50;
		int sock = st->disconnected ? -1 : mosquitto_socket(mosq);
		bool sleeping = now < sc->sleep_until;

		if (sleeping && sc->sleep_until - now < timeout)
			timeout = (int)(sc->sleep_until - now);
		if (sc->eof && !sleeping &&
		    memchr(sc->buf, '\n', sc->len) == NULL)
			break;
		pfd[0].fd = (sc->eof || sleeping) ? -1 : STDIN_FILENO;
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		pfd[1].fd = sock;
		pfd[1].events = POLLIN;
		if (sock >= 0 && mosquitto_want_write(mosq))
			pfd[1].events |= POLLOUT;
		pfd[1].revents = 0;
		if (poll(pfd, 2, timeout) < 0 && errno != EINTR)
			break;
		if (sock >= 0)
			script_serve_network(sc, pfd[1].revents);
		if (st->disconnected && !sc->reported_disconnect) {
			print_disconnected(st);
			sc->reported_disconnect = true;
		}
		if (pfd[0].revents != 0 && !script_read_input(sc))
			goto out;
		script_run_lines(sc);
	}
	if (!st->disconnected) {
		mosquitto_disconnect(mosq);
		result = EXIT_ACCEPTED;
	} else {
		result = EXIT_UNEXPECTED;
	}

out:
	st->script = NULL;
	for (i = 0; i < 65536; i++)
		free(sc->tag_of_mid[i]);
	free(sc->buf);
	free(sc);
	return result;
}

static int run_mosquitto(const struct options *o)
{
	struct mosquitto *mosq = NULL;
	struct state st;
	int result = EXIT_USAGE;
	int rc;
	int64_t deadline;

	memset(&st, 0, sizeof(st));
	mosquitto_lib_init();
	mosq = mosquitto_new(o->id, !o->no_clean, &st);
	if (mosq == NULL) {
		fprintf(stderr, "fg_client: mosquitto_new failed: %s\n",
		        strerror(errno));
		goto out;
	}
	mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, o->protocol);
	mosquitto_connect_v5_callback_set(mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(mosq, on_disconnect);
	mosquitto_subscribe_v5_callback_set(mosq, on_subscribe);
	mosquitto_unsubscribe_v5_callback_set(mosq, on_unsubscribe);
	mosquitto_publish_v5_callback_set(mosq, on_publish);
	mosquitto_message_v5_callback_set(mosq, on_message);
	if (o->will_topic != NULL) {
		const char *wp = o->will_payload ? o->will_payload : "will";

		rc = mosquitto_will_set_v5(mosq, o->will_topic, (int)strlen(wp),
		                           wp, o->will_qos, o->will_retain,
		                           NULL);
		if (rc != MOSQ_ERR_SUCCESS) {
			fprintf(stderr, "fg_client: Will: %s\n",
			        mosquitto_strerror(rc));
			goto out;
		}
	}
	if (o->username != NULL &&
	    mosquitto_username_pw_set(mosq, o->username, o->password) !=
	        MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "fg_client: bad username or password\n");
		goto out;
	}
	if (o->cafile != NULL) {
		rc = mosquitto_tls_set(mosq, o->cafile, NULL, o->cert, o->key,
		                       NULL);
		if (rc != MOSQ_ERR_SUCCESS) {
			fprintf(stderr, "fg_client: TLS setup: %s\n",
			        mosquitto_strerror(rc));
			goto out;
		}
	}

	if (o->no_clean && o->protocol == MQTT_PROTOCOL_V5) {
		mosquitto_property *props = NULL;

		rc = mosquitto_property_add_int32(
		    &props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 3600);
		if (rc == MOSQ_ERR_SUCCESS)
			rc = mosquitto_connect_bind_v5(mosq, o->host, o->port,
			                               30, NULL, props);
		mosquitto_property_free_all(&props);
	} else {
		rc = mosquitto_connect(mosq, o->host, o->port, 30);
	}
	if (rc != MOSQ_ERR_SUCCESS) {
		print_error("connect", rc,
		            rc == MOSQ_ERR_ERRNO ? strerror(errno)
		                                 : mosquitto_strerror(rc));
		result = EXIT_NETWORK;
		goto out;
	}

	deadline = now_ms(CLOCK_MONOTONIC) + (int64_t)o->timeout_s * 1000;
	rc = run_loop(mosq, &st, deadline, true);
	if (stop_requested) {
		result = EXIT_ACCEPTED;
		goto out;
	}
	if (!st.got_connack) {
		if (st.disconnected)
			print_error("handshake", rc,
			            rc == MOSQ_ERR_ERRNO
			                ? strerror(errno)
			                : mosquitto_strerror(rc));
		else
			print_error("connack", MOSQ_ERR_TIMEOUT,
			            "no CONNACK in time");
		result = EXIT_NETWORK;
		goto out;
	}
	print_connack(o->protocol, st.connack_rc);
	if (st.connack_rc != 0) {
		result = EXIT_REFUSED;
		goto out;
	}

	if (o->script) {
		result = run_script(mosq, &st, o);
		goto out;
	}
	if (o->hold_s < 0 && o->wait_disconnect_s < 0) {
		mosquitto_disconnect(mosq);
		result = EXIT_ACCEPTED;
		goto out;
	}

	if (o->wait_disconnect_s >= 0) {
		printf("ready\n");
		fflush(stdout);
		deadline = st.connack_ms + (int64_t)o->wait_disconnect_s * 1000;
	} else {
		deadline = st.connack_ms + (int64_t)o->hold_s * 1000;
	}
	run_loop(mosq, &st, deadline, false);

	if (st.disconnected) {
		print_disconnected(&st);
		result =
		    o->wait_disconnect_s >= 0 ? EXIT_ACCEPTED : EXIT_UNEXPECTED;
	} else if (stop_requested) {
		mosquitto_disconnect(mosq);
		result = EXIT_ACCEPTED;
	} else if (o->wait_disconnect_s >= 0) {
		printf("timeout waited_ms=%lld\n",
		       (long long)(now_ms(CLOCK_MONOTONIC) - st.connack_ms));
		fflush(stdout);
		mosquitto_disconnect(mosq);
		result = EXIT_UNEXPECTED;
	} else {
		printf("held ms=%lld\n",
		       (long long)(now_ms(CLOCK_MONOTONIC) - st.connack_ms));
		fflush(stdout);
		mosquitto_disconnect(mosq);
		result = EXIT_ACCEPTED;
	}

out:
	if (mosq != NULL) {
		/* Let a clean DISCONNECT reach the socket before closing. */
		mosquitto_loop(mosq, 10, 1);
		mosquitto_destroy(mosq);
	}
	mosquitto_lib_cleanup();
	return result;
}

/* ---- raw mode: a CONNECT built by hand ---- */

struct raw_conn {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
};

static int raw_tcp_connect(const char *host, int port)
{
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	struct addrinfo *ai;
	char portstr[16];
	int fd = -1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(portstr, sizeof(portstr), "%d", port);
	if (getaddrinfo(host, portstr, &hints, &res) != 0)
		return -1;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

/* Returns 0 when the TLS session is up, -1 with an error printed. */
static int raw_tls_start(struct raw_conn *c, const struct options *o)
{
	struct in6_addr addr6;
	struct in_addr addr4;
	X509_VERIFY_PARAM *param;

	c->ctx = SSL_CTX_new(TLS_client_method());
	if (c->ctx == NULL)
		return -1;
	if (SSL_CTX_load_verify_locations(c->ctx, o->cafile, NULL) != 1 ||
	    (o->cert != NULL &&
	     (SSL_CTX_use_certificate_chain_file(c->ctx, o->cert) != 1 ||
	      SSL_CTX_use_PrivateKey_file(c->ctx, o->key, SSL_FILETYPE_PEM) !=
	          1))) {
		fprintf(stderr, "fg_client: cannot load TLS files\n");
		return -1;
	}
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	c->ssl = SSL_new(c->ctx);
	if (c->ssl == NULL)
		return -1;
	param = SSL_get0_param(c->ssl);
	if (inet_pton(AF_INET, o->host, &addr4) == 1 ||
	    inet_pton(AF_INET6, o->host, &addr6) == 1)
		X509_VERIFY_PARAM_set1_ip_asc(param, o->host);
	else
		X509_VERIFY_PARAM_set1_host(param, o->host, 0);
	SSL_set_tlsext_host_name(c->ssl, o->host);
	SSL_set_fd(c->ssl, c->fd);
	if (SSL_connect(c->ssl) != 1) {
		char buf[256];

		ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
		print_error("handshake", MOSQ_ERR_TLS, buf);
		return -1;
	}
	return 0;
}

static bool raw_write_all(struct raw_conn *c, const unsigned char *buf,
                          size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n;

		if (c->ssl != NULL) {
			int w = SSL_write(c->ssl, buf + off, (int)(len - off));
			n = w > 0 ? (ssize_t)w : -1;
		} else {
			n = write(c->fd, buf + off, len - off);
		}
		if (n <= 0)
			return false;
		off += (size_t)n;
	}
	return true;
}

/* Reads up to cap bytes, waiting at most timeout_ms. Returns the count,
 * 0 on a closed connection, -1 on error or timeout. */
static ssize_t raw_read(struct raw_conn *c, unsigned char *buf, size_t cap,
                        int timeout_ms)
{
	struct pollfd pfd;

	if (c->ssl == NULL || SSL_pending(c->ssl) == 0) {
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, timeout_ms) <= 0)
			return -1;
	}
	if (c->ssl != NULL) {
		int r = SSL_read(c->ssl, buf, (int)cap);

		if (r > 0)
			return (ssize_t)r;
		return SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN ? 0
		                                                         : -1;
	}
	return read(c->fd, buf, cap);
}

static void put_u16(unsigned char *buf, size_t *off, size_t v)
{
	buf[(*off)++] = (unsigned char)((v >> 8) & 0xff);
	buf[(*off)++] = (unsigned char)(v & 0xff);
}

static void put_str(unsigned char *buf, size_t *off, const void *s, size_t len)
{
	put_u16(buf, off, len);
	memcpy(buf + *off, s, len);
	*off += len;
}

/* Appends the MQTT variable byte integer v to buf at *off. */
static void put_varint(unsigned char *buf, size_t *off, size_t v)
{
	do {
		unsigned char byte = (unsigned char)(v % 128);

		v /= 128;
		if (v > 0)
			byte |= 0x80;
		buf[(*off)++] = byte;
	} while (v > 0);
}

/* Frames body (blen bytes) as a packet of type byte first into pkt;
 * returns the packet length, 0 if it does not fit. */
static size_t raw_frame(unsigned char first, const unsigned char *body,
                        size_t blen, unsigned char *pkt, size_t cap)
{
	size_t plen = 0;

	if (blen + 5 > cap)
		return 0;
	pkt[plen++] = first;
	put_varint(pkt, &plen, blen);
	memcpy(pkt + plen, body, blen);
	return plen + blen;
}

/* Builds a CONNECT packet into pkt; returns its length, 0 if too big. */
static size_t raw_build_connect(const struct options *o, unsigned char *pkt,
                                size_t cap)
{
	unsigned char body[RAW_BUF_MAX];
	size_t blen = 0;
	size_t ulen = o->username ? strlen(o->username) : 0;
	size_t pwlen = o->password ? strlen(o->password) : 0;
	unsigned char flags = 0x02; /* clean session */

	if (10 + 1 + 2 + o->raw_id_len + 2 + ulen + 2 + pwlen > sizeof(body))
		return 0;
	if (o->username != NULL)
		flags |= 0x80;
	if (o->password != NULL)
		flags |= 0x40;
	put_str(body, &blen, "MQTT", 4);
	body[blen++] = o->protocol == MQTT_PROTOCOL_V5 ? 5 : 4;
	body[blen++] = flags;
	put_u16(body, &blen, 30);
	if (o->protocol == MQTT_PROTOCOL_V5)
		body[blen++] = 0; /* no properties */
	put_str(body, &blen, o->raw_id, o->raw_id_len);
	if (o->username != NULL)
		put_str(body, &blen, o->username, ulen);
	if (o->password != NULL)
		put_str(body, &blen, o->password, pwlen);

	return raw_frame(0x10, body, blen, pkt, cap);
}

/* A SUBSCRIBE (QoS 0) or QoS 1 PUBLISH, packet id 1, of the raw topic. */
static size_t raw_build_action(const struct options *o, unsigned char *pkt,
                               size_t cap)
{
	unsigned char body[RAW_BUF_MAX];
	size_t blen = 0;
	bool v5 = o->protocol == MQTT_PROTOCOL_V5;

	if (o->raw_action == RAW_SUBSCRIBE) {
		put_u16(body, &blen, 1);
		if (v5)
			body[blen++] = 0; /* no properties */
		put_str(body, &blen, o->raw_topic, o->raw_topic_len);
		body[blen++] = 0; /* QoS 0 */
		return raw_frame(0x82, body, blen, pkt, cap);
	}
	put_str(body, &blen, o->raw_topic, o->raw_topic_len);
	put_u16(body, &blen, 1);
	if (v5)
		body[blen++] = 0;
	memcpy(body + blen, "raw", 3);
	blen += 3;
	return raw_frame(0x32, body, blen, pkt, cap);
}

struct raw_in {
	unsigned char buf[RAW_IN_MAX];
	size_t have;
	size_t used; /* bytes of the packet last returned */
};

/*
 * Returns the next whole packet from the connection: its first byte, with
 * *body and *blen set to what follows the fixed header; -1 when the
 * connection closed, the deadline passed or the packet is too big.
 */
static int raw_next_packet(struct raw_conn *c, struct raw_in *in,
                           int64_t deadline, const unsigned char **body,
                           size_t *blen)
{
	memmove(in->buf, in->buf + in->used, in->have - in->used);
	in->have -= in->used;
	in->used = 0;
	for (;;) {
		size_t rl = 0, mult = 1, i = 1;
		int64_t left;
		ssize_t n;

		while (i < in->have && i <= 4) {
			rl += (in->buf[i] & 0x7f) * mult;
			mult *= 128;
			if ((in->buf[i++] & 0x80) == 0)
				break;
			if (i == 5)
				return -1;
		}
		if (i > 1 && (in->buf[i - 1] & 0x80) == 0 &&
		    in->have >= i + rl) {
			*body = in->buf + i;
			*blen = rl;
			in->used = i + rl;
			return in->buf[0];
		}
		if (in->have == sizeof(in->buf))
			return -1;
		left = deadline - now_ms(CLOCK_MONOTONIC);
		if (left <= 0)
			return -1;
		n = raw_read(c, in->buf + in->have, sizeof(in->buf) - in->have,
		             (int)left);
		if (n <= 0)
			return -1;
		in->have += (size_t)n;
	}
}

/* Reads the variable byte integer at p (n bytes left); returns its
 * length in bytes, 0 if malformed. */
static size_t get_varint(const unsigned char *p, size_t n, size_t *v)
{
	size_t i, mult = 1;

	*v = 0;
	for (i = 0; i < n && i < 4; i++) {
		*v += (p[i] & 0x7f) * mult;
		mult *= 128;
		if ((p[i] & 0x80) == 0)
			return i + 1;
	}
	return 0;
}

/* After an accepted CONNACK: sends the SUBSCRIBE or PUBLISH and reports
 * the answer. Returns the exit code. */
static int raw_action(struct raw_conn *c, struct raw_in *in,
                      const struct options *o)
{
	unsigned char pkt[RAW_BUF_MAX + 8];
	const unsigned char *body;
	const char *stage =
	    o->raw_action == RAW_SUBSCRIBE ? "subscribe" : "publish";
	int want = o->raw_action == RAW_SUBSCRIBE ? 0x90 : 0x40;
	size_t len = raw_build_action(o, pkt, sizeof(pkt));
	size_t blen, off, props;
	int64_t deadline;
	int type;

	if (len == 0) {
		fprintf(stderr, "fg_client: raw packet too large\n");
		return EXIT_USAGE;
	}
	if (!raw_write_all(c, pkt, len)) {
		print_error(stage, MOSQ_ERR_CONN_LOST, "write failed");
		return EXIT_UNEXPECTED;
	}
	deadline = now_ms(CLOCK_MONOTONIC) + (int64_t)o->timeout_s * 1000;
	do {
		type = raw_next_packet(c, in, deadline, &body, &blen);
	} while (type >= 0 && (type & 0xf0) != want);
	if (type < 0) {
		print_error(stage, MOSQ_ERR_CONN_LOST,
		            "connection closed or no answer");
		return EXIT_UNEXPECTED;
	}
	off = 2; /* packet id */
	if (want == 0x40) {
		printf("puback rc=%d\n", blen > off ? body[off] : 0);
	} else {
		if (o->protocol == MQTT_PROTOCOL_V5) {
			size_t k = get_varint(body + off, blen - off, &props);

			off += k + props;
		}
		printf("suback rc=%d\n", off < blen ? body[off] : -1);
	}
	fflush(stdout);
	return EXIT_ACCEPTED;
}

static int run_raw(const struct options *o)
{
	struct raw_conn c = {-1, NULL, NULL};
	unsigned char pkt[RAW_BUF_MAX + 8];
	struct raw_in *in = calloc(1, sizeof(*in));
	const unsigned char *body;
	size_t blen;
	size_t len;
	int result = EXIT_NETWORK;
	int type;
	int64_t deadline;

	if (in == NULL)
		return EXIT_USAGE;
	len = raw_build_connect(o, pkt, sizeof(pkt));
	if (len == 0) {
		fprintf(stderr, "fg_client: CONNECT too large\n");
		free(in);
		return EXIT_USAGE;
	}
	c.fd = raw_tcp_connect(o->host, o->port);
	if (c.fd < 0) {
		print_error("connect", MOSQ_ERR_ERRNO, strerror(errno));
		goto out;
	}
	if (o->cafile != NULL && raw_tls_start(&c, o) != 0)
		goto out;
	if (!raw_write_all(&c, pkt, len)) {
		print_error("write", MOSQ_ERR_CONN_LOST, "write failed");
		goto out;
	}

	/* A CONNACK is 0x20, a length, flags and a code (plus v5
	 * properties). */
	deadline = now_ms(CLOCK_MONOTONIC) + (int64_t)o->timeout_s * 1000;
	type = raw_next_packet(&c, in, deadline, &body, &blen);
	if (type < 0) {
		if (now_ms(CLOCK_MONOTONIC) >= deadline)
			print_error("connack", MOSQ_ERR_TIMEOUT,
			            "no CONNACK in time");
		else
			print_error("handshake", MOSQ_ERR_CONN_LOST,
			            "connection closed before CONNACK");
		goto out;
	}
	if (type != 0x20 || blen < 2) {
		print_error("connack", MOSQ_ERR_PROTOCOL,
		            "first packet is not a CONNACK");
		goto out;
	}
	print_connack(o->protocol, body[1]);
	result = body[1] == 0 ? EXIT_ACCEPTED : EXIT_REFUSED;
	if (body[1] == 0) {
		static const unsigned char disconnect[2] = {0xe0, 0x00};

		if (o->raw_action != RAW_CONNECT_ONLY)
			result = raw_action(&c, in, o);
		raw_write_all(&c, disconnect, sizeof(disconnect));
	}

out:
	if (c.ssl != NULL) {
		SSL_shutdown(c.ssl);
		SSL_free(c.ssl);
	}
	if (c.ctx != NULL)
		SSL_CTX_free(c.ctx);
	if (c.fd >= 0)
		close(c.fd);
	free(in);
	return result;
}

int main(int argc, char **argv)
{
	struct options o;

	if (!parse_args(argc, argv, &o)) {
		usage();
		return EXIT_USAGE;
	}
	install_signals();
	if (o.raw)
		return run_raw(&o);
	return run_mosquitto(&o);
}
