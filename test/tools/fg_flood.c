/*
 * fg_flood: an MQTT 5 publisher at a steady rate, for the ratelimit tests
 * and benchmark. It publishes QoS 1 messages and counts the broker's
 * PUBACK reason codes, so that a test can tell how many messages the
 * broker took and how many it refused (0x87, not authorized).
 *
 * Usage:
 *   fg_flood --host H --port P --id CLIENTID [--cafile F --cert F --key F]
 *            [--username U --password P]
 *            --topic T [--rate N] [--duration S | --count N] [--size B]
 *            [--qos 0|1] [--start-at EPOCH_MS] [--inflight N]
 *            [--stop-on-disconnect]
 *   --rate N       messages per second (default 100; 0: as fast as the
 *                  in-flight window allows)
 *   --duration S   publish for S seconds (default 10), or --count N messages
 *   --size B       payload bytes (default 16); the payload starts with a
 *                  sequence number
 *   --start-at MS  wait until this CLOCK_REALTIME time before the first
 *                  message, so that two publishers start together
 *   --inflight N   QoS 1 messages in flight at most (default 1000)
 *
 * Output, one line at the end:
 *   flood sent=N accepted=N refused=N other=N unacked=N first_ms=MS
 *         last_ms=MS disconnected=0|1 connack=RC
 * accepted counts PUBACKs with a reason code below 0x80 (for QoS 0, every
 * message sent). Exit codes: 0 when it connected (whatever the broker
 * answered), 2 when the CONNECT was refused, 3 on a network error, 1 on a
 * usage error.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

struct flood {
	const char *host, *id, *cafile, *cert, *key, *user, *pass, *topic;
	int port, qos, size, inflight;
	double rate, duration;
	long count;
	int64_t start_at;
	bool stop_on_disconnect;

	/* Written by the network thread, read by the main thread. */
	volatile int connack; /* -1 until CONNACK */
	volatile bool disconnected;
	long accepted, refused, other, acked;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
	struct timespec ts;

	if (s <= 0)
		return;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void on_connect(struct mosquitto *m, void *arg, int rc, int flags,
                       const mosquitto_property *props)
{
	struct flood *f = arg;

	(void)m;
	(void)flags;
	(void)props;
	__atomic_store_n(&f->connack, rc, __ATOMIC_SEQ_CST);
}

static void on_disconnect(struct mosquitto *m, void *arg, int rc,
                          const mosquitto_property *props)
{
	struct flood *f = arg;

	(void)m;
	(void)rc;
	(void)props;
	__atomic_store_n(&f->disconnected, true, __ATOMIC_SEQ_CST);
}

static void on_publish(struct mosquitto *m, void *arg, int mid, int reason_code,
                       const mosquitto_property *props)
{
	struct flood *f = arg;

	(void)m;
	(void)mid;
	(void)props;
	if (reason_code < 0x80)
		__atomic_add_fetch(&f->accepted, 1, __ATOMIC_SEQ_CST);
	else if (reason_code == MQTT_RC_NOT_AUTHORIZED)
		__atomic_add_fetch(&f->refused, 1, __ATOMIC_SEQ_CST);
	else
		__atomic_add_fetch(&f->other, 1, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&f->acked, 1, __ATOMIC_SEQ_CST);
}

static int usage(void)
{
	fprintf(stderr, "usage: fg_flood --host H --port P --id ID --topic T "
	                "[--cafile F --cert F --key F] [--username U "
	                "--password P] [--rate N] [--duration S | --count N] "
	                "[--size B] [--qos 0|1] [--start-at MS] [--inflight N] "
	                "[--stop-on-disconnect]\n");
	return 1;
}

static int parse(struct flood *f, int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--stop-on-disconnect") == 0) {
			f->stop_on_disconnect = true;
			continue;
		}
		if (v == NULL)
			return -1;
		i++;
		if (strcmp(a, "--host") == 0)
			f->host = v;
		else if (strcmp(a, "--port") == 0)
			f->port = (int)strtol(v, NULL, 10);
		else if (strcmp(a, "--id") == 0)
			f->id = v;
		else if (strcmp(a, "--cafile") == 0)
			f->cafile = v;
		else if (strcmp(a, "--cert") == 0)
			f->cert = v;
		else if (strcmp(a, "--key") == 0)
			f->key = v;
		else if (strcmp(a, "--username") == 0)
			f->user = v;
		else if (strcmp(a, "--password") == 0)
			f->pass = v;
		else if (strcmp(a, "--topic") == 0)
			f->topic = v;
		else if (strcmp(a, "--rate") == 0)
			f->rate = strtod(v, NULL);
		else if (strcmp(a, "--duration") == 0)
			f->duration = strtod(v, NULL);
		else if (strcmp(a, "--count") == 0)
			f->count = strtol(v, NULL, 10);
		else if (strcmp(a, "--size") == 0)
			f->size = (int)strtol(v, NULL, 10);
		else if (strcmp(a, "--qos") == 0)
			f->qos = (int)strtol(v, NULL, 10);
		else if (strcmp(a, "--start-at") == 0)
			f->start_at = strtoll(v, NULL, 10);
		else if (strcmp(a, "--inflight") == 0)
			f->inflight = (int)strtol(v, NULL, 10);
		else
			return -1;
	}
	if (f->host == NULL || f->port <= 0 || f->id == NULL ||
	    f->topic == NULL || f->size < 16 || f->qos < 0 || f->qos > 1 ||
	    f->inflight < 1)
		return -1;
	return 0;
}

