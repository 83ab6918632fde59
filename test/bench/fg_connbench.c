/*
 * fg_connbench: TLS connect-rate load generator for a fleetgate broker.
 *
 * T worker threads each connect over and over: a new libmosquitto client
 * with a device's own certificate and key (client id = device id), a full
 * TLS handshake, CONNECT, wait for the CONNACK, a clean DISCONNECT, close.
 * Every thread owns a disjoint share of the devices, so that no two
 * connections with one client id are ever open at once (the broker would
 * take the first one over, which is not what is being measured).
 *
 * Each device's SSL_CTX (CA, certificate, key) is built once at start and
 * handed to libmosquitto with MOSQ_OPT_SSL_CTX, so the client does not
 * read and parse PEM files on every connect: the per-connect client cost
 * is the handshake itself. TLS sessions are never resumed, so every
 * connect is a full handshake with certificate verification on both ends.
 *
 * Usage:
 *   fg_connbench --port P --cafile F --certdir DIR
 *                (--devices FILE | DEVICE_ID...)
 *                [--host H] [--threads T] [--duration S | --count N]
 *                [--timeout S] [--v5] [--label NAME] [--broker-pid PID]
 *
 *   --certdir DIR   holds DEVICE_ID.crt and DEVICE_ID.key for each device
 *   --devices FILE  one device id a line ('#' starts a comment)
 *   --threads T     worker threads (default 4)
 *   --duration S    run for S seconds (default 10; fractions allowed)
 *   --count N       stop after N connects instead (whole run, all threads)
 *   --timeout S     longest wait for one CONNACK (default 5)
 *   --broker-pid P  also report the CPU the broker process used
 *
 * Output: one summary line on stdout, key=value, e.g.
 *   label=bare connects=5120 accepted=5120 refused=0 errors=0
 *   seconds=10.002 rate=511.9 p50_ms=7.41 p90_ms=9.02 p99_ms=12.77
 *   max_ms=30.11 client_cpu=0.83 broker_cpu=0.99 broker_main_cpu=0.99
 *   idle_cpu=0.05 other_cpu=0.13 threads=4
 * (on one line). rate counts CONNACKs (accepted + refused) per second;
 * latencies run from the TCP connect to the CONNACK; *_cpu are cores
 * used on average over the run: this client, the broker process (all its
 * threads, a plugin's workers included), the broker's main thread (the
 * one that serves every client), the whole machine's idle time, and what
 * the other processes on the machine used (all CPUs minus the rest).
 * Connect failures are summarised on stderr.
 *
 * Exit codes: 0 the run completed (check the counts); 1 usage or setup
 * error; 3 not a single CONNACK was received.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <sys/resource.h>

#include <mosquitto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "../tools/fg_args.h"
#include "fg_bench_cpu.h"

#define MAX_DEVICES 100000
#define ID_MAX 128
#define PATH_MAX_LEN 4096

struct options {
	const char *host;
	int port;
	const char *cafile;
	const char *certdir;
	const char *devices_file;
	const char *label;
	int threads;
	double duration_s;
	long count;
	int timeout_s;
	int protocol;
	long broker_pid;
};

struct device {
	char id[ID_MAX];
	SSL_CTX *ctx;
};

/* Counters and latencies of one thread; merged when the run is over. */
struct worker {
	pthread_t thread;
	int index;
	unsigned long accepted, refused, errors;
	float *lat_ms;
	size_t nlat, caplat;
	int first_error;
	char first_error_text[128];
};

/* What one connection's callbacks report back. */
struct conn_state {
	bool got_connack;
	int rc;
};

static struct options opt;
static struct device *devices;
static size_t ndevices;
static int64_t deadline_ns;
static atomic_long connects_started;
static atomic_int stop_all;

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: fg_connbench --port P --cafile F --certdir DIR\n"
	        "                    (--devices FILE | DEVICE_ID...)\n"
	        "                    [--host H] [--threads T]"
	        " [--duration S | --count N]\n"
	        "                    [--timeout S] [--v5] [--label NAME]"
	        " [--broker-pid PID]\n");
}

