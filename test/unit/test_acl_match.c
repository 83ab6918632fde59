/*
 * Unit tests: topic matching, filter containment and shared-subscription
 * stripping of the acl plugin, as tables, and as differential tests
 * against libmosquitto's own matcher on many generated topics.
 */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>

#include "acl.h"
#include "unit_run.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* Topic matching ----------------------------------------------------- */

struct match_case {
	const char *pattern, *topic;
	bool want;
};

static const struct match_case match_cases[] = {
    /* literals */
    {"a", "a", true},
    {"a", "b", false},
    {"a", "a/b", false},
    {"a/b", "a", false},
    {"a/b", "a/b", true},
    {"ab", "a", false},
    {"a", "ab", false},
    {"a/b", "a/bc", false},
    {"a/bc", "a/b", false},
    {"A", "a", false},
    /* '+' */
    {"+", "a", true},
    {"+", "a/b", false},
    {"+/+", "a/b", true},
    {"+/b", "a/b", true},
    {"+/b", "a/c", false},
    {"a/+/c", "a/b/c", true},
    {"a/+/c", "a/c", false},
    {"a/+", "a", false},
    {"a/+", "a/b/c", false},
    {"+", "a$b", true},
    /* empty levels */
    {"a/+", "a/", true},
    {"a/+/b", "a//b", true},
    {"a//b", "a//b", true},
    {"a//b", "a/b", false},
    {"a/b", "a//b", false},
    {"+/a", "/a", true},
    {"/a", "/a", true},
    {"a", "/a", false},
    {"/+", "/a", true},
    {"+", "/a", false},
    {"+/+", "/", true},
    {"+", "/", false},
    {"/", "/", true},
    {"a/", "a/", true},
    {"a/", "a", false},
    {"a", "a/", false},
    {"//", "//", true},
    {"+/+/+", "//", true},
    {"a//#", "a/", true},
    /* '#' */
    {"#", "a", true},
    {"#", "a/b/c", true},
    {"#", "/", true},
    {"#", "/a", true},
    {"#", "a/", true},
    {"#", "a$", true},
    {"a/#", "a/b", true},
    {"a/#", "a/b/c", true},
    {"a/#", "a/", true},
    {"a/#", "b", false},
    {"a/#", "ab", false},
    {"a/#", "ab/c", false},
    {"/#", "/", true},
    {"/#", "a", false},
    {"/#", "/a/b", true},
    {"+/#", "a/b/c", true},
    {"+/#", "/", true},
    {"+/+/#", "a/b", true},
    /* parent level: "a/#" also matches "a" */
    {"a/#", "a", true},
    {"a/b/#", "a/b", true},
    {"a/b/#", "a", false},
    {"+/#", "a", true},
    {"+/+/#", "a", false},
    {"a/+/#", "a", false},
    /* '$' topics: first-level wildcards never match them */
    {"#", "$SYS", false},
    {"#", "$SYS/broker/uptime", false},
    {"+/#", "$SYS", false},
    {"+/#", "$SYS/broker", false},
    {"+", "$SYS", false},
    {"+/broker/#", "$SYS/broker/x", false},
    {"#", "$", false},
    {"+", "$", false},
    {"#", "$share/g/a", false},
    {"#", "$CONTROL/dynamic-security/v1", false},
    {"$SYS/#", "$SYS", true},
    {"$SYS/#", "$SYS/broker/uptime", true},
    {"$SYS/+", "$SYS/broker", true},
    {"$SYS/+/uptime", "$SYS/broker/uptime", true},
    {"$SYS", "$SYS", true},
    {"$SYS/#", "$SYSX/a", false},
    {"$SYS/#", "$sys/a", false},
    {"$share/g/#", "$share/g/a", true},
    {"$CONTROL/#", "$CONTROL/x", true},
    /* '$' below the first level is an ordinary character */
    {"a/+", "a/$SYS", true},
    {"a/#", "a/$SYS/x", true},
    {"+/$SYS", "x/$SYS", true},
    {"+/+", "a/$", true},
    /* the forms rules take */
    {"water/+/+/readings", "water/north/n1/readings", true},
    {"water/+/+/readings", "water/north/n1/readings/x", false},
    {"water/north/#", "water/north", true},
    {"water/north/#", "water/northern/x", false},
    /* longer topics */
    {"a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t",
     "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t", true},
    {"a/+/c/+/e/+/g/+/i/+/k/+/m/+/o/+/q/+/s/+",
     "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t", true},
    {"a/+/c/+/e/+/g/+/i/+/k/+/m/+/o/+/q/+/s/#",
     "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s", true},
    {"a/+/c/+/e/+/g/+/i/+/k/+/m/+/o/+/q/+/s/+",
     "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u", false},
    {"a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t",
     "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/u", false},
};

