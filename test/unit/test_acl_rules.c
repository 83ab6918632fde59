/*
 * Unit tests: acl decisions of whole clients, as the table in
 * acl_cases.h of subject, rule set, access, topic and expected answer,
 * plus the options, the cache, a registry replaced under a device, and
 * the denial throttle of the audit trail.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl_cases.h"
#include "unit_run.h"

/* Any well-formed hash: the acl plugin never looks at it. */
static const char HASH[] = "$7$101$SmYvxLSDVDliPOav$gsiV7wzolJE6vz9E2VdRzS";

static const char *const set_names[ACL_SET_COUNT] = {
    [ACL_SET_FLEET] = "fleet",       [ACL_SET_NOISO] = "fleet-no-isolation",
    [ACL_SET_MOVED] = "moved",       [ACL_SET_HOSTILE] = "hostile",
    [ACL_SET_NOREG] = "no-registry",
};

static const char *access_name(int access)
{
	switch (access) {
	case MOSQ_ACL_WRITE:
		return "publish";
	case MOSQ_ACL_READ:
		return "receive";
	case MOSQ_ACL_SUBSCRIBE:
		return "subscribe";
	default:
		return "?";
	}
}

static const char *answer_name(enum acl_answer a)
{
	return a == ACL_ALLOW ? "allow" : a == ACL_DENY ? "deny" : "?";
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void add_rules(struct fg_registry *r,
                      const struct acl_fixture_rule *rules, size_t n,
                      int64_t first_id)
{
	size_t i;

	for (i = 0; i < n; i++)
		ck_assert_int_eq(
		    fg_registry_add_rule(r, first_id + (int64_t)i,
		                         rules[i].kind, rules[i].subject,
		                         rules[i].pattern, rules[i].access,
		                         rules[i].allow, rules[i].priority),
		    0);
}

static void add_accounts(struct fg_registry *r,
                         const struct acl_fixture_account *a, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		ck_assert_int_eq(
		    fg_registry_add_account(r, a[i].username, HASH, a[i].role,
		                            a[i].municipality,
		                            a[i].cross_municipality, false),
		    0);
}

/* The municipality of a fleet device in a set (MOVED moves some). */
static const char *municipality_in(enum acl_case_set set,
                                   const struct acl_fixture_device *d)
{
	size_t i;

	if (set != ACL_SET_MOVED)
		return d->municipality;
	for (i = 0; i < N_OF(acl_moved_devices); i++)
		if (strcmp(acl_moved_devices[i].id, d->id) == 0)
			return acl_moved_devices[i].municipality;
	return d->municipality;
}

/* The registry of a set; NULL for NOREG. */
static struct fg_registry *registry_of(enum acl_case_set set)
{
	struct fg_registry *r;
	char err[256] = "";
	size_t i;

	if (set == ACL_SET_NOREG)
		return NULL;
	r = fg_registry_new();
	ck_assert_ptr_nonnull(r);
	for (i = 0; i < N_OF(acl_fixture_devices); i++)
		ck_assert_int_eq(
		    fg_registry_add_device(
		        r, acl_fixture_devices[i].id,
		        municipality_in(set, &acl_fixture_devices[i]),
		        FG_DEVICE_ACTIVE, false, NULL),
		    0);
	add_accounts(r, acl_fixture_accounts, N_OF(acl_fixture_accounts));
	add_rules(r, acl_fixture_rules, N_OF(acl_fixture_rules), 1);
	if (set == ACL_SET_HOSTILE) {
		for (i = 0; i < N_OF(acl_hostile_devices); i++)
			ck_assert_int_eq(
			    fg_registry_add_device(
			        r, acl_hostile_devices[i].id,
			        acl_hostile_devices[i].municipality,
			        FG_DEVICE_ACTIVE, false, NULL),
			    0);
		add_accounts(r, acl_hostile_accounts,
		             N_OF(acl_hostile_accounts));
		add_rules(r, acl_hostile_rules, N_OF(acl_hostile_rules), 1001);
	}
	ck_assert_msg(fg_registry_finalise(r, err, sizeof(err)) == 0,
	              "finalise: %s", err);
	return r;
}

static struct acl_config config_of(enum acl_case_set set, int cache_size)
{
	struct acl_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.isolation = set != ACL_SET_NOISO;
	cfg.municipality_level = 1;
	cfg.cache_size = cache_size;
	return cfg;
}

static struct acl_identity identity_of(const struct acl_case *c)
{
	struct acl_identity id;

	memset(&id, 0, sizeof(id));
	id.client_id = c->client_id != NULL ? c->client_id : c->subject;
	id.username = c->subject;
	id.is_device = c->is_device;
	return id;
}

static struct acl_client *client_of(const struct fg_registry *reg,
                                    const struct acl_config *cfg,
                                    bool is_device, const char *client_id,
                                    const char *username)
{
	struct acl_identity id;
	struct acl_client *c;

	memset(&id, 0, sizeof(id));
	id.client_id = client_id;
	id.username = username;
	id.is_device = is_device;
	c = acl_client_new(NULL, 0, reg, cfg, &id);
	ck_assert_ptr_nonnull(c);
	return c;
}

/* Subjects are printed bounded and with bytes outside ASCII escaped. */
static const char *printable(const char *s, char *buf, size_t len)
{
	size_t o = 0;

	for (; *s != '\0' && o + 5 < len; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch >= 0x20 && ch < 0x7f)
			buf[o++] = (char)ch;
		else
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", ch);
	}
	buf[o] = '\0';
	return buf;
}

