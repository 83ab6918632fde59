/*
 * Topic and filter matching on the raw strings, without allocation: the
 * check on every delivered message runs through here on a cache miss.
 */
#include <string.h>

#include "acl.h"

/* End of the level starting at s: the next '/' or the terminating NUL. */
static const char *level_end(const char *s)
{
	while (*s != '\0' && *s != '/')
		s++;
	return s;
}

static bool is_wild(const char *lvl, const char *end, char w)
{
	return end - lvl == 1 && lvl[0] == w;
}

bool acl_topic_matches(const char *p, const char *t)
{
	/* Wildcards at the first level never match "$..." topics. */
	if (t[0] == '$' && (p[0] == '+' || p[0] == '#'))
		return false;
	for (;;) {
		const char *pe = level_end(p), *te = level_end(t);

		if (is_wild(p, pe, '#'))
			return *pe == '\0';
		if (!is_wild(p, pe, '+') &&
		    ((size_t)(pe - p) != (size_t)(te - t) ||
		     memcmp(p, t, (size_t)(pe - p)) != 0))
			return false;
		if (*pe == '\0' && *te == '\0')
			return true;
		if (*te == '\0')
			/* "a/#" also matches "a". */
			return strcmp(pe, "/#") == 0;
		if (*pe == '\0')
			return false;
		p = pe + 1;
		t = te + 1;
	}
}

bool acl_filter_within(const char *f, const char *p)
{
	/* A filter naming a "$..." level is only within a pattern that names
	 * it too; a wildcard filter never reaches "$..." topics. */
	if (f[0] == '$' && (p[0] == '+' || p[0] == '#'))
		return false;
	for (;;) {
		const char *fe = level_end(f), *pe = level_end(p);

		if (is_wild(p, pe, '#'))
			return *pe == '\0';
		if (is_wild(f, fe, '#'))
			return false;
		if (is_wild(f, fe, '+')) {
			if (!is_wild(p, pe, '+'))
				return false;
		} else if (!is_wild(p, pe, '+') &&
		           ((size_t)(pe - p) != (size_t)(fe - f) ||
		            memcmp(p, f, (size_t)(pe - p)) != 0)) {
			return false;
		}
		if (*fe == '\0' && *pe == '\0')
			return true;
		if (*fe == '\0')
			return strcmp(pe, "/#") == 0;
		if (*pe == '\0')
			return false;
		f = fe + 1;
		p = pe + 1;
	}
}

const char *acl_strip_share(const char *filter)
{
	static const char prefix[] = "$share/";
	const char *group, *slash;

	if (strncmp(filter, prefix, sizeof(prefix) - 1) != 0)
		return filter;
	group = filter + sizeof(prefix) - 1;
	slash = strchr(group, '/');
	/* The group is one non-empty level without wildcards. */
	if (slash == NULL || slash == group || slash[1] == '\0' ||
	    memchr(group, '+', (size_t)(slash - group)) != NULL ||
	    memchr(group, '#', (size_t)(slash - group)) != NULL)
		return NULL;
	return slash + 1;
}

bool acl_filter_valid(const char *s)
{
	const char *lvl = s;

	if (s == NULL || s[0] == '\0')
		return false;
	for (;;) {
		const char *end = level_end(lvl);
		size_t len = (size_t)(end - lvl);

		if ((memchr(lvl, '+', len) != NULL &&
		     !is_wild(lvl, end, '+')) ||
		    (memchr(lvl, '#', len) != NULL &&
		     (!is_wild(lvl, end, '#') || *end != '\0')))
			return false;
		if (*end == '\0')
			return true;
		lvl = end + 1;
	}
}
