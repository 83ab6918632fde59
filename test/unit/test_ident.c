/*
 * Unit tests: fingerprint parsing and normalisation, identity validation,
 * sanitising of untrusted text, and mosquitto_passwd hash verification.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "fg_ident.h"
#include "fg_passwd.h"
#include "unit_run.h"

static const char HEX[] =
    "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef560099";
static const char COLON[] =
    "AB:12:CD:34:EF:56:AB:12:CD:34:EF:56:AB:12:CD:34:EF:56:AB:12:CD:34:"
    "EF:56:AB:12:CD:34:EF:56:00:99";

START_TEST(openssl_colon_form_normalises_to_lowercase_hex)
{
	fg_fingerprint fp;

	ck_assert_int_eq(fg_fingerprint_parse(COLON, &fp), 0);
	ck_assert_str_eq(fp.hex, HEX);
}
END_TEST

START_TEST(sha256sum_form_in_either_case_is_accepted)
{
	fg_fingerprint fp;
	char upper[65];
	size_t i;

	ck_assert_int_eq(fg_fingerprint_parse(HEX, &fp), 0);
	ck_assert_str_eq(fp.hex, HEX);
	for (i = 0; i < 64; i++)
		upper[i] = (char)(HEX[i] >= 'a' ? HEX[i] - 32 : HEX[i]);
	upper[64] = '\0';
	ck_assert_int_eq(fg_fingerprint_parse(upper, &fp), 0);
	ck_assert_str_eq(fp.hex, HEX);
}
END_TEST

START_TEST(openssl_output_line_with_prefix_and_newline_is_accepted)
{
	char line[200];
	fg_fingerprint fp;

	snprintf(line, sizeof(line), "sha256 Fingerprint=%s\n", COLON);
	ck_assert_int_eq(fg_fingerprint_parse(line, &fp), 0);
	ck_assert_str_eq(fp.hex, HEX);
	snprintf(line, sizeof(line), "  SHA256:%s  ", HEX);
	ck_assert_int_eq(fg_fingerprint_parse(line, &fp), 0);
}
END_TEST

START_TEST(malformed_fingerprints_are_refused)
{
	static const char *const bad[] = {
	    "",
	    "ab",
	    HEX + 1,
	    /* 65 digits */
	    "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef5600990",
	    /* a non-hex digit */
	    "gb12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef560099",
	    /* colons in the wrong places */
	    "A:B12:CD:34:EF:56:AB:12:CD:34:EF:56:AB:12:CD:34:EF:56:AB:12:CD:"
	    "34:EF:56:AB:12:CD:34:EF:56:00:99",
	    /* a sha1-sized fingerprint */
	    "AB:12:CD:34:EF:56:AB:12:CD:34:EF:56:AB:12:CD:34:EF:56:AB:12",
	    "ab12cd34ef56ab12cd34ef56ab12cd34 ef56ab12cd34ef56ab12cd34ef560099",
	    NULL,
	};
	fg_fingerprint fp;
	size_t i;

	for (i = 0; bad[i] != NULL; i++)
		ck_assert_msg(fg_fingerprint_parse(bad[i], &fp) != 0,
		              "accepted '%s'", bad[i]);
	ck_assert_int_ne(fg_fingerprint_parse(NULL, &fp), 0);
}
END_TEST

START_TEST(plain_device_ids_are_valid_identities)
{
	ck_assert_int_eq(fg_ident_check("meter-0001", 64), FG_IDENT_OK);
	ck_assert_int_eq(fg_ident_check("wm.north:17_b", 64), FG_IDENT_OK);
	ck_assert_int_eq(fg_ident_check("Zähler-ß-水", 64), FG_IDENT_OK);
}
END_TEST

