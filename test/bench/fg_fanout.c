/*
 * fg_fanout: message fan-out load generator for a fleetgate broker.
 *
 * One publisher and S subscribers, all plain libmosquitto clients (MQTT
 * 3.1.1, plain TCP), run from one thread around one poll() loop. Every
 * subscriber subscribes to a filter that matches the publisher's topic, so
 * that each message the publisher sends is delivered S times: the broker
 * runs one READ ACL check per delivery, which is what is being measured.
 *
 * The publisher sends as fast as the broker drains, and no faster: it
 * keeps at most W messages ahead of the slowest subscriber (the highest
 * sequence number each one has seen), and at QoS 1 also at most W
 * messages without a PUBACK. Without such a window a QoS 0 publisher would
 * only measure how fast the broker's queues grow, and a QoS 1 one would
 * overflow the subscribers' queues (max_queued_messages, 1000 by default)
 * and have messages dropped. Messages carry a sequence number, so that
 * loss and duplicates are counted exactly.
 *
 * A run: connect everyone (username and password when given), subscribe,
 * publish for the warm-up, then for the measured interval, then stop and
 * wait (at most --drain seconds) until every subscriber has caught up.
 *
 * Two ways to read. By default every socket is served by libmosquitto
 * around a poll() that sleeps until one is ready. On loopback the
 * broker's write() then runs the wake-up of this process in the broker's
 * own time (sock_def_readable), and how often that happens depends on
 * how far the client keeps up: the slower of two brokers finds the
 * client asleep more often and pays for waking it. With --pace-us N the
 * loop never waits on a socket: each pass publishes, looks at every
 * socket without waiting (poll with a zero timeout), reads what is
 * there, and then sleeps until N microseconds after the pass began. The
 * subscribers' sockets are then read by this client directly, in large
 * reads with the MQTT packets parsed here (PUBLISH counted, PUBACK sent
 * at QoS 1, anything else skipped), after libmosquitto has connected and
 * subscribed them. The broker's writes then find nobody to wake, as with
 * subscribers on other hosts, and the client costs little CPU, so that
 * the broker's own work per delivery sets the rate.
 *
 * Usage:
 *   fg_fanout --port P --topic T [--filter F] [--host H]
 *             [--subscribers S] [--qos 0|1] [--duration S] [--warmup S]
 *             [--drain S] [--window W] [--burst B] [--payload BYTES]
 *             [--pub-user U] [--pub-password PW] [--pub-id ID]
 *             [--sub-prefix PFX] [--sub-password PW]
 *             [--timeout S] [--label NAME] [--broker-pid PID]
 *
 *   --topic T        the publisher's topic (no wildcards)
 *   --filter F       the subscribers' filter (default T)
 *   --subscribers S  default 50
 *   --qos Q          0 (default) or 1, for publishing and subscribing
 *   --duration S     the measured interval (default 10; fractions allowed)
 *   --warmup S       publishing before it, not counted (default 1; 0 none)
 *   --window W       messages ahead of the slowest subscriber (default 100)
 *   --burst B        messages published per loop pass at most (default 20)
 *   --payload BYTES  message size, at least 8 (default 64)
 *   --pub-user U     the publisher's username (and client id unless
 *                    --pub-id); without it the publisher sends none
 *   --sub-prefix PFX subscriber i (1-based) is PFX followed by i in three
 *                    digits (dash-001, ...), as username and client id;
 *                    without --sub-password no username is sent and PFX
 *                    is only the client id's prefix (default fanout-sub-)
 *   --timeout S      longest wait for the connects and subscriptions
 *                    (default 10)
 *   --pace-us N      paced passes of N microseconds, subscribers read
 *                    directly (above); 0, the default, sleeps in poll()
 *   --broker-pid P   also report the CPU the broker process used
 *
 * Output: one summary line on stdout, key=value, e.g.
 *   label=acl qos=0 subscribers=50 seconds=10.000 published=61200
 *   delivered=3060000 pub_rate=6120.0 deliver_rate=306000.0
 *   expected_total=3366000 received_total=3366000 lost=0 loss=0.000000
 *   dups=0 client_cpu=0.81 broker_cpu=1.00 broker_main_cpu=1.00
 *   idle_cpu=0.12 other_cpu=0.07 window=100 payload=64
 * (on one line). published and delivered count the measured interval
 * only: messages the publisher sent, and deliveries summed over all
 * subscribers; the rates divide them by seconds. expected_total is every
 * message published in the whole run times S, received_total the
 * distinct messages the subscribers got, lost the difference, loss the
 * fraction. *_cpu are cores used on average over the measured interval:
 * this client, the broker process (all threads), the broker's main thread
 * (the one that serves every client), the machine's idle time, and what
 * other processes used (all CPUs minus the rest).
 *
 * Exit codes: 0 the run completed (check lost); 1 usage or setup error,
 * or a client was refused or lost its connection; 3 no message was
 * delivered in the measured interval (the broker denied the publisher or
 * the subscribers, say).
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

#include <sys/resource.h>
#include <sys/socket.h>

#include <mosquitto.h>

#include "../tools/fg_args.h"
#include "../tools/fg_pace.h"
#include "fg_bench_cpu.h"

#define MAX_SUBSCRIBERS 5000
#define NAME_LEN 128
/* Packets read from one socket per wake-up before the others get a turn. */
#define READS_PER_WAKEUP 64
#define MISC_INTERVAL_NS 500000000LL
/* A paced subscriber's read buffer: a packet must fit in it whole. */
#define RAW_IN_SIZE (256 * 1024)
/* Bytes read from one socket in one paced pass at most. */
#define RAW_READ_PER_PASS (1024 * 1024)
/* PUBACKs waiting to be written, per paced subscriber. */
#define RAW_OUT_SIZE 8192
#define MQTT_PUBLISH 3

