/*
 * The persist plugin's journal: an append-only log of readings and audit
 * events on local disk, written by the broker thread before a message is
 * acknowledged and read back by the writer thread that sends it to
 * PostgreSQL.
 *
 * The journal is a directory of segment files named after the sequence
 * number of their first entry (16 hex digits, ".seg"). Each entry is
 *   magic (4) | body length (4) | CRC-32C of the body (4) | body
 * so that a torn write at the tail or a damaged block in the middle is
 * recognised and skipped, never misread. A lock file keeps a second broker
 * out of the directory; a small checkpoint file records how far PostgreSQL
 * has committed, so that fully stored segments are deleted, also after a
 * restart.
 *
 * Threads: journal_append/journal_flush/journal_stats are called from one
 * thread (the broker's); journal_next/journal_committed/journal_wait and
 * journal_sync from one other (the writer's). The two share only segment
 * sizes and counters, under one mutex.
 */
#ifndef PERSIST_JOURNAL_H
#define PERSIST_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum journal_type { JOURNAL_READING = 1, JOURNAL_AUDIT = 2 };

/* Variable-length fields of an entry. An audit entry keeps its event as
 * one JSON object in JF_PAYLOAD. */
enum journal_field {
	JF_DEVICE,
	JF_MUNICIPALITY,
	JF_ACCOUNT,
	JF_CLIENT,
	JF_TOPIC,
	JF_PAYLOAD,
	JF_COUNT
};

/* p == NULL: the field is absent (SQL NULL); otherwise len bytes. */
struct journal_bytes {
	const void *p;
	uint32_t len;
};

struct journal_record {
	uint8_t type;
	uint8_t qos;
	uint64_t seq; /* assigned by journal_append */
	int64_t received_ms;
	int64_t measured_ms;
	uint64_t hash; /* of topic and payload, for resend detection */
	struct journal_bytes f[JF_COUNT];
};

enum journal_sync {
	JOURNAL_SYNC_NEVER, /* the kernel writes back when it likes */
	JOURNAL_SYNC_BATCH, /* the writer thread syncs (journal_sync) */
	JOURNAL_SYNC_ALWAYS /* every append is synced before it returns */
};

struct journal_settings {
	const char *dir;
	uint64_t segment_bytes; /* rotate after this many bytes */
	uint64_t budget_bytes;  /* refuse appends beyond this much on disk */
	enum journal_sync sync;
};

/* Called by journal_open for every intact entry of the recent segments
 * (for rebuilding resend detection). */
typedef void (*journal_scan_fn)(void *ctx, const struct journal_record *r);

struct journal;

/*
 * Open (creating when missing) the journal in s->dir: take its lock,
 * find its segments, cut a torn tail from the newest one and delete the
 * segments the checkpoint says are stored. Entries of segments written
 * within the last scan_window_ms are passed to scan. Returns the journal,
 * or NULL with a message in err.
 */
struct journal *journal_open(const struct journal_settings *s,
                             int64_t scan_window_ms, journal_scan_fn scan,
                             void *ctx, char *err, size_t errlen);
/* Flush deferred entries and close. The writer must be stopped. */
void journal_close(struct journal *j);

/* A random name chosen when the journal was created. */
const char *journal_id(const struct journal *j);

/* The journal directory's descriptor, for a thread that opens segments
 * by name. */
int journal_dirfd(const struct journal *j);

/*
 * Close the reader's descriptor (journal_next opens it again on demand).
 * The descriptor belongs to the table of the thread that opened it: the
 * broker thread calls this when it has read the journal at start, before
 * the writer thread takes over reading with a table of its own, and the
 * writer calls it before it returns.
 */
void journal_reader_release(struct journal *j);

#define JOURNAL_FULL (-2)

/*
 * Append an entry and give it the next sequence number (r->seq). With
 * defer, the entry is buffered in memory until the next undeferred append
 * or journal_flush (QoS 0 readings and audit events, which nobody
 * acknowledges); otherwise it has reached the kernel (and with
 * JOURNAL_SYNC_ALWAYS the disk) when this returns 0. Returns
 * JOURNAL_FULL when the disk budget is exhausted, or -1 on an I/O error
 * (err says which).
 */
int journal_append(struct journal *j, struct journal_record *r, bool defer,
                   char *err, size_t errlen);
/* Write deferred entries. Returns 0, or -1 with err set. */
int journal_flush(struct journal *j, char *err, size_t errlen);
/* Would an entry of this size fit in the budget now? Broker thread, as
 * journal_append and journal_flush. */
bool journal_has_room(struct journal *j, size_t payload_len);

/* Where the writer is; starts before the first entry on disk. */
struct journal_cursor {
	uint64_t segment;
	uint64_t offset;
	uint64_t skipped_bytes; /* damaged bytes passed over, in total */
};
void journal_cursor_init(struct journal *j, struct journal_cursor *c);

/*
 * Read the next entry after c into *r and advance c. The fields of *r
 * point into the journal's read buffer and stay valid until the next call.
 * Damaged bytes are passed over (counted in c->skipped_bytes). Returns 1
 * for an entry, 0 when the reader has caught up with the broker, or -1 on
 * an I/O error (err set).
 */
#define JOURNAL_MAX_ENTRY (4u << 20)
int journal_next(struct journal *j, struct journal_cursor *c,
                 struct journal_record *r, char *err, size_t errlen);

/* Sleep until an entry may have been appended, at most timeout_ms. */
void journal_wait(struct journal *j, int timeout_ms);
/*
 * Writer thread: make the pages ahead of the broker's appends writable
 * (MADV_POPULATE_WRITE), so that the broker's copies do not fault, and
 * the broker's next segment ready (created, allocated, mapped, its first
 * pages writable), so that a rotation is a rename on the broker thread.
 * Cheap when there is nothing to do; the populating is a no-op on kernels
 * before 5.14.
 */
void journal_prefault(struct journal *j);
/* Wake journal_wait (to stop the writer). */
void journal_wake(struct journal *j);

/*
 * Sync what has been appended to disk (JOURNAL_SYNC_BATCH; the writer
 * thread calls it before each batch, and every flush_ms while the
 * database is away): the segments the broker has finished whole, the one
 * it appends to up to what it has written (the pages made writable ahead
 * of it stay so), and the directory when a segment was created. The
 * broker thread itself never waits for the disk, but at a stop.
 */
int journal_sync(struct journal *j, char *err, size_t errlen);

/* Everything up to seq is stored: record it and delete the segments that
 * hold nothing newer. The checkpoint file is rewritten when segments go,
 * at most once a second otherwise, and always with force. Returns 0, or
 * -1 with err set. */
int journal_committed(struct journal *j, uint64_t seq, bool force, char *err,
                      size_t errlen);
/* The committed sequence number recorded in the checkpoint. */
uint64_t journal_checkpoint(const struct journal *j);

struct journal_stats {
	uint64_t next_seq;
	uint64_t committed_seq;
	uint64_t disk_bytes;
	uint64_t budget_bytes;
	uint64_t pending_entries; /* appended but not yet committed */
	size_t segments;
	/* Bytes of the segment being appended to whose pages are writable
	 * already (journal_prefault); 0 with no segment open. */
	size_t prefaulted_bytes;
};
void journal_stats(struct journal *j, struct journal_stats *out);

/* Exposed for unit tests: CRC-32C (Castagnoli) of len bytes. */
uint32_t journal_crc32c(uint32_t crc, const void *buf, size_t len);
/* Bytes an entry takes in a segment. */
size_t journal_entry_size(const struct journal_record *r);

#endif
