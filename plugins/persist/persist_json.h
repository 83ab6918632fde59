/*
 * The persist plugin's payload validator: decides, in one pass over the
 * bytes and without allocating, whether an MQTT payload is a reading that
 * PostgreSQL will store as jsonb, and extracts its measurement time.
 */
#ifndef PERSIST_JSON_H
#define PERSIST_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Hard ceilings, applied whatever the limits ask for, so that a payload
 * the validator accepts is never refused by PostgreSQL 15: nesting much
 * deeper than this exhausts the server's stack (100000 levels do), and
 * numeric cannot hold more than 16383 digits after the decimal point, so
 * the exponent and the literal's length together must stay below that.
 * jsonb's binary form of a document can be about six times its text
 * (each array element costs an entry and an aligned numeric), and a jsonb
 * value holds at most 256 MiB, so payloads are capped at 16 MiB.
 */
#define PJ_DEPTH_CAP 1024
#define PJ_NUMBER_LEN_CAP 256
#define PJ_EXPONENT_CAP 16000
#define PJ_BYTES_CAP ((size_t)16 << 20)

struct pj_limits {
	size_t max_bytes;      /* payload size limit, inclusive */
	int max_depth;         /* object/array levels, the top object is 1 */
	size_t max_number_len; /* longest number literal, in bytes */
	int max_exponent;      /* largest |exponent| written in a number */
	const char *ts_field;  /* top-level member with the time, or NULL */
};

/* Limits suitable for meter readings, used when pj_validate gets NULL. */
#define PJ_LIMITS_DEFAULT                                                      \
	{                                                                      \
		.max_bytes = 64 * 1024, .max_depth = 32, .max_number_len = 64, \
		.max_exponent = 1000, .ts_field = "ts"                         \
	}

struct pj_result {
	const char *reason; /* NULL when valid, else a static English phrase */
	size_t offset;      /* byte offset of the problem */
	bool has_ts;        /* ts_field present (its last copy) and valid */
	int64_t ts_ms;      /* measurement time, Unix epoch milliseconds */
};

/*
 * Validate buf[0..len) as a reading: strict RFC 8259 JSON whose top-level
 * value is an object, with nothing but JSON whitespace around it, and
 * nothing PostgreSQL's jsonb input refuses (invalid UTF-8, \u0000, lone
 * surrogate escapes, numbers numeric cannot hold). When lim->ts_field is
 * set and the top-level object has a member of that name (compared after
 * decoding escapes; the last duplicate counts, as in jsonb), its value
 * must be a non-negative integer of epoch milliseconds or an RFC 3339
 * date-time string (see pj_parse_rfc3339); it fills has_ts and ts_ms.
 * A timestamp string written with escapes must decode to at most 64
 * bytes. Whether the time is plausible (not too far in the past or
 * future) is for the caller to judge.
 * lim may be NULL for PJ_LIMITS_DEFAULT.
 *
 * Returns 0 when the payload is valid (out->reason NULL). Returns -1 with
 * out->reason and out->offset set otherwise; the reasons are "too large",
 * "not JSON", "not an object", "trailing data", "too deeply nested",
 * "invalid UTF-8", "NUL character", "control character",
 * "invalid escape", "unpaired surrogate", "invalid number",
 * "number too long", "number out of range" and "bad timestamp".
 * Returns -1 without touching anything when out is NULL.
 */
int pj_validate(const void *buf, size_t len, const struct pj_limits *lim,
                struct pj_result *out);

/*
 * Parse s[0..len) as an RFC 3339 date-time ("2026-12-03T11:22:33.120Z"):
 * 'T', 't' or a space between date and time, 'Z', 'z' or a numeric
 * offset ("+05:30", "-00:00"), fractional seconds of any length,
 * truncated to milliseconds. Days are checked against the month and leap
 * years. A leap second (second 60) is accepted only at 23:59 UTC and is
 * read as 23:59:59.999, so that it stays inside its own day and before
 * the next second. Years 0000 to 9999 are accepted, as in RFC 3339
 * (PostgreSQL has no year 0; such times fail the caller's bounds check).
 * Nothing may follow the offset.
 *
 * Returns 0 and the time in Unix epoch milliseconds in *ms (negative
 * before 1970), or -1 if s is not such a date-time.
 */
int pj_parse_rfc3339(const char *s, size_t len, int64_t *ms);

#endif