struct options {
	const char *host;
	int port;
	const char *topic;
	const char *filter;
	int subscribers;
	int qos;
	double duration_s;
	double warmup_s;
	double drain_s;
	int window;
	int burst;
	int payload;
	const char *pub_user;
	const char *pub_password;
	const char *pub_id;
	const char *sub_prefix;
	const char *sub_password;
	int timeout_s;
	const char *label;
	long broker_pid;
	int pace_us;
};

/* One connection, publisher or subscriber, and what it has seen. */
struct client {
	struct mosquitto *mosq;
	char id[NAME_LEN];
	bool connected;
	bool subscribed;
	uint64_t received; /* distinct messages: a sequence above the last */
	uint64_t last_seq; /* the highest sequence number seen, 0 for none */
	uint64_t dups;     /* messages at or below last_seq */
	/* Paced mode: the socket, read and parsed here (see the top). */
	bool raw;
	int fd;
	unsigned char *in;
	size_t in_len;
	unsigned char out[RAW_OUT_SIZE];
	size_t out_len;
};

static struct options opt;
static struct client *subs;
static struct client pub;
static uint64_t pub_seq;   /* messages handed to mosquitto_publish */
static uint64_t pub_acked; /* PUBACKs received (QoS 1) */
static bool stopping;
static bool failed;
static char fail_text[256];
static struct pollfd *pfds;
static struct client **pfd_client;

static void usage(void)
{
	fprintf(stderr,
	        "usage: fg_fanout --port P --topic T [--filter F] [--host H]\n"
	        "                 [--subscribers S] [--qos 0|1]"
	        " [--duration S] [--warmup S]\n"
	        "                 [--drain S] [--window W] [--burst B]"
	        " [--payload BYTES]\n"
	        "                 [--pub-user U] [--pub-password PW]"
	        " [--pub-id ID]\n"
	        "                 [--sub-prefix PFX] [--sub-password PW]\n"
	        "                 [--timeout S] [--label NAME]"
	        " [--broker-pid PID]\n"
	        "                 [--pace-us N]\n");
}