START_TEST(match_table)
{
	const struct match_case *c = &match_cases[_i];

	ck_assert_msg(acl_topic_matches(c->pattern, c->topic) == c->want,
	              "pattern \"%s\" topic \"%s\": want %s", c->pattern,
	              c->topic, c->want ? "match" : "no match");
}
END_TEST

/* The table itself is checked against libmosquitto, so that a wrong
 * expectation cannot hide behind a matching implementation. */
START_TEST(the_match_table_agrees_with_libmosquitto)
{
	size_t i;

	for (i = 0; i < N_OF(match_cases); i++) {
		bool r = !match_cases[i].want;

		ck_assert_int_eq(
		    mosquitto_topic_matches_sub(match_cases[i].pattern,
		                                match_cases[i].topic, &r),
		    MOSQ_ERR_SUCCESS);
		ck_assert_msg(r == match_cases[i].want,
		              "table row %zu (\"%s\" vs \"%s\") disagrees with "
		              "libmosquitto",
		              i, match_cases[i].pattern, match_cases[i].topic);
	}
}
END_TEST

/* A string of n levels, each lvl, joined by '/', with tail appended. */
static char *repeat_levels(size_t n, const char *lvl, const char *tail)
{
	size_t ll = strlen(lvl), tl = strlen(tail), i, o = 0;
	char *s = malloc(n * (ll + 1) + tl + 1);

	ck_assert_ptr_nonnull(s);
	for (i = 0; i < n; i++) {
		if (i > 0)
			s[o++] = '/';
		memcpy(s + o, lvl, ll);
		o += ll;
	}
	memcpy(s + o, tail, tl + 1);
	return s;
}

static void assert_long(const char *pattern, const char *topic, bool want,
                        const char *what)
{
	bool r = !want;

	ck_assert_msg(acl_topic_matches(pattern, topic) == want, "%s", what);
	if (mosquitto_topic_matches_sub(pattern, topic, &r) == MOSQ_ERR_SUCCESS)
		ck_assert_msg(r == want, "%s: libmosquitto disagrees", what);
}

START_TEST(long_topics_match_level_by_level)
{
	/* 10,000 levels: about 20 kB, well inside MQTT's 65,535 bytes. */
	char *topic = repeat_levels(10000, "a", "");
	char *plus = repeat_levels(10000, "+", "");
	char *plus_short = repeat_levels(9999, "+", "");
	char *plus_long = repeat_levels(10001, "+", "");
	char *prefix_hash = repeat_levels(9999, "a", "/#");
	char *parent_hash = repeat_levels(10000, "a", "/#");
	char *other = repeat_levels(10000, "a", "");
	char *level = malloc(60001), *level2;

	ck_assert_ptr_nonnull(level);
	other[strlen(other) - 1] = 'b';
	assert_long("#", topic, true, "# vs 10,000 levels");
	assert_long(topic, topic, true, "10,000 levels vs themselves");
	assert_long(other, topic, false, "10,000 levels, the last differs");
	assert_long(plus, topic, true, "10,000 x + vs 10,000 levels");
	assert_long(plus_short, topic, false, "9,999 x + vs 10,000 levels");
	assert_long(plus_long, topic, false, "10,001 x + vs 10,000 levels");
	assert_long(prefix_hash, topic, true, "9,999 levels + # vs 10,000");
	assert_long(parent_hash, topic, true, "10,000 levels + # (parent)");
	memset(level, 'x', 60000);
	level[60000] = '\0';
	level2 = strdup(level);
	ck_assert_ptr_nonnull(level2);
	level2[59999] = 'y';
	assert_long("+", level, true, "+ vs one level of 60,000 bytes");
	assert_long("#", level, true, "# vs one level of 60,000 bytes");
	assert_long(level, level, true, "60,000-byte level vs itself");
	assert_long(level2, level, false, "60,000-byte levels, last differs");
	ck_assert(acl_filter_within(plus, "#"));
	ck_assert(acl_filter_within(plus, plus));
	ck_assert(acl_filter_within(topic, prefix_hash));
	ck_assert(!acl_filter_within(plus, topic));
	ck_assert(acl_filter_within(parent_hash, prefix_hash));
	ck_assert(!acl_filter_within(prefix_hash, parent_hash));
	free(topic);
	free(plus);
	free(plus_short);
	free(plus_long);
	free(prefix_hash);
	free(parent_hash);
	free(other);
	free(level);
	free(level2);
}
END_TEST

