/*
 * Access withdrawn in the database after the registry in memory was read:
 * certificates revoked or deleted, devices suspended, decommissioned or
 * deleted, accounts disabled or deleted.
 *
 * The loader reads the rows that change notifications name. When it
 * cannot patch the registry with them and must read the whole registry
 * again (which takes a few hundred milliseconds with a hundred thousand
 * devices, and waits for any lock an administrator holds on a registry
 * table), it hands what they withdraw to the broker thread at once. The
 * broker refuses and disconnects these identities until the next
 * registry is installed, which holds the same changes. A set only ever
 * takes access away: whatever it lacks, the registry decides.
 *
 * A set is built on one thread and then only read; sets are sorted so that
 * each lookup is a binary search.
 */
#ifndef FG_WITHDRAWN_H
#define FG_WITHDRAWN_H

#include <stdbool.h>
#include <stddef.h>

#include "fg_common.h"
#include "fg_ident.h"

enum fg_withdrawn_kind {
	FG_WD_CERT,    /* key: fingerprint (fg_fingerprint.hex) */
	FG_WD_DEVICE,  /* key: device id */
	FG_WD_ACCOUNT, /* key: username */
};
#define FG_WD_KINDS 3

enum fg_withdrawn_why {
	FG_WD_GONE,           /* the row was deleted */
	FG_WD_REVOKED,        /* certificate */
	FG_WD_SUSPENDED,      /* device */
	FG_WD_DECOMMISSIONED, /* device */
	FG_WD_DISABLED,       /* account */
};

struct fg_withdrawn;

/* An empty set; NULL when out of memory. */
FG_API struct fg_withdrawn *fg_withdrawn_new(void);
FG_API void fg_withdrawn_free(struct fg_withdrawn *w);
/* Add key (copied); a key added twice keeps its last reason. Returns 0,
 * or -1 when out of memory. Call fg_withdrawn_seal before any lookup. */
FG_API int fg_withdrawn_add(struct fg_withdrawn *w, enum fg_withdrawn_kind k,
                            const char *key, enum fg_withdrawn_why why);
/* Add every key of from (the later set's reasons win). 0 or -1. */
FG_API int fg_withdrawn_merge(struct fg_withdrawn *w,
                              const struct fg_withdrawn *from);
/* Sort for lookups (and drop duplicates). */
FG_API void fg_withdrawn_seal(struct fg_withdrawn *w);
/* Is key withdrawn? Fills *why when it is. w may be NULL (nothing). */
FG_API bool fg_withdrawn_has(const struct fg_withdrawn *w,
                             enum fg_withdrawn_kind k, const char *key,
                             enum fg_withdrawn_why *why);
FG_API size_t fg_withdrawn_count(const struct fg_withdrawn *w,
                                 enum fg_withdrawn_kind k);

#endif
