/*
 * Unit tests: the persist plugin's payload validator and RFC 3339 parser,
 * as tables of payloads with the verdict and reason each must get, plus
 * limits at and over their bounds, nesting bombs, a randomized robustness
 * run checked against cJSON, and a timing of the validator next to cJSON
 * on a typical reading.
 */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "persist_json.h"
#include "unit_run.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* A string literal with its length, so that payloads may hold NUL. */
#define LIT(s) s, sizeof(s) - 1

static const struct pj_limits LIMITS = {
    .max_bytes = 4096,
    .max_depth = 32,
    .max_number_len = 64,
    .max_exponent = 1000,
    .ts_field = "ts",
};

static const char READING[] =
    "{\"ts\":\"2026-12-03T11:22:33.120Z\",\"flow_lps\":12.5,"
    "\"pressure_kpa\":301.2,\"battery\":3.61,\"status\":\"ok\"}";

/* Verdicts on whole payloads ------------------------------------------ */

struct payload_case {
	const char *json;
	size_t len;
	const char *reason; /* NULL: valid */
	size_t offset;      /* checked for invalid payloads */
};

#define OK(s)                                                                  \
	{                                                                      \
		LIT(s), NULL, 0                                                \
	}
#define BAD(s, why, at)                                                        \
	{                                                                      \
		LIT(s), why, at                                                \
	}