static void explain(const struct acl_case *c, enum acl_answer got, char *out,
                    size_t len)
{
	char subj[96], cid[96];

	snprintf(out, len,
	         "%s [set %s, %s %s client %s, %s %.160s]: got %s, want %s",
	         c->desc, set_names[c->set],
	         c->is_device ? "device" : "account",
	         printable(c->subject, subj, sizeof(subj)),
	         printable(c->client_id != NULL ? c->client_id : c->subject,
	                   cid, sizeof(cid)),
	         access_name(c->access), c->topic, answer_name(got),
	         answer_name(c->want));
}

START_TEST(decision_table)
{
	const struct acl_case *c = &acl_cases[_i];
	struct fg_registry *reg = registry_of(c->set);
	struct acl_config cfg = config_of(c->set, 1024);
	struct acl_identity id = identity_of(c);
	struct acl_client *client = acl_client_new(NULL, 0, reg, &cfg, &id);
	enum acl_answer got, again;
	char why[1024];

	ck_assert_ptr_nonnull(client);
	got = acl_check(client, c->access, c->topic);
	explain(c, got, why, sizeof(why));
	ck_assert_msg(got == c->want, "%s", why);
	/* The second answer may come from the cache; it must not differ. */
	again = acl_check(client, c->access, c->topic);
	explain(c, again, why, sizeof(why));
	ck_assert_msg(again == c->want, "%s (asked a second time)", why);
	acl_client_free(client);
	fg_registry_free(reg);
}
END_TEST

static bool same_subject(const struct acl_case *a, const struct acl_case *b)
{
	const char *ca = a->client_id != NULL ? a->client_id : a->subject;
	const char *cb = b->client_id != NULL ? b->client_id : b->subject;

	return a->is_device == b->is_device &&
	       strcmp(a->subject, b->subject) == 0 && strcmp(ca, cb) == 0;
}

/*
 * One client per subject asks all of its cases, over and over in both
 * directions, through a cache of 16 entries (the smallest the plugin
 * option allows): evictions and hits must never change an answer. With
 * shared, the clients are compiled through one acl_set, as the plugin
 * does, so that those whose rules compile alike share rules and cache.
 */
static void tiny_cache_run(enum acl_case_set set, bool shared)
{
	struct acl_set *sets = shared ? acl_set_new() : NULL;
	struct fg_registry *reg = registry_of(set);
	struct acl_config cfg = config_of(set, 16);
	struct acl_client *clients[ACL_CASE_COUNT];
	size_t i, j, asked = 0;
	int pass, failed = 0;
	char first[1024] = "";

	memset(clients, 0, sizeof(clients));
	for (i = 0; i < ACL_CASE_COUNT; i++) {
		struct acl_identity id = identity_of(&acl_cases[i]);

		if (acl_cases[i].set != set)
			continue;
		for (j = 0; j < i; j++)
			if (clients[j] != NULL &&
			    same_subject(&acl_cases[i], &acl_cases[j]))
				break;
		if (j == i) {
			clients[i] = acl_client_new(sets, 7, reg, &cfg, &id);
			ck_assert_ptr_nonnull(clients[i]);
		}
	}
	for (pass = 0; pass < 6; pass++) {
		for (j = 0; j < ACL_CASE_COUNT; j++) {
			size_t k = pass % 2 ? ACL_CASE_COUNT - 1 - j : j, owner;
			const struct acl_case *c = &acl_cases[k];
			enum acl_answer got;

			if (c->set != set)
				continue;
			for (owner = 0; owner <= k; owner++)
				if (clients[owner] != NULL &&
				    same_subject(c, &acl_cases[owner]))
					break;
			got = acl_check(clients[owner], c->access, c->topic);
			asked++;
			if (got != c->want && failed++ == 0)
				explain(c, got, first, sizeof(first));
		}
	}
	for (i = 0; i < ACL_CASE_COUNT; i++)
		if (clients[i] != NULL)
			acl_client_free(clients[i]);
	fg_registry_free(reg);
	ck_assert_msg(failed == 0, "%d of %zu answers wrong%s; first: %s",
	              failed, asked, shared ? " with shared rule sets" : "",
	              first);
	ck_assert_uint_eq(acl_set_count(sets), 0);
	acl_set_free(sets);
}

