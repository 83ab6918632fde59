/*
 * Payload validation for the persist plugin: a strict JSON checker that
 * accepts exactly what can be stored as jsonb, and the RFC 3339 parser for
 * the measurement time.
 *
 * It runs on the broker thread for every reading, so it makes one pass
 * over the bytes, never allocates and never recurses: nesting is tracked
 * in a fixed bit stack (one bit a level: object or array), so a payload
 * of a million '[' costs a bounded amount of stack and is refused at the
 * first level over the limit. Nothing here depends on the locale.
 */
#include "persist_json.h"

#include <string.h>

/* Decoded timestamp strings that contain escapes are copied here; longer
 * ones are refused (an escaped date-time is already a curiosity). */
#define TS_BUF 64

enum ts_state { TS_NONE, TS_GOOD, TS_BAD };

enum parse_state { ST_VALUE, ST_KEY, ST_AFTER, ST_DONE };

struct pj_ctx {
	const unsigned char *base, *end;
	struct pj_result *out;
	size_t max_number_len;
	int max_depth, max_exponent;
	const char *ts_field;
	size_t ts_len;
	int depth;
	/* Bit d-1 is set when nesting level d is an object. */
	uint64_t objects[PJ_DEPTH_CAP / 64];
	/* The next value is that of a top-level ts_field member. */
	bool ts_pending;
	/* The last ts_field member seen decides, as jsonb keeps it. */
	enum ts_state ts_state;
	size_t ts_offset;
	int64_t ts_ms;
	char ts_buf[TS_BUF];
};

/*
 * Where the decoded text of a string goes when it matters: compared with
 * want (a top-level key against ts_field), or copied into buf (the value
 * of the ts_field member). failed is set by a mismatch or an overflow.
 */
struct sink {
	const char *want;
	char *buf;
	size_t cap, len;
	bool failed, escaped;
};

/* Bytes that may be skipped inside a string without a second look:
 * printable ASCII other than '"' and '\\'. */
static const unsigned char str_plain[256] = {
    /* 0x00-0x1f: control characters */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20, '"' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x30 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50, '\\' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x70 */
    /* 0x80-0xff are zero: multi-byte UTF-8, checked one by one */
};

/*
 * Skip the plain bytes (str_plain) of a string, eight at a time while a
 * whole word is plain, then byte by byte up to the first that is not.
 * A word is plain when none of its bytes is '"', '\\', below 0x20 or at
 * or above 0x80; each test below is the classic "has a zero byte" one,
 * exact as to whether such a byte exists (it may misplace it, which does
 * not matter: the byte loop finds it).
 */
static const unsigned char *skip_plain(const unsigned char *p,
                                       const unsigned char *end)
{
	const uint64_t ones = 0x0101010101010101u, highs = ones * 0x80u;

	while ((size_t)(end - p) >= 8) {
		uint64_t w, quote, bslash;

		memcpy(&w, p, 8);
		quote = w ^ (ones * '"');
		bslash = w ^ (ones * '\\');
		if ((((quote - ones) & ~quote) | ((bslash - ones) & ~bslash) |
		     (w - ones * 0x20u) | w) &
		    highs)
			break;
		p += 8;
	}
	while (p < end && str_plain[*p])
		p++;
	return p;
}

static const unsigned char *fail(struct pj_ctx *c, const unsigned char *at,
                                 const char *reason)
{
	c->out->reason = reason;
	c->out->offset = (size_t)(at - c->base);
	return NULL;
}

static bool is_digit(unsigned char b)
{
	return b >= '0' && b <= '9';
}

static const unsigned char *skip_ws(const unsigned char *p,
                                    const unsigned char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	return p;
}

static void sink_put(struct sink *s, const void *bytes, size_t n)
{
	if (s->failed)
		return;
	if (n > s->cap - s->len) {
		s->failed = true;
		return;
	}
	if (s->want != NULL) {
		if (memcmp(s->want + s->len, bytes, n) != 0)
			s->failed = true;
	} else {
		memcpy(s->buf + s->len, bytes, n);
	}
	s->len += n;
}