static const struct payload_case payload_cases[] = {
    /* shapes */
    OK("{}"),
    OK(" \t\r\n{ \t\r\n} \t\r\n"),
    OK("{\"a\":1}"),
    OK("{\"a\":[1,2,{\"b\":null}],\"c\":{\"d\":[]}}"),
    OK("{\"t\":true,\"f\":false,\"n\":null}"),
    OK("{\"\":\"\"}"),
    OK("{\"a\":1,\"a\":2}"),
    BAD("", "not JSON", 0),
    BAD("   ", "not JSON", 3),
    BAD("[1,2]", "not an object", 0),
    BAD("\"str\"", "not an object", 0),
    BAD("42", "not an object", 0),
    BAD("-1", "not an object", 0),
    BAD("true", "not an object", 0),
    BAD("null", "not an object", 0),
    BAD("  [", "not an object", 2),
    BAD("x", "not JSON", 0),
    BAD("\xef\xbb\xbf{}", "not JSON", 0),
    BAD("\f{}", "not JSON", 0),
    BAD("\v{}", "not JSON", 0),
    BAD("{", "not JSON", 1),
    BAD("{\"a\"", "not JSON", 4),
    BAD("{\"a\":", "not JSON", 5),
    BAD("{\"a\":1", "not JSON", 6),
    BAD("{\"a\":1,}", "not JSON", 7),
    BAD("{,}", "not JSON", 1),
    BAD("{\"a\" 1}", "not JSON", 5),
    BAD("{\"a\":1 \"b\":2}", "not JSON", 7),
    BAD("{\"a\":[1,]}", "not JSON", 8),
    BAD("{\"a\":[1}", "not JSON", 7),
    BAD("{\"a\":{]}", "not JSON", 6),
    BAD("{a:1}", "not JSON", 1),
    BAD("{'a':1}", "not JSON", 1),
    BAD("{\"a\":tru}", "not JSON", 5),
    BAD("{\"a\":True}", "not JSON", 5),
    BAD("{\"a\":nul", "not JSON", 5),
    BAD("{\"a\":truex}", "not JSON", 9),
    BAD("{\"a\":undefined}", "not JSON", 5),
    BAD("{\"a\":1}}", "trailing data", 7),
    BAD("{\"a\":1} x", "trailing data", 8),
    BAD("{}{}", "trailing data", 2),
    BAD("{}\f", "trailing data", 2),
    BAD("{}\xc2\xa0", "trailing data", 2),
    BAD("{}\0", "trailing data", 2),
    BAD("{\"a\":1/*c*/}", "not JSON", 6),
    BAD("\0", "NUL character", 0),
    BAD("{\0}", "NUL character", 1),
    BAD("{\"a\":\0}", "NUL character", 5),
    BAD("{\"a\":1\0}", "NUL character", 6),
    /* strings */
    OK("{\"a\":\"plain ASCII ~!@#$%^&*()_+`-={}|[]:;'<>?,./\"}"),
    OK("{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}"),
    OK("{\"a\":\"\\u0041\\u00e9\\u20AC\\uFFFF\\ufdd0\"}"),
    OK("{\"a\":\"\x7f\"}"),
    BAD("{\"a\":\"unterminated}", "not JSON", 19),
    BAD("{\"a\":\"\\", "not JSON", 6),
    BAD("{\"a\":\"\\x41\"}", "invalid escape", 6),
    BAD("{\"a\":\"\\'\"}", "invalid escape", 6),
    BAD("{\"a\":\"\\a\"}", "invalid escape", 6),
    BAD("{\"a\":\"\\U0041\"}", "invalid escape", 6),
    BAD("{\"a\":\"\\u41\"}", "invalid escape", 6),
    BAD("{\"a\":\"\\u00g1\"}", "invalid escape", 6),
    BAD("{\"a\":\"\\u004", "invalid escape", 6),
    BAD("{\"a\":\"\x01\"}", "control character", 6),
    BAD("{\"a\":\"\x1f\"}", "control character", 6),
    BAD("{\"a\":\"tab\there\"}", "control character", 9),
    BAD("{\"a\":\"line\nbreak\"}", "control character", 10),
    BAD("{\"a\":\"\0\"}", "NUL character", 6),
    BAD("{\"a\":\"\\u0000\"}", "NUL character", 6),
    BAD("{\"\\u0000\":1}", "NUL character", 2),
    BAD("{\"k\x01\":1}", "control character", 3),
    /* surrogate escapes */
    OK("{\"a\":\"\\ud83d\\ude00\"}"),
    OK("{\"a\":\"\\uD800\\uDC00\\uDBFF\\uDFFF\"}"),
    BAD("{\"a\":\"\\ud800\"}", "unpaired surrogate", 6),
    BAD("{\"a\":\"\\udbff\"}", "unpaired surrogate", 6),
    BAD("{\"a\":\"\\udc00\"}", "unpaired surrogate", 6),
    BAD("{\"a\":\"\\udfff\"}", "unpaired surrogate", 6),
    BAD("{\"a\":\"\\ud800x\"}", "unpaired surrogate", 6),
    BAD("{\"a\":\"\\ud800\\u0041\"}", "unpaired surrogate", 6),
    BAD("{\"a\":\"\\ud800\\ud800\"}", "unpaired surrogate", 6),
    BAD("{\"a\":\"\\udc00\\ud800\"}", "unpaired surrogate", 6),
    BAD("{\"a\":\"\\ud800\\n\"}", "unpaired surrogate", 6),
    BAD("{\"a\":\"\\ud800\\", "unpaired surrogate", 6),
    BAD("{\"a\":\"x\\ude00\\ud83d\"}", "unpaired surrogate", 7),
    /* UTF-8 in strings: the boundaries of every sequence length */
    OK("{\"a\":\"\xc2\x80\xdf\xbf\"}"),
    OK("{\"a\":\"\xe0\xa0\x80\xef\xbf\xbf\"}"),
    OK("{\"a\":\"\xed\x9f\xbf\xee\x80\x80\"}"),
    OK("{\"a\":\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"}"),
    OK("{\"Z\xc3\xa4hler\":\"\xe6\xb0\xb4\xf0\x9f\x92\xa7\"}"),
    BAD("{\"a\":\"\x80\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xbf\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xc0\x80\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xc0\xaf\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xc1\xbf\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xe0\x80\xaf\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xe0\x9f\xbf\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xf0\x80\x80\xaf\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xf0\x8f\xbf\xbf\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xed\xbf\xbf\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xed\xa0\xbd\xed\xb8\x80\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xf4\x90\x80\x80\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xf5\x80\x80\x80\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xf8\x88\x80\x80\x80\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xfe\xff\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xc3\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xe2\x82\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xf0\x9f\x92\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"\xc3\x28\"}", "invalid UTF-8", 6),
    BAD("{\"a\":\"ok\xe2\x82", "invalid UTF-8", 8),
    BAD("{\"a\":\"\xf0\x9f", "invalid UTF-8", 6),
    BAD("{\"k\xff\":1}", "invalid UTF-8", 3),
    BAD("{\"a\":\xc3\xa9}", "not JSON", 5),
    /* numbers */
    OK("{\"a\":0,\"b\":-0,\"c\":1,\"d\":-1,\"e\":1234567890}"),
    OK("{\"a\":0.5,\"b\":-0.0,\"c\":3.14159,\"d\":1e3,\"e\":1E3}"),
    OK("{\"a\":1e+3,\"b\":1e-3,\"c\":-1.5E-7,\"d\":0e0,\"e\":1e0001}"),
    OK("{\"a\":1e1000,\"b\":1e-1000,\"c\":[1e+1000]}"),
    OK("{\"a\":1234567890123456789012345678901234567890}"),
    OK("{\"a\":[1,-1,0.5]}"),
    BAD("{\"a\":01}", "invalid number", 6),
    BAD("{\"a\":-01}", "invalid number", 7),
    BAD("{\"a\":00}", "invalid number", 6),
    BAD("{\"a\":+1}", "invalid number", 5),
    BAD("{\"a\":.5}", "invalid number", 5),
    BAD("{\"a\":1.}", "invalid number", 5),
    BAD("{\"a\":1.e5}", "invalid number", 5),
    BAD("{\"a\":-}", "invalid number", 5),
    BAD("{\"a\":-.5}", "invalid number", 5),
    BAD("{\"a\":1e}", "invalid number", 5),
    BAD("{\"a\":1e+}", "invalid number", 5),
    BAD("{\"a\":1E-}", "invalid number", 5),
    BAD("{\"a\":0x1f}", "invalid number", 6),
    BAD("{\"a\":1.5.2}", "invalid number", 8),
    BAD("{\"a\":1e5e5}", "invalid number", 8),
    BAD("{\"a\":1e5.5}", "invalid number", 8),
    BAD("{\"a\":12a}", "invalid number", 7),
    BAD("{\"a\":1-2}", "invalid number", 6),
    BAD("{\"a\":NaN}", "not JSON", 5),
    BAD("{\"a\":Infinity}", "not JSON", 5),
    BAD("{\"a\":-Infinity}", "invalid number", 5),
    BAD("{\"a\":1", "not JSON", 6),
    BAD("{\"a\":1e1001}", "number out of range", 5),
    BAD("{\"a\":1e-1001}", "number out of range", 5),
    BAD("{\"a\":-2.5E+99999999999999999999}", "number out of range", 5),
    /* 64 and 65 bytes long */
    OK("{\"a\":1234567890123456789012345678901234567890123456789012345678901234"
       "}"),
    BAD("{\"a\":12345678901234567890123456789012345678901234567890123456789012"
        "345}",
        "number too long", 5),
    BAD("{\"a\":-0."
        "00000000000000000000000000000000000000000000000000000000000001}",
        "number too long", 5),
    /* SQL is just text to a JSON validator, and passes unchanged */
    OK("{\"a\":\"'); DROP TABLE readings; --\"}"),
    OK("{\"name\":\"Robert'); DELETE FROM devices WHERE ('1'='1\"}"),
    OK("{\"q\":\"1 OR 1=1; SELECT pg_sleep(10); /* */ -- \\\\x00\"}"),
    OK("{\"$1\":\"E'\\\\\\\\'::jsonb || $$x$$\",\"'\":\"\\\"\\\";\"}"),
};