START_TEST(answers_do_not_change_through_a_tiny_cache)
{
	tiny_cache_run((enum acl_case_set)_i, false);
}
END_TEST

START_TEST(answers_do_not_change_with_shared_rule_sets)
{
	tiny_cache_run((enum acl_case_set)_i, true);
}
END_TEST

/* Dashboards of one role: north's two share, south's differs by its
 * municipality, and a rule naming %u keeps each account to itself. */
static struct fg_registry *dashboards(bool per_user_rule)
{
	struct fg_registry *r = fg_registry_new();
	char err[256] = "";

	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(fg_registry_add_account(r, "d1", HASH, "dashboard",
	                                         "north", false, false),
	                 0);
	ck_assert_int_eq(fg_registry_add_account(r, "d2", HASH, "dashboard",
	                                         "north", false, false),
	                 0);
	ck_assert_int_eq(fg_registry_add_account(r, "d3", HASH, "dashboard",
	                                         "south", false, false),
	                 0);
	ck_assert_int_eq(fg_registry_add_rule(r, 1, FG_RULE_ROLE, "dashboard",
	                                      "water/%m/#", FG_RULE_RECEIVE,
	                                      true, 0),
	                 0);
	ck_assert_int_eq(fg_registry_add_rule(r, 2, FG_RULE_ROLE, "dashboard",
	                                      "water/%m/+/config",
	                                      FG_RULE_RECEIVE, false, 10),
	                 0);
	if (per_user_rule)
		ck_assert_int_eq(fg_registry_add_rule(
		                     r, 3, FG_RULE_ROLE, "dashboard",
		                     "inbox/%m/%u/#", FG_RULE_RECEIVE, true, 0),
		                 0);
	ck_assert_msg(fg_registry_finalise(r, err, sizeof(err)) == 0,
	              "finalise: %s", err);
	return r;
}

static struct acl_client *shared_client(struct acl_set *sets, uint64_t gen,
                                        const struct fg_registry *reg,
                                        const char *user)
{
	struct acl_config cfg = config_of(ACL_SET_FLEET, 64);
	struct acl_identity id = {user, user, false};
	struct acl_client *c = acl_client_new(sets, gen, reg, &cfg, &id);

	ck_assert_ptr_nonnull(c);
	return c;
}

START_TEST(clients_whose_rules_compile_alike_share_them)
{
	struct acl_set *sets = acl_set_new();
	struct fg_registry *reg = dashboards(false);
	struct acl_client *d1 = shared_client(sets, 1, reg, "d1");
	struct acl_client *d2 = shared_client(sets, 1, reg, "d2");
	struct acl_client *d3 = shared_client(sets, 1, reg, "d3");
	struct acl_client *d1_next = shared_client(sets, 2, reg, "d1");
	uint64_t count;

	ck_assert(acl_client_shares(d1, d2));
	ck_assert(!acl_client_shares(d1, d3));      /* another municipality */
	ck_assert(!acl_client_shares(d1, d1_next)); /* another generation */
	ck_assert_uint_eq(acl_set_count(sets), 3);
	/* Answers through the shared cache are each client's own. */
	ck_assert_int_eq(acl_check(d1, MOSQ_ACL_READ, "water/north/p/readings"),
	                 ACL_ALLOW);
	ck_assert_int_eq(acl_check(d2, MOSQ_ACL_READ, "water/north/p/readings"),
	                 ACL_ALLOW);
	ck_assert_int_eq(acl_check(d3, MOSQ_ACL_READ, "water/north/p/readings"),
	                 ACL_DENY);
	ck_assert_int_eq(acl_check(d2, MOSQ_ACL_READ, "water/north/p/config"),
	                 ACL_DENY);
	/* Denials are throttled per client, shared rules or not. */
	ck_assert(acl_note_denial(d1, MOSQ_ACL_READ, "water/north/p/config",
	                          1000, &count));
	ck_assert(!acl_note_denial(d1, MOSQ_ACL_READ, "water/north/p/config",
	                           2000, &count));
	ck_assert(acl_note_denial(d2, MOSQ_ACL_READ, "water/north/p/config",
	                          2000, &count));
	/* The shared set outlives the first of its clients. */
	acl_client_free(d1);
	ck_assert_uint_eq(acl_set_count(sets), 3);
	ck_assert_int_eq(acl_check(d2, MOSQ_ACL_READ, "water/north/q/readings"),
	                 ACL_ALLOW);
	acl_client_free(d2);
	ck_assert_uint_eq(acl_set_count(sets), 2);
	/* A set freed before its clients leaves them working. */
	acl_set_free(sets);
	ck_assert_int_eq(acl_check(d3, MOSQ_ACL_READ, "water/south/p/readings"),
	                 ACL_ALLOW);
	acl_client_free(d3);
	acl_client_free(d1_next);
	fg_registry_free(reg);
}
END_TEST

