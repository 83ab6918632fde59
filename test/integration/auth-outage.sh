#!/usr/bin/env bash
# ok takes its condition as a string to evaluate, hence single quotes.
# shellcheck disable=SC2016,SC2119 source-path=SCRIPTDIR
# auth-outage.sh: the auth plugin when PostgreSQL is not there.
#
# PostgreSQL down at start with a snapshot (the last known registry is
# used) and without one (nobody is admitted); PostgreSQL coming up later,
# restarted under a running broker, and refusing the plugin for a while:
# the broker catches up each time without a restart.
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
fg_setup

[[ -f $FG_BUILD/fleetgate_auth.so ]] ||
	fg_bail "$FG_BUILD/fleetgate_auth.so is not built: run make"

# Short reconnect back-off keeps the suite fast; the behaviour under test
# does not depend on it.
RETRY="plugin_opt_retry_max_ms 300"

fg_pg_start || fg_bail "PostgreSQL did not start"
fg_ca_make ca
fg_server_cert
for d in dev-known dev-target dev-gone dev-snaprev dev-wk; do
	fg_device_cert "$d"
	fg_register_device "$d" m1 "$FG_CERTS/$d.crt"
done
fg_device_cert dev-unknown # never registered
fg_device_cert dev-after   # registered once PostgreSQL is back
fg_device_cert dev-late    # registered while the plugin is shut out
fg_add_account ops 'ops password' operator m1

# --- PostgreSQL down at start, with a snapshot ------------------------------
fg_broker_start snap "$RETRY" || fg_bail "broker snap did not start"
fg_connect_until 0 5 snap dev-known || true
expect_rc 0 "with PostgreSQL up the known device is admitted"
if fg_wait_until 5 test -s "$FG_TMP/snap.snapshot"; then
	pass "the broker writes its registry snapshot"
else
	fail "the broker writes its registry snapshot" "$(ls -l "$FG_TMP")"
fi
is "$(stat -c %a "$FG_TMP/snap.snapshot" 2>/dev/null)" 600 \
	"the snapshot file is mode 0600"
# A change reaches the snapshot by itself, soon after the registry went
# quiet, without a clean stop: the broker is killed after it.
snap_sum() { cksum <"$FG_TMP/snap.snapshot"; }
snap_changed() { [[ $(snap_sum) != "$1" ]]; }
sum0=$(snap_sum)
t0=$(fg_now_ms)
fg_revoke dev-snaprev "revoked just before a crash"
if fg_wait_until 10 snap_changed "$sum0"; then
	pass "a revocation reaches the snapshot file while the broker runs"
	fg_diag "the snapshot changed $(($(fg_now_ms) - t0)) ms after the commit"
else
	fail "a revocation reaches the snapshot file while the broker runs"
fi
fg_broker_kill snap
fg_pg_stop || fg_bail "PostgreSQL did not stop"

fg_broker_start snap "$RETRY" ||
	fg_bail "broker snap did not start while PostgreSQL is down"
ok 'fg_wait_log snap "fleetgate[-a-z]*: .*using registry snapshot" 3' \
	"with PostgreSQL down at start the log says the snapshot is used"
fg_connect snap dev-known
expect_rc 0 "with PostgreSQL down at start a device known to the snapshot is admitted"
fg_connect snap dev-unknown
expect_rc 2 "with PostgreSQL down at start an unknown device is refused"
fg_connect snap dev-snaprev
expect_rc 2 "... and so is the device revoked just before the broker was killed"
fg_connect_plain snap ops-1 --username ops --password 'ops password'
expect_rc 0 "with PostgreSQL down at start an account known to the snapshot is admitted"

# --- PostgreSQL down at start, without a snapshot ---------------------------
fg_broker_start nosnap "$RETRY" ||
	fg_bail "broker nosnap did not start while PostgreSQL is down"
nosnap_pid=${FG_BROKER_PID[nosnap]}
ok 'fg_wait_log nosnap "fleetgate[-a-z]*: .*no registry snapshot" 3' \
	"without a snapshot the log says that nobody is admitted, and why"
fg_connect nosnap dev-known
expect_rc 2 "without a snapshot a registered device is refused"
refusal="fleetgate-auth: connect refused .*client_id=dev-known"
refusal+=" .*reason=registry_unavailable"
ok 'fg_wait_log nosnap "$refusal" 2' \
	"the refusal is logged with reason registry_unavailable"
fg_connect_plain nosnap ops-2 --username ops --password 'ops password'
expect_rc 2 "without a snapshot an account is refused"

# --- PostgreSQL comes up -----------------------------------------------------
fg_pg_resume || fg_bail "PostgreSQL did not start again"
fg_connect_until 0 10 nosnap dev-known || true
expect_rc 0 "once PostgreSQL is up the broker without a snapshot admits the device"
is "${FG_BROKER_PID[nosnap]}" "$nosnap_pid" "... without being restarted"
ok 'fg_wait_until 5 test -s "$FG_TMP/nosnap.snapshot"' \
	"and it writes a snapshot then"
fg_register_device dev-after m1 "$FG_CERTS/dev-after.crt"
fg_connect_until 0 10 snap dev-after || true
expect_rc 0 "the broker started from the snapshot follows the database once it is up"