/* Records the first failure only: later ones are mostly its echoes. */
static void set_failed(const char *what, const char *id, const char *why)
{
	if (failed)
		return;
	failed = true;
	snprintf(fail_text, sizeof(fail_text), "%s %.64s: %s", what, id, why);
}

static bool has_wildcard(const char *s)
{
	return strchr(s, '+') != NULL || strchr(s, '#') != NULL;
}

/* Sets one option from a flag and its value; false on a bad one. */
static bool set_option(const char *a, const char *v)
{
	if (strcmp(a, "--host") == 0)
		opt.host = v;
	else if (strcmp(a, "--port") == 0)
		return parse_int(v, 1, 65535, &opt.port);
	else if (strcmp(a, "--topic") == 0)
		opt.topic = v;
	else if (strcmp(a, "--filter") == 0)
		opt.filter = v;
	else if (strcmp(a, "--subscribers") == 0)
		return parse_int(v, 1, MAX_SUBSCRIBERS, &opt.subscribers);
	else if (strcmp(a, "--qos") == 0)
		return parse_int(v, 0, 1, &opt.qos);
	else if (strcmp(a, "--duration") == 0)
		return parse_double(v, 0, 86400, true, &opt.duration_s);
	else if (strcmp(a, "--warmup") == 0)
		return parse_double(v, 0, 86400, false, &opt.warmup_s);
	else if (strcmp(a, "--drain") == 0)
		return parse_double(v, 0, 86400, false, &opt.drain_s);
	else if (strcmp(a, "--window") == 0)
		return parse_int(v, 1, 65535, &opt.window);
	else if (strcmp(a, "--burst") == 0)
		return parse_int(v, 1, 65535, &opt.burst);
	else if (strcmp(a, "--payload") == 0)
		return parse_int(v, 8, 1 << 20, &opt.payload);
	else if (strcmp(a, "--pub-user") == 0)
		opt.pub_user = v;
	else if (strcmp(a, "--pub-password") == 0)
		opt.pub_password = v;
	else if (strcmp(a, "--pub-id") == 0)
		opt.pub_id = v;
	else if (strcmp(a, "--sub-prefix") == 0)
		opt.sub_prefix = v;
	else if (strcmp(a, "--sub-password") == 0)
		opt.sub_password = v;
	else if (strcmp(a, "--timeout") == 0)
		return parse_int(v, 1, 3600, &opt.timeout_s);
	else if (strcmp(a, "--label") == 0)
		opt.label = v;
	else if (strcmp(a, "--broker-pid") == 0)
		return parse_long(v, 1, 4194304L, &opt.broker_pid);
	else if (strcmp(a, "--pace-us") == 0)
		return parse_int(v, 0, 1000000, &opt.pace_us);
	else
		return false;
	return true;
}

/* Returns true when argv held a usable set of options. */
static bool parse_args(int argc, char **argv)
{
	int i;

	opt.host = "127.0.0.1";
	opt.subscribers = 50;
	opt.duration_s = 10;
	opt.warmup_s = 1;
	opt.drain_s = 3;
	opt.window = 100;
	opt.burst = 20;
	opt.payload = 64;
	opt.sub_prefix = "fanout-sub-";
	opt.timeout_s = 10;
	opt.label = "-";

	for (i = 1; i < argc; i += 2) {
		if (i + 1 >= argc) {
			fprintf(stderr, "fg_fanout: %s needs a value\n",
			        argv[i]);
			return false;
		}
		if (!set_option(argv[i], argv[i + 1])) {
			fprintf(stderr, "fg_fanout: bad option %s %s\n",
			        argv[i], argv[i + 1]);
			return false;
		}
	}
	if (opt.port == 0 || opt.topic == NULL) {
		fprintf(stderr, "fg_fanout: --port and --topic are required\n");
		return false;
	}
	if (opt.filter == NULL)
		opt.filter = opt.topic;
	if (opt.topic[0] == '\0' || has_wildcard(opt.topic)) {
		fprintf(stderr, "fg_fanout: --topic must be a topic name\n");
		return false;
	}
	if (strlen(opt.sub_prefix) + 8 > NAME_LEN ||
	    (opt.pub_id != NULL && strlen(opt.pub_id) >= NAME_LEN) ||
	    (opt.pub_user != NULL && strlen(opt.pub_user) >= NAME_LEN)) {
		fprintf(stderr, "fg_fanout: a client id is too long\n");
		return false;
	}
	return true;
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
	struct client *c = obj;

	(void)mosq;
	if (rc == 0)
		c->connected = true;
	else
		set_failed("connect refused for", c->id,
		           mosquitto_connack_string(rc));
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid,
                         int qos_count, const int *granted_qos)
{
	struct client *c = obj;

	(void)mosq;
	(void)mid;
	/* 0x80 is the SUBACK failure code of MQTT 3.1.1. */
	if (qos_count < 1 || granted_qos[0] > 2)
		set_failed("subscription refused for", c->id, opt.filter);
	else
		c->subscribed = true;
}

