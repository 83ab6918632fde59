/*
 * The acl decision table: a small fleet, its rule set, and who may
 * publish, receive and subscribe where, with the expected answer.
 *
 * The fleet and rules of set FLEET are exactly those of
 * test/acl-fixture.sql, and the FLEET cases are exactly the rows of
 * test/acl-cases.tsv, so that the end-to-end helper can run the same
 * table against a real broker (default options: isolation on,
 * municipality_level 1). test_acl_rules.c checks that the TSV file and
 * this table agree. Accounts connect with their username as client id.
 *
 * The other sets only exist in the unit tests:
 *   NOISO    the FLEET registry with isolation off (rules alone);
 *   MOVED    a newer registry in which device "mover" belongs to south;
 *   HOSTILE  the FLEET registry plus identities the SQL schema cannot
 *            hold (devices with '+', '#', '/', '%'; accounts that are
 *            very long, not UTF-8, or hold blanks), and %c rules;
 *   NOREG    no registry at all.
 *
 * Topics follow water/<municipality>/<device>/..., so level 1 names the
 * municipality, as the isolation backstop expects by default.
 */
#ifndef ACL_CASES_H
#define ACL_CASES_H

#include <stdbool.h>
#include <stddef.h>

#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "acl.h"
#include "fg_registry.h"

enum acl_case_set {
	ACL_SET_FLEET = 0,
	ACL_SET_NOISO,
	ACL_SET_MOVED,
	ACL_SET_HOSTILE,
	ACL_SET_NOREG,
	ACL_SET_COUNT
};

struct acl_case {
	const char *desc;
	bool is_device;        /* device id, or account username */
	const char *subject;   /* the device id / account username */
	const char *client_id; /* NULL: the same as subject */
	enum acl_case_set set;
	int access; /* MOSQ_ACL_WRITE, MOSQ_ACL_READ, MOSQ_ACL_SUBSCRIBE */
	const char *topic;
	enum acl_answer want;
};

/* Short spellings, so that one case reads as one sentence. */
#define DEV(id) true, id, NULL
#define ACC(user) false, user, NULL
#define ACC_AS(user, client) false, user, client
#define FLEET ACL_SET_FLEET
#define NOISO ACL_SET_NOISO
#define MOVED ACL_SET_MOVED
#define HOSTILE ACL_SET_HOSTILE
#define NOREG ACL_SET_NOREG
#define PUB MOSQ_ACL_WRITE
#define RCV MOSQ_ACL_READ
#define SUB MOSQ_ACL_SUBSCRIBE
#define ALLOW ACL_ALLOW
#define DENY ACL_DENY

/* 300 characters: far beyond any identity the schema admits. */
#define ACL_LONG10 "llllllllll"
#define ACL_LONG100                                                            \
	ACL_LONG10 ACL_LONG10 ACL_LONG10 ACL_LONG10 ACL_LONG10 ACL_LONG10      \
	    ACL_LONG10 ACL_LONG10 ACL_LONG10 ACL_LONG10
#define ACL_LONG_NAME ACL_LONG100 ACL_LONG100 ACL_LONG100
/* Its first 256 characters: a cut-off identity must not name them. */
#define ACL_LONG256                                                            \
	ACL_LONG100 ACL_LONG100 ACL_LONG10 ACL_LONG10 ACL_LONG10 ACL_LONG10    \
	    ACL_LONG10 "llllll"

/* The fleet ---------------------------------------------------------- */

struct acl_fixture_device {
	const char *id, *municipality;
};

struct acl_fixture_account {
	const char *username, *role, *municipality;
	bool cross_municipality;
};

struct acl_fixture_rule {
	enum fg_rule_subject kind;
	const char *subject, *pattern;
	enum fg_rule_access access;
	bool allow;
	int priority;
};

static const char *const acl_fixture_municipalities[] = {"north", "south"};

static const struct acl_fixture_device acl_fixture_devices[] = {
    {"n-pump-1", "north"},
    {"n-pump-2", "north"},
    {"s-pump-1", "south"},
    {"mover", "north"}, /* south in set MOVED */
};

static const struct acl_fixture_account acl_fixture_accounts[] = {
    {"dash-n", "dashboard", "north", false},
    {"dash-s", "dashboard", "south", false},
    {"auditor", "auditor", "south", false},
    {"auditx", "auditor", "south", true},
    {"ops", "operator", NULL, true},
    {"kiosk", "kiosk", NULL, false},
    {"sysmon", "sysmon", "north", false},
    {"alice", "user", "north", false},
    {"drifter", "user", NULL, true},
    /* Hostile names the schema admits; the auth plugin refuses the
     * first three at connect, the acl plugin gives them no rules, and
     * the schema lets no rule name them. */
    {"evil+", "user", "north", false},
    {"evil#", "user", "north", false},
    {"evil/x", "user", "north", false},
    {"%m", "user", "north", false},
    {"%u", "user", "north", false},
    {"x'or'1'='1", "user", "north", false},
};