START_TEST(payloads_get_the_expected_verdict_and_reason)
{
	size_t i;

	for (i = 0; i < N_OF(payload_cases); i++) {
		const struct payload_case *t = &payload_cases[i];
		struct pj_result r;
		int rc = pj_validate(t->json, t->len, &LIMITS, &r);

		if (t->reason == NULL) {
			ck_assert_msg(rc == 0 && r.reason == NULL,
			              "case %zu %s: refused: %s at %zu", i,
			              t->json, r.reason, r.offset);
			continue;
		}
		ck_assert_msg(rc == -1 && r.reason != NULL,
		              "case %zu %s: accepted, want %s", i, t->json,
		              t->reason);
		ck_assert_msg(
		    strcmp(r.reason, t->reason) == 0 && r.offset == t->offset,
		    "case %zu %s: got %s at %zu, want %s at %zu", i, t->json,
		    r.reason, r.offset, t->reason, t->offset);
	}
}
END_TEST

START_TEST(null_buffer_and_empty_payload_are_not_json)
{
	struct pj_result r;

	ck_assert_int_eq(pj_validate(NULL, 0, &LIMITS, &r), -1);
	ck_assert_str_eq(r.reason, "not JSON");
	ck_assert_int_eq(pj_validate("{}", 0, &LIMITS, &r), -1);
	ck_assert_str_eq(r.reason, "not JSON");
	ck_assert_int_eq(pj_validate(NULL, 5, &LIMITS, &r), -1);
	ck_assert_str_eq(r.reason, "not JSON");
	ck_assert_int_eq(pj_validate("{}", 2, &LIMITS, NULL), -1);
}
END_TEST

START_TEST(null_limits_mean_the_defaults)
{
	struct pj_result r;

	ck_assert_int_eq(pj_validate(LIT(READING), NULL, &r), 0);
	ck_assert(r.has_ts);
	ck_assert_int_eq(r.ts_ms, INT64_C(1796296953120));
}
END_TEST

/* Limits --------------------------------------------------------------- */

/* {"a":[[...[0]...]]} or {"a":{"a":...0}} with levels levels in all,
 * the top object included. */
static size_t nested(char *buf, size_t cap, int levels, char open)
{
	size_t n = 0;
	int i;

	n += (size_t)snprintf(buf, cap, "{\"a\":");
	for (i = 1; i < levels; i++) {
		if (open == '{')
			n += (size_t)snprintf(buf + n, cap - n, "{\"a\":");
		else
			buf[n++] = '[';
	}
	buf[n++] = '0';
	for (i = 1; i < levels; i++)
		buf[n++] = open == '{' ? '}' : ']';
	buf[n++] = '}';
	return n;
}

START_TEST(nesting_at_the_limit_passes_and_one_deeper_does_not)
{
	static const char opens[] = {'[', '{'};
	char buf[512];
	struct pj_result r;
	size_t n, i;

	for (i = 0; i < N_OF(opens); i++) {
		n = nested(buf, sizeof(buf), 32, opens[i]);
		ck_assert_int_eq(pj_validate(buf, n, &LIMITS, &r), 0);
		n = nested(buf, sizeof(buf), 33, opens[i]);
		ck_assert_int_eq(pj_validate(buf, n, &LIMITS, &r), -1);
		ck_assert_str_eq(r.reason, "too deeply nested");
		/* The 33rd opening bracket is the culprit. */
		ck_assert_int_eq(buf[r.offset], opens[i]);
	}
	/* Leaving levels makes room again: depth is not a running total. */
	ck_assert_int_eq(pj_validate(LIT("{\"a\":[[[]]],\"b\":[[[]]]}"),
	                             &(struct pj_limits){.max_bytes = 100,
	                                                 .max_depth = 4,
	                                                 .max_number_len = 8},
	                             &r),
	                 0);
}
END_TEST