/* Counts one delivered message by the sequence number it starts with. */
static void count_message(struct client *c, const void *payload, size_t len)
{
	uint64_t seq;

	if (len < sizeof(seq))
		return;
	memcpy(&seq, payload, sizeof(seq));
	if (seq > c->last_seq) {
		c->received++;
		c->last_seq = seq;
	} else {
		c->dups++;
	}
}

static void on_message(struct mosquitto *mosq, void *obj,
                       const struct mosquitto_message *msg)
{
	(void)mosq;
	if (msg->payloadlen > 0)
		count_message(obj, msg->payload, (size_t)msg->payloadlen);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid)
{
	(void)mosq;
	(void)obj;
	(void)mid;
	pub_acked++;
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
	struct client *c = obj;

	(void)mosq;
	c->connected = false;
	if (!stopping)
		set_failed("connection lost by", c->id,
		           rc == MOSQ_ERR_CONN_LOST ? "connection lost"
		                                    : mosquitto_strerror(rc));
}

/* Creates the client and starts its connect (TCP connect + CONNECT). */
static int client_start(struct client *c, const char *user,
                        const char *password)
{
	int rc;

	c->mosq = mosquitto_new(c->id, true, c);
	if (c->mosq == NULL) {
		fprintf(stderr, "fg_fanout: mosquitto_new failed\n");
		return -1;
	}
	mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION,
	                     MQTT_PROTOCOL_V311);
	/* The publisher's QoS 1 window is ours: libmosquitto must not hold
	 * messages back behind its default of 20 in flight. */
	mosquitto_int_option(c->mosq, MOSQ_OPT_SEND_MAXIMUM, opt.window);
	if (user != NULL &&
	    mosquitto_username_pw_set(c->mosq, user, password) != 0) {
		fprintf(stderr, "fg_fanout: bad username for %s\n", c->id);
		return -1;
	}
	mosquitto_connect_callback_set(c->mosq, on_connect);
	mosquitto_subscribe_callback_set(c->mosq, on_subscribe);
	mosquitto_message_callback_set(c->mosq, on_message);
	mosquitto_publish_callback_set(c->mosq, on_publish);
	mosquitto_disconnect_callback_set(c->mosq, on_disconnect);
	rc = mosquitto_connect(c->mosq, opt.host, opt.port, 60);
	if (rc != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "fg_fanout: connect %s: %s\n", c->id,
		        rc == MOSQ_ERR_ERRNO ? strerror(errno)
		                             : mosquitto_strerror(rc));
		return -1;
	}
	return 0;
}

/*
 * Paced mode: the subscriber's socket is read here from now on. The
 * connect and the subscription are done, and nothing has been published
 * yet, so libmosquitto holds no part of a packet.
 */
static int raw_take(struct client *c)
{
	c->fd = mosquitto_socket(c->mosq);
	c->in = malloc(RAW_IN_SIZE);
	if (c->fd < 0 || c->in == NULL) {
		fprintf(stderr, "fg_fanout: cannot read %s directly\n", c->id);
		return -1;
	}
	c->in_len = 0;
	c->out_len = 0;
	c->raw = true;
	return 0;
}

