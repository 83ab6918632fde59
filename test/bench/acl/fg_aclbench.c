/*
 * fg_aclbench: what the acl plugin's check on a delivered message costs,
 * without a broker or a network.
 *
 * It builds an in-memory registry like the one test/bench/fanout.sh loads
 * into PostgreSQL (the fan-out benchmark's accounts, the rules they use,
 * and filler rules for other devices, accounts, roles and
 * municipalities), compiles the rules of one dashboard account with
 * acl_client_new(), and times with CLOCK_MONOTONIC:
 *   read_memo   acl_check(READ) of one topic string over and over: found
 *               through the topic pointer, as the checks of one message
 *               fanned out to clients that share their rules are
 *   read_warm   acl_check(READ) of two copies of one topic in turn: a
 *               cache hit found by hashing the topic, as a client's check
 *               of its own next message is
 *   read_cold   acl_check(READ) of a new topic each time (a cycle far
 *               longer than the cache): a miss, so the rules are walked,
 *               the answer is stored, and the full cache is emptied every
 *               cache_size misses, as the plugin does
 *   compile     acl_client_new() + acl_client_free(): paid once per client
 *               after it connects or the registry changes
 * for a few rule counts. Each figure is the best of several repetitions.
 *
 * It is linked against the plugin's and the runtime's object files (from
 * an archive, so only what these functions need is pulled in); it lives
 * outside test/bench/ proper because the Makefile builds every C file
 * there as a standalone tool, without them.
 *
 * Usage: fg_aclbench [ITERATIONS]
 * Output: one line per rule count, key=value.
 * Exit codes: 0 done; 1 setup error, or an answer that was not the
 * expected one.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "acl.h"
#include "fg_registry.h"

#define REPEATS 5
#define CACHE_SIZE 1024
/* Distinct topics of the cold cycle: many times the cache. */
#define COLD_TOPICS 65536
#define FILLER_MUNIS 40
#define CORE_RULES 7

static const char HASH[] = "$7$101$SmYvxLSDVDliPOav$gsiV7wzolJE6vz9E2VdRzS";
static const char TOPIC[] = "water/north/fanout-pub/readings";

static volatile unsigned long sink;

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int add_rule(struct fg_registry *reg, int64_t id,
                    enum fg_rule_subject kind, const char *subject,
                    const char *pattern, enum fg_rule_access access, bool allow,
                    int priority)
{
	return fg_registry_add_rule(reg, id, kind, subject, pattern, access,
	                            allow, priority);
}

/* The benchmark's accounts and the rules they use: CORE_RULES of them. */
static int add_core(struct fg_registry *reg)
{
	char name[32];
	int i, rc = 0;

	rc |= fg_registry_add_account(reg, "fanout-pub", HASH, "publisher",
	                              "north", false, false);
	for (i = 1; i <= 50; i++) {
		snprintf(name, sizeof(name), "dash-%03d", i);
		rc |= fg_registry_add_account(reg, name, HASH, "dashboard",
		                              "north", false, false);
	}
	rc |= add_rule(reg, 1, FG_RULE_ROLE, "dashboard", "water/%m/#",
	               FG_RULE_RECEIVE, true, 0);
	rc |= add_rule(reg, 2, FG_RULE_ROLE, "dashboard", "water/%m/+/config",
	               FG_RULE_RECEIVE, false, 10);
	rc |= add_rule(reg, 3, FG_RULE_ROLE, "dashboard", "alerts/%m/#",
	               FG_RULE_RECEIVE, true, 0);
	rc |= add_rule(reg, 4, FG_RULE_ROLE, "dashboard", "energy/%m/#",
	               FG_RULE_RECEIVE, true, 0);
	rc |= add_rule(reg, 5, FG_RULE_ROLE, "dashboard", "water/%m/+/config/#",
	               FG_RULE_SUBSCRIBE, false, 10);
	rc |= add_rule(reg, 6, FG_RULE_ACCOUNT, "fanout-pub",
	               "water/%m/%u/readings", FG_RULE_PUBLISH, true, 0);
	rc |= add_rule(reg, 7, FG_RULE_ROLE, "publisher", "water/%m/+/config",
	               FG_RULE_PUBLISH, false, 10);
	return rc;
}