/*
 * Length of the well-formed UTF-8 sequence of two to four bytes at p
 * (RFC 3629, table 3-7 of Unicode), or 0 when it is overlong, encodes a
 * surrogate, goes beyond U+10FFFF or is cut short by end.
 */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
	size_t avail = (size_t)(end - p);
	unsigned char b = p[0], lo = 0x80, hi = 0xbf;

	if (b < 0xc2 || b > 0xf4)
		return 0;
	if (b < 0xe0)
		return avail >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (b == 0xe0 || b == 0xf0)
		lo = b == 0xe0 ? 0xa0 : 0x90;
	else if (b == 0xed || b == 0xf4)
		hi = b == 0xed ? 0x9f : 0x8f;
	if (b < 0xf0)
		return avail >= 3 && p[1] >= lo && p[1] <= hi &&
		               (p[2] & 0xc0) == 0x80
		           ? 3
		           : 0;
	return avail >= 4 && p[1] >= lo && p[1] <= hi &&
	               (p[2] & 0xc0) == 0x80 && (p[3] & 0xc0) == 0x80
	           ? 4
	           : 0;
}

/* The value of four hex digits at p (end permitting), or -1. */
static long hex4(const unsigned char *p, const unsigned char *end)
{
	long v = 0;
	int i;

	if (end - p < 4)
		return -1;
	for (i = 0; i < 4; i++) {
		unsigned char b = p[i];

		if (is_digit(b))
			v = v * 16 + (b - '0');
		else if ((b | 0x20) >= 'a' && (b | 0x20) <= 'f')
			v = v * 16 + ((b | 0x20) - 'a' + 10);
		else
			return -1;
	}
	return v;
}