START_TEST(a_megabyte_nesting_bomb_is_refused_without_recursion)
{
	struct pj_limits lim = LIMITS;
	size_t n = 1 << 20, i;
	char *bomb = malloc(n);
	struct pj_result r;

	ck_assert_ptr_nonnull(bomb);
	bomb[0] = '{';
	bomb[1] = '"';
	bomb[2] = 'a';
	bomb[3] = '"';
	bomb[4] = ':';
	memset(bomb + 5, '[', n - 5);
	lim.max_bytes = n;
	ck_assert_int_eq(pj_validate(bomb, n, &lim, &r), -1);
	ck_assert_str_eq(r.reason, "too deeply nested");
	ck_assert_int_eq(r.offset, 5 + 31);
	/* Limits beyond the hard ceiling are held to it. */
	lim.max_depth = 1 << 30;
	ck_assert_int_eq(pj_validate(bomb, n, &lim, &r), -1);
	ck_assert_str_eq(r.reason, "too deeply nested");
	ck_assert_int_eq(r.offset, 5 + PJ_DEPTH_CAP - 1);
	/* Balanced, and one level too deep. */
	for (i = 0; i < PJ_DEPTH_CAP - 1; i++)
		bomb[5 + PJ_DEPTH_CAP - 1 + i] = ']';
	bomb[5 + 2 * (PJ_DEPTH_CAP - 1)] = '}';
	ck_assert_int_eq(
	    pj_validate(bomb, 6 + 2 * (PJ_DEPTH_CAP - 1), &lim, &r), 0);
	free(bomb);
}
END_TEST

START_TEST(size_at_the_limit_passes_and_one_byte_over_does_not)
{
	struct pj_limits lim = LIMITS;
	char buf[64];
	struct pj_result r;

	memset(buf, ' ', sizeof(buf));
	buf[0] = '{';
	buf[1] = '}';
	lim.max_bytes = 40;
	ck_assert_int_eq(pj_validate(buf, 40, &lim, &r), 0);
	ck_assert_int_eq(pj_validate(buf, 41, &lim, &r), -1);
	ck_assert_str_eq(r.reason, "too large");
	ck_assert_int_eq(r.offset, 40);
	/* Size comes first: even garbage is "too large". */
	ck_assert_int_eq(pj_validate("\xff\xff\xff", 3,
	                             &(struct pj_limits){.max_bytes = 2}, &r),
	                 -1);
	ck_assert_str_eq(r.reason, "too large");
	lim.max_bytes = SIZE_MAX;
	ck_assert_int_eq(pj_validate(buf, PJ_BYTES_CAP + 1, &lim, &r), -1);
	ck_assert_str_eq(r.reason, "too large");
}
END_TEST

START_TEST(number_limits_follow_the_configuration)
{
	struct pj_limits lim = LIMITS;
	struct pj_result r;

	lim.max_number_len = 3;
	lim.max_exponent = 5;
	ck_assert_int_eq(pj_validate(LIT("{\"a\":-12}"), &lim, &r), 0);
	ck_assert_int_eq(pj_validate(LIT("{\"a\":1234}"), &lim, &r), -1);
	ck_assert_str_eq(r.reason, "number too long");
	ck_assert_int_eq(pj_validate(LIT("{\"a\":1e5}"), &lim, &r), 0);
	ck_assert_int_eq(pj_validate(LIT("{\"a\":1e6}"), &lim, &r), -1);
	ck_assert_str_eq(r.reason, "number out of range");
	/* Past the ceilings that keep numeric happy, no matter what. */
	lim.max_number_len = SIZE_MAX;
	lim.max_exponent = 1 << 30;
	ck_assert_int_eq(pj_validate(LIT("{\"a\":1e16000}"), &lim, &r), 0);
	ck_assert_int_eq(pj_validate(LIT("{\"a\":1e16001}"), &lim, &r), -1);
	ck_assert_str_eq(r.reason, "number out of range");
}
END_TEST

/* Timestamps ------------------------------------------------------------ */

struct ts_case {
	const char *json;
	const char *reason; /* NULL: valid */
	bool has_ts;
	int64_t ms;
};