/* Device ids end up in file names and client ids: keep them plain. */
static bool id_ok(const char *id)
{
	size_t n = strlen(id), i;

	if (n == 0 || n >= ID_MAX)
		return false;
	for (i = 0; i < n; i++) {
		char c = id[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == ':' || c == '-'))
			return false;
	}
	return id[0] != '.';
}

static int add_device(const char *id)
{
	if (!id_ok(id)) {
		fprintf(stderr, "fg_connbench: bad device id '%.64s'\n", id);
		return -1;
	}
	if (ndevices == MAX_DEVICES) {
		fprintf(stderr, "fg_connbench: more than %d devices\n",
		        MAX_DEVICES);
		return -1;
	}
	snprintf(devices[ndevices].id, sizeof(devices[ndevices].id), "%s", id);
	ndevices++;
	return 0;
}

static int read_devices_file(const char *path)
{
	char line[512];
	FILE *f = fopen(path, "r");
	int result = 0;

	if (f == NULL) {
		fprintf(stderr, "fg_connbench: %s: %s\n", path,
		        strerror(errno));
		return -1;
	}
	while (result == 0 && fgets(line, sizeof(line), f) != NULL) {
		char *p = line, *e;

		e = strchr(p, '#');
		if (e != NULL)
			*e = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		e = p + strlen(p);
		while (e > p && (e[-1] == '\n' || e[-1] == '\r' ||
		                 e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
		if (*p != '\0')
			result = add_device(p);
	}
	fclose(f);
	return result;
}

/* Returns true when argv held a usable set of options. */
static bool parse_args(int argc, char **argv)
{
	bool count_given = false, duration_given = false;
	int i;

	opt.host = "127.0.0.1";
	opt.label = "-";
	opt.threads = 4;
	opt.duration_s = 10;
	opt.timeout_s = 5;
	opt.protocol = MQTT_PROTOCOL_V311;
	opt.broker_pid = 0;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;

		if (strcmp(a, "--v5") == 0) {
			opt.protocol = MQTT_PROTOCOL_V5;
			continue;
		}
		if (a[0] != '-') {
			if (add_device(a) != 0)
				return false;
			continue;
		}
		if (v == NULL) {
			fprintf(stderr, "fg_connbench: %s needs a value\n", a);
			return false;
		}
		i++;
		if (strcmp(a, "--host") == 0) {
			opt.host = v;
		} else if (strcmp(a, "--port") == 0) {
			if (!parse_int(v, 1, 65535, &opt.port))
				goto bad_value;
		} else if (strcmp(a, "--cafile") == 0) {
			opt.cafile = v;
		} else if (strcmp(a, "--certdir") == 0) {
			opt.certdir = v;
		} else if (strcmp(a, "--devices") == 0) {
			opt.devices_file = v;
		} else if (strcmp(a, "--label") == 0) {
			opt.label = v;
		} else if (strcmp(a, "--threads") == 0) {
			if (!parse_int(v, 1, 1024, &opt.threads))
				goto bad_value;
		} else if (strcmp(a, "--duration") == 0) {
			if (!parse_double(v, 0, 86400, true, &opt.duration_s))
				goto bad_value;
			duration_given = true;
		} else if (strcmp(a, "--count") == 0) {
			if (!parse_long(v, 1, 1000000000L, &opt.count))
				goto bad_value;
			count_given = true;
		} else if (strcmp(a, "--timeout") == 0) {
			if (!parse_int(v, 1, 3600, &opt.timeout_s))
				goto bad_value;
		} else if (strcmp(a, "--broker-pid") == 0) {
			if (!parse_long(v, 1, 4194304L, &opt.broker_pid))
				goto bad_value;
		} else {
			fprintf(stderr, "fg_connbench: unknown option %s\n", a);
			return false;
		}
		continue;
	bad_value:
		fprintf(stderr, "fg_connbench: bad value for %s: %s\n", a, v);
		return false;
	}
	if (opt.port == 0 || opt.cafile == NULL || opt.certdir == NULL) {
		fprintf(stderr, "fg_connbench: --port, --cafile and --certdir "
		                "are required\n");
		return false;
	}
	if (count_given && duration_given) {
		fprintf(stderr, "fg_connbench: --duration or --count, "
		                "not both\n");
		return false;
	}
	if (opt.devices_file != NULL && read_devices_file(opt.devices_file))
		return false;
	if (ndevices == 0) {
		fprintf(stderr, "fg_connbench: no devices given\n");
		return false;
	}
	if ((size_t)opt.threads > ndevices) {
		fprintf(stderr,
		        "fg_connbench: %d threads need at least as many "
		        "devices (have %zu): a client id may not be used by "
		        "two connections at once\n",
		        opt.threads, ndevices);
		return false;
	}
	return true;
}

static void print_ssl_error(const char *what, const char *path)
{
	char buf[256];
	unsigned long e = ERR_get_error();

	ERR_error_string_n(e, buf, sizeof(buf));
	fprintf(stderr, "fg_connbench: %s %s: %s\n", what, path, buf);
	ERR_clear_error();
}

/*
 * One client context per device, sharing the trust store: the server's
 * certificate is verified (chain and name) on every handshake, as a device
 * would.
 */
static SSL_CTX *make_ctx(X509_STORE *store, const char *id)
{
	char crt[PATH_MAX_LEN], key[PATH_MAX_LEN];
	X509_VERIFY_PARAM *param;
	SSL_CTX *ctx = NULL;
	unsigned char ip[16];

	snprintf(crt, sizeof(crt), "%s/%s.crt", opt.certdir, id);
	snprintf(key, sizeof(key), "%s/%s.key", opt.certdir, id);
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		print_ssl_error("SSL_CTX_new for", id);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set1_cert_store(ctx, store);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	param = SSL_CTX_get0_param(ctx);
	if (inet_pton(AF_INET, opt.host, ip) == 1 ||
	    inet_pton(AF_INET6, opt.host, ip) == 1)
		X509_VERIFY_PARAM_set1_ip_asc(param, opt.host);
	else
		X509_VERIFY_PARAM_set1_host(param, opt.host, 0);
	if (SSL_CTX_use_certificate_chain_file(ctx, crt) != 1) {
		print_ssl_error("cannot load certificate", crt);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		print_ssl_error("cannot load key", key);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static int load_contexts(void)
{
	X509_STORE *store = X509_STORE_new();
	int result = -1;
	size_t i;

	if (store == NULL) {
		fprintf(stderr, "fg_connbench: out of memory\n");
		return -1;
	}
	if (X509_STORE_load_file(store, opt.cafile) != 1) {
		print_ssl_error("cannot load CA file", opt.cafile);
		goto out;
	}
	for (i = 0; i < ndevices; i++) {
		devices[i].ctx = make_ctx(store, devices[i].id);
		if (devices[i].ctx == NULL)
			goto out;
	}
	result = 0;
out:
	X509_STORE_free(store); /* the contexts hold their own references */
	return result;
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
	struct conn_state *st = obj;

	(void)mosq;
	st->got_connack = true;
	st->rc = rc;
}

static void note_error(struct worker *w, int rc, const char *text)
{
	w->errors++;
	if (w->first_error == 0) {
		w->first_error = rc;
		snprintf(w->first_error_text, sizeof(w->first_error_text), "%s",
		         text);
	}
}

static int record_latency(struct worker *w, int64_t ns)
{
	if (w->nlat == w->caplat) {
		size_t ncap = w->caplat ? w->caplat * 2 : 4096;
		float *n = realloc(w->lat_ms, ncap * sizeof(*n));

		if (n == NULL)
			return -1;
		w->lat_ms = n;
		w->caplat = ncap;
	}
	w->lat_ms[w->nlat++] = (float)((double)ns / 1e6);
	return 0;
}

/*
 * One connect of device d: returns after the CONNACK (and, when it was
 * accepted, a clean DISCONNECT), a failure or the timeout.
 */
static void connect_once(struct worker *w, const struct device *d)
{
	struct conn_state st = {false, -1};
	struct mosquitto *mosq;
	int64_t t0, limit;
	int rc;

	mosq = mosquitto_new(d->id, true, &st);
	if (mosq == NULL) {
		note_error(w, MOSQ_ERR_NOMEM, "mosquitto_new failed");
		return;
	}
	mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, opt.protocol);
	mosquitto_void_option(mosq, MOSQ_OPT_SSL_CTX, d->ctx);
	mosquitto_int_option(mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
	/* Without it, Nagle's algorithm holds the CONNECT back behind the
	 * last handshake record until the broker's delayed ACK (40 ms). */
	mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_connect_callback_set(mosq, on_connect);

	t0 = mono_ns();
	limit = t0 + (int64_t)opt.timeout_s * 1000000000;
	rc = mosquitto_connect(mosq, opt.host, opt.port, 60);
	if (rc != MOSQ_ERR_SUCCESS) {
		note_error(w, rc,
		           rc == MOSQ_ERR_ERRNO ? strerror(errno)
		                                : mosquitto_strerror(rc));
		goto out;
	}
	while (!st.got_connack) {
		rc = mosquitto_loop(mosq, 100, 1);
		if (st.got_connack)
			break;
		if (rc != MOSQ_ERR_SUCCESS) {
			note_error(w, rc,
			           rc == MOSQ_ERR_ERRNO
			               ? strerror(errno)
			               : mosquitto_strerror(rc));
			goto out;
		}
		if (mono_ns() > limit) {
			note_error(w, MOSQ_ERR_TIMEOUT, "no CONNACK in time");
			goto out;
		}
	}
	if (record_latency(w, mono_ns() - t0) != 0) {
		note_error(w, MOSQ_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (st.rc == 0) {
		w->accepted++;
		/* Written at once (no callback is running, no loop
		 * thread); the socket is closed right after. */
		mosquitto_disconnect(mosq);
	} else {
		w->refused++;
	}
out:
	mosquitto_destroy(mosq);
}

static bool keep_going(void)
{
	if (atomic_load(&stop_all))
		return false;
	if (opt.count > 0)
		return atomic_fetch_add(&connects_started, 1) < opt.count;
	return mono_ns() < deadline_ns;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	size_t next = (size_t)w->index;

	while (keep_going()) {
		connect_once(w, &devices[next]);
		next += (size_t)opt.threads;
		if (next >= ndevices)
			next = (size_t)w->index;
		/* A broker that is down would make this spin. */
		if (w->errors > 0 && w->errors % 100 == 0 &&
		    w->accepted + w->refused == 0)
			usleep(10000);
	}
	return NULL;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static double percentile(const float *v, size_t n, double pct)
{
	size_t rank;

	if (n == 0)
		return 0;
	rank = (size_t)ceil(pct / 100.0 * (double)n);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)v[rank - 1];
}

static void print_fixed(const char *key, double v, int decimals)
{
	if (v < 0)
		printf(" %s=-", key);
	else
		printf(" %s=%.*f", key, decimals, v);
}

int main(int argc, char **argv)
{
	struct worker *workers = NULL;
	unsigned long accepted = 0, refused = 0, errors = 0;
	double cpu0, cpu1, idle0, idle1, idle, other = -1, seconds;
	double bcpu0 = -1, bcpu1 = -1, mcpu0 = -1, mcpu1 = -1;
	float *all = NULL;
	size_t nall = 0, i;
	int64_t t0, t1;
	int result = 1;

	devices = calloc(MAX_DEVICES, sizeof(*devices));
	if (devices == NULL) {
		fprintf(stderr, "fg_connbench: out of memory\n");
		return 1;
	}
	if (!parse_args(argc, argv)) {
		usage();
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);
	mosquitto_lib_init();
	if (load_contexts() != 0)
		goto out_lib;
	workers = calloc((size_t)opt.threads, sizeof(*workers));
	if (workers == NULL) {
		fprintf(stderr, "fg_connbench: out of memory\n");
		goto out_lib;
	}

	cpu0 = cpu_seconds_self();
	if (opt.broker_pid > 0) {
		bcpu0 = cpu_seconds_of(opt.broker_pid, 0);
		mcpu0 = cpu_seconds_of(opt.broker_pid, opt.broker_pid);
	}
	idle0 = idle_seconds();
	t0 = mono_ns();
	deadline_ns = t0 + (int64_t)(opt.duration_s * 1e9);
	for (i = 0; i < (size_t)opt.threads; i++) {
		workers[i].index = (int)i;
		if (pthread_create(&workers[i].thread, NULL, worker_main,
		                   &workers[i]) != 0) {
			fprintf(stderr, "fg_connbench: cannot start thread\n");
			atomic_store(&stop_all, 1);
			opt.threads = (int)i;
			break;
		}
	}
	for (i = 0; i < (size_t)opt.threads; i++)
		pthread_join(workers[i].thread, NULL);
	t1 = mono_ns();
	cpu1 = cpu_seconds_self();
	if (opt.broker_pid > 0) {
		bcpu1 = cpu_seconds_of(opt.broker_pid, 0);
		mcpu1 = cpu_seconds_of(opt.broker_pid, opt.broker_pid);
	}
	idle1 = idle_seconds();
	seconds = (double)(t1 - t0) / 1e9;

	for (i = 0; i < (size_t)opt.threads; i++) {
		accepted += workers[i].accepted;
		refused += workers[i].refused;
		errors += workers[i].errors;
		nall += workers[i].nlat;
	}
	all = malloc((nall ? nall : 1) * sizeof(*all));
	if (all == NULL) {
		fprintf(stderr, "fg_connbench: out of memory\n");
		goto out_lib;
	}
	nall = 0;
	for (i = 0; i < (size_t)opt.threads; i++) {
		if (workers[i].nlat > 0)
			memcpy(all + nall, workers[i].lat_ms,
			       workers[i].nlat * sizeof(*all));
		nall += workers[i].nlat;
		if (workers[i].errors > 0)
			fprintf(stderr,
			        "fg_connbench: thread %zu: errors=%lu "
			        "first: rc=%d %s\n",
			        i, workers[i].errors, workers[i].first_error,
			        workers[i].first_error_text);
	}
	qsort(all, nall, sizeof(*all), cmp_float);

	printf("label=%s connects=%lu accepted=%lu refused=%lu errors=%lu",
	       opt.label, accepted + refused + errors, accepted, refused,
	       errors);
	printf(" seconds=%.3f rate=%.1f", seconds,
	       (double)(accepted + refused) / seconds);
	print_fixed("p50_ms", percentile(all, nall, 50), 2);
	print_fixed("p90_ms", percentile(all, nall, 90), 2);
	print_fixed("p99_ms", percentile(all, nall, 99), 2);
	print_fixed("max_ms", nall ? (double)all[nall - 1] : 0, 2);
	print_fixed("client_cpu", (cpu1 - cpu0) / seconds, 2);
	print_fixed("broker_cpu",
	            bcpu0 >= 0 && bcpu1 >= 0 ? (bcpu1 - bcpu0) / seconds : -1,
	            2);
	print_fixed("broker_main_cpu",
	            mcpu0 >= 0 && mcpu1 >= 0 ? (mcpu1 - mcpu0) / seconds : -1,
	            2);
	idle = idle0 >= 0 && idle1 >= 0 ? (idle1 - idle0) / seconds : -1;
	print_fixed("idle_cpu", idle, 2);
	/* What neither this client nor the broker used, nor was idle: the
	 * other processes (the database, anything else on the machine). */
	if (idle >= 0 && bcpu0 >= 0 && bcpu1 >= 0)
		other = (double)sysconf(_SC_NPROCESSORS_ONLN) - idle -
		        (cpu1 - cpu0) / seconds - (bcpu1 - bcpu0) / seconds;
	print_fixed("other_cpu", other < 0 && other > -0.05 ? 0 : other, 2);
	printf(" threads=%d\n", opt.threads);
	fflush(stdout);
	result = accepted + refused > 0 ? 0 : 3;

out_lib:
	for (i = 0; workers != NULL && i < (size_t)opt.threads; i++)
		free(workers[i].lat_ms);
	free(workers);
	free(all);
	for (i = 0; i < ndevices; i++)
		SSL_CTX_free(devices[i].ctx);
	mosquitto_lib_cleanup();
out:
	free(devices);
	return result;
}