# --- PostgreSQL restarted under a running broker ---------------------------
fg_connect_bg target nosnap dev-target dev-target --wait-disconnect 60
fg_client_wait_line target '^ready$' 5 || true
fg_log_mark nosnap
fg_pg_restart || fg_bail "PostgreSQL did not restart"
ok 'fg_wait_log nosnap "fleetgate[-a-z]*: .*reconnected to database" 10' \
	"after a PostgreSQL restart the plugin reconnects by itself"
ok 'fg_client_alive target' "a connected device stays connected through the restart"
fg_connect nosnap dev-known
expect_rc 0 "a device is admitted after the restart"
fg_expect_kick \
	"a revoke made after the restart disconnects the device within ${FG_KICK_LIMIT_MS} ms" \
	target fg_revoke dev-target "after restart"

# --- changes made while the plugin was shut out ------------------------------
fg_connect_bg gone nosnap dev-gone dev-gone --wait-disconnect 60
fg_client_wait_line gone '^ready$' 5 || true
fg_psql_super "alter role fg_broker nologin;
	select count(pg_terminate_backend(pid)) from pg_stat_activity
	where usename = 'fg_broker'" >/dev/null
if fg_wait_sql "select count(*) from pg_stat_activity
	where usename = 'fg_broker'" 0 5; then
	pass "the plugin's database sessions are cut and it cannot log in"
else
	fail "the plugin's database sessions are cut and it cannot log in"
fi
fg_register_device dev-late m1 "$FG_CERTS/dev-late.crt"
fg_revoke dev-gone "while the broker was shut out"
fg_connect nosnap dev-known
expect_rc 0 "while shut out the broker still admits from the registry in memory"
ok 'fg_client_alive gone' \
	"while shut out a device revoked meanwhile stays connected (nobody told the broker)"
fg_psql_super "alter role fg_broker login" >/dev/null
fg_connect_until 0 10 nosnap dev-late || true
expect_rc 0 "a device registered while the plugin was shut out is admitted after it reconnects"
fg_client_wait gone 10
like "$(fg_field "$FG_OUT" epoch_ms)" '^[0-9]+$' \
	"a device revoked while the plugin was shut out is disconnected after it reconnects"
fg_connect nosnap dev-gone
expect_rc 2 "and it is refused from then on"

# --- the worker process killed ------------------------------------------------
# The loader and the audit writer run in a process of their own, so that
# the broker process keeps one thread. Killed, it is started again and
# the broker carries on with the registry it has meanwhile.
threads=$(fg_broker_threads nosnap | sort | tr '\n' ' ')
is "$threads" "mosquitto " "the broker process runs one thread: the loader and the audit writer are not in it"
worker=$(fg_worker_pid nosnap)
workers=$(fg_worker_tasks nosnap | awk '{print $2}' | sort | tr '\n' ' ')
is "$workers" "fg-audit fg-registry fg-worker " "the worker process (pid ${worker:-none}) runs the loader and the audit writer"
kill -STOP "$worker"
fg_connect nosnap dev-known
expect_rc 0 "with the worker process stopped (SIGSTOP) the broker still admits from the registry in memory"
kill -CONT "$worker"
fg_connect_bg wk nosnap dev-wk dev-wk --wait-disconnect 60
fg_client_wait_line wk '^ready$' 5 || true
fg_log_mark nosnap
[[ -n $worker ]] && kill -KILL "$worker"
ok 'fg_wait_log nosnap "fleetgate: the worker process \(pid [0-9]+\) was killed by signal 9" 5' \
	"the broker notices that its worker process was killed"
ok 'fg_wait_log nosnap "fleetgate: started a new worker process \(pid [0-9]+\)" 5' \
	"and starts a new one at once"
ok 'fg_wait_log nosnap "fleetgate[-a-z]*: connected to database" 10' \
	"the new worker process connects to the database"
ok 'fg_client_alive wk' "a connected device stays connected meanwhile"
fg_connect nosnap dev-known
expect_rc 0 "a device is admitted after the restart"
audit_mark=$(fg_psql_super "select coalesce(max(id), 0) from fleetgate.audit_events")
fg_expect_kick \
	"a revoke made after the worker process restarted disconnects the device within ${FG_KICK_LIMIT_MS} ms" \
	wk fg_revoke dev-wk "worker restart"
if fg_wait_sql "select count(*) > 0 from fleetgate.audit_events
	where id > $audit_mark and event = 'kick' and device_id = 'dev-wk'" t 5; then
	pass "the new worker process writes audit events"
else
	fail "the new worker process writes audit events"
fi
worker2=$(fg_worker_pid nosnap)
ok '[[ -n $worker2 && $worker2 != "$worker" ]]' "a new worker process runs ($worker then $worker2)"

ok 'fg_broker_alive snap && fg_broker_alive nosnap' \
	"both brokers are still running at the end"

# --- the worker process at a clean stop ------------------------------------------
fg_broker_stop nosnap
ok '! kill -0 "$worker2" 2>/dev/null' "the worker process stops with the broker"