START_TEST(a_rule_naming_the_user_keeps_rules_apart)
{
	struct acl_set *sets = acl_set_new();
	struct fg_registry *reg = dashboards(true);
	struct acl_client *d1 = shared_client(sets, 1, reg, "d1");
	struct acl_client *d2 = shared_client(sets, 1, reg, "d2");

	ck_assert(!acl_client_shares(d1, d2));
	ck_assert_int_eq(acl_check(d1, MOSQ_ACL_READ, "inbox/north/d1/x"),
	                 ACL_ALLOW);
	ck_assert_int_eq(acl_check(d2, MOSQ_ACL_READ, "inbox/north/d1/x"),
	                 ACL_DENY);
	acl_client_free(d1);
	acl_client_free(d2);
	ck_assert_uint_eq(acl_set_count(sets), 0);
	acl_set_free(sets);
	fg_registry_free(reg);
}
END_TEST

/* The cache remembers the last topic pointer; a buffer used again for
 * another topic, or for another access, must get its own answer. */
START_TEST(a_topic_buffer_used_again_gets_the_new_topics_answer)
{
	struct acl_set *sets = acl_set_new();
	struct fg_registry *reg = dashboards(false);
	struct acl_client *d1 = shared_client(sets, 1, reg, "d1");
	struct acl_client *d2 = shared_client(sets, 1, reg, "d2");
	char buf[64];

	for (int round = 0; round < 3; round++) {
		snprintf(buf, sizeof(buf), "%s", "water/north/p/readings");
		ck_assert_int_eq(acl_check(d1, MOSQ_ACL_READ, buf), ACL_ALLOW);
		ck_assert_int_eq(acl_check(d2, MOSQ_ACL_READ, buf), ACL_ALLOW);
		ck_assert_int_eq(acl_check(d2, MOSQ_ACL_WRITE, buf), ACL_DENY);
		snprintf(buf, sizeof(buf), "%s", "water/north/p/config");
		ck_assert_int_eq(acl_check(d1, MOSQ_ACL_READ, buf), ACL_DENY);
		ck_assert_int_eq(acl_check(d2, MOSQ_ACL_READ, buf), ACL_DENY);
		snprintf(buf, sizeof(buf), "%s", "water/south/p/readings");
		ck_assert_int_eq(acl_check(d2, MOSQ_ACL_READ, buf), ACL_DENY);
	}
	acl_client_free(d1);
	acl_client_free(d2);
	acl_set_free(sets);
	fg_registry_free(reg);
}
END_TEST

