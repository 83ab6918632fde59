/* Shared by the unit test binaries (test/unit/unit_run.c). */
#ifndef UNIT_RUN_H
#define UNIT_RUN_H

#include <check.h>

/* Run every test of s; returns the process exit status. */
int unit_run(Suite *s);

#endif