/* Rule ids are the array positions + 1, as a fresh database numbers
 * the fixture's add_acl_rule calls. */
#define RULE(kind, subject, pattern, access, allow, prio)                      \
	{                                                                      \
		FG_RULE_##kind, subject, pattern, FG_RULE_##access, allow,     \
		    prio                                                       \
	}
static const struct acl_fixture_rule acl_fixture_rules[] = {
    /* 1-5: every device */
    RULE(ALL_DEVICES, NULL, "water/%m/%c/#", PUBLISH, true, 0),
    RULE(ALL_DEVICES, NULL, "water/%m/%c/cmd/#", PUBLISH, false, 10),
    RULE(ALL_DEVICES, NULL, "water/%m/%c/cmd/#", RECEIVE, true, 0),
    RULE(ALL_DEVICES, NULL, "health/%m/dev-%c", PUBLISH, true, 0),
    RULE(ALL_DEVICES, NULL, "dev/%m/%u/inbox", RECEIVE, true, 0),
    /* 6-7: devices of one municipality */
    RULE(MUNICIPALITY, "north", "water/%m/broadcast/#", RECEIVE, true, 0),
    RULE(MUNICIPALITY, "south", "water/south/+/readings", RECEIVE, true, 0),
    /* 8-11: one device */
    RULE(DEVICE, "n-pump-1", "water/north/n-pump-1/debug/#", PUBLISH, false,
         20),
    RULE(DEVICE, "n-pump-1", "status", PUBLISH, true, 0),
    RULE(DEVICE, "n-pump-2", "water/north/n-pump-1/readings", RECEIVE, true, 0),
    RULE(DEVICE, "s-pump-1", "water/north/n-pump-1/readings", RECEIVE, true, 0),
    /* 12-17: dashboards */
    RULE(ROLE, "dashboard", "water/%m/#", RECEIVE, true, 0),
    RULE(ROLE, "dashboard", "water/%m/+/secret/#", RECEIVE, false, 5),
    RULE(ROLE, "dashboard", "water/%m/+/raw/#", RECEIVE, false, 5),
    RULE(ROLE, "dashboard", "water/%m/+/cmd/#", PUBLISH, true, 0),
    RULE(ROLE, "dashboard", "water/%m/+/debug/#", SUBSCRIBE, false, 0),
    RULE(ROLE, "dashboard", "alerts/%m/#", SUBSCRIBE, true, 0),
    /* 18-19: one dashboard account */
    RULE(ACCOUNT, "dash-n", "water/north/n-pump-2/alarms", RECEIVE, false, 0),
    RULE(ACCOUNT, "dash-n", "water/north/n-pump-1/raw/#", RECEIVE, true, 10),
    /* 20-21: auditors, allowed north by rule although they are south */
    RULE(ROLE, "auditor", "water/north/#", RECEIVE, true, 0),
    RULE(ROLE, "auditor", "water/south/#", RECEIVE, true, 0),
    /* 22-25: operators */
    RULE(ROLE, "operator", "water/#", RECEIVE, true, 0),
    RULE(ROLE, "operator", "water/+/+/cmd/#", PUBLISH, true, 0),
    RULE(ACCOUNT, "ops", "water/+/+/cmd/reboot", PUBLISH, false, 10),
    RULE(ACCOUNT, "ops", "#", RECEIVE, true, 0),
    /* 26-28: broker monitoring, by name */
    RULE(ROLE, "sysmon", "$SYS/#", RECEIVE, true, 0),
    RULE(ROLE, "sysmon", "$SYS/broker/log/#", RECEIVE, false, 5),
    RULE(ROLE, "sysmon", "$CONTROL/fleetgate/#", RECEIVE, true, 0),
    /* 29-30: kiosks, of no municipality */
    RULE(ROLE, "kiosk", "#", RECEIVE, true, 0),
    RULE(ROLE, "kiosk", "status", PUBLISH, true, 0),
    /* 31-32: users' own space */
    RULE(ROLE, "user", "users/%m/%u/#", PUBLISH, true, 0),
    RULE(ROLE, "user", "users/%m/%u/#", RECEIVE, true, 0),
};

/* Set MOVED: the same fleet, with these devices moved. */
static const struct acl_fixture_device acl_moved_devices[] = {
    {"mover", "south"},
};

/* Set HOSTILE: the FLEET registry plus these rows. */
static const struct acl_fixture_device acl_hostile_devices[] = {
    {"d+", "north"},
    {"d#", "north"},
    {"d/x", "north"},
    {"d%m", "north"},
};

static const struct acl_fixture_account acl_hostile_accounts[] = {
    {ACL_LONG_NAME, "user", "north", false},
    {"bad\xff", "user", "north", false},
    {"bad\xc3\x28", "user", "north", false},
    {"x' or '1'='1", "user", "north", false},
};