/* Writes the PUBACKs waiting; what the socket does not take waits. */
static void raw_flush(struct client *c)
{
	ssize_t n;

	if (c->out_len == 0)
		return;
	n = send(c->fd, c->out, c->out_len, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
		    !stopping)
			set_failed("write failed for", c->id, strerror(errno));
		return;
	}
	memmove(c->out, c->out + n, c->out_len - (size_t)n);
	c->out_len -= (size_t)n;
}

/*
 * Parses one packet at p (len bytes there); returns its length, 0 when it
 * is not all there yet, -1 when it is malformed or too large to buffer.
 */
static ssize_t raw_packet(struct client *c, const unsigned char *p, size_t len)
{
	size_t rl = 0, hdr = 1, total, pos;
	unsigned shift = 0;

	for (;;) {
		if (hdr >= len)
			return 0;
		rl |= (size_t)(p[hdr] & 0x7f) << shift;
		if ((p[hdr++] & 0x80) == 0)
			break;
		shift += 7;
		if (hdr > 4)
			return -1;
	}
	total = hdr + rl;
	if (total > RAW_IN_SIZE)
		return -1;
	if (total > len)
		return 0;
	if (p[0] >> 4 != MQTT_PUBLISH)
		return (ssize_t)total; /* PINGRESP and the like */
	if (rl < 2)
		return -1;
	pos = hdr + 2 + ((size_t)p[hdr] << 8 | p[hdr + 1]);
	if (((p[0] >> 1) & 3) != 0) {
		if (pos + 2 > total)
			return -1;
		if (c->out_len + 4 > sizeof(c->out))
			raw_flush(c);
		if (c->out_len + 4 > sizeof(c->out)) {
			set_failed("PUBACKs not taken by", c->id, "broker");
			return -1;
		}
		c->out[c->out_len++] = 0x40; /* PUBACK, remaining length 2 */
		c->out[c->out_len++] = 2;
		c->out[c->out_len++] = p[pos];
		c->out[c->out_len++] = p[pos + 1];
		pos += 2;
	}
	if (pos > total)
		return -1;
	count_message(c, p + pos, total - pos);
	return (ssize_t)total;
}

/* Reads and parses what the socket holds, up to RAW_READ_PER_PASS. */
static void raw_read(struct client *c)
{
	size_t done = 0;

	while (done < RAW_READ_PER_PASS && !failed) {
		size_t off = 0;
		ssize_t n = recv(c->fd, c->in + c->in_len,
		                 RAW_IN_SIZE - c->in_len, MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno != EAGAIN &&
		               errno != EWOULDBLOCK && errno != EINTR)) {
			if (!stopping)
				set_failed("connection lost by", c->id,
				           n == 0 ? "closed by the broker"
				                  : strerror(errno));
			return;
		}
		if (n < 0)
			break;
		done += (size_t)n;
		c->in_len += (size_t)n;
		for (;;) {
			ssize_t k = raw_packet(c, c->in + off, c->in_len - off);

			if (k < 0) {
				set_failed("malformed packet for", c->id,
				           "subscriber");
				return;
			}
			if (k == 0)
				break;
			off += (size_t)k;
		}
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	raw_flush(c);
}

/* Reads what the socket holds, up to READS_PER_WAKEUP packets. */
static void client_read(struct client *c)
{
	int rc = fg_read_ready(c->mosq, READS_PER_WAKEUP);

	if (rc != MOSQ_ERR_SUCCESS && !stopping)
		set_failed("read failed for", c->id, mosquitto_strerror(rc));
}

/*
 * One pass of the event loop: waits at most timeout_ms for any socket,
 * then reads and writes what is ready. Returns -1 after a failure.
 */