/* The i-th filler rule (0-based), as fanout.sh's filler() makes it. */
static int add_filler(struct fg_registry *reg, int i)
{
	char subject[32], muni[8], pattern[64], role[32];
	int n = i / 4, rc = 0;
	int64_t id = CORE_RULES + 1 + i;

	snprintf(muni, sizeof(muni), "m%02d", n % FILLER_MUNIS + 1);
	switch (i % 4) {
	case 0:
		snprintf(subject, sizeof(subject), "dev-%04d", n + 1);
		rc |= fg_registry_add_device(reg, subject, muni,
		                             FG_DEVICE_ACTIVE, false, NULL);
		rc |= add_rule(reg, id, FG_RULE_DEVICE, subject,
		               "water/%m/%c/#", FG_RULE_PUBLISH, true, 0);
		break;
	case 1:
		snprintf(pattern, sizeof(pattern), "water/%%m/sensor-%d/#", n);
		rc |= add_rule(reg, id, FG_RULE_MUNICIPALITY, muni, pattern,
		               FG_RULE_RECEIVE, true, n % 5);
		break;
	case 2:
		snprintf(subject, sizeof(subject), "operator-%02d", n % 20);
		snprintf(pattern, sizeof(pattern), "ops/%%m/job-%d/#", n);
		rc |= add_rule(reg, id, FG_RULE_ROLE, subject, pattern,
		               FG_RULE_SUBSCRIBE, true, 5);
		break;
	default:
		snprintf(subject, sizeof(subject), "acct-%03d", n + 1);
		snprintf(role, sizeof(role), "operator-%02d", n % 20);
		rc |= fg_registry_add_account(reg, subject, HASH, role, muni,
		                              false, false);
		rc |= add_rule(reg, id, FG_RULE_ACCOUNT, subject,
		               "reports/%u/#", FG_RULE_RECEIVE, true, 0);
		break;
	}
	return rc;
}

/* A finalised registry with nrules rules, or NULL. */
static struct fg_registry *make_registry(int nrules)
{
	struct fg_registry *reg = fg_registry_new();
	char err[FG_ERRLEN];
	int i;

	if (reg == NULL)
		return NULL;
	if (add_core(reg) != 0)
		goto fail;
	for (i = 0; i < nrules - CORE_RULES; i++)
		if (add_filler(reg, i) != 0)
			goto fail;
	fg_registry_set_has_rules(reg, true);
	if (fg_registry_finalise(reg, err, sizeof(err)) != 0) {
		fprintf(stderr, "fg_aclbench: %s\n", err);
		goto fail;
	}
	return reg;
fail:
	fg_registry_free(reg);
	return NULL;
}

/* Best of REPEATS runs over the topics (cycled), ns per check; -1 when an
 * answer was not ALLOW. */
static double time_reads(struct acl_client *c, char **topics, size_t ntopics,
                         long iterations)
{
	double best = -1;
	size_t next = 0;
	int r;

	for (r = 0; r < REPEATS; r++) {
		int64_t t0 = mono_ns();
		long i;

		for (i = 0; i < iterations; i++) {
			if (acl_check(c, MOSQ_ACL_READ, topics[next]) !=
			    ACL_ALLOW)
				return -1;
			if (++next == ntopics)
				next = 0;
		}
		double ns = (double)(mono_ns() - t0) / (double)iterations;
		if (best < 0 || ns < best)
			best = ns;
	}
	return best;
}

