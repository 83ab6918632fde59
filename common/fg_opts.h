/*
 * Table-driven parsing of plugin_opt_* values.
 *
 * Each plugin describes its options in a table of fg_opt_spec; the parser
 * fills a configuration struct and refuses unknown keys, repeated keys and
 * values out of range, naming the option in the message. String values
 * are never echoed in messages: they may hold credentials.
 */
#ifndef FG_OPTS_H
#define FG_OPTS_H

#include <stdbool.h>

#include "fg_common.h"

struct mosquitto_opt;

enum fg_opt_type {
	FG_OPT_STRING, /* char *, strdup'ed; free with fg_opts_free */
	FG_OPT_INT,    /* int, within [min, max] */
	FG_OPT_BOOL,   /* bool: true/false, yes/no, on/off, 1/0 */
	FG_OPT_ENUM,   /* int: index into choices */
};

struct fg_opt_spec {
	const char *key; /* without the plugin_opt_ prefix */
	enum fg_opt_type type;
	size_t offset; /* of the field in the configuration struct */
	long min, max; /* FG_OPT_INT */
	const char *const *choices; /* FG_OPT_ENUM, NULL-terminated */
};

struct fg_opt_table {
	const struct fg_opt_spec *specs;
	size_t count;
	void *base; /* the configuration struct the offsets refer to */
};

/*
 * Parse options against the tables (a key may be in any one of them).
 * Returns 0 on success, -1 with a message naming the option in err.
 * Fields of options that are absent keep the values they had.
 */
FG_API int fg_opts_parse(const struct fg_opt_table *tables, size_t ntables,
                         const struct mosquitto_opt *opts, int count, char *err,
                         size_t errlen);

/* Free the FG_OPT_STRING fields of one table's configuration struct. */
FG_API void fg_opts_free(const struct fg_opt_table *table);

#endif