static int pump(int timeout_ms)
{
	static int64_t next_misc;
	int n = 0, i, rc;
	int64_t now;

	static int64_t next_pass;
	/* Paced once the subscribers are read here (raw_take). */
	bool paced = subs[0].raw;

	for (i = -1; i < opt.subscribers; i++) {
		struct client *c = i < 0 ? &pub : &subs[i];
		int fd = c->raw ? c->fd : mosquitto_socket(c->mosq);

		if (fd < 0)
			continue;
		pfds[n].fd = fd;
		pfds[n].events = POLLIN;
		if (c->raw ? c->out_len > 0 : mosquitto_want_write(c->mosq))
			pfds[n].events |= POLLOUT;
		pfds[n].revents = 0;
		pfd_client[n] = c;
		n++;
	}
	rc = poll(pfds, (nfds_t)n, paced ? 0 : timeout_ms);
	if (rc < 0 && errno != EINTR) {
		set_failed("poll", "-", strerror(errno));
		return -1;
	}
	for (i = 0; rc > 0 && i < n; i++) {
		struct client *c = pfd_client[i];

		if (c->raw) {
			if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))
				raw_read(c);
			else if (pfds[i].revents & POLLOUT)
				raw_flush(c);
			continue;
		}
		if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))
			client_read(c);
		if ((pfds[i].revents & POLLOUT) &&
		    mosquitto_loop_write(c->mosq, 1) != MOSQ_ERR_SUCCESS &&
		    !stopping)
			set_failed("write failed for", c->id, "socket error");
	}
	now = fg_mono_ns();
	if (now >= next_misc) {
		next_misc = now + MISC_INTERVAL_NS;
		for (i = -1; i < opt.subscribers; i++)
			if (!(i < 0 ? pub.raw : subs[i].raw))
				mosquitto_loop_misc(i < 0 ? pub.mosq
				                          : subs[i].mosq);
	}
	if (paced && !failed)
		fg_pace_wait(&next_pass, opt.pace_us, 0);
	return failed ? -1 : 0;
}

static bool all_connected(void)
{
	int i;

	for (i = 0; i < opt.subscribers; i++)
		if (!subs[i].connected)
			return false;
	return pub.connected;
}

static bool all_subscribed(void)
{
	int i;

	for (i = 0; i < opt.subscribers; i++)
		if (!subs[i].subscribed)
			return false;
	return true;
}

/* Runs the loop until done() or the timeout; 0 when done() held. */
static int pump_until(bool (*done)(void), double seconds)
{
	int64_t limit = fg_mono_ns() + (int64_t)(seconds * 1e9);

	while (!done()) {
		if (pump(10) != 0)
			return -1;
		if (fg_mono_ns() > limit)
			return -1;
	}
	return 0;
}

/* The highest sequence number every subscriber has reached. */
static uint64_t slowest_seq(void)
{
	uint64_t low = UINT64_MAX;
	int i;

	for (i = 0; i < opt.subscribers; i++)
		if (subs[i].last_seq < low)
			low = subs[i].last_seq;
	return low;
}

static bool caught_up(void)
{
	return slowest_seq() >= pub_seq &&
	       (opt.qos == 0 || pub_acked >= pub_seq);
}

/* Publishes what the window allows, at most one burst. */
static int publish_some(unsigned char *payload)
{
	uint64_t room = (uint64_t)opt.window, ahead = pub_seq - slowest_seq();
	int i, rc;

	room = ahead >= room ? 0 : room - ahead;
	if (opt.qos > 0) {
		uint64_t unacked = pub_seq - pub_acked;
		uint64_t r = unacked >= (uint64_t)opt.window
		                 ? 0
		                 : (uint64_t)opt.window - unacked;
		if (r < room)
			room = r;
	}
	for (i = 0; (uint64_t)i < room && i < opt.burst; i++) {
		uint64_t seq = pub_seq + 1;

		memcpy(payload, &seq, sizeof(seq));
		rc = mosquitto_publish(pub.mosq, NULL, opt.topic, opt.payload,
		                       payload, opt.qos, false);
		if (rc != MOSQ_ERR_SUCCESS) {
			set_failed("publish failed for", pub.id,
			           mosquitto_strerror(rc));
			return -1;
		}
		pub_seq = seq;
	}
	return i;
}