/* Best of REPEATS runs of compiling the client, microseconds each. */
static double time_compile(const struct fg_registry *reg,
                           const struct acl_config *cfg,
                           const struct acl_identity *id, long iterations)
{
	double best = -1;
	int r;

	for (r = 0; r < REPEATS; r++) {
		int64_t t0 = mono_ns();
		long i;

		for (i = 0; i < iterations; i++) {
			struct acl_client *c = acl_client_new(NULL, 0, reg, cfg, id);

			if (c == NULL)
				return -1;
			sink += (unsigned long)(acl_client_problem(c) != NULL);
			acl_client_free(c);
		}
		double us = (double)(mono_ns() - t0) / (double)iterations / 1e3;
		if (best < 0 || us < best)
			best = us;
	}
	return best;
}

/* Times one rule count and prints its line; 0 on success. */
static int bench_rules(int nrules, char **warm, char **cold, long iterations)
{
	const struct acl_config cfg = {true, 1, CACHE_SIZE};
	const struct acl_identity id = {"dash-001", "dash-001", false};
	struct fg_registry *reg = make_registry(nrules);
	struct acl_client *c = NULL;
	double memo_ns, warm_ns, cold_ns, compile_us;
	int result = -1;

	if (reg == NULL) {
		fprintf(stderr, "fg_aclbench: no registry of %d rules\n",
		        nrules);
		return -1;
	}
	c = acl_client_new(NULL, 0, reg, &cfg, &id);
	if (c == NULL || acl_client_problem(c) != NULL) {
		fprintf(stderr, "fg_aclbench: the client has no rules: %s\n",
		        c ? acl_client_problem(c) : "out of memory");
		goto out;
	}
	memo_ns = time_reads(c, warm, 1, iterations);
	warm_ns = time_reads(c, warm, 2, iterations);
	cold_ns = time_reads(c, cold, COLD_TOPICS, iterations / 4);
	compile_us = time_compile(reg, &cfg, &id, iterations / 2000);
	if (memo_ns < 0 || warm_ns < 0 || cold_ns < 0 || compile_us < 0) {
		fprintf(stderr, "fg_aclbench: unexpected answer, %d rules\n",
		        nrules);
		goto out;
	}
	printf("rules=%d read_memo_ns=%.0f read_warm_ns=%.0f "
	       "read_cold_ns=%.0f client_compile_us=%.1f cache_size=%d "
	       "iterations=%ld\n",
	       nrules, memo_ns, warm_ns, cold_ns, compile_us, CACHE_SIZE,
	       iterations);
	result = 0;
out:
	acl_client_free(c);
	fg_registry_free(reg);
	return result;
}

int main(int argc, char **argv)
{
	static const int sizes[] = {1000, 10000};
	char *warm[2] = {NULL, NULL}, **cold = NULL;
	long iterations = 2000000;
	int result = 1;
	size_t i, s;

	if (argc > 2) {
		fprintf(stderr, "usage: fg_aclbench [ITERATIONS]\n");
		return 1;
	}
	if (argc == 2)
		iterations = strtol(argv[1], NULL, 10);
	if (iterations < 10000)
		iterations = 10000;
	warm[0] = strdup(TOPIC);
	warm[1] = strdup(TOPIC);
	cold = calloc(COLD_TOPICS, sizeof(*cold));
	if (warm[0] == NULL || warm[1] == NULL || cold == NULL)
		goto oom;
	for (i = 0; i < COLD_TOPICS; i++) {
		char t[64];

		snprintf(t, sizeof(t), "water/north/dev-%06zu/readings", i);
		cold[i] = strdup(t);
		if (cold[i] == NULL)
			goto oom;
	}
	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
		if (bench_rules(sizes[s], warm, cold, iterations) != 0)
			goto out;
	result = 0;
	goto out;
oom:
	fprintf(stderr, "fg_aclbench: out of memory\n");
out:
	for (i = 0; cold != NULL && i < COLD_TOPICS; i++)
		free(cold[i]);
	free(cold);
	free(warm[0]);
	free(warm[1]);
	return result;
}