/* Generated topics --------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* splitmix64: small, fast, and the same sequence everywhere. */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned pick(unsigned n)
{
	return (unsigned)(rng() % n);
}

static void seed_rng(const char *test)
{
	const char *env = getenv("FG_ACL_SEED");
	uint64_t seed = 20240603;

	if (env != NULL)
		seed = strtoull(env, NULL, 0);
	rng_state = seed;
	printf("%s: seed %" PRIu64 " (set FG_ACL_SEED to repeat another)\n",
	       test, seed);
}

static const char *const concrete_levels[] = {"a", "b", "", "$SYS"};
static const char *const pattern_levels[] = {"a", "b", "", "$SYS", "+", "#"};

static void append(char *buf, size_t len, const char *lvl, bool first)
{
	size_t o = strlen(buf), l = strlen(lvl);

	ck_assert(o + l + 2 <= len);
	if (!first)
		buf[o++] = '/';
	memcpy(buf + o, lvl, l + 1);
}

/* A topic of 1 to 6 levels; may be "" (one empty level), which is no
 * valid topic: the callers skip what libmosquitto refuses. */
static void gen_topic(char *buf, size_t len)
{
	unsigned n = 1 + pick(6), i;

	buf[0] = '\0';
	for (i = 0; i < n; i++)
		append(buf, len, concrete_levels[pick(N_OF(concrete_levels))],
		       i == 0);
}

/* A valid filter of 1 to 6 levels: '#' only as the last one. */
static void gen_filter(char *buf, size_t len)
{
	unsigned n = 1 + pick(6), i;

	buf[0] = '\0';
	for (i = 0; i < n; i++) {
		const char *lvl = pattern_levels[pick(N_OF(pattern_levels))];

		append(buf, len, lvl, i == 0);
		if (strcmp(lvl, "#") == 0)
			break;
	}
}

START_TEST(matching_agrees_with_libmosquitto_on_generated_topics)
{
	enum { ROUNDS = 150000 };
	char p[128], t[128];
	long compared = 0, skipped = 0, matched = 0, wrong = 0;

	seed_rng("topic matching");
	for (int i = 0; i < ROUNDS; i++) {
		bool want = false, got;

		gen_filter(p, sizeof(p));
		gen_topic(t, sizeof(t));
		if (mosquitto_topic_matches_sub(p, t, &want) !=
		    MOSQ_ERR_SUCCESS) {
			skipped++;
			continue;
		}
		compared++;
		matched += want;
		got = acl_topic_matches(p, t);
		if (got != want && wrong++ < 10)
			printf("  mismatch: pattern \"%s\" topic \"%s\": "
			       "acl %d, libmosquitto %d\n",
			       p, t, got, want);
	}
	printf("topic matching: %ld pairs compared (%ld match), %ld with an "
	       "invalid topic skipped, %ld disagree\n",
	       compared, matched, skipped, wrong);
	ck_assert_int_ge(compared, 100000);
	ck_assert_msg(wrong == 0, "%ld of %ld generated pairs disagree", wrong,
	              compared);
}
END_TEST

/* Filter containment ------------------------------------------------- */

struct within_case {
	const char *filter, *pattern;
	bool want;
};