/* Many distinct rule sets: the set's table grows and still finds each. */
START_TEST(many_distinct_rule_sets_are_kept_apart)
{
	struct acl_set *sets = acl_set_new();
	struct fg_registry *reg = registry_of(ACL_SET_FLEET);
	struct acl_config cfg = config_of(ACL_SET_FLEET, 16);
	struct acl_client *c[600];
	char id[600][16];
	size_t i;

	/* Devices named by %c each compile to their own rules; the client
	 * id differs, the device (and so every other input) is the same. */
	for (i = 0; i < 600; i++) {
		struct acl_identity ident = {id[i], "n-pump-1", true};

		snprintf(id[i], sizeof(id[i]), "n-pump-1-%zu", i);
		c[i] = acl_client_new(sets, 1, reg, &cfg, &ident);
		ck_assert_ptr_nonnull(c[i]);
	}
	ck_assert_uint_eq(acl_set_count(sets), 600);
	for (i = 0; i < 600; i++) {
		char topic[64];

		snprintf(topic, sizeof(topic), "water/north/%.15s/readings",
		         id[i]);
		ck_assert_int_eq(acl_check(c[i], MOSQ_ACL_WRITE, topic),
		                 ACL_ALLOW);
		snprintf(topic, sizeof(topic), "water/north/%.15s/readings",
		         id[(i + 1) % 600]);
		ck_assert_int_eq(acl_check(c[i], MOSQ_ACL_WRITE, topic),
		                 ACL_DENY);
	}
	for (i = 0; i < 600; i++)
		acl_client_free(c[i]);
	ck_assert_uint_eq(acl_set_count(sets), 0);
	acl_set_free(sets);
	fg_registry_free(reg);
}
END_TEST

START_TEST(a_device_moved_to_another_municipality_gets_new_answers)
{
	struct fg_registry *before = registry_of(ACL_SET_FLEET), *after;
	struct acl_config cfg = config_of(ACL_SET_FLEET, 1024);
	struct acl_client *c = client_of(before, &cfg, true, "mover", "mover");

	ck_assert_int_eq(
	    acl_check(c, MOSQ_ACL_WRITE, "water/north/mover/readings"),
	    ACL_ALLOW);
	ck_assert_int_eq(
	    acl_check(c, MOSQ_ACL_WRITE, "water/south/mover/readings"),
	    ACL_DENY);
	ck_assert_int_eq(
	    acl_check(c, MOSQ_ACL_SUBSCRIBE, "water/north/mover/cmd/#"),
	    ACL_ALLOW);
	/* The runtime replaces the registry as a whole and compiles the
	 * client again; the old client must not leak into the answers. */
	after = registry_of(ACL_SET_MOVED);
	acl_client_free(c);
	fg_registry_free(before);
	c = client_of(after, &cfg, true, "mover", "mover");
	ck_assert_int_eq(
	    acl_check(c, MOSQ_ACL_WRITE, "water/north/mover/readings"),
	    ACL_DENY);
	ck_assert_int_eq(
	    acl_check(c, MOSQ_ACL_WRITE, "water/south/mover/readings"),
	    ACL_ALLOW);
	ck_assert_int_eq(
	    acl_check(c, MOSQ_ACL_SUBSCRIBE, "water/north/mover/cmd/#"),
	    ACL_DENY);
	ck_assert_int_eq(
	    acl_check(c, MOSQ_ACL_SUBSCRIBE, "water/south/mover/cmd/#"),
	    ACL_ALLOW);
	ck_assert_int_eq(
	    acl_check(c, MOSQ_ACL_READ, "water/south/s-pump-1/readings"),
	    ACL_ALLOW);
	acl_client_free(c);
	fg_registry_free(after);
}
END_TEST

static const char *const every_topic[] = {
    "status",
    "#",
    "+",
    "+/#",
    "water/#",
    "water/north/n-pump-1/readings",
    "water/north/n-pump-1/cmd/#",
    "users/north/alice/notes",
    "$SYS/broker/uptime",
    "$SYS/#",
    "$CONTROL/fleetgate/reload",
    "$share/g/#",
};

static void assert_denied_everything(struct acl_client *c, const char *who)
{
	static const int accesses[] = {MOSQ_ACL_WRITE, MOSQ_ACL_READ,
	                               MOSQ_ACL_SUBSCRIBE};
	size_t t, a;

	for (t = 0; t < N_OF(every_topic); t++)
		for (a = 0; a < N_OF(accesses); a++)
			ck_assert_msg(acl_check(c, accesses[a],
			                        every_topic[t]) == ACL_DENY,
			              "%s: %s %s allowed", who,
			              access_name(accesses[a]), every_topic[t]);
}

START_TEST(nothing_is_allowed_without_a_registry)
{
	struct acl_config cfg = config_of(ACL_SET_FLEET, 1024);
	struct acl_client *c;

	c = client_of(NULL, &cfg, true, "n-pump-1", "n-pump-1");
	assert_denied_everything(c, "device without registry");
	ck_assert_ptr_nonnull(acl_client_problem(c));
	acl_client_free(c);
	c = client_of(NULL, &cfg, false, "ops", "ops");
	assert_denied_everything(c, "operator without registry");
	acl_client_free(c);
	cfg.isolation = false;
	c = client_of(NULL, &cfg, false, "kiosk", "kiosk");
	assert_denied_everything(c, "kiosk without registry or isolation");
	acl_client_free(c);
}
END_TEST

