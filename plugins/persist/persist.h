/*
 * The persist plugin: readings and audit events stored in PostgreSQL
 * through a local journal. Shared declarations of its files.
 */
#ifndef PERSIST_H
#define PERSIST_H

#include <stdbool.h>
#include <stdint.h>

#define PERSIST_LOG "fleetgate-persist:"

enum persist_invalid { PERSIST_INVALID_DROP, PERSIST_INVALID_PASS };
enum persist_full { PERSIST_FULL_PUSHBACK, PERSIST_FULL_STOP };

struct persist_config {
	char *topics;      /* readings filters, separated by blanks or commas */
	char *journal_dir; /* required */
	int journal_budget_mb;
	int journal_segment_kb;
	int fsync;     /* enum journal_sync */
	int when_full; /* enum persist_full */
	int invalid;   /* enum persist_invalid */
	int max_payload;
	int max_depth;
	char *timestamp_field; /* "none" disables */
	int max_future_s;
	int max_past_s;
	int batch_rows;
	int flush_ms;
	int resend_window_s; /* 0 disables resend detection */
	bool audit;          /* take the audit events of every plugin */
};

#endif