static const struct within_case within_cases[] = {
    {"a/+", "a/#", true},
    {"a/#", "a/+", false},
    {"#", "#", true},
    {"+/b", "a/b", false},
    {"a", "a/#", true},
    {"$SYS/#", "#", false},
    {"$SYS/x", "#", false},
    {"$SYS/x", "+/x", false},
    {"$SYS/x", "$SYS/#", true},
    {"$SYS/#", "$SYS/#", true},
    {"$SYS", "$SYS/#", true},
    {"$SYS/#", "$SYS/+", false},
    {"$SYS/a", "$SYS/+", true},
    {"$SYS/a", "+/a", false},
    {"$foo/#", "$SYS/#", false},
    {"+", "$SYS/#", false},
    {"a/b", "a/b", true},
    {"a/b", "a/c", false},
    {"a/b", "+/b", true},
    {"a/b", "+/+", true},
    {"a/b", "+", false},
    {"a/b", "a/b/#", true},
    {"a/b/#", "a/b", false},
    {"a/b/c", "a/#", true},
    {"a/#", "a/#", true},
    {"a/#", "#", true},
    {"#", "a/#", false},
    {"#", "+", false},
    {"+", "#", true},
    {"+", "+", true},
    {"+", "a", false},
    {"a", "+", true},
    {"a", "#", true},
    {"a", "a/+", false},
    {"+/+", "+/#", true},
    {"+/#", "+/+", false},
    {"+/#", "+/#", true},
    {"+/#", "#", true},
    {"a/+/c", "a/#", true},
    {"a/+/c", "a/+/+", true},
    {"a/+/c", "a/b/c", false},
    {"a/#", "a/+/#", false},
    {"a/+/#", "a/#", true},
    {"a/b/#", "a/+/#", true},
    {"a/+", "a/b", false},
    {"a/", "a/+", true},
    {"a//b", "a/+/b", true},
    {"a/+/b", "a//b", false},
    {"/a", "+/a", true},
    {"/a", "#", true},
    {"+/a", "/a", false},
    {"/#", "#", true},
    {"#", "/#", false},
    {"a/$SYS", "a/+", true},
    {"+/+/readings", "+/#", true},
    {"water/+/+/readings", "water/north/#", false},
    {"water/north/+/readings", "water/+/+/readings", true},
    {"water/north/+/readings", "water/north/+/+", true},
    {"water/north/#", "water/north/+/#", false},
    {"water/north", "water/north/#", true},
    {"a/b/c/d/e/f/g/h", "a/+/c/+/e/+/g/#", true},
    {"a/b/c/d/e/f/g/h", "a/+/c/+/e/+/g", false},
    {"a/+/c/+/e/+/g/#", "a/+/c/+/e/+/g/#", true},
    {"a/+/c/+/e/+/g/#", "a/+/c/+/e/+/g/+", false},
};

START_TEST(within_table)
{
	const struct within_case *c = &within_cases[_i];

	ck_assert_msg(acl_filter_within(c->filter, c->pattern) == c->want,
	              "filter \"%s\" within pattern \"%s\": want %s", c->filter,
	              c->pattern, c->want ? "yes" : "no");
}
END_TEST

static const char *const instance_levels[] = {"a", "b", "", "$SYS", "c"};

/* A concrete topic the filter f may match: '+' becomes one level, '#'
 * zero to three (never leaving the topic empty). */
static void instantiate(const char *f, char *buf, size_t len)
{
	char tmp[128];
	char *save = NULL, *lvl;
	bool first = true;

	snprintf(tmp, sizeof(tmp), "%s", f);
	buf[0] = '\0';
	/* Empty levels matter, so split by hand rather than with strtok. */
	for (lvl = tmp; lvl != NULL; lvl = save) {
		save = strchr(lvl, '/');
		if (save != NULL)
			*save++ = '\0';
		if (strcmp(lvl, "+") == 0) {
			append(buf, len,
			       instance_levels[pick(N_OF(instance_levels))],
			       first);
		} else if (strcmp(lvl, "#") == 0) {
			unsigned n = pick(4), i;

			if (first && n == 0)
				n = 1;
			for (i = 0; i < n; i++) {
				append(buf, len,
				       instance_levels[pick(
				           N_OF(instance_levels))],
				       first);
				first = false;
			}
			break;
		} else {
			append(buf, len, lvl, first);
		}
		first = false;
	}
}