static const struct ts_case ts_cases[] = {
    {"{\"ts\":\"2026-12-03T11:22:33.120Z\"}", NULL, true, 1796296953120},
    {"{\"ts\":\"2026-12-03T11:22:33Z\"}", NULL, true, 1796296953000},
    {"{\"ts\":\"2026-12-03t11:22:33z\"}", NULL, true, 1796296953000},
    {"{\"ts\":\"2026-12-03 11:22:33Z\"}", NULL, true, 1796296953000},
    {"{\"ts\":\"2026-12-03T11:22:33+05:30\"}", NULL, true, 1796277153000},
    {"{\"ts\":\"2026-12-03T11:22:33-08:00\"}", NULL, true, 1796325753000},
    {"{\"ts\":\"2026-12-03T11:22:33-00:00\"}", NULL, true, 1796296953000},
    {"{\"ts\":\"2026-12-03T11:22:33.1234567891234Z\"}", NULL, true,
     1796296953123},
    {"{\"ts\":\"2026-12-03T11:22:33.1Z\"}", NULL, true, 1796296953100},
    {"{\"ts\":1796296953120}", NULL, true, 1796296953120},
    {"{\"ts\":0}", NULL, true, 0},
    {"{\"ts\":9223372036854775807}", NULL, true, INT64_MAX},
    {"{\"a\":1}", NULL, false, 0},
    {"{\"TS\":\"x\",\"ts \":1.5,\"t\":null}", NULL, false, 0},
    /* an escaped key is decoded before it is compared */
    {"{\"\\u0074s\":1000}", NULL, true, 1000},
    {"{\"t\\u0073\":\"1970-01-01T00:00:01Z\"}", NULL, true, 1000},
    {"{\"\\u0074\":1,\"ts\\u0000\":2}", "NUL character", false, 0},
    {"{\"t\\\"s\":1.5}", NULL, false, 0},
    /* an escaped value too */
    {"{\"ts\":\"1970-01-01T00:00:01\\u005a\"}", NULL, true, 1000},
    {"{\"ts\":\"1970-01-01T00:00:01\\u005a              "
     "                               \"}",
     "bad timestamp", false, 0},
    /* the last duplicate counts, as in jsonb */
    {"{\"ts\":\"bad\",\"ts\":5}", NULL, true, 5},
    {"{\"ts\":5,\"ts\":6}", NULL, true, 6},
    {"{\"ts\":5,\"ts\":\"bad\"}", "bad timestamp", false, 0},
    {"{\"ts\":5,\"\\u0074s\":true}", "bad timestamp", false, 0},
    /* nested members of that name are data, not the time */
    {"{\"a\":{\"ts\":\"bad\"},\"b\":[{\"ts\":1.5}]}", NULL, false, 0},
    {"{\"a\":{\"ts\":\"bad\"},\"ts\":7}", NULL, true, 7},
    {"{\"ts\":{\"ts\":7}}", "bad timestamp", false, 0},
    {"{\"ts\":[7]}", "bad timestamp", false, 0},
    {"{\"ts\":1.5}", "bad timestamp", false, 0},
    {"{\"ts\":1796296953120.0}", "bad timestamp", false, 0},
    {"{\"ts\":1e3}", "bad timestamp", false, 0},
    {"{\"ts\":-1}", "bad timestamp", false, 0},
    {"{\"ts\":-0}", "bad timestamp", false, 0},
    {"{\"ts\":9223372036854775808}", "bad timestamp", false, 0},
    {"{\"ts\":true}", "bad timestamp", false, 0},
    {"{\"ts\":null}", "bad timestamp", false, 0},
    {"{\"ts\":\"\"}", "bad timestamp", false, 0},
    {"{\"ts\":\"1796296953120\"}", "bad timestamp", false, 0},
    {"{\"ts\":\"2026-12-03\"}", "bad timestamp", false, 0},
    {"{\"ts\":\"2026-12-03T11:22:33\"}", "bad timestamp", false, 0},
    {"{\"ts\":\"2026-02-29T00:00:00Z\"}", "bad timestamp", false, 0},
    /* syntax errors come before the timestamp's */
    {"{\"ts\":\"bad\",}", "not JSON", false, 0},
};

START_TEST(timestamp_members_are_read_or_refused)
{
	size_t i;

	for (i = 0; i < N_OF(ts_cases); i++) {
		const struct ts_case *t = &ts_cases[i];
		struct pj_result r;
		int rc = pj_validate(t->json, strlen(t->json), &LIMITS, &r);

		if (t->reason != NULL) {
			ck_assert_msg(rc == -1 && r.reason != NULL &&
			                  strcmp(r.reason, t->reason) == 0,
			              "case %zu %s: got %s, want %s", i,
			              t->json, r.reason ? r.reason : "valid",
			              t->reason);
			continue;
		}
		ck_assert_msg(rc == 0, "case %zu %s: refused: %s at %zu", i,
		              t->json, r.reason, r.offset);
		ck_assert_msg(r.has_ts == t->has_ts && r.ts_ms == t->ms,
		              "case %zu %s: has_ts %d ts_ms %" PRId64, i,
		              t->json, r.has_ts, r.ts_ms);
	}
}
END_TEST

START_TEST(bad_timestamp_offset_points_at_the_last_copy)
{
	static const char json[] = "{\"ts\":1,\"x\":2,\"ts\":\"nope\"}";
	struct pj_result r;

	ck_assert_int_eq(pj_validate(LIT(json), &LIMITS, &r), -1);
	ck_assert_str_eq(r.reason, "bad timestamp");
	ck_assert_int_eq(r.offset, strchr(json, 'n') - json - 1);
}
END_TEST