/* Identities with '+', '#' or '/' get no rules at all, whatever rule
 * names them, and say why; registered ordinary ones have rules. */
START_TEST(identities_with_wildcards_or_slashes_get_no_rules)
{
	static const struct {
		bool is_device;
		const char *client_id, *username;
	} hostile[] = {
	    {false, "evil+", "evil+"},   {false, "evil#", "evil#"},
	    {false, "evil/x", "evil/x"}, {true, "d+", "d+"},
	    {true, "d#", "d#"},          {true, "d/x", "d/x"},
	    {false, "+", "alice"},       {false, "#", "alice"},
	    {false, "a/b", "alice"},     {false, "alice", "a+"},
	};
	struct fg_registry *reg = registry_of(ACL_SET_HOSTILE);
	struct acl_config cfgs[2] = {config_of(ACL_SET_FLEET, 1024),
	                             config_of(ACL_SET_NOISO, 1024)};
	struct acl_client *c;
	size_t i, k;
	char who[128];

	for (k = 0; k < 2; k++) {
		for (i = 0; i < N_OF(hostile); i++) {
			c = client_of(reg, &cfgs[k], hostile[i].is_device,
			              hostile[i].client_id,
			              hostile[i].username);
			snprintf(who, sizeof(who), "%s %s (client %s)%s",
			         hostile[i].is_device ? "device" : "account",
			         hostile[i].username, hostile[i].client_id,
			         k ? " without isolation" : "");
			assert_denied_everything(c, who);
			ck_assert_msg(acl_client_problem(c) != NULL,
			              "%s: no problem stated", who);
			acl_client_free(c);
		}
	}
	c = client_of(reg, &cfgs[0], true, "n-pump-1", "n-pump-1");
	ck_assert_ptr_null(acl_client_problem(c));
	acl_client_free(c);
	c = client_of(reg, &cfgs[0], false, "alice-1", "alice");
	ck_assert_ptr_null(acl_client_problem(c));
	acl_client_free(c);
	fg_registry_free(reg);
}
END_TEST

struct level_case {
	int level;
	bool is_device;
	const char *subject;
	int access;
	const char *topic;
	enum acl_answer want;
};

/* The level that names the municipality is an option; the backstop
 * follows it, and $-topics stay outside it at every level. */
static const struct level_case level_cases[] = {
    {0, true, "n-pump-1", MOSQ_ACL_WRITE, "water/north/n-pump-1/readings",
     ACL_DENY},
    {1, true, "n-pump-1", MOSQ_ACL_WRITE, "water/north/n-pump-1/readings",
     ACL_ALLOW},
    {2, true, "n-pump-1", MOSQ_ACL_WRITE, "water/north/n-pump-1/readings",
     ACL_DENY},
    {3, true, "n-pump-1", MOSQ_ACL_WRITE, "water/north/n-pump-1/readings",
     ACL_DENY},
    {3, true, "n-pump-1", MOSQ_ACL_WRITE, "water/north/n-pump-1", ACL_ALLOW},
    {4, true, "n-pump-1", MOSQ_ACL_WRITE, "water/north/n-pump-1/readings",
     ACL_ALLOW},
    {0, true, "n-pump-1", MOSQ_ACL_WRITE, "status", ACL_DENY},
    {0, false, "kiosk", MOSQ_ACL_READ, "status", ACL_DENY},
    {1, false, "kiosk", MOSQ_ACL_READ, "status", ACL_ALLOW},
    {2, false, "kiosk", MOSQ_ACL_READ, "news/today", ACL_ALLOW},
    {2, false, "kiosk", MOSQ_ACL_READ, "news/today/x", ACL_DENY},
    {2, false, "dash-n", MOSQ_ACL_SUBSCRIBE, "water/north/#", ACL_DENY},
    {2, false, "dash-n", MOSQ_ACL_SUBSCRIBE, "water/north/+/readings",
     ACL_DENY},
    {2, false, "dash-n", MOSQ_ACL_SUBSCRIBE, "water/north", ACL_ALLOW},
    {0, false, "sysmon", MOSQ_ACL_READ, "$SYS/broker/uptime", ACL_ALLOW},
    {2, false, "sysmon", MOSQ_ACL_SUBSCRIBE, "$SYS/#", ACL_ALLOW},
    {0, false, "ops", MOSQ_ACL_SUBSCRIBE, "#", ACL_ALLOW},
};

