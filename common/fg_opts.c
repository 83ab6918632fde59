/*
 * Option parsing for plugin_opt_* lines.
 */
#include "fg_opts.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

/* Mosquitto passes the rest of the line, trailing blanks included. */
static char *trimmed_copy(const char *v)
{
	const char *end;
	char *out;
	size_t n;

	while (isspace((unsigned char)*v))
		v++;
	end = v + strlen(v);
	while (end > v && isspace((unsigned char)end[-1]))
		end--;
	n = (size_t)(end - v);
	out = malloc(n + 1);
	if (out != NULL) {
		memcpy(out, v, n);
		out[n] = '\0';
	}
	return out;
}

static int parse_bool(const char *v, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};
	size_t i;

	for (i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

static int apply(const struct fg_opt_spec *s, void *base, const char *raw,
                 char *err, size_t errlen)
{
	char *field = (char *)base + s->offset;
	char *v = trimmed_copy(raw);
	int rc = -1;

	if (v == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	switch (s->type) {
	case FG_OPT_STRING: {
		char **dst = (char **)(void *)field;
		free(*dst);
		*dst = v;
		return 0;
	}
	case FG_OPT_INT: {
		char *end;
		long n;

		errno = 0;
		n = strtol(v, &end, 10);
		if (v[0] == '\0' || *end != '\0' || errno != 0 || n < s->min ||
		    n > s->max) {
			fg_seterr(err, errlen,
			          "plugin_opt_%s: '%.64s' is not an integer "
			          "from %ld to %ld",
			          s->key, v, s->min, s->max);
			break;
		}
		*(int *)(void *)field = (int)n;
		rc = 0;
		break;
	}
	case FG_OPT_BOOL:
		if (parse_bool(v, (bool *)(void *)field) != 0) {
			fg_seterr(err, errlen,
			          "plugin_opt_%s: '%.64s' is not true or false",
			          s->key, v);
			break;
		}
		rc = 0;
		break;
	case FG_OPT_ENUM: {
		int i;

		for (i = 0; s->choices[i] != NULL; i++) {
			if (strcmp(v, s->choices[i]) == 0) {
				*(int *)(void *)field = i;
				rc = 0;
				break;
			}
		}
		if (rc != 0) {
			char list[256] = "";
			size_t off = 0;

			for (i = 0; s->choices[i] != NULL; i++)
				off += (size_t)snprintf(
				    list + off,
				    off < sizeof(list) ? sizeof(list) - off : 0,
				    "%s%s", i ? ", " : "", s->choices[i]);
			fg_seterr(err, errlen,
			          "plugin_opt_%s: '%.64s' is not one of: %s",
			          s->key, v, list);
		}
		break;
	}
	}
	free(v);
	return rc;
}

int fg_opts_parse(const struct fg_opt_table *tables, size_t ntables,
                  const struct mosquitto_opt *opts, int count, char *err,
                  size_t errlen)
{
	int i, j;

	for (i = 0; i < count; i++) {
		const struct fg_opt_spec *spec = NULL;
		void *base = NULL;
		size_t t, k;

		for (t = 0; t < ntables && spec == NULL; t++) {
			for (k = 0; k < tables[t].count; k++) {
				if (strcmp(opts[i].key,
				           tables[t].specs[k].key) == 0) {
					spec = &tables[t].specs[k];
					base = tables[t].base;
					break;
				}
			}
		}
		if (spec == NULL) {
			fg_seterr(err, errlen,
			          "plugin_opt_%.64s: unknown option",
			          opts[i].key);
			return -1;
		}
		for (j = 0; j < i; j++) {
			if (strcmp(opts[j].key, opts[i].key) == 0) {
				fg_seterr(err, errlen,
				          "plugin_opt_%s: given more than once",
				          spec->key);
				return -1;
			}
		}
		if (opts[i].value == NULL) {
			fg_seterr(err, errlen, "plugin_opt_%s: no value",
			          spec->key);
			return -1;
		}
		if (apply(spec, base, opts[i].value, err, errlen) != 0)
			return -1;
	}
	return 0;
}

void fg_opts_free(const struct fg_opt_table *table)
{
	size_t k;

	for (k = 0; k < table->count; k++) {
		if (table->specs[k].type == FG_OPT_STRING) {
			char **dst = (char **)(void *)((char *)table->base +
			                               table->specs[k].offset);
			free(*dst);
			*dst = NULL;
		}
	}
}