/* A pattern derived from f by widening some levels, or a random one. */
static void gen_pattern_near(const char *f, char *buf, size_t len)
{
	char tmp[128];
	char *save = NULL, *lvl;
	bool first = true;

	if (pick(3) == 0) {
		gen_filter(buf, len);
		return;
	}
	snprintf(tmp, sizeof(tmp), "%s", f);
	buf[0] = '\0';
	for (lvl = tmp; lvl != NULL; lvl = save) {
		unsigned r = pick(8);

		save = strchr(lvl, '/');
		if (save != NULL)
			*save++ = '\0';
		if (r == 0) {
			append(buf, len, "#", first);
			return;
		}
		append(buf, len,
		       r == 1   ? "+"
		       : r == 2 ? concrete_levels[pick(N_OF(concrete_levels))]
		                : lvl,
		       first);
		first = false;
		if (strcmp(lvl, "#") == 0)
			return;
	}
	if (pick(4) == 0)
		append(buf, len, "#", false);
}

static bool mosq_match(const char *sub, const char *topic)
{
	bool r = false;

	return mosquitto_topic_matches_sub(sub, topic, &r) ==
	           MOSQ_ERR_SUCCESS &&
	       r;
}

/* Whether the pair f, p is among the n already shown. */
static bool seen(char (*shown)[260], int n, const char *f, const char *p)
{
	char key[260];

	snprintf(key, sizeof(key), "%s\t%s", f, p);
	for (int i = 0; i < n; i++)
		if (strcmp(shown[i], key) == 0)
			return true;
	return false;
}

/*
 * When acl_filter_within(F, P) says yes, no topic F matches may escape
 * P (asserted). When it says no, a topic F matches and P does not
 * should exist; how often none was found is printed, not asserted,
 * since the function may be conservative.
 */
START_TEST(containment_never_lets_a_topic_escape_the_pattern)
{
	enum { PAIRS = 20000, TRIES = 64 };
	char f[128], p[128], t[128];
	long yes = 0, no = 0, no_witness = 0, escapes = 0;
	char shown[8][260];
	int examples = 0;

	seed_rng("filter containment");
	for (int i = 0; i < PAIRS; i++) {
		bool within, witness = false;

		gen_filter(f, sizeof(f));
		gen_pattern_near(f, p, sizeof(p));
		if (f[0] == '\0' || p[0] == '\0')
			continue;
		within = acl_filter_within(f, p);
		if (within)
			yes++;
		else
			no++;
		for (int k = 0; k < TRIES; k++) {
			if (k % 2 == 0)
				instantiate(f, t, sizeof(t));
			else
				gen_topic(t, sizeof(t));
			if (!mosq_match(f, t) || mosq_match(p, t))
				continue;
			witness = true;
			if (within && escapes++ < 10)
				printf("  escape: \"%s\" within \"%s\", yet "
				       "topic \"%s\" matches only the "
				       "filter\n",
				       f, p, t);
			break;
		}
		if (!within && !witness) {
			no_witness++;
			if (examples < 8 && !seen(shown, examples, f, p)) {
				snprintf(shown[examples++], sizeof(shown[0]),
				         "%s\t%s", f, p);
				printf("  no counterexample found for \"%s\" "
				       "not within \"%s\"\n",
				       f, p);
			}
		}
	}
	printf("filter containment: %ld pairs within, %ld not; for %ld "
	       "(%.2f%%) of the latter no escaping topic was found in %d "
	       "tries\n",
	       yes, no, no_witness,
	       no ? 100.0 * (double)no_witness / (double)no : 0.0, TRIES);
	ck_assert_int_ge(yes, 1000);
	ck_assert_msg(escapes == 0,
	              "%ld filters judged within a pattern match topics "
	              "outside it",
	              escapes);
}
END_TEST

/* On a concrete filter, containment is plain matching. */
START_TEST(containment_of_a_topic_is_matching)
{
	char p[128], t[128];
	long wrong = 0, n = 0;

	seed_rng("containment of topics");
	for (int i = 0; i < 100000; i++) {
		bool want = false;

		gen_filter(p, sizeof(p));
		gen_topic(t, sizeof(t));
		if (mosquitto_topic_matches_sub(p, t, &want) !=
		    MOSQ_ERR_SUCCESS)
			continue;
		n++;
		if (acl_filter_within(t, p) != want && wrong++ < 10)
			printf("  topic \"%s\" within \"%s\": want %d\n", t, p,
			       want);
	}
	ck_assert_int_ge(n, 50000);
	ck_assert_msg(wrong == 0, "%ld of %ld topics judged wrongly", wrong, n);
}
END_TEST