START_TEST(the_municipality_level_option_moves_the_backstop)
{
	const struct level_case *lc = &level_cases[_i];
	struct fg_registry *reg = registry_of(ACL_SET_FLEET);
	struct acl_config cfg = config_of(ACL_SET_FLEET, 1024);
	struct acl_client *c;
	enum acl_answer got;

	cfg.municipality_level = lc->level;
	c = client_of(reg, &cfg, lc->is_device, lc->subject, lc->subject);
	got = acl_check(c, lc->access, lc->topic);
	ck_assert_msg(got == lc->want, "level %d, %s %s %s: got %s, want %s",
	              lc->level, lc->subject, access_name(lc->access),
	              lc->topic, answer_name(got), answer_name(lc->want));
	acl_client_free(c);
	fg_registry_free(reg);
}
END_TEST

/* What the plugin does on every check: decide, and on a denial ask
 * whether it is to be audited now. */
static bool deny_and_note(struct acl_client *c, int access, const char *topic,
                          int64_t now_ms, uint64_t *count)
{
	ck_assert_msg(acl_check(c, access, topic) == ACL_DENY, "%s %s allowed",
	              access_name(access), topic);
	return acl_note_denial(c, access, topic, now_ms, count);
}

static const int denied_accesses[] = {MOSQ_ACL_WRITE, MOSQ_ACL_READ,
                                      MOSQ_ACL_SUBSCRIBE};

START_TEST(denials_are_audited_once_a_minute_per_topic_and_access)
{
	int access = denied_accesses[_i];
	const char *what = access_name(access);
	struct fg_registry *reg = registry_of(ACL_SET_FLEET);
	struct acl_config cfg = config_of(ACL_SET_FLEET, 1024);
	struct acl_client *c =
	    client_of(reg, &cfg, true, "n-pump-1", "n-pump-1");
	const char *t = "water/north/n-pump-2/readings";
	uint64_t n = 0;

	ck_assert_msg(deny_and_note(c, access, t, 1000, &n),
	              "%s: first denial not audited", what);
	ck_assert_uint_eq(n, 1);
	ck_assert_msg(!deny_and_note(c, access, t, 2000, &n),
	              "%s: second denial within the minute audited", what);
	ck_assert_msg(!deny_and_note(c, access, t, 30000, &n),
	              "%s: third denial within the minute audited", what);
	/* Another topic, and another access to the same topic, are rows
	 * of their own. */
	ck_assert_msg(deny_and_note(c, access, "status2", 3000, &n),
	              "%s: denial of another topic not audited", what);
	ck_assert_uint_eq(n, 1);
	ck_assert_msg(
	    deny_and_note(c, denied_accesses[(_i + 1) % 3], t, 3000, &n),
	    "%s: denial of another access not audited", what);
	ck_assert_uint_eq(n, 1);
	/* A minute after the first row: one row for three denials. */
	ck_assert_msg(deny_and_note(c, access, t, 62000, &n),
	              "%s: denial after a minute not audited", what);
	ck_assert_msg(n == 3, "%s: count %llu, want 3", what,
	              (unsigned long long)n);
	ck_assert_msg(!deny_and_note(c, access, t, 63000, &n),
	              "%s: denial right after the new row audited", what);
	acl_client_free(c);
	fg_registry_free(reg);
}
END_TEST

START_TEST(denials_of_a_long_topic_are_throttled_too)
{
	struct fg_registry *reg = registry_of(ACL_SET_FLEET);
	struct acl_config cfg = config_of(ACL_SET_FLEET, 1024);
	struct acl_client *c =
	    client_of(reg, &cfg, true, "n-pump-1", "n-pump-1");
	char *t = calloc(1, 2001);
	uint64_t n = 0;

	ck_assert_ptr_nonnull(t);
	memset(t, 'x', 2000);
	memcpy(t, "water/north/", 12);
	ck_assert(deny_and_note(c, MOSQ_ACL_WRITE, t, 1000, &n));
	ck_assert_msg(!deny_and_note(c, MOSQ_ACL_WRITE, t, 2000, &n),
	              "a repeated denial of a 2000-byte topic is audited "
	              "again within the minute");
	free(t);
	acl_client_free(c);
	fg_registry_free(reg);
}
END_TEST

/* test/acl-cases.tsv is the FLEET part of the table, for the end-to-end
 * helper; the two must not drift apart. */
