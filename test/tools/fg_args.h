/*
 * Numeric command-line arguments for the test and benchmark tools:
 * decimal, nothing after the number, within [min, max]. Each returns
 * false (leaving *out alone) on anything else.
 */
#ifndef FG_ARGS_H
#define FG_ARGS_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

static inline bool parse_i64(const char *s, int64_t min, int64_t max,
                             int64_t *out)
{
	char *end = NULL;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return false;
	*out = (int64_t)v;
	return true;
}

static inline bool parse_long(const char *s, long min, long max, long *out)
{
	int64_t v;

	if (!parse_i64(s, min, max, &v))
		return false;
	*out = (long)v;
	return true;
}

static inline bool parse_int(const char *s, int min, int max, int *out)
{
	int64_t v;

	if (!parse_i64(s, min, max, &v))
		return false;
	*out = (int)v;
	return true;
}

/* A number (strtod) within [min, max], or (min, max] when above_min; NaN
 * is refused. */
static inline bool parse_double(const char *s, double min, double max,
                                bool above_min, double *out)
{
	char *end = NULL;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= min) ||
	    (above_min && !(v > min)) || v > max)
		return false;
	*out = v;
	return true;
}

#endif
