/* What the broker stubs recorded, for assertions. */
#ifndef STUBS_H
#define STUBS_H

extern char stub_last_log[2048];
extern int stub_log_count;
extern char stub_kicked[16][128];
extern int stub_kick_count;

#endif