static FILE *open_tsv(void)
{
	const char *dir = getenv("FG_SRCDIR");
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/test/acl-cases.tsv",
	         dir != NULL ? dir : ".");
	f = fopen(path, "r");
	ck_assert_msg(f != NULL, "cannot open %s (set FG_SRCDIR)", path);
	return f;
}

static void split_tabs(char *line, char **fields, int want)
{
	int n = 0;

	line[strcspn(line, "\n")] = '\0';
	fields[n++] = line;
	for (char *p = line; *p != '\0' && n <= want; p++)
		if (*p == '\t') {
			*p = '\0';
			if (n < want)
				fields[n] = p + 1;
			n++;
		}
	ck_assert_msg(n == want, "%d fields, want %d: %s", n, want, line);
}

START_TEST(the_tsv_file_holds_exactly_the_fleet_cases)
{
	FILE *f = open_tsv();
	static char line[8192];
	char *fl[6];
	size_t i = 0, row = 1;

	ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
	ck_assert_str_eq(line, "subject_kind\tsubject\taccess\ttopic\texpected"
	                       "\tdescription\n");
	while (fgets(line, sizeof(line), f) != NULL) {
		const struct acl_case *c;

		row++;
		while (i < ACL_CASE_COUNT && acl_cases[i].set != ACL_SET_FLEET)
			i++;
		ck_assert_msg(i < ACL_CASE_COUNT, "row %zu: not in the table",
		              row);
		c = &acl_cases[i++];
		split_tabs(line, fl, 6);
		ck_assert_msg(c->client_id == NULL, "%s: client id", c->desc);
		ck_assert_str_eq(fl[0], c->is_device ? "device" : "account");
		ck_assert_str_eq(fl[1], c->subject);
		ck_assert_str_eq(fl[2], access_name(c->access));
		ck_assert_str_eq(fl[3], c->topic);
		ck_assert_str_eq(fl[4], answer_name(c->want));
		ck_assert_str_eq(fl[5], c->desc);
	}
	while (i < ACL_CASE_COUNT && acl_cases[i].set != ACL_SET_FLEET)
		i++;
	ck_assert_msg(i == ACL_CASE_COUNT, "the TSV file lacks \"%s\"",
	              i < ACL_CASE_COUNT ? acl_cases[i].desc : "");
	fclose(f);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("acl_rules");
	TCase *tc = tcase_create("core");
	size_t i, per_set[ACL_SET_COUNT] = {0};

	for (i = 0; i < ACL_CASE_COUNT; i++)
		per_set[acl_cases[i].set]++;
	printf("acl rule cases: %zu (fleet %zu, no-isolation %zu, moved %zu, "
	       "hostile %zu, no-registry %zu)\n",
	       ACL_CASE_COUNT, per_set[ACL_SET_FLEET], per_set[ACL_SET_NOISO],
	       per_set[ACL_SET_MOVED], per_set[ACL_SET_HOSTILE],
	       per_set[ACL_SET_NOREG]);
	tcase_add_loop_test(tc, decision_table, 0, (int)ACL_CASE_COUNT);
	tcase_add_loop_test(tc, answers_do_not_change_with_shared_rule_sets, 0,
	                    (int)ACL_SET_COUNT);
	tcase_add_test(tc, clients_whose_rules_compile_alike_share_them);
	tcase_add_test(tc, a_rule_naming_the_user_keeps_rules_apart);
	tcase_add_test(tc, many_distinct_rule_sets_are_kept_apart);
	tcase_add_test(tc,
	               a_topic_buffer_used_again_gets_the_new_topics_answer);
	tcase_add_loop_test(tc, answers_do_not_change_through_a_tiny_cache, 0,
	                    ACL_SET_COUNT);
	tcase_add_test(tc,
	               a_device_moved_to_another_municipality_gets_new_answers);
	tcase_add_test(tc, nothing_is_allowed_without_a_registry);
	tcase_add_test(tc, identities_with_wildcards_or_slashes_get_no_rules);
	tcase_add_loop_test(tc,
	                    the_municipality_level_option_moves_the_backstop, 0,
	                    (int)N_OF(level_cases));
	tcase_add_loop_test(
	    tc, denials_are_audited_once_a_minute_per_topic_and_access, 0,
	    (int)N_OF(denied_accesses));
	tcase_add_test(tc, denials_of_a_long_topic_are_throttled_too);
	tcase_add_test(tc, the_tsv_file_holds_exactly_the_fleet_cases);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return unit_run(suite());
}
