/*
 * fg_decidebench: what the auth plugin's admission decision costs, without
 * a broker or a network.
 *
 * It times, with CLOCK_MONOTONIC, the two steps the plugin takes on the
 * broker thread for every device CONNECT before it logs and audits:
 *   cert    reading the client certificate: SHA-256 fingerprint of the DER
 *           and the validity window (fg_fingerprint_of_cert and
 *           fg_cert_validity)
 *   decide  auth_decide() against an in-memory registry, for a registered
 *           device (admitted) and for an unknown certificate (refused)
 * for registries of a few sizes, and for an account login (a password
 * hash of 101 and of 10,000 iterations) hashed every time against one
 * answered from the cache of password check outcomes (auth_pwcheck.c).
 * Each figure is the best of several repetitions, in nanoseconds per
 * call.
 *
 * It is linked against the plugin's and the runtime's object files (from
 * an archive, so only what these functions need is pulled in); it lives
 * outside test/bench/ proper because the Makefile builds every C file
 * there as a standalone tool, without them.
 *
 * Usage: fg_decidebench CERT.pem DEVICE_ID [ITERATIONS]
 * Output: one line per registry size, key=value.
 * Exit codes: 0 done; 1 usage or setup error, or a decision that was not
 * the expected one.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../../tools/fg_passwd_make.h"
#include "auth.h"
#include "fg_registry.h"

#define REPEATS 5

static volatile uint64_t sink;

/* The runtime logs through the broker, which this harness has none of
 * (its log lines are not what is timed). */
void mosquitto_log_printf(int level, const char *fmt, ...);
void mosquitto_log_printf(int level, const char *fmt, ...)
{
	(void)level;
	(void)fmt;
}

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A fingerprint no certificate has: the index spelled in hex. */
static void synthetic_fp(size_t i, fg_fingerprint *fp)
{
	snprintf(fp->hex, sizeof(fp->hex), "%064zx", i + 1);
}

/*
 * A registry of n devices, one of which (device_id) holds the real
 * certificate's fingerprint. Returns it finalised, or NULL.
 */
static struct fg_registry *make_registry(size_t n, const char *device_id,
                                         const fg_fingerprint *real_fp,
                                         int64_t now)
{
	struct fg_registry *reg = fg_registry_new();
	char id[64], err[FG_ERRLEN];
	fg_fingerprint fp;
	size_t i;

	if (reg == NULL)
		return NULL;
	for (i = 0; i + 1 < n; i++) {
		snprintf(id, sizeof(id), "filler-%06zu", i);
		synthetic_fp(i, &fp);
		if (fg_registry_add_device(reg, id, "m1", FG_DEVICE_ACTIVE,
		                           false, NULL) != 0 ||
		    fg_registry_add_cert(reg, &fp, id, now - 3600, now + 86400,
		                         0) != 0)
			goto fail;
	}
	if (fg_registry_add_device(reg, device_id, "m1", FG_DEVICE_ACTIVE,
	                           false, NULL) != 0 ||
	    fg_registry_add_cert(reg, real_fp, device_id, now - 3600,
	                         now + 86400, 0) != 0)
		goto fail;
	if (fg_registry_finalise(reg, err, sizeof(err)) != 0) {
		fprintf(stderr, "fg_decidebench: %s\n", err);
		goto fail;
	}
	return reg;
fail:
	fg_registry_free(reg);
	return NULL;
}

/* Best of REPEATS runs of the certificate step, ns per call. */
static double time_cert(X509 *cert, long iterations)
{
	double best = -1;
	int r;

	for (r = 0; r < REPEATS; r++) {
		int64_t t0 = mono_ns(), nb, na;
		fg_fingerprint fp;
		long i;

		for (i = 0; i < iterations; i++) {
			if (fg_fingerprint_of_cert(cert, &fp) != 0 ||
			    fg_cert_validity(cert, &nb, &na) != 0)
				return -1;
			sink +=
			    (uint64_t)(unsigned char)fp.hex[7] + (uint64_t)na;
		}
		double ns = (double)(mono_ns() - t0) / (double)iterations;
		if (best < 0 || ns < best)
			best = ns;
	}
	return best;
}

/* Best of REPEATS runs of auth_decide, ns per call; -1 when a decision
 * was not the expected one. */
static double time_decide(const struct fg_registry *reg,
                          const struct auth_request *req,
                          enum auth_reason expected, int64_t now,
                          long iterations)
{
	struct auth_config cfg = {AUTH_API_KEY_OFF, 64};
	struct auth_identity id;
	double best = -1;
	int r;

	for (r = 0; r < REPEATS; r++) {
		int64_t t0 = mono_ns();
		long i;

		for (i = 0; i < iterations; i++) {
			if (auth_decide(reg, &cfg, req, now, &id) != expected)
				return -1;
			sink += (uint64_t)(uintptr_t)id.device;
		}
		double ns = (double)(mono_ns() - t0) / (double)iterations;
		if (best < 0 || ns < best)
			best = ns;
	}
	return best;
}

/* Best of REPEATS runs of an account's auth_decide, ns per call; -1 when
 * it was not admitted. */