START_TEST(hostile_identities_are_refused_with_the_right_reason)
{
	static const struct {
		const char *s;
		enum fg_ident_error want;
	} cases[] = {
	    {"", FG_IDENT_EMPTY},
	    {"a+b", FG_IDENT_WILDCARD},
	    {"#", FG_IDENT_WILDCARD},
	    {"water/x", FG_IDENT_SEPARATOR},
	    {"tab\there", FG_IDENT_CONTROL},
	    {"nl\n", FG_IDENT_CONTROL},
	    {"del\x7f", FG_IDENT_CONTROL},
	    {"c1\xc2\x85", FG_IDENT_CONTROL},
	    {"bad\xff", FG_IDENT_BAD_UTF8},
	    {"overlong\xc0\xaf", FG_IDENT_BAD_UTF8},
	    {"surrogate\xed\xa0\x80", FG_IDENT_BAD_UTF8},
	    {"truncated\xe2\x82", FG_IDENT_BAD_UTF8},
	    {"beyond\xf4\x90\x80\x80", FG_IDENT_BAD_UTF8},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(
		    fg_ident_check(cases[i].s, 64) == cases[i].want,
		    "case %zu: got %s", i,
		    fg_ident_error_str(fg_ident_check(cases[i].s, 64)));
	ck_assert_int_eq(fg_ident_check(NULL, 64), FG_IDENT_EMPTY);
}
END_TEST

START_TEST(identity_length_limit_is_in_bytes_and_inclusive)
{
	char s[70];

	memset(s, 'a', 64);
	s[64] = '\0';
	ck_assert_int_eq(fg_ident_check(s, 64), FG_IDENT_OK);
	s[64] = 'a';
	s[65] = '\0';
	ck_assert_int_eq(fg_ident_check(s, 64), FG_IDENT_TOO_LONG);
}
END_TEST

START_TEST(sanitize_replaces_controls_and_bad_utf8_and_bounds_length)
{
	char out[16];

	ck_assert_str_eq(fg_sanitize("a\nb\xff", out, sizeof(out)), "a?b?");
	ck_assert_str_eq(fg_sanitize(NULL, out, sizeof(out)), "-");
	ck_assert_str_eq(fg_sanitize("0123456789abcdefghij", out, 8),
	                 "0123456");
	/* A multibyte character that does not fit is left out whole. */
	ck_assert_str_eq(fg_sanitize("abcdef\xe6\xb0\xb4", out, 8), "abcdef");
}
END_TEST

/* Written by `mosquitto_passwd -b -c file dash s3cret` (2.0.11). */
static const char PBKDF2_HASH[] =
    "$7$101$SmYvxLSDVDliPOav$gsiV7wzolJE6vz9E2VdRzSd6qnrFAef5KmNHnenvvty"
    "GIaz7Rt1oCjp0xzPHzDCtNY8S2IZ0qX/knt01OsHg5g==";

START_TEST(mosquitto_passwd_pbkdf2_hash_verifies)
{
	ck_assert_int_eq(fg_passwd_verify(PBKDF2_HASH, "s3cret"),
	                 FG_PASSWD_MATCH);
	ck_assert_int_eq(fg_passwd_verify(PBKDF2_HASH, "s3cret "),
	                 FG_PASSWD_MISMATCH);
	ck_assert_int_eq(fg_passwd_verify(PBKDF2_HASH, ""), FG_PASSWD_MISMATCH);
	ck_assert_int_eq(fg_passwd_verify(PBKDF2_HASH, NULL),
	                 FG_PASSWD_MISMATCH);
}
END_TEST

START_TEST(malformed_stored_hashes_never_match)
{
	static const char *const bad[] = {
	    "",
	    "s3cret",
	    "$5$abc$def",
	    "$7$0$SmYvxLSDVDliPOav$abc",
	    "$7$99999999$SmYvxLSDVDliPOav$gsiV7wzolJE6vz9E2VdRzSd6qnrFAef5",
	    "$7$101$$gsiV7wzolJE6vz9E2VdRzSd6qnrFAef5",
	    "$7$101$SmYvxLSDVDliPOav$short",
	    "$6$!!!!$gsiV7wzolJE6vz9E2VdRzSd6qnrFAef5KmNHnenvvty",
	    NULL,
	};
	size_t i;

	for (i = 0; bad[i] != NULL; i++) {
		ck_assert_int_eq(fg_passwd_verify(bad[i], "s3cret"),
		                 FG_PASSWD_MALFORMED);
		ck_assert_int_ne(fg_passwd_check_format(bad[i]), 0);
	}
	ck_assert_int_eq(fg_passwd_check_format(PBKDF2_HASH), 0);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("ident");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, openssl_colon_form_normalises_to_lowercase_hex);
	tcase_add_test(tc, sha256sum_form_in_either_case_is_accepted);
	tcase_add_test(tc,
	               openssl_output_line_with_prefix_and_newline_is_accepted);
	tcase_add_test(tc, malformed_fingerprints_are_refused);
	tcase_add_test(tc, plain_device_ids_are_valid_identities);
	tcase_add_test(tc,
	               hostile_identities_are_refused_with_the_right_reason);
	tcase_add_test(tc, identity_length_limit_is_in_bytes_and_inclusive);
	tcase_add_test(
	    tc, sanitize_replaces_controls_and_bad_utf8_and_bounds_length);
	tcase_add_test(tc, mosquitto_passwd_pbkdf2_hash_verifies);
	tcase_add_test(tc, malformed_stored_hashes_never_match);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return unit_run(suite());
}