START_TEST(no_ts_field_means_no_timestamp_checks)
{
	struct pj_limits lim = LIMITS;
	struct pj_result r;

	lim.ts_field = NULL;
	ck_assert_int_eq(pj_validate(LIT("{\"ts\":true}"), &lim, &r), 0);
	ck_assert(!r.has_ts);
	lim.ts_field = "measured_at";
	ck_assert_int_eq(
	    pj_validate(LIT("{\"ts\":true,\"measured_at\":12}"), &lim, &r), 0);
	ck_assert(r.has_ts);
	ck_assert_int_eq(r.ts_ms, 12);
	ck_assert_int_eq(pj_validate(LIT("{\"measured_a\":12}"), &lim, &r), 0);
	ck_assert(!r.has_ts);
}
END_TEST

struct rfc3339_case {
	const char *s;
	int rc;
	int64_t ms;
};

static const struct rfc3339_case rfc3339_cases[] = {
    {"1970-01-01T00:00:00Z", 0, 0},
    {"1969-12-31T23:59:59.5Z", 0, -500},
    {"2000-02-29T12:00:00Z", 0, 951825600000},
    {"2024-02-29T23:59:59.999Z", 0, 1709251199999},
    {"2038-01-19T03:14:08Z", 0, 2147483648000},
    {"2100-03-01T00:00:00Z", 0, 4107542400000},
    {"9999-12-31T23:59:59.999Z", 0, 253402300799999},
    {"0001-01-01T00:00:00Z", 0, -62135596800000},
    {"0000-01-01T00:00:00Z", 0, -62167219200000},
    {"2026-12-03T11:22:33.123999Z", 0, 1796296953123},
    {"2026-12-03T11:22:33.120+00:00", 0, 1796296953120},
    /* leap seconds: only at 23:59 UTC, read as 59.999 */
    {"2016-12-31T23:59:60Z", 0, 1483228799999},
    {"2016-12-31T23:59:60.5Z", 0, 1483228799999},
    {"2017-01-01T05:29:60+05:30", 0, 1483228799999},
    {"2026-06-30T23:59:60Z", 0, 1782863999999},
    {"2016-12-31T23:58:60Z", -1, 0},
    {"2016-12-31T23:59:60+01:00", -1, 0},
    {"2016-12-31T23:59:61Z", -1, 0},
    /* calendar */
    {"2026-02-29T00:00:00Z", -1, 0},
    {"1900-02-29T00:00:00Z", -1, 0},
    {"2026-04-31T00:00:00Z", -1, 0},
    {"2026-13-01T00:00:00Z", -1, 0},
    {"2026-00-01T00:00:00Z", -1, 0},
    {"2026-01-00T00:00:00Z", -1, 0},
    {"2026-01-32T00:00:00Z", -1, 0},
    {"2026-01-01T24:00:00Z", -1, 0},
    {"2026-01-01T00:60:00Z", -1, 0},
    /* syntax */
    {"2026-12-03T11:22:33", -1, 0},
    {"2026-12-03T11:22:33.Z", -1, 0},
    {"2026-12-03T11:22:33,5Z", -1, 0},
    {"2026-12-03T11:22Z", -1, 0},
    {"2026-12-03_11:22:33Z", -1, 0},
    {"2026-12-3T11:22:33Z", -1, 0},
    {"26-12-03T11:22:33Z", -1, 0},
    {"+2026-12-03T11:22:33Z", -1, 0},
    {"2026-12-03T11:22:33ZZ", -1, 0},
    {"2026-12-03T11:22:33Z ", -1, 0},
    {" 2026-12-03T11:22:33Z", -1, 0},
    {"2026-12-03T11:22:33+0530", -1, 0},
    {"2026-12-03T11:22:33+05", -1, 0},
    {"2026-12-03T11:22:33+24:00", -1, 0},
    {"2026-12-03T11:22:33+05:60", -1, 0},
    {"2026-12-03T11:22:33 +05:30", -1, 0},
    {"2026-12-03T11:22:33UTC", -1, 0},
    {"2026-12-03T1a:22:33Z", -1, 0},
    {"", -1, 0},
};

START_TEST(rfc3339_date_times_parse_to_epoch_milliseconds)
{
	size_t i;

	for (i = 0; i < N_OF(rfc3339_cases); i++) {
		const struct rfc3339_case *t = &rfc3339_cases[i];
		int64_t ms = -42;
		int rc = pj_parse_rfc3339(t->s, strlen(t->s), &ms);

		ck_assert_msg(rc == t->rc, "case %zu '%s': rc %d", i, t->s, rc);
		if (rc == 0)
			ck_assert_msg(ms == t->ms, "case %zu '%s': %" PRId64, i,
			              t->s, ms);
	}
	/* The length is honoured; no NUL terminator is needed. */
	ck_assert_int_eq(
	    pj_parse_rfc3339("1970-01-01T00:00:01Zjunk", 20, &(int64_t){0}), 0);
	ck_assert_int_eq(pj_parse_rfc3339(NULL, 0, &(int64_t){0}), -1);
}
END_TEST