static double time_login(const struct fg_registry *reg,
                         const struct auth_config *cfg,
                         const struct auth_request *req, long iterations)
{
	struct auth_identity id;
	double best = -1;

	for (int r = 0; r < REPEATS; r++) {
		int64_t t0 = mono_ns();

		for (long i = 0; i < iterations; i++)
			if (auth_decide(reg, cfg, req, 0, &id) != AUTH_OK)
				return -1;
		double ns = (double)(mono_ns() - t0) / (double)iterations;
		if (best < 0 || ns < best)
			best = ns;
	}
	return best;
}

/* An account login, hashed every time and answered from the cache. */
static int bench_logins(void)
{
	static const int hash_iterations[] = {101, 10000};
	static const unsigned char salt[FG_PASSWD_MAKE_SALT] = "fleetgate-bn";
	struct auth_request req = {
	    .client_id = "dash-1", .username = "dash", .password = "s3cret"};

	for (size_t k = 0; k < 2; k++) {
		struct auth_config plain = {.max_id_length = 64};
		struct auth_config cached = {.max_id_length = 64};
		struct fg_registry *reg = fg_registry_new();
		char hash[200];
		double hashed_ns, cached_ns;
		int it = hash_iterations[k];

		cached.pwcheck = auth_pwcheck_new(3600, 1000);
		if (reg == NULL || cached.pwcheck == NULL ||
		    fg_passwd_make(hash, sizeof(hash), "s3cret", it, salt) !=
		        0 ||
		    fg_registry_add_account(reg, "dash", hash, "dashboard",
		                            NULL, false, false) != 0 ||
		    fg_registry_finalise(reg, NULL, 0) != 0) {
			fprintf(stderr,
			        "fg_decidebench: account setup failed\n");
			return -1;
		}
		hashed_ns =
		    time_login(reg, &plain, &req, it > 1000 ? 20 : 2000);
		cached_ns = time_login(reg, &cached, &req, 200000);
		auth_pwcheck_free(cached.pwcheck);
		fg_registry_free(reg);
		if (hashed_ns < 0 || cached_ns < 0) {
			fprintf(stderr, "fg_decidebench: an account login was "
			                "refused\n");
			return -1;
		}
		printf("account_login hash_iterations=%d hashed_ns=%.0f "
		       "cached_ns=%.0f ratio_hashed_cached=%.0f\n",
		       it, hashed_ns, cached_ns, hashed_ns / cached_ns);
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const size_t sizes[] = {50, 10000, 100000};
	struct auth_request req, unknown;
	long iterations = 200000;
	X509 *cert = NULL;
	FILE *f;
	int64_t now = (int64_t)time(NULL);
	double cert_ns;
	size_t s;
	int result = 1;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: fg_decidebench CERT.pem DEVICE_ID "
		                "[ITERATIONS]\n");
		return 1;
	}
	if (argc == 4)
		iterations = strtol(argv[3], NULL, 10);
	if (iterations < 1000)
		iterations = 1000;
	f = fopen(argv[1], "r");
	if (f == NULL || (cert = PEM_read_X509(f, NULL, NULL, NULL)) == NULL) {
		fprintf(stderr, "fg_decidebench: cannot read %s\n", argv[1]);
		if (f != NULL)
			fclose(f);
		return 1;
	}
	fclose(f);

	memset(&req, 0, sizeof(req));
	req.client_id = argv[2];
	req.has_cert = true;
	if (fg_fingerprint_of_cert(cert, &req.fp) != 0 ||
	    fg_cert_validity(cert, &req.x509_not_before, &req.x509_not_after) !=
	        0) {
		fprintf(stderr,
		        "fg_decidebench: cannot read the certificate\n");
		goto out;
	}
	unknown = req;
	synthetic_fp((size_t)-2, &unknown.fp);

	cert_ns = time_cert(cert, iterations);
	if (cert_ns < 0) {
		fprintf(stderr, "fg_decidebench: certificate step failed\n");
		goto out;
	}
	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		struct fg_registry *reg =
		    make_registry(sizes[s], argv[2], &req.fp, now);
		double ok_ns, unknown_ns;

		if (reg == NULL) {
			fprintf(stderr,
			        "fg_decidebench: cannot build a "
			        "registry of %zu devices\n",
			        sizes[s]);
			goto out;
		}
		ok_ns = time_decide(reg, &req, AUTH_OK, now, iterations);
		unknown_ns = time_decide(
		    reg, &unknown, AUTH_UNKNOWN_CERTIFICATE, now, iterations);
		fg_registry_free(reg);
		if (ok_ns < 0 || unknown_ns < 0) {
			fprintf(stderr,
			        "fg_decidebench: unexpected decision "
			        "with %zu devices\n",
			        sizes[s]);
			goto out;
		}
		printf("registry_devices=%zu cert_read_ns=%.0f "
		       "decide_accept_ns=%.0f decide_unknown_ns=%.0f "
		       "total_accept_ns=%.0f iterations=%ld\n",
		       sizes[s], cert_ns, ok_ns, unknown_ns, cert_ns + ok_ns,
		       iterations);
	}
	if (bench_logins() != 0)
		goto out;
	result = 0;
out:
	X509_free(cert);
	return result;
}