/* Shared subscriptions ----------------------------------------------- */

struct share_case {
	const char *filter;
	const char *want; /* NULL: malformed */
};

static const struct share_case share_cases[] = {
    {"$share/g/a/b", "a/b"},
    {"$share/g/#", "#"},
    {"$share/g/+/x", "+/x"},
    {"$share/g/$SYS/#", "$SYS/#"},
    {"$share/grp-1/water/north/#", "water/north/#"},
    {"$share/g/a//", "a//"},
    {"$share/g//", "/"},
    {"$share/$share/g/a", "g/a"},
    {"a/b", "a/b"},
    {"#", "#"},
    {"$SYS/#", "$SYS/#"},
    {"$sharex/g/a", "$sharex/g/a"},
    {"$SHARE/g/a", "$SHARE/g/a"},
    {"x/$share/g/a", "x/$share/g/a"},
    {"$share/g", NULL},
    {"$share/", NULL},
    {"$share//a", NULL},
    {"$share/g/", NULL},
    {"$share/+/a", NULL},
    {"$share/#/a", NULL},
    {"$share/g+/a", NULL},
    {"$share/g#/a", NULL},
};

START_TEST(share_table)
{
	const struct share_case *c = &share_cases[_i];
	const char *got = acl_strip_share(c->filter);

	if (c->want == NULL)
		ck_assert_msg(got == NULL, "\"%s\": got \"%s\", want malformed",
		              c->filter, got);
	else
		ck_assert_msg(got != NULL && strcmp(got, c->want) == 0,
		              "\"%s\": got %s%s%s, want \"%s\"", c->filter,
		              got ? "\"" : "", got ? got : "malformed",
		              got ? "\"" : "", c->want);
}
END_TEST

/* Filter syntax ------------------------------------------------------ */

START_TEST(filter_syntax_agrees_with_libmosquitto)
{
	static const char alphabet[] = "a+#/";
	static const struct {
		const char *s;
		bool want;
	} fixed[] = {
	    {"a/+", true}, {"a+", false},   {"a/#/b", false}, {"#", true},
	    {"", false},   {"a/b#", false}, {"+/+", true},    {"/", true},
	    {"#/", false}, {"+#", false},   {"$SYS/#", true},
	};
	char s[16];
	long n = 0, wrong = 0;
	size_t i;

	for (i = 0; i < N_OF(fixed); i++)
		ck_assert_msg(acl_filter_valid(fixed[i].s) == fixed[i].want,
		              "\"%s\": want %s", fixed[i].s,
		              fixed[i].want ? "valid" : "invalid");
	seed_rng("filter syntax");
	for (int k = 0; k < 100000; k++) {
		unsigned len = 1 + pick(8), j;
		bool want;

		for (j = 0; j < len; j++)
			s[j] = alphabet[pick(4)];
		s[len] = '\0';
		want = mosquitto_sub_topic_check(s) == MOSQ_ERR_SUCCESS;
		n++;
		if (acl_filter_valid(s) != want && wrong++ < 10)
			printf("  \"%s\": libmosquitto says %s\n", s,
			       want ? "valid" : "invalid");
	}
	ck_assert_msg(wrong == 0, "%ld of %ld filters judged wrongly", wrong,
	              n);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("acl_match");
	TCase *tc = tcase_create("core");

	printf("acl match cases: %zu matching, %zu containment, %zu share\n",
	       N_OF(match_cases), N_OF(within_cases), N_OF(share_cases));
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, match_table, 0, (int)N_OF(match_cases));
	tcase_add_test(tc, the_match_table_agrees_with_libmosquitto);
	tcase_add_test(tc, long_topics_match_level_by_level);
	tcase_add_test(tc,
	               matching_agrees_with_libmosquitto_on_generated_topics);
	tcase_add_loop_test(tc, within_table, 0, (int)N_OF(within_cases));
	tcase_add_test(tc, containment_never_lets_a_topic_escape_the_pattern);
	tcase_add_test(tc, containment_of_a_topic_is_matching);
	tcase_add_loop_test(tc, share_table, 0, (int)N_OF(share_cases));
	tcase_add_test(tc, filter_syntax_agrees_with_libmosquitto);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return unit_run(suite());
}