/* Robustness ------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* xorshift64*: plenty for choosing mutations, and reproducible. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static const char *const SEEDS[] = {
    READING,
    "{\"a\":[1,-2.5e3,true,false,null,{\"b\":\"\\u00e9\\ud83d\\ude00\"}]}",
    "{\"ts\":1796296953120,\"v\":[[[]]],\"s\":\"Z\xc3\xa4hler \xf0\x9f\x92\xa7"
    "\"}",
    "{\"\\u0074s\":\"2026-12-03 11:22:33+05:30\",\"x\":{\"y\":{}}}",
};

/* Bytes that make mutations likely to reach interesting states. */
static const char INTERESTING[] = "{}[]\":,\\u0123456789-+.eEtfnZT \xc3\xed"
                                  "\xf0\x80\xbf";

static size_t mutate(char *buf, size_t len, size_t cap)
{
	size_t pos = len ? rng() % len : 0, n;
	unsigned char b =
	    rng() % 2
	        ? (unsigned char)rng()
	        : (unsigned char)INTERESTING[rng() % (sizeof(INTERESTING) - 1)];

	switch (rng() % 5) {
	case 0: /* overwrite */
		if (len)
			buf[pos] = (char)b;
		return len;
	case 1: /* insert */
		if (len + 1 > cap)
			return len;
		memmove(buf + pos + 1, buf + pos, len - pos);
		buf[pos] = (char)b;
		return len + 1;
	case 2: /* delete */
		if (len == 0)
			return len;
		memmove(buf + pos, buf + pos + 1, len - pos - 1);
		return len - 1;
	case 3: /* truncate */
		return pos;
	default: /* duplicate a slice */
		n = rng() % 8;
		if (pos + n > len || len + n > cap)
			return len;
		memmove(buf + pos + n, buf + pos, len - pos);
		return len + n;
	}
}

/*
 * Strings are skipped eight bytes at a time while no byte needs a look:
 * every byte value, at every position of a string long enough for several
 * words and a tail, and at every alignment of the string's start, must
 * get the verdict, reason and offset a byte-by-byte reading gives.
 */
START_TEST(every_byte_at_every_string_position_gets_its_verdict)
{
	char buf[64];
	int checked = 0;

	for (int b = 1; b < 256; b++) {
		for (size_t lead = 0; lead < 8; lead++) {
			for (size_t at = 0; at < 27; at++) {
				size_t open = 6 + lead, n;
				struct pj_result r;
				const char *want = NULL;
				int rc;

				/* {"k":"<lead pad>aaaa...X...aaaa"}, with
				 * an 'a' after X (a backslash escapes it) */
				memcpy(buf, "{\"k\":\"", 6);
				memset(buf + 6, 'a', lead + 28);
				buf[open + at] = (char)b;
				n = open + 28;
				memcpy(buf + n, "\"}", 2);
				n += 2;
				if (b < 0x20)
					want = "control character";
				else if (b >= 0x80)
					want = "invalid UTF-8";
				else if (b == '\\')
					want = "invalid escape";
				rc = pj_validate(buf, n, &LIMITS, &r);
				if (b == '"') {
					/* ends the string early: the rest is
					 * not JSON */
					ck_assert_int_eq(rc, -1);
					ck_assert_uint_gt(r.offset, open + at);
				} else if (want == NULL) {
					ck_assert_msg(
					    rc == 0,
					    "byte 0x%02x at %zu+%zu: %s", b,
					    lead, at, r.reason);
				} else {
					ck_assert_msg(
					    rc == -1,
					    "byte 0x%02x at %zu+%zu passed", b,
					    lead, at);
					ck_assert_str_eq(r.reason, want);
					ck_assert_uint_eq(r.offset, open + at);
				}
				checked++;
			}
		}
	}
	ck_assert_int_eq(checked, 255 * 8 * 27);
}
END_TEST