static size_t utf8_encode(uint32_t cp, unsigned char *o)
{
	if (cp < 0x80) {
		o[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (unsigned char)(0xc0 | (cp >> 6));
		o[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (unsigned char)(0xe0 | (cp >> 12));
		o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (unsigned char)(0xf0 | (cp >> 18));
	o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

/*
 * The \u escape at p (four hex digits, and its low half when it is a high
 * surrogate): jsonb refuses \u0000 (text cannot hold it) and surrogates
 * that are not a high one followed at once by a low one. Returns the
 * position after it and stores the code point, or NULL after fail().
 */
static const unsigned char *scan_uescape(struct pj_ctx *c,
                                         const unsigned char *p, uint32_t *cp)
{
	long hi = hex4(p + 2, c->end), lo;

	if (hi < 0)
		return fail(c, p, "invalid escape");
	if (hi == 0)
		return fail(c, p, "NUL character");
	if (hi < 0xd800 || hi > 0xdfff) {
		*cp = (uint32_t)hi;
		return p + 6;
	}
	if (hi >= 0xdc00 || c->end - p < 12 || p[6] != '\\' || p[7] != 'u')
		return fail(c, p, "unpaired surrogate");
	lo = hex4(p + 8, c->end);
	if (lo < 0xdc00 || lo > 0xdfff)
		return fail(c, p, "unpaired surrogate");
	*cp =
	    0x10000 + (((uint32_t)hi - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
	return p + 12;
}

/* The escape sequence at p (a backslash). Returns the position after it,
 * or NULL after fail(). */
static const unsigned char *scan_escape(struct pj_ctx *c,
                                        const unsigned char *p, struct sink *s)
{
	unsigned char utf8[4];
	uint32_t cp;

	if (c->end - p < 2)
		return fail(c, p, "not JSON");
	switch (p[1]) {
	case '"':
	case '\\':
	case '/':
		cp = p[1];
		break;
	case 'b':
		cp = '\b';
		break;
	case 'f':
		cp = '\f';
		break;
	case 'n':
		cp = '\n';
		break;
	case 'r':
		cp = '\r';
		break;
	case 't':
		cp = '\t';
		break;
	case 'u':
		p = scan_uescape(c, p, &cp);
		if (p != NULL && s != NULL)
			sink_put(s, utf8, utf8_encode(cp, utf8));
		return p;
	default:
		return fail(c, p, "invalid escape");
	}
	if (s != NULL)
		sink_put(s, utf8, utf8_encode(cp, utf8));
	return p + 2;
}

/*
 * The string whose contents start at p (after the opening quote), its
 * decoded text fed to s when s is not NULL. Returns the position after
 * the closing quote, or NULL after fail().
 */
static const unsigned char *scan_string(struct pj_ctx *c,
                                        const unsigned char *p, struct sink *s)
{
	const unsigned char *end = c->end, *run = p;

	for (;;) {
		size_t n;

		p = skip_plain(p, end);
		if (p == end)
			return fail(c, p, "not JSON");
		if (*p == '"') {
			if (s != NULL)
				sink_put(s, run, (size_t)(p - run));
			return p + 1;
		}
		if (*p >= 0x80) {
			/* Valid UTF-8 is its own decoded form: it stays in
			 * the run. */
			n = utf8_seq(p, end);
			if (n == 0)
				return fail(c, p, "invalid UTF-8");
			p += n;
			continue;
		}
		if (*p != '\\')
			return fail(c, p,
			            *p == 0 ? "NUL character"
			                    : "control character");
		if (s != NULL) {
			sink_put(s, run, (size_t)(p - run));
			s->escaped = true;
		}
		p = scan_escape(c, p, s);
		if (p == NULL)
			return NULL;
		run = p;
	}
}

static void ts_good(struct pj_ctx *c, int64_t ms)
{
	c->ts_state = TS_GOOD;
	c->ts_ms = ms;
}

static void ts_bad(struct pj_ctx *c, const unsigned char *at)
{
	c->ts_state = TS_BAD;
	c->ts_offset = (size_t)(at - c->base);
}

/* A timestamp member's number: plain decimal digits (no sign, fraction or
 * exponent, checked by the caller) of epoch milliseconds within int64. */
static void ts_from_digits(struct pj_ctx *c, const unsigned char *p,
                           const unsigned char *end)
{
	const unsigned char *start = p;
	int64_t v = 0;

	for (; p < end; p++) {
		int d = *p - '0';

		if (v > (INT64_MAX - d) / 10) {
			ts_bad(c, start);
			return;
		}
		v = v * 10 + d;
	}
	ts_good(c, v);
}

/* A timestamp member's string, whose contents are open..close. */
static void ts_from_string(struct pj_ctx *c, const unsigned char *open,
                           const unsigned char *close, const struct sink *s)
{
	int64_t ms;
	int rc;

	if (!s->escaped)
		rc = pj_parse_rfc3339((const char *)open,
		                      (size_t)(close - open), &ms);
	else
		rc = s->failed ? -1 : pj_parse_rfc3339(s->buf, s->len, &ms);
	if (rc == 0)
		ts_good(c, ms);
	else
		ts_bad(c, open - 1);
}

/*
 * The number at p. JSON's grammar, then the limits: jsonb stores numbers
 * as numeric, which refuses exponents far beyond a thousand digits.
 * Returns the position after it, or NULL after fail().
 */
static const unsigned char *scan_number(struct pj_ctx *c,
                                        const unsigned char *p, bool is_ts)
{
	const unsigned char *start = p, *end = c->end, *int_end;
	bool plain = true;
	int exp = 0;

	if (*p == '-') {
		p++;
		plain = false;
	}
	if (p < end && *p == '0') {
		p++;
	} else if (p < end && *p >= '1' && *p <= '9') {
		while (p < end && is_digit(*p))
			p++;
	} else {
		return fail(c, start, "invalid number");
	}
	int_end = p;
	if (p < end && *p == '.') {
		plain = false;
		if (++p == end || !is_digit(*p))
			return fail(c, start, "invalid number");
		while (p < end && is_digit(*p))
			p++;
	}
	if (p < end && (*p | 0x20) == 'e') {
		plain = false;
		if (++p < end && (*p == '+' || *p == '-'))
			p++;
		if (p == end || !is_digit(*p))
			return fail(c, start, "invalid number");
		for (; p < end && is_digit(*p); p++)
			if (exp <= PJ_EXPONENT_CAP)
				exp = exp * 10 + (*p - '0');
	}
	/* "01", "1.5.2", "0x1f", "1e5e5": number-like bytes straight after a
	 * number make one bad number, not a number and then junk. */
	if (p < end &&
	    (is_digit(*p) || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z') ||
	     *p == '.' || *p == '+' || *p == '-'))
		return fail(c, p, "invalid number");
	if ((size_t)(p - start) > c->max_number_len)
		return fail(c, start, "number too long");
	if (exp > c->max_exponent)
		return fail(c, start, "number out of range");
	if (is_ts) {
		if (plain)
			ts_from_digits(c, start, int_end);
		else
			ts_bad(c, start);
	}
	return p;
}

static const unsigned char *scan_literal(struct pj_ctx *c,
                                         const unsigned char *p)
{
	const char *word = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
	size_t n = strlen(word);

	if ((size_t)(c->end - p) < n || memcmp(p, word, n) != 0)
		return fail(c, p, "not JSON");
	return p + n;
}

static bool in_object(const struct pj_ctx *c)
{
	int i = c->depth - 1;

	return (c->objects[i / 64] >> (i % 64)) & 1;
}

/* Open the object or array whose bracket is at p. Returns the position
 * after its first token's whitespace, or NULL after fail(). */
static const unsigned char *open_level(struct pj_ctx *c, const unsigned char *p,
                                       enum parse_state *st)
{
	bool object = *p == '{';
	uint64_t bit;
	int i;

	if (c->depth >= c->max_depth)
		return fail(c, p, "too deeply nested");
	i = c->depth++;
	bit = (uint64_t)1 << (i % 64);
	if (object)
		c->objects[i / 64] |= bit;
	else
		c->objects[i / 64] &= ~bit;
	p = skip_ws(p + 1, c->end);
	if (p < c->end && *p == (object ? '}' : ']')) {
		c->depth--;
		*st = c->depth == 0 ? ST_DONE : ST_AFTER;
		return p + 1;
	}
	*st = object ? ST_KEY : ST_VALUE;
	return p;
}

/* A byte that cannot start a value: name the most useful reason. */
static const char *bad_value_reason(unsigned char b)
{
	if (b == 0)
		return "NUL character";
	if (b == '+' || b == '.')
		return "invalid number";
	return "not JSON";
}

static const unsigned char *
parse_value(struct pj_ctx *c, const unsigned char *p, enum parse_state *st)
{
	bool is_ts = c->ts_pending;
	struct sink s;
	const unsigned char *q;

	c->ts_pending = false;
	p = skip_ws(p, c->end);
	if (p == c->end)
		return fail(c, p, "not JSON");
	*st = ST_AFTER;
	switch (*p) {
	case '{':
	case '[':
		if (is_ts)
			ts_bad(c, p);
		return open_level(c, p, st);
	case '"':
		if (!is_ts)
			return scan_string(c, p + 1, NULL);
		s = (struct sink){.buf = c->ts_buf, .cap = sizeof(c->ts_buf)};
		q = scan_string(c, p + 1, &s);
		if (q != NULL)
			ts_from_string(c, p + 1, q - 1, &s);
		return q;
	case 't':
	case 'f':
	case 'n':
		if (is_ts)
			ts_bad(c, p);
		return scan_literal(c, p);
	default:
		if (*p == '-' || is_digit(*p))
			return scan_number(c, p, is_ts);
		return fail(c, p, bad_value_reason(*p));
	}
}

/* A member name and its colon; a top-level one is compared with
 * ts_field after decoding. */
static const unsigned char *parse_key(struct pj_ctx *c, const unsigned char *p,
                                      enum parse_state *st)
{
	struct sink s = {.want = c->ts_field, .cap = c->ts_len};
	bool check = c->ts_field != NULL && c->depth == 1;

	p = skip_ws(p, c->end);
	if (p == c->end || *p != '"')
		return fail(
		    c, p, p < c->end && *p == 0 ? "NUL character" : "not JSON");
	p = scan_string(c, p + 1, check ? &s : NULL);
	if (p == NULL)
		return NULL;
	c->ts_pending = check && !s.failed && s.len == c->ts_len;
	p = skip_ws(p, c->end);
	if (p == c->end || *p != ':')
		return fail(c, p, "not JSON");
	*st = ST_VALUE;
	return p + 1;
}

/* After a value: a comma, or the bracket closing the current level. */
static const unsigned char *
parse_after(struct pj_ctx *c, const unsigned char *p, enum parse_state *st)
{
	bool object = in_object(c);

	p = skip_ws(p, c->end);
	if (p == c->end)
		return fail(c, p, "not JSON");
	if (*p == ',') {
		*st = object ? ST_KEY : ST_VALUE;
		return p + 1;
	}
	if (*p != (object ? '}' : ']'))
		return fail(c, p, *p == 0 ? "NUL character" : "not JSON");
	c->depth--;
	*st = c->depth == 0 ? ST_DONE : ST_AFTER;
	return p + 1;
}

/* The whole payload, which is known to start (after blanks) with '{'. */
static int parse(struct pj_ctx *c, const unsigned char *p)
{
	enum parse_state st = ST_VALUE;

	while (st != ST_DONE) {
		if (st == ST_VALUE)
			p = parse_value(c, p, &st);
		else if (st == ST_KEY)
			p = parse_key(c, p, &st);
		else
			p = parse_after(c, p, &st);
		if (p == NULL)
			return -1;
	}
	p = skip_ws(p, c->end);
	if (p != c->end) {
		fail(c, p, "trailing data");
		return -1;
	}
	return 0;
}

static int clamp_int(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

int pj_validate(const void *buf, size_t len, const struct pj_limits *lim,
                struct pj_result *out)
{
	static const struct pj_limits defaults = PJ_LIMITS_DEFAULT;
	struct pj_ctx c;
	const unsigned char *p;
	size_t max_bytes;

	if (out == NULL)
		return -1;
	*out = (struct pj_result){0};
	if (lim == NULL)
		lim = &defaults;
	max_bytes =
	    lim->max_bytes < PJ_BYTES_CAP ? lim->max_bytes : PJ_BYTES_CAP;
	if (len > max_bytes) {
		out->reason = "too large";
		out->offset = max_bytes;
		return -1;
	}
	if (buf == NULL || len == 0) {
		out->reason = "not JSON";
		return -1;
	}
	c.base = buf;
	c.end = c.base + len;
	c.out = out;
	c.max_depth = clamp_int(lim->max_depth, 0, PJ_DEPTH_CAP);
	c.max_exponent = clamp_int(lim->max_exponent, 0, PJ_EXPONENT_CAP);
	c.max_number_len = lim->max_number_len < PJ_NUMBER_LEN_CAP
	                       ? lim->max_number_len
	                       : PJ_NUMBER_LEN_CAP;
	c.ts_field = lim->ts_field;
	c.ts_len = c.ts_field != NULL ? strlen(c.ts_field) : 0;
	c.depth = 0;
	c.ts_pending = false;
	c.ts_state = TS_NONE;

	p = skip_ws(c.base, c.end);
	if (p == c.end || *p != '{') {
		if (p < c.end && *p != 0 && strchr("[\"-0123456789tfn", *p))
			fail(&c, p, "not an object");
		else
			fail(&c, p,
			     p < c.end && *p == 0 ? "NUL character"
			                          : "not JSON");
		return -1;
	}
	if (parse(&c, p) != 0)
		return -1;
	if (c.ts_state == TS_BAD) {
		out->reason = "bad timestamp";
		out->offset = c.ts_offset;
		return -1;
	}
	out->has_ts = c.ts_state == TS_GOOD;
	out->ts_ms = out->has_ts ? c.ts_ms : 0;
	return 0;
}

/* RFC 3339 date-times -------------------------------------------------- */

/* The n decimal digits at s as a number, or -1. */
static int fixed_digits(const char *s, int n)
{
	int v = 0, i;

	for (i = 0; i < n; i++) {
		if (!is_digit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

static bool leap_year(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30,
	                             31, 31, 30, 31, 30, 31};

	return m == 2 && leap_year(y) ? 29 : days[m - 1];
}

/* Days from 0000-01-01 (proleptic Gregorian) to the first of year y >= 0:
 * a year y' < y is a leap year when it is a multiple of 4, except
 * multiples of 100 that are not multiples of 400. */
static int64_t days_before_year(int64_t y)
{
	return 365 * y + (y + 3) / 4 - (y + 99) / 100 + (y + 399) / 400;
}

static int64_t days_since_epoch(int y, int m, int d)
{
	static const int before_month[12] = {0,   31,  59,  90,  120, 151,
	                                     181, 212, 243, 273, 304, 334};
	int64_t days = days_before_year(y) - days_before_year(1970);

	return days + before_month[m - 1] + (m > 2 && leap_year(y)) + d - 1;
}

/*
 * The offset at s[0..n): 'Z', 'z' or "+hh:mm" / "-hh:mm", as minutes to
 * add to UTC for local time. Returns the bytes it took, or 0.
 */
static size_t parse_offset(const char *s, size_t n, int *minutes)
{
	int h, m;

	if (n >= 1 && (s[0] == 'Z' || s[0] == 'z')) {
		*minutes = 0;
		return 1;
	}
	if (n < 6 || (s[0] != '+' && s[0] != '-') || s[3] != ':')
		return 0;
	h = fixed_digits(s + 1, 2);
	m = fixed_digits(s + 4, 2);
	if (h < 0 || h > 23 || m < 0 || m > 59)
		return 0;
	*minutes = (s[0] == '-' ? -1 : 1) * (h * 60 + m);
	return 6;
}

int pj_parse_rfc3339(const char *s, size_t len, int64_t *ms)
{
	int y, mo, d, h, mi, sec, frac = 0, off = 0, digits = 0;
	int64_t minutes;
	size_t i = 19, n;

	/* "YYYY-MM-DDTHH:MM:SS" then at least the one-byte offset "Z". */
	if (s == NULL || ms == NULL || len < 20 || s[4] != '-' || s[7] != '-' ||
	    (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' ||
	    s[16] != ':')
		return -1;
	y = fixed_digits(s, 4);
	mo = fixed_digits(s + 5, 2);
	d = fixed_digits(s + 8, 2);
	h = fixed_digits(s + 11, 2);
	mi = fixed_digits(s + 14, 2);
	sec = fixed_digits(s + 17, 2);
	if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
	    h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60)
		return -1;
	if (s[i] == '.') {
		/* Any number of digits; the first three are milliseconds. */
		for (i++; i < len && is_digit((unsigned char)s[i]); i++)
			if (digits++ < 3)
				frac = frac * 10 + (s[i] - '0');
		if (digits == 0)
			return -1;
		for (; digits < 3; digits++)
			frac *= 10;
	}
	n = parse_offset(s + i, len - i, &off);
	if (n == 0 || i + n != len)
		return -1;
	minutes = days_since_epoch(y, mo, d) * 1440 + h * 60 + mi - off;
	if (sec == 60) {
		/* Leap seconds are inserted at the end of a UTC day only. */
		if (((minutes % 1440) + 1440) % 1440 != 1439)
			return -1;
		sec = 59;
		frac = 999;
	}
	*ms = (minutes * 60 + sec) * 1000 + frac;
	return 0;
}