static const struct acl_fixture_rule acl_hostile_rules[] = {
    RULE(ROLE, "user", "inbox/%m/%c/#", RECEIVE, true, 0),
    RULE(DEVICE, "d#", "#", RECEIVE, true, 0),
    RULE(DEVICE, "d+", "water/north/+/#", RECEIVE, true, 0),
    /* The schema refuses account rules naming '+', '#' or '/'; a
     * registry from elsewhere must still grant them nothing. */
    RULE(ACCOUNT, "evil#", "#", RECEIVE, true, 0),
    RULE(ACCOUNT, "evil+", "users/north/+/#", RECEIVE, true, 0),
};
#undef RULE

/* The cases ---------------------------------------------------------- */

static const struct acl_case acl_cases[] = {
    /* Devices: per-device rules with %m and %c. */
    {"device publishes its own reading", DEV("n-pump-1"), FLEET, PUB,
     "water/north/n-pump-1/readings", ALLOW},
    {"device publishes to its own topic's parent level", DEV("n-pump-1"), FLEET,
     PUB, "water/north/n-pump-1", ALLOW},
    {"device cannot publish another device's reading", DEV("n-pump-1"), FLEET,
     PUB, "water/north/n-pump-2/readings", DENY},
    {"device cannot publish under another municipality", DEV("n-pump-1"), FLEET,
     PUB, "water/south/n-pump-1/readings", DENY},
    {"higher-priority deny of own cmd topics beats the allow", DEV("n-pump-1"),
     FLEET, PUB, "water/north/n-pump-1/cmd/open", DENY},
    {"device receives its own commands", DEV("n-pump-1"), FLEET, RCV,
     "water/north/n-pump-1/cmd/open", ALLOW},
    {"device does not receive another device's commands", DEV("n-pump-1"),
     FLEET, RCV, "water/north/n-pump-2/cmd/open", DENY},
    {"device rule at priority 20 denies its debug topics", DEV("n-pump-1"),
     FLEET, PUB, "water/north/n-pump-1/debug/trace", DENY},
    {"that device rule is not another device's", DEV("n-pump-2"), FLEET, PUB,
     "water/north/n-pump-2/debug/trace", ALLOW},
    {"%c inside a level is substituted", DEV("n-pump-1"), FLEET, PUB,
     "health/north/dev-n-pump-1", ALLOW},
    {"%c inside a level names only this device", DEV("n-pump-1"), FLEET, PUB,
     "health/north/dev-n-pump-2", DENY},
    {"a pattern without # matches no deeper topic", DEV("n-pump-1"), FLEET, PUB,
     "health/north/dev-n-pump-1/x", DENY},
    {"%u of a device is its device id", DEV("n-pump-1"), FLEET, RCV,
     "dev/north/n-pump-1/inbox", ALLOW},
    {"%u of a device names only itself", DEV("n-pump-1"), FLEET, RCV,
     "dev/north/n-pump-2/inbox", DENY},
    {"device rule grants a one-level topic", DEV("n-pump-1"), FLEET, PUB,
     "status", ALLOW},
    {"no matching rule is a deny", DEV("n-pump-2"), FLEET, PUB, "status", DENY},
    {"municipality rule applies to its devices", DEV("n-pump-1"), FLEET, RCV,
     "water/north/broadcast/all", ALLOW},
    {"municipality rule does not apply to other municipalities' devices",
     DEV("s-pump-1"), FLEET, RCV, "water/north/broadcast/all", DENY},
    {"no broadcast rule for south", DEV("s-pump-1"), FLEET, RCV,
     "water/south/broadcast/all", DENY},
    {"south peer rule grants its own readings", DEV("s-pump-1"), FLEET, RCV,
     "water/south/s-pump-1/readings", ALLOW},
    {"south peer rule grants any south reading", DEV("s-pump-1"), FLEET, RCV,
     "water/south/s-pump-9/readings", ALLOW},
    {"north has no peer rule", DEV("n-pump-1"), FLEET, RCV,
     "water/north/n-pump-2/readings", DENY},
    {"per-device rule lets one pump watch another", DEV("n-pump-2"), FLEET, RCV,
     "water/north/n-pump-1/readings", ALLOW},
    {"isolation beats a device rule naming another municipality",
     DEV("s-pump-1"), FLEET, RCV, "water/north/n-pump-1/readings", DENY},
    {"subscribe inside the receive pattern is granted", DEV("n-pump-1"), FLEET,
     SUB, "water/north/n-pump-1/cmd/#", ALLOW},
    {"subscribe with + inside the receive pattern is granted", DEV("n-pump-1"),
     FLEET, SUB, "water/north/n-pump-1/cmd/+", ALLOW},
    {"subscribe to a municipality rule's filter is granted", DEV("n-pump-1"),
     FLEET, SUB, "water/north/broadcast/#", ALLOW},
    {"subscribe wider than every receive rule is refused", DEV("n-pump-1"),
     FLEET, SUB, "water/north/n-pump-1/#", DENY},
    {"subscribe to every device's commands is refused", DEV("n-pump-1"), FLEET,
     SUB, "water/north/+/cmd/#", DENY},
    {"shared subscription is judged by its filter (granted)", DEV("n-pump-1"),
     FLEET, SUB, "$share/g1/water/north/n-pump-1/cmd/#", ALLOW},
    {"shared subscription is judged by its filter (refused)", DEV("n-pump-1"),
     FLEET, SUB, "$share/g1/water/north/+/cmd/#", DENY},
    {"device subscribe to # is refused", DEV("n-pump-1"), FLEET, SUB, "#",
     DENY},
    {"device subscribe to water/# is refused", DEV("n-pump-1"), FLEET, SUB,
     "water/#", DENY},
    {"device receives no $SYS topic", DEV("n-pump-1"), FLEET, RCV,
     "$SYS/broker/uptime", DENY},
    {"device publishes no $SYS topic", DEV("n-pump-1"), FLEET, PUB,
     "$SYS/broker/uptime", DENY},
    {"mover publishes under north", DEV("mover"), FLEET, PUB,
     "water/north/mover/readings", ALLOW},
    {"mover does not publish under south", DEV("mover"), FLEET, PUB,
     "water/south/mover/readings", DENY},
    {"mover receives north broadcasts", DEV("mover"), FLEET, RCV,
     "water/north/broadcast/all", ALLOW},
    {"mover does not get the south peer rule", DEV("mover"), FLEET, RCV,
     "water/south/s-pump-1/readings", DENY},

    /* Dashboards: role rules with %m, account rules, priorities. */
    {"role rule with %m grants own municipality", ACC("dash-n"), FLEET, RCV,
     "water/north/n-pump-1/readings", ALLOW},
    {"role rule with %m does not grant another municipality", ACC("dash-n"),
     FLEET, RCV, "water/south/s-pump-1/readings", DENY},
    {"higher-priority role deny hides secrets", ACC("dash-n"), FLEET, RCV,
     "water/north/n-pump-1/secret/key", DENY},
    {"deny beats allow at equal priority", ACC("dash-n"), FLEET, RCV,
     "water/north/n-pump-2/alarms", DENY},
    {"the equal-priority deny names one device only", ACC("dash-n"), FLEET, RCV,
     "water/north/n-pump-1/alarms", ALLOW},
    {"account allow at priority 10 beats role deny at 5", ACC("dash-n"), FLEET,
     RCV, "water/north/n-pump-1/raw/adc", ALLOW},
    {"role deny at 5 beats role allow at 0", ACC("dash-n"), FLEET, RCV,
     "water/north/n-pump-2/raw/adc", DENY},
    {"dashboard sends a command in its municipality", ACC("dash-n"), FLEET, PUB,
     "water/north/n-pump-1/cmd/open", ALLOW},
    {"dashboard sends no command to another municipality", ACC("dash-n"), FLEET,
     PUB, "water/south/s-pump-1/cmd/open", DENY},
    {"receive rules do not grant publish", ACC("dash-n"), FLEET, PUB,
     "water/north/n-pump-1/readings", DENY},
    {"narrower denies inside the filter do not refuse the subscribe",
     ACC("dash-n"), FLEET, SUB, "water/north/#", ALLOW},
    {"subscribe to the pattern's parent level is granted", ACC("dash-n"), FLEET,
     SUB, "water/north", ALLOW},
    {"subscribe with + inside the pattern is granted", ACC("dash-n"), FLEET,
     SUB, "water/north/+/readings", ALLOW},
    {"subscribe with + at the device level is granted", ACC("dash-n"), FLEET,
     SUB, "water/north/+", ALLOW},
    {"subscribe inside a deny pattern is refused", ACC("dash-n"), FLEET, SUB,
     "water/north/+/secret/#", DENY},
    {"concrete subscribe inside a deny pattern is refused", ACC("dash-n"),
     FLEET, SUB, "water/north/n-pump-1/secret/x", DENY},
    {"subscribe rule refuses what receive rules grant", ACC("dash-n"), FLEET,
     SUB, "water/north/+/debug/#", DENY},
    {"subscribe rule refuses a concrete filter too", ACC("dash-n"), FLEET, SUB,
     "water/north/n-pump-1/debug/trace", DENY},
    {"subscribe rules do not restrict delivery", ACC("dash-n"), FLEET, RCV,
     "water/north/n-pump-1/debug/trace", ALLOW},
    {"a subscribe allow without a receive rule grants nothing", ACC("dash-n"),
     FLEET, SUB, "alerts/north/#", DENY},
    {"subscribe with + at the municipality level is refused", ACC("dash-n"),
     FLEET, SUB, "water/+/n-pump-1/readings", DENY},
    {"subscribe to water/# is refused", ACC("dash-n"), FLEET, SUB, "water/#",
     DENY},
    {"subscribe to # is refused", ACC("dash-n"), FLEET, SUB, "#", DENY},
    {"subscribe with + before the pattern's prefix is refused", ACC("dash-n"),
     FLEET, SUB, "+/north/#", DENY},
    {"subscribe to another municipality is refused", ACC("dash-n"), FLEET, SUB,
     "water/south/#", DENY},
    {"shared subscribe inside the pattern is granted", ACC("dash-n"), FLEET,
     SUB, "$share/team/water/north/+/readings", ALLOW},
    {"shared subscribe across municipalities is refused", ACC("dash-n"), FLEET,
     SUB, "$share/team/water/+/+/readings", DENY},
    {"subscribe inside the priority-10 allow is granted", ACC("dash-n"), FLEET,
     SUB, "water/north/n-pump-1/raw/#", ALLOW},
    {"subscribe inside the priority-5 deny is refused", ACC("dash-n"), FLEET,
     SUB, "water/north/+/raw/#", DENY},
    {"subscribe to the equal-priority denied topic is refused", ACC("dash-n"),
     FLEET, SUB, "water/north/n-pump-2/alarms", DENY},
    {"dashboard receives no $SYS topic", ACC("dash-n"), FLEET, RCV,
     "$SYS/broker/uptime", DENY},
    {"dashboard subscribe to $SYS/# is refused", ACC("dash-n"), FLEET, SUB,
     "$SYS/#", DENY},
    {"the same role rule follows the south account's %m", ACC("dash-s"), FLEET,
     RCV, "water/south/s-pump-1/readings", ALLOW},
    {"south dashboard does not see north", ACC("dash-s"), FLEET, RCV,
     "water/north/n-pump-1/readings", DENY},
    {"dash-n's account allow is not dash-s's", ACC("dash-s"), FLEET, RCV,
     "water/south/n-pump-1/raw/adc", DENY},
    {"dash-n's account deny is not dash-s's", ACC("dash-s"), FLEET, RCV,
     "water/south/n-pump-2/alarms", ALLOW},

    /* Isolation for accounts. */
    {"isolation beats a role rule allowing another municipality",
     ACC("auditor"), FLEET, RCV, "water/north/n-pump-1/readings", DENY},
    {"auditor reads its own municipality", ACC("auditor"), FLEET, RCV,
     "water/south/s-pump-1/readings", ALLOW},
    {"isolation refuses a subscribe a rule allows", ACC("auditor"), FLEET, SUB,
     "water/north/#", DENY},
    {"non-cross subscribe to water/+/... is refused", ACC("auditor"), FLEET,
     SUB, "water/+/+/readings", DENY},
    {"auditor subscribes to its own municipality", ACC("auditor"), FLEET, SUB,
     "water/south/#", ALLOW},
    {"auditor publishes nothing", ACC("auditor"), FLEET, PUB,
     "water/south/s-pump-1/readings", DENY},
    {"cross-municipality account reads another municipality", ACC("auditx"),
     FLEET, RCV, "water/north/n-pump-1/readings", ALLOW},
    {"cross-municipality account subscribes to another municipality",
     ACC("auditx"), FLEET, SUB, "water/north/#", ALLOW},
    {"cross subscribe needs one rule containing the whole filter",
     ACC("auditx"), FLEET, SUB, "water/+/+/readings", DENY},
    {"cross does not invent rules", ACC("auditx"), FLEET, RCV,
     "water/east/e-1/readings", DENY},
    {"operator reads every municipality", ACC("ops"), FLEET, RCV,
     "water/east/e-1/readings", ALLOW},
    {"operator subscribes across municipalities", ACC("ops"), FLEET, SUB,
     "water/+/+/readings", ALLOW},
    {"operator subscribes to water/#", ACC("ops"), FLEET, SUB, "water/#",
     ALLOW},
    {"a # rule grants a # subscribe", ACC("ops"), FLEET, SUB, "#", ALLOW},
    {"a # rule grants a shared # subscribe", ACC("ops"), FLEET, SUB,
     "$share/ops/#", ALLOW},
    {"a # rule grants a one-level topic", ACC("ops"), FLEET, RCV, "status",
     ALLOW},
    {"a # rule does not grant $SYS", ACC("ops"), FLEET, RCV,
     "$SYS/broker/uptime", DENY},
    {"a # rule does not grant a $SYS/# subscribe", ACC("ops"), FLEET, SUB,
     "$SYS/#", DENY},
    {"a # rule does not grant $CONTROL", ACC("ops"), FLEET, SUB,
     "$CONTROL/dynamic-security/v1", DENY},
    {"operator publishes no $SYS topic", ACC("ops"), FLEET, PUB,
     "$SYS/broker/uptime", DENY},
    {"operator sends commands anywhere", ACC("ops"), FLEET, PUB,
     "water/south/s-pump-1/cmd/open", ALLOW},
    {"account deny at 10 beats the role's command allow", ACC("ops"), FLEET,
     PUB, "water/south/s-pump-1/cmd/reboot", DENY},

    /* $SYS and $CONTROL by name; $-topics are not municipality topics. */
    {"an explicit $SYS rule grants $SYS", ACC("sysmon"), FLEET, RCV,
     "$SYS/broker/uptime", ALLOW},
    {"an explicit $SYS rule grants a $SYS/# subscribe", ACC("sysmon"), FLEET,
     SUB, "$SYS/#", ALLOW},
    {"$SYS subscribe with + is granted", ACC("sysmon"), FLEET, SUB,
     "$SYS/broker/+", ALLOW},
    {"a $SYS deny at 5 beats the $SYS allow", ACC("sysmon"), FLEET, RCV,
     "$SYS/broker/log/N", DENY},
    {"subscribe inside the $SYS deny is refused", ACC("sysmon"), FLEET, SUB,
     "$SYS/broker/log/#", DENY},
    {"the $SYS deny only overlapping does not refuse", ACC("sysmon"), FLEET,
     SUB, "$SYS/broker/#", ALLOW},
    {"an explicit $CONTROL rule grants that $CONTROL subtree", ACC("sysmon"),
     FLEET, RCV, "$CONTROL/fleetgate/reload", ALLOW},
    {"other $CONTROL topics stay denied", ACC("sysmon"), FLEET, RCV,
     "$CONTROL/dynamic-security/v1", DENY},
    {"sysmon subscribe to # is refused", ACC("sysmon"), FLEET, SUB, "#", DENY},
    {"sysmon has no water rule", ACC("sysmon"), FLEET, RCV,
     "water/north/n-pump-1/readings", DENY},

    /* An account of no municipality, not cross. */
    {"no-municipality account reads a one-level topic", ACC("kiosk"), FLEET,
     RCV, "status", ALLOW},
    {"no-municipality account reads no municipality topic", ACC("kiosk"), FLEET,
     RCV, "water/north/n-pump-1/readings", DENY},
    {"no-municipality account reads no two-level topic", ACC("kiosk"), FLEET,
     RCV, "news/today", DENY},
    {"no-municipality account subscribes to +", ACC("kiosk"), FLEET, SUB, "+",
     ALLOW},
    {"no-municipality account subscribes to a one-level topic", ACC("kiosk"),
     FLEET, SUB, "status", ALLOW},
    {"no-municipality account subscribe to # is refused", ACC("kiosk"), FLEET,
     SUB, "#", DENY},
    {"no-municipality account subscribe to +/# is refused", ACC("kiosk"), FLEET,
     SUB, "+/#", DENY},
    {"no-municipality account publishes a one-level topic", ACC("kiosk"), FLEET,
     PUB, "status", ALLOW},
    {"kiosk's # rule does not grant $SYS", ACC("kiosk"), FLEET, RCV,
     "$SYS/broker/uptime", DENY},

    /* %u in role rules. */
    {"%u grants the user's own space", ACC("alice"), FLEET, PUB,
     "users/north/alice/notes", ALLOW},
    {"%u does not grant another user's space", ACC("alice"), FLEET, PUB,
     "users/north/bob/notes", DENY},
    {"%u space includes its parent level", ACC("alice"), FLEET, RCV,
     "users/north/alice", ALLOW},
    {"user subscribes to its own space", ACC("alice"), FLEET, SUB,
     "users/north/alice/#", ALLOW},
    {"%m of an account without municipality is no empty level", ACC("drifter"),
     FLEET, PUB, "users//drifter/notes", DENY},
    {"%m of an account without municipality matches no level", ACC("drifter"),
     FLEET, RCV, "users/north/drifter", DENY},
    {"all-devices rules do not apply to accounts", ACC("dash-n"), FLEET, PUB,
     "water/north/dash-n/readings", DENY},
    {"municipality rules do not apply to accounts", ACC("sysmon"), FLEET, RCV,
     "water/north/broadcast/all", DENY},
    {"user subscribe to every user's space is refused", ACC("alice"), FLEET,
     SUB, "users/north/+/#", DENY},

    /* Hostile identities never widen access. */
    {"username with + gets no rules (own space)", ACC("evil+"), FLEET, PUB,
     "users/north/evil+/notes", DENY},
    {"username with + gets no rules (others' space)", ACC("evil+"), FLEET, RCV,
     "users/north/alice/notes", DENY},
    {"username with + cannot subscribe through %u", ACC("evil+"), FLEET, SUB,
     "users/north/+/#", DENY},
    {"username with # gets no rules (own space)", ACC("evil#"), FLEET, RCV,
     "users/north/evil#/notes", DENY},
    {"username with # cannot subscribe through %u", ACC("evil#"), FLEET, SUB,
     "users/north/#", DENY},
    {"username with / gets no rules (split level)", ACC("evil/x"), FLEET, PUB,
     "users/north/evil/x/notes", DENY},
    {"username with / gets no rules (prefix)", ACC("evil/x"), FLEET, RCV,
     "users/north/evil", DENY},
    {"username %m is not substituted twice", ACC("%m"), FLEET, PUB,
     "users/north/north/notes", DENY},
    {"username %u does not widen to another user", ACC("%u"), FLEET, RCV,
     "users/north/alice/notes", DENY},
    {"username with SQL quotes does not widen", ACC("x'or'1'='1"), FLEET, RCV,
     "users/north/alice/notes", DENY},
    {"username with SQL quotes cannot subscribe wide", ACC("x'or'1'='1"), FLEET,
     SUB, "users/north/#", DENY},
    {"unknown account with an SQL fragment gets nothing", ACC("x' or '1'='1"),
     FLEET, RCV, "status", DENY},
    {"unknown account with an SQL fragment reads no municipality",
     ACC("x' or '1'='1"), FLEET, RCV, "water/north/n-pump-1/readings", DENY},
    {"unknown very long username gets nothing", ACC(ACL_LONG_NAME), FLEET, RCV,
     "status", DENY},
    {"unknown device gets no all-devices rule", DEV("ghost"), FLEET, PUB,
     "water/north/ghost/readings", DENY},
    {"device id + gets nothing", DEV("+"), FLEET, RCV,
     "water/north/n-pump-1/cmd/open", DENY},
    {"device id # gets nothing", DEV("#"), FLEET, RCV, "water/north/x/cmd/y",
     DENY},
    {"device id with / gets nothing", DEV("n-pump-1/x"), FLEET, PUB,
     "water/north/n-pump-1/x/readings", DENY},
    {"an account name is not a device", DEV("kiosk"), FLEET, RCV, "status",
     DENY},
    {"a device id is not an account", ACC("n-pump-1"), FLEET, PUB, "status",
     DENY},
    {"a device id as account gets no device rules", ACC("n-pump-1"), FLEET, RCV,
     "water/north/n-pump-1/cmd/open", DENY},

    /* Isolation off: the rules alone decide. */
    {"without isolation a rule may allow another municipality", ACC("auditor"),
     NOISO, RCV, "water/north/n-pump-1/readings", ALLOW},
    {"without isolation a subscribe to another municipality is granted",
     ACC("auditor"), NOISO, SUB, "water/north/#", ALLOW},
    {"without isolation a filter must still be inside one rule", ACC("auditor"),
     NOISO, SUB, "water/+/+/readings", DENY},
    {"without isolation a device rule may cross municipalities",
     DEV("s-pump-1"), NOISO, RCV, "water/north/n-pump-1/readings", ALLOW},
    {"without isolation a no-municipality account reads by rule", ACC("kiosk"),
     NOISO, RCV, "water/north/n-pump-1/readings", ALLOW},
    {"without isolation a no-municipality account subscribes to #",
     ACC("kiosk"), NOISO, SUB, "#", ALLOW},
    {"without isolation # still does not grant $SYS", ACC("kiosk"), NOISO, RCV,
     "$SYS/broker/uptime", DENY},
    {"without isolation water/# is still outside water/%m/#", ACC("dash-n"),
     NOISO, SUB, "water/#", DENY},
    {"without isolation %m still names the own municipality", ACC("dash-n"),
     NOISO, RCV, "water/south/s-pump-1/readings", DENY},
    {"without isolation priorities still apply", DEV("n-pump-1"), NOISO, PUB,
     "water/north/n-pump-1/cmd/open", DENY},
    {"without isolation $SYS by name is granted", ACC("sysmon"), NOISO, RCV,
     "$SYS/broker/uptime", ALLOW},
    {"without isolation a hostile username still gets no rules", ACC("evil+"),
     NOISO, PUB, "users/north/evil+/notes", DENY},
    {"without isolation an unknown device gets no all-devices rule",
     DEV("ghost"), NOISO, PUB, "water/north/ghost/readings", DENY},
    {"an unknown device's %m is not an empty level", DEV("ghost"), NOISO, PUB,
     "water//ghost/readings", DENY},

    /* A newer registry in which mover belongs to south. */
    {"moved device publishes under its new municipality", DEV("mover"), MOVED,
     PUB, "water/south/mover/readings", ALLOW},
    {"moved device no longer publishes under the old one", DEV("mover"), MOVED,
     PUB, "water/north/mover/readings", DENY},
    {"moved device loses the old municipality's rule", DEV("mover"), MOVED, RCV,
     "water/north/broadcast/all", DENY},
    {"moved device gains the new municipality's rule", DEV("mover"), MOVED, RCV,
     "water/south/s-pump-1/readings", ALLOW},
    {"moved device subscribes under the new municipality", DEV("mover"), MOVED,
     SUB, "water/south/mover/cmd/#", ALLOW},
    {"moved device subscribe under the old one is refused", DEV("mover"), MOVED,
     SUB, "water/north/mover/cmd/#", DENY},
    {"devices that did not move keep their answers", DEV("n-pump-1"), MOVED,
     PUB, "water/north/n-pump-1/readings", ALLOW},

    /* Identities the schema cannot hold. */
    {"a rule naming a username with # grants nothing", ACC("evil#"), HOSTILE,
     RCV, "water/north/n-pump-1/readings", DENY},
    {"a rule naming a username with # grants no one-level topic", ACC("evil#"),
     HOSTILE, RCV, "status", DENY},
    {"a rule naming a username with + grants nothing", ACC("evil+"), HOSTILE,
     RCV, "users/north/alice/notes", DENY},
    {"registered device id + gets no rules", DEV("d+"), HOSTILE, RCV,
     "water/north/n-pump-1/cmd/open", DENY},
    {"registered device id + subscribes to nothing", DEV("d+"), HOSTILE, SUB,
     "water/north/+/cmd/#", DENY},
    {"registered device id + gets no rule naming it", DEV("d+"), HOSTILE, RCV,
     "water/north/n-pump-1/readings", DENY},
    {"registered device id # gets no rule naming it", DEV("d#"), HOSTILE, RCV,
     "water/north/n-pump-1/readings", DENY},
    {"registered device id # subscribes to nothing", DEV("d#"), HOSTILE, SUB,
     "water/north/#", DENY},
    {"registered device id with / gets no rules", DEV("d/x"), HOSTILE, PUB,
     "water/north/d/x/readings", DENY},
    {"registered device id with / receives no split-level commands", DEV("d/x"),
     HOSTILE, RCV, "water/north/d/x/cmd/y", DENY},
    {"device id d%m is not substituted twice", DEV("d%m"), HOSTILE, PUB,
     "water/north/dnorth/readings", DENY},
    {"registered very long username does not widen", ACC(ACL_LONG_NAME),
     HOSTILE, RCV, "users/north/alice/notes", DENY},
    {"a very long username is not cut to another's name", ACC(ACL_LONG_NAME),
     HOSTILE, RCV, "users/north/" ACL_LONG256 "/notes", DENY},
    {"a very long client id is not cut to another's name",
     ACC_AS("alice", ACL_LONG_NAME), HOSTILE, RCV,
     "inbox/north/" ACL_LONG256 "/x", DENY},
    {"registered very long username subscribes to nothing wide",
     ACC(ACL_LONG_NAME), HOSTILE, SUB, "users/north/+/#", DENY},
    {"username with an invalid UTF-8 byte does not widen", ACC("bad\xff"),
     HOSTILE, RCV, "users/north/alice/notes", DENY},
    {"username with an invalid UTF-8 byte subscribes to nothing wide",
     ACC("bad\xff"), HOSTILE, SUB, "users/north/#", DENY},
    {"username with a broken UTF-8 sequence does not widen", ACC("bad\xc3\x28"),
     HOSTILE, RCV, "users/north/alice", DENY},
    {"registered username with an SQL fragment does not widen",
     ACC("x' or '1'='1"), HOSTILE, RCV, "users/north/alice/notes", DENY},
    {"registered username with an SQL fragment subscribes to nothing wide",
     ACC("x' or '1'='1"), HOSTILE, SUB, "users/#", DENY},
    {"%c of an account is its client id", ACC_AS("alice", "alice-1"), HOSTILE,
     RCV, "inbox/north/alice-1/x", ALLOW},
    {"%c names only that client", ACC_AS("alice", "alice-1"), HOSTILE, RCV,
     "inbox/north/alice-2/x", DENY},
    {"client id + does not widen %c", ACC_AS("alice", "+"), HOSTILE, RCV,
     "inbox/north/bob/x", DENY},
    {"client id + gets no rules at all", ACC_AS("alice", "+"), HOSTILE, RCV,
     "users/north/alice/notes", DENY},
    {"client id # cannot subscribe through %c", ACC_AS("alice", "#"), HOSTILE,
     SUB, "inbox/north/#", DENY},
    {"client id with / gets no split-level space", ACC_AS("alice", "a/b"),
     HOSTILE, RCV, "inbox/north/a/b/x", DENY},
    {"client id %u is not substituted twice", ACC_AS("alice", "%u"), HOSTILE,
     RCV, "inbox/north/alice/x", DENY},
    {"ordinary devices keep their answers beside hostile ones", DEV("n-pump-1"),
     HOSTILE, PUB, "water/north/n-pump-1/readings", ALLOW},

    /* No registry: nothing at all. */
    {"without a registry a device publishes nothing", DEV("n-pump-1"), NOREG,
     PUB, "water/north/n-pump-1/readings", DENY},
    {"without a registry an operator receives nothing", ACC("ops"), NOREG, RCV,
     "status", DENY},
    {"without a registry an operator subscribes to nothing", ACC("ops"), NOREG,
     SUB, "#", DENY},
    {"without a registry a kiosk publishes nothing", ACC("kiosk"), NOREG, PUB,
     "status", DENY},
    {"without a registry $SYS is denied", ACC("sysmon"), NOREG, RCV,
     "$SYS/broker/uptime", DENY},
};

#define ACL_CASE_COUNT (sizeof(acl_cases) / sizeof(acl_cases[0]))

#endif
