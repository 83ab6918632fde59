/*
 * Which budget applies to a device: the rate limit rows of the registry,
 * indexed by scope, and the field-by-field inheritance device, then
 * municipality, then global, then the plugin's defaults.
 *
 * The index points into the registry it was built from, so it is rebuilt
 * whenever the runtime installs a new registry (the caller compares the
 * runtime's generation before every use).
 */
#include <stdlib.h>
#include <string.h>

#include "rl.h"

struct rl_limits_index {
	const struct fg_registry *reg;
	struct rl_limits defaults;
	const struct fg_limit *global;
	const struct fg_limit **devices, **municipalities; /* sorted */
	size_t ndevices, nmunicipalities;
};

static int by_scope(const void *a, const void *b)
{
	const struct fg_limit *const *x = a, *const *y = b;

	return strcmp((*x)->scope, (*y)->scope);
}

struct rl_limits_index *rl_limits_index_new(const struct fg_registry *reg,
                                            const struct rl_limits *defaults)
{
	struct rl_limits_index *ix = calloc(1, sizeof(*ix));
	const struct fg_limit *rows = NULL;
	size_t n = 0, i;

	if (ix == NULL)
		return NULL;
	ix->reg = reg;
	ix->defaults = *defaults;
	if (reg != NULL && fg_registry_has_limits(reg))
		rows = fg_registry_limits(reg, &n);
	if (n > 0) {
		ix->devices = calloc(n, sizeof(*ix->devices));
		ix->municipalities = calloc(n, sizeof(*ix->municipalities));
		if (ix->devices == NULL || ix->municipalities == NULL) {
			rl_limits_index_free(ix);
			return NULL;
		}
	}
	for (i = 0; i < n; i++) {
		switch (rows[i].kind) {
		case FG_LIMIT_GLOBAL:
			ix->global = &rows[i];
			break;
		case FG_LIMIT_MUNICIPALITY:
			ix->municipalities[ix->nmunicipalities++] = &rows[i];
			break;
		case FG_LIMIT_DEVICE:
			ix->devices[ix->ndevices++] = &rows[i];
			break;
		}
	}
	if (ix->ndevices > 1)
		qsort(ix->devices, ix->ndevices, sizeof(*ix->devices),
		      by_scope);
	if (ix->nmunicipalities > 1)
		qsort(ix->municipalities, ix->nmunicipalities,
		      sizeof(*ix->municipalities), by_scope);
	return ix;
}

void rl_limits_index_free(struct rl_limits_index *ix)
{
	if (ix == NULL)
		return;
	free(ix->devices);
	free(ix->municipalities);
	free(ix);
}

static const struct fg_limit *find(const struct fg_limit **rows, size_t n,
                                   const char *scope)
{
	struct fg_limit key = {.scope = (char *)(uintptr_t)scope};
	const struct fg_limit *kp = &key, **hit;

	if (scope == NULL || n == 0)
		return NULL;
	hit = bsearch(&kp, rows, n, sizeof(*rows), by_scope);
	return hit ? *hit : NULL;
}

/* Fill the fields out does not have yet (-1) from row. */
static void inherit(struct rl_limits *out, const struct fg_limit *row)
{
	if (row == NULL)
		return;
	if (out->messages < 0)
		out->messages = row->messages;
	if (out->bytes < 0)
		out->bytes = row->bytes;
	if (out->window_ms < 0 && row->window_s > 0)
		out->window_ms = row->window_s * 1000;
	if (out->burst < 0)
		out->burst = row->burst;
}

void rl_limits_resolve(const struct rl_limits_index *ix, const char *device_id,
                       struct rl_limits *out)
{
	const struct fg_device *dev =
	    ix->reg ? fg_registry_device(ix->reg, device_id) : NULL;

	out->messages = out->bytes = out->window_ms = out->burst = -1;
	inherit(out, find(ix->devices, ix->ndevices, device_id));
	if (dev != NULL)
		inherit(out, find(ix->municipalities, ix->nmunicipalities,
		                  dev->municipality));
	inherit(out, ix->global);
	if (out->messages < 0)
		out->messages = ix->defaults.messages;
	if (out->bytes < 0)
		out->bytes = ix->defaults.bytes;
	if (out->window_ms <= 0)
		out->window_ms = ix->defaults.window_ms;
	if (out->burst < 0)
		out->burst = ix->defaults.burst;
}
