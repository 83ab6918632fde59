/*
 * The persist plugin's writer thread: reads the journal in order and
 * stores its entries in PostgreSQL in batches, each batch committed
 * together with the broker's progress row, so that every entry is stored
 * exactly once whatever fails and when.
 */
#ifndef PERSIST_WRITER_H
#define PERSIST_WRITER_H

#include "fg_pg.h"
#include "persist_journal.h"

struct writer_settings {
	struct fg_pg_settings pg;
	const char *broker_id;
	int batch_rows;   /* entries per transaction at most */
	int flush_ms;     /* longest wait for more entries when idle */
	int retry_max_ms; /* backoff ceiling while PostgreSQL is away */
	enum journal_sync sync;
};

struct writer;

/* Start the thread. Returns NULL with err set on failure. */
struct writer *writer_start(struct journal *j, const struct writer_settings *s,
                            char *err, size_t errlen);

/* Stop the thread (waiting at most a few seconds for a call to a frozen
 * database). Returns 0, or -1 when the thread did not stop in time: the
 * journal must then not be freed. */
int writer_stop(struct writer *w);

struct writer_stats {
	uint64_t readings;     /* rows stored */
	uint64_t audit_events; /* audit rows stored */
	uint64_t rejected;     /* rows the database refused (set aside) */
	uint64_t batches;
	uint64_t skipped_bytes; /* damaged journal bytes passed over */
	bool db_up;
};
void writer_stats(struct writer *w, struct writer_stats *out);

#endif