static uint64_t delivered_sum(void)
{
	uint64_t sum = 0;
	int i;

	for (i = 0; i < opt.subscribers; i++)
		sum += subs[i].received + subs[i].dups;
	return sum;
}

/* CPU counters at one instant, for the measured interval. */
struct sample {
	int64_t t;
	double self, broker, broker_main, idle;
	uint64_t published, delivered;
};

static void take_sample(struct sample *s)
{
	s->t = fg_mono_ns();
	s->self = cpu_seconds_self();
	s->broker = s->broker_main = -1;
	if (opt.broker_pid > 0) {
		s->broker = cpu_seconds_of(opt.broker_pid, 0);
		s->broker_main = cpu_seconds_of(opt.broker_pid, opt.broker_pid);
	}
	s->idle = idle_seconds();
	s->published = pub_seq;
	s->delivered = delivered_sum();
}

static double per_second(double a, double b, double seconds)
{
	return a >= 0 && b >= 0 ? (b - a) / seconds : -1;
}

static void print_fixed(const char *key, double v, int decimals)
{
	if (v < 0)
		printf(" %s=-", key);
	else
		printf(" %s=%.*f", key, decimals, v);
}

static void report(const struct sample *a, const struct sample *b)
{
	double seconds = (double)(b->t - a->t) / 1e9;
	double self = per_second(a->self, b->self, seconds);
	double broker = per_second(a->broker, b->broker, seconds);
	double idle = per_second(a->idle, b->idle, seconds), other = -1;
	uint64_t expected = pub_seq * (uint64_t)opt.subscribers, got = 0;
	uint64_t dups = 0, lost;
	int i;

	for (i = 0; i < opt.subscribers; i++) {
		got += subs[i].received;
		dups += subs[i].dups;
	}
	lost = expected > got ? expected - got : 0;
	printf("label=%s qos=%d subscribers=%d seconds=%.3f published=%llu "
	       "delivered=%llu pub_rate=%.1f deliver_rate=%.1f",
	       opt.label, opt.qos, opt.subscribers, seconds,
	       (unsigned long long)(b->published - a->published),
	       (unsigned long long)(b->delivered - a->delivered),
	       (double)(b->published - a->published) / seconds,
	       (double)(b->delivered - a->delivered) / seconds);
	printf(" expected_total=%llu received_total=%llu lost=%llu "
	       "loss=%.6f dups=%llu",
	       (unsigned long long)expected, (unsigned long long)got,
	       (unsigned long long)lost,
	       expected ? (double)lost / (double)expected : 0.0,
	       (unsigned long long)dups);
	print_fixed("client_cpu", self, 2);
	print_fixed("broker_cpu", broker, 2);
	print_fixed("broker_main_cpu",
	            per_second(a->broker_main, b->broker_main, seconds), 2);
	print_fixed("idle_cpu", idle, 2);
	if (idle >= 0 && broker >= 0 && self >= 0)
		other = (double)sysconf(_SC_NPROCESSORS_ONLN) - idle - self -
		        broker;
	print_fixed("other_cpu", other < 0 && other > -0.05 ? 0 : other, 2);
	printf(" window=%d payload=%d pace_us=%d\n", opt.window, opt.payload,
	       opt.pace_us);
	fflush(stdout);
}