/* Connect and wait for the CONNACK; 0, 2 (refused) or 3 (network). */
static int connect_broker(struct flood *f, struct mosquitto *m)
{
	double deadline = mono_s() + 10;

	mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_max_inflight_messages_set(m, (unsigned)f->inflight);
	if (f->cafile != NULL &&
	    mosquitto_tls_set(m, f->cafile, NULL, f->cert, f->key, NULL) !=
	        MOSQ_ERR_SUCCESS)
		return 3;
	if (f->user != NULL)
		mosquitto_username_pw_set(m, f->user, f->pass);
	mosquitto_connect_v5_callback_set(m, on_connect);
	mosquitto_disconnect_v5_callback_set(m, on_disconnect);
	mosquitto_publish_v5_callback_set(m, on_publish);
	if (mosquitto_connect(m, f->host, f->port, 30) != MOSQ_ERR_SUCCESS ||
	    mosquitto_loop_start(m) != MOSQ_ERR_SUCCESS)
		return 3;
	while (__atomic_load_n(&f->connack, __ATOMIC_SEQ_CST) < 0 &&
	       !__atomic_load_n(&f->disconnected, __ATOMIC_SEQ_CST)) {
		if (mono_s() > deadline)
			return 3;
		sleep_s(0.005);
	}
	if (f->connack < 0)
		return 3;
	return f->connack == 0 ? 0 : 2;
}

/* Publish at the rate; returns the number of messages sent. */
static long publish_all(struct flood *f, struct mosquitto *m, int64_t *first,
                        int64_t *last)
{
	char *payload = calloc(1, (size_t)f->size);
	double t0, end;
	long sent = 0;

	if (payload == NULL)
		return 0;
	memset(payload, 'x', (size_t)f->size);
	t0 = mono_s();
	end = t0 + f->duration;
	*first = now_ms();
	for (;;) {
		double now = mono_s();

		if (f->count > 0 ? sent >= f->count : now >= end)
			break;
		if (f->stop_on_disconnect &&
		    __atomic_load_n(&f->disconnected, __ATOMIC_SEQ_CST))
			break;
		if (f->rate > 0 && now < t0 + (double)sent / f->rate) {
			sleep_s(t0 + (double)sent / f->rate - now);
			continue;
		}
		/* libmosquitto queues what does not fit in flight without
		 * bound: keep at most the window outstanding. */
		if (f->qos > 0 &&
		    sent - __atomic_load_n(&f->acked, __ATOMIC_SEQ_CST) >=
		        f->inflight) {
			sleep_s(0.0001);
			continue;
		}
		{
			char seq[24];
			int n = snprintf(seq, sizeof(seq), "%014ld ", sent);

			memcpy(payload, seq, n > 15 ? 15 : (size_t)n);
		}
		if (mosquitto_publish_v5(m, NULL, f->topic, f->size, payload,
		                         f->qos, false,
		                         NULL) != MOSQ_ERR_SUCCESS) {
			sleep_s(0.001);
			continue;
		}
		sent++;
		*last = now_ms();
	}
	free(payload);
	return sent;
}

int main(int argc, char **argv)
{
	struct flood f = {.qos = 1,
	                  .size = 16,
	                  .inflight = 1000,
	                  .rate = 100,
	                  .duration = 10,
	                  .connack = -1};
	struct mosquitto *m;
	int64_t first = 0, last = 0;
	long sent = 0;
	double deadline;
	int rc;

	if (parse(&f, argc, argv) != 0)
		return usage();
	mosquitto_lib_init();
	m = mosquitto_new(f.id, true, &f);
	if (m == NULL)
		return 1;
	rc = connect_broker(&f, m);
	if (rc == 0) {
		if (f.start_at > 0)
			sleep_s((double)(f.start_at - now_ms()) / 1000.0);
		sent = publish_all(&f, m, &first, &last);
		/* Wait for the outstanding acknowledgements. */
		deadline = mono_s() + 15;
		while (f.qos > 0 &&
		       __atomic_load_n(&f.acked, __ATOMIC_SEQ_CST) < sent &&
		       !__atomic_load_n(&f.disconnected, __ATOMIC_SEQ_CST) &&
		       mono_s() < deadline)
			sleep_s(0.01);
		if (f.qos == 0)
			f.accepted = sent;
	}
	printf("flood sent=%ld accepted=%ld refused=%ld other=%ld unacked=%ld "
	       "first_ms=%lld last_ms=%lld disconnected=%d connack=%d\n",
	       sent, f.accepted, f.refused, f.other,
	       f.qos > 0 ? sent - f.acked : 0, (long long)first,
	       (long long)last, f.disconnected ? 1 : 0, f.connack);
	fflush(stdout);
	mosquitto_disconnect(m);
	mosquitto_loop_stop(m, true);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	return rc;
}