START_TEST(random_mutations_never_crash_and_agree_with_cjson)
{
	static const char *const reasons[] = {
	    "too large",           "not JSON",          "not an object",
	    "trailing data",       "too deeply nested", "invalid UTF-8",
	    "NUL character",       "control character", "invalid escape",
	    "unpaired surrogate",  "invalid number",    "number too long",
	    "number out of range", "bad timestamp",
	};
	char work[512];
	long i, accepted = 0;

	rng_state = UINT64_C(0x9e3779b97f4a7c15);
	for (i = 0; i < 200000; i++) {
		const char *seed = SEEDS[rng() % N_OF(SEEDS)];
		size_t len = strlen(seed), k, rounds = 1 + rng() % 4;
		struct pj_result r;
		char *exact;
		int rc;

		memcpy(work, seed, len);
		for (k = 0; k < rounds; k++)
			len = mutate(work, len, sizeof(work));
		if (i % 8 == 0) {
			/* Now and then, a run of structural bytes from no
			 * seed: deep and unbalanced nesting, odd tokens. */
			len = rng() % sizeof(work);
			for (k = 0; k < len; k++)
				work[k] =
				    INTERESTING[rng() %
				                (sizeof(INTERESTING) - 1)];
			work[0] = '{';
		}
		/* An exactly sized copy, so that the sanitizer builds catch
		 * any read past len. */
		exact = malloc(len ? len : 1);
		ck_assert_ptr_nonnull(exact);
		memcpy(exact, work, len);
		rc = pj_validate(exact, len, &LIMITS, &r);
		ck_assert(rc == 0 || rc == -1);
		ck_assert((rc == 0) == (r.reason == NULL));
		if (rc == 0) {
			cJSON *j = cJSON_ParseWithLength(exact, len);

			/* Strict JSON is JSON to any parser. */
			ck_assert_msg(j != NULL && cJSON_IsObject(j),
			              "cJSON refuses '%.*s'", (int)len, exact);
			cJSON_Delete(j);
			accepted++;
		} else {
			bool known = false;

			ck_assert_uint_le(r.offset, len);
			for (k = 0; k < N_OF(reasons); k++)
				known |= strcmp(r.reason, reasons[k]) == 0;
			ck_assert_msg(known, "unknown reason %s", r.reason);
		}
		free(exact);
	}
	printf("persist_json: 200000 mutated or random payloads, %ld valid\n",
	       accepted);
}
END_TEST

/* Speed ----------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Nanoseconds per call of f, over at least 0.2 s. */
static double time_ns(void (*f)(void), long *iterations)
{
	double start = now_s(), elapsed;
	long n = 0, k;

	do {
		for (k = 0; k < 1000; k++)
			f();
		n += 1000;
		elapsed = now_s() - start;
	} while (elapsed < 0.2);
	*iterations = n;
	return elapsed * 1e9 / (double)n;
}

/* The brief's example reading, and a fuller one of about 200 bytes. */
static const char READING_200[] =
    "{\"ts\":\"2026-12-03T11:22:33.120Z\",\"device\":\"wm-north-0017\","
    "\"flow_lps\":12.5,\"pressure_kpa\":301.2,\"temp_c\":11.25,"
    "\"battery\":3.61,\"rssi_dbm\":-87,\"seq\":1048576,\"status\":\"ok\","
    "\"alarms\":[],\"fw\":\"2.4.1\",\"note\":\"meter pit 3, north\"}";

static const char *bench_doc;
static size_t bench_len;
static volatile int bench_sink;

static void run_pj(void)
{
	struct pj_result r;

	bench_sink += pj_validate(bench_doc, bench_len, &LIMITS, &r);
}

static void run_cjson(void)
{
	cJSON *j = cJSON_ParseWithLength(bench_doc, bench_len);

	bench_sink += j != NULL;
	cJSON_Delete(j);
}

START_TEST(validator_timing_is_reported_next_to_cjson)
{
	static const char *const docs[] = {READING, READING_200};
	size_t i;

	for (i = 0; i < N_OF(docs); i++) {
		long n_pj, n_cj;
		double pj, cj, mb;
		struct pj_result r;

		bench_doc = docs[i];
		bench_len = strlen(docs[i]);
		ck_assert_int_eq(pj_validate(bench_doc, bench_len, &LIMITS, &r),
		                 0);
		pj = time_ns(run_pj, &n_pj);
		cj = time_ns(run_cjson, &n_cj);
		mb = (double)bench_len / 1e6;
		printf("persist_json: %zu-byte reading: pj_validate %.1f ns "
		       "(%.0f MB/s, %ld runs), cJSON parse+delete %.1f ns "
		       "(%.0f MB/s, %ld runs), %.1fx\n",
		       bench_len, pj, mb / (pj / 1e9), n_pj, cj,
		       mb / (cj / 1e9), n_cj, cj / pj);
	}
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("persist_json");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, payloads_get_the_expected_verdict_and_reason);
	tcase_add_test(tc, null_buffer_and_empty_payload_are_not_json);
	tcase_add_test(tc,
	               every_byte_at_every_string_position_gets_its_verdict);
	tcase_add_test(tc, null_limits_mean_the_defaults);
	tcase_add_test(tc, nesting_at_the_limit_passes_and_one_deeper_does_not);
	tcase_add_test(tc,
	               a_megabyte_nesting_bomb_is_refused_without_recursion);
	tcase_add_test(tc, size_at_the_limit_passes_and_one_byte_over_does_not);
	tcase_add_test(tc, number_limits_follow_the_configuration);
	tcase_add_test(tc, timestamp_members_are_read_or_refused);
	tcase_add_test(tc, bad_timestamp_offset_points_at_the_last_copy);
	tcase_add_test(tc, no_ts_field_means_no_timestamp_checks);
	tcase_add_test(tc, rfc3339_date_times_parse_to_epoch_milliseconds);
	tcase_add_test(tc, random_mutations_never_crash_and_agree_with_cjson);
	tcase_add_test(tc, validator_timing_is_reported_next_to_cjson);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return unit_run(suite());
}