/* Connects everyone and subscribes the subscribers; 0 on success. */
static int setup(void)
{
	const char *sub_user = NULL;
	int i;

	snprintf(pub.id, sizeof(pub.id), "%s",
	         opt.pub_id != NULL     ? opt.pub_id
	         : opt.pub_user != NULL ? opt.pub_user
	                                : "fanout-pub");
	if (client_start(&pub, opt.pub_user, opt.pub_password) != 0)
		return -1;
	for (i = 0; i < opt.subscribers; i++) {
		snprintf(subs[i].id, sizeof(subs[i].id), "%s%03d",
		         opt.sub_prefix, i + 1);
		sub_user = opt.sub_password != NULL ? subs[i].id : NULL;
		if (client_start(&subs[i], sub_user, opt.sub_password) != 0)
			return -1;
	}
	if (pump_until(all_connected, opt.timeout_s) != 0) {
		fprintf(stderr, "fg_fanout: not every client connected: %s\n",
		        failed ? fail_text : "timed out");
		return -1;
	}
	for (i = 0; i < opt.subscribers; i++) {
		if (mosquitto_subscribe(subs[i].mosq, NULL, opt.filter,
		                        opt.qos) != MOSQ_ERR_SUCCESS) {
			fprintf(stderr, "fg_fanout: cannot subscribe %s\n",
			        subs[i].id);
			return -1;
		}
	}
	if (pump_until(all_subscribed, opt.timeout_s) != 0) {
		fprintf(stderr,
		        "fg_fanout: not every subscription granted: %s\n",
		        failed ? fail_text : "timed out");
		return -1;
	}
	for (i = 0; opt.pace_us > 0 && i < opt.subscribers; i++)
		if (raw_take(&subs[i]) != 0)
			return -1;
	return 0;
}

/* Publishes until the deadline; -1 after a failure. */
static int publish_until(int64_t deadline, unsigned char *payload)
{
	while (fg_mono_ns() < deadline) {
		int sent = publish_some(payload);

		/* Nothing more may go out: sleep until a socket is ready. */
		if (sent < 0 || pump(sent > 0 ? 0 : 10) != 0)
			return -1;
	}
	return 0;
}

static void shut_down(void)
{
	int i;

	stopping = true;
	for (i = -1; i < opt.subscribers; i++) {
		struct client *c = i < 0 ? &pub : &subs[i];

		if (c->mosq == NULL)
			continue;
		if (c->connected)
			mosquitto_disconnect(c->mosq);
		mosquitto_destroy(c->mosq);
		c->mosq = NULL;
		free(c->in);
		c->in = NULL;
	}
}

int main(int argc, char **argv)
{
	unsigned char *payload = NULL;
	struct sample a, b;
	int result = 1;
	int64_t t0;

	if (!parse_args(argc, argv)) {
		usage();
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	subs = calloc((size_t)opt.subscribers, sizeof(*subs));
	pfds = calloc((size_t)opt.subscribers + 1, sizeof(*pfds));
	pfd_client = calloc((size_t)opt.subscribers + 1, sizeof(*pfd_client));
	payload = malloc((size_t)opt.payload);
	if (subs == NULL || pfds == NULL || pfd_client == NULL ||
	    payload == NULL) {
		fprintf(stderr, "fg_fanout: out of memory\n");
		goto out;
	}
	memset(payload, 'x', (size_t)opt.payload);
	mosquitto_lib_init();
	if (setup() != 0)
		goto out_lib;

	t0 = fg_mono_ns();
	if (publish_until(t0 + (int64_t)(opt.warmup_s * 1e9), payload) != 0)
		goto fail;
	take_sample(&a);
	if (publish_until(a.t + (int64_t)(opt.duration_s * 1e9), payload) != 0)
		goto fail;
	take_sample(&b);
	/* Losses at QoS 0 leave a subscriber behind for good: the drain
	 * ends at the timeout then, and they are counted as lost. */
	(void)pump_until(caught_up, opt.drain_s);
	if (failed)
		goto fail;
	report(&a, &b);
	result = b.delivered > a.delivered ? 0 : 3;
	if (result == 3)
		fprintf(stderr, "fg_fanout: no message was delivered\n");
	goto out_lib;
fail:
	fprintf(stderr, "fg_fanout: %s\n", fail_text);
out_lib:
	shut_down();
	mosquitto_lib_cleanup();
out:
	free(payload);
	free(pfd_client);
	free(pfds);
	free(subs);
	return result;
}
