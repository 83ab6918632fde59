#!/usr/bin/env bash
# ok takes its condition as a string to evaluate, hence single quotes.
# shellcheck disable=SC2016,SC2119 source-path=SCRIPTDIR
# persist.sh: the persist plugin with real brokers, PostgreSQL and devices.
#
# What is stored and how (identity from the certificate, timestamps, the
# pair broker_id/seq), bad payloads, audit events through the journal, two
# brokers side by side, broken configuration, and the loss oracle: devices
# publish numbered QoS 1 readings and record every acknowledged number;
# after each failure scenario every acknowledged number must be in the
# table exactly once.
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
fg_setup

[[ -f $FG_BUILD/fleetgate_persist.so ]] ||
	fg_bail "$FG_BUILD/fleetgate_persist.so is not built: run make"
ORACLE=$FG_BUILD/tools/fg_oracle
# Brokers started directly (not through fg_broker_start) need the
# sanitizer runtimes too under make asan.
mapfile -t SAN_ENV < <(fg_sanitizer_env)
CHECK=$FG_ROOT/test/oracle-check.sh

fg_pg_start || fg_bail "PostgreSQL did not start"
fg_ca_make ca
fg_server_cert
for d in dev-a dev-b dev-c dev-d dev-e; do
	fg_device_cert "$d"
done
fg_register_device dev-a m1 "$FG_CERTS/dev-a.crt"
fg_register_device dev-b m1 "$FG_CERTS/dev-b.crt"
fg_register_device dev-c m2 "$FG_CERTS/dev-c.crt"
fg_register_device dev-d m2 "$FG_CERTS/dev-d.crt"
fg_register_device dev-e m1 "$FG_CERTS/dev-e.crt"

# persist_conf NAME [extra persist options...]: the lines that load the
# persist plugin after auth, with a journal of its own.
persist_conf() {
	local name=$1
	shift
	printf '%s\n' "plugin_opt_retry_max_ms 300" \
		"plugin $FG_BUILD/fleetgate_persist.so" \
		"plugin_opt_topics water/+/+/readings" \
		"plugin_opt_journal_dir $FG_TMP/$name.journal" "$@"
}

# start_persist NAME [extra persist options...]
start_persist() {
	local name=$1
	local -a lines
	shift
	mapfile -t lines < <(persist_conf "$name" "$@")
	fg_broker_start "$name" "${lines[@]}"
}

# pub BROKER CERT TOPIC QOS [mosquitto_pub args...]: one message with
# mosquitto_pub over TLS as the certificate's device (MQTT 5). Sets FG_RC
# and FG_OUT.
pub() {
	local broker=$1 cert=$2 topic=$3 qos=$4
	shift 4
	set +e
	FG_OUT=$(timeout 10 mosquitto_pub -h 127.0.0.1 \
		-p "${FG_TLS_PORT[$broker]}" --cafile "$FG_CERTS/ca.crt" \
		--cert "$FG_CERTS/$cert.crt" --key "$FG_CERTS/$cert.key" \
		-i "$cert" -V mqttv5 -q "$qos" -t "$topic" "$@" 2>&1)
	FG_RC=$?
	set -e
}

rows() { fg_psql_super "select count(*) from fleetgate.readings where $1"; }

# wait_rows TIMEOUT WHERE N: until N rows match.
rows_are() { [[ $(rows "$1") == "$2" ]]; }
wait_rows() { fg_wait_until "$1" rows_are "$2" "$3"; }

# --- What is stored -----------------------------------------------------------
start_persist p1 || fg_bail "broker p1 did not start"
ok 'fg_wait_log p1 "fleetgate-persist: started journal_dir=.* fsync=batch" 5' \
	"the plugin logs its start with its settings"
fg_wait_registry p1 || true
# A client stays connected, so that the broker thread holds its socket.
fg_connect_bg held p1 dev-e dev-e --hold 30
fg_wait_until 5 fg_worker_tables p1 fg-registry fg-audit fg-persist || true
out=$(fg_worker_tables p1 fg-registry fg-audit fg-persist 2>&1) && rc=0 || rc=$?
fg_client_stop held
is "$rc:$out" "0:" "the worker threads (registry, audit, persist) run on descriptor tables of their own: no broker socket in theirs, no database socket in the broker thread's"

ts=$(date -u -d '-1 minute' +%Y-%m-%dT%H:%M:%S.678Z)
pub p1 dev-a water/m1/dev-a/readings 1 -m "{\"ts\":\"$ts\",\"flow_lps\":12.5}"

is "$FG_RC" 0 "a device's QoS 1 reading is acknowledged"
ok 'wait_rows 5 "device_id = '\''dev-a'\''" 1' "the reading is stored"
is "$(fg_psql_super "select broker_id, municipality_id, client_id, topic,
	payload->>'flow_lps', to_char(measured_at at time zone 'UTC',
	'YYYY-MM-DD HH24:MI:SS.MS') from fleetgate.readings
	where device_id = 'dev-a'")" \
	"p1|m1|dev-a|water/m1/dev-a/readings|12.5|${ts:0:10} ${ts:11:12}" \
	"the row holds broker id, municipality, client id, topic, payload and the measured time"
ok '[[ $(fg_psql_super "select abs(extract(epoch from received_at - now()))
	< 30 from fleetgate.readings where device_id = '\''dev-a'\''") == t ]]' \
	"received_at is the broker's receive time"

now_ms=$(($(date +%s%3N) - 5000))
pub p1 dev-b water/m1/dev-b/readings 1 -m "{\"ts\":$now_ms,\"v\":1}"
pub p1 dev-b water/m1/dev-b/readings 1 -m '{"v":2}'
ok 'wait_rows 5 "device_id = '\''dev-b'\''" 2' "readings with epoch and without a timestamp are stored"
is "$(fg_psql_super "select (extract(epoch from measured_at) * 1000)::bigint
	from fleetgate.readings where device_id = 'dev-b'
	and payload->>'v' = '1'")" "$now_ms" \
	"an epoch-milliseconds timestamp gives the measured time"
ok '[[ $(fg_psql_super "select measured_at = received_at from fleetgate.readings
	where device_id = '\''dev-b'\'' and payload->>'\''v'\'' = '\''2'\''") == t ]]' \
	"without a timestamp the measured time is the receive time"

# The identity comes from the certificate, never from the topic.
pub p1 dev-a water/m2/dev-c/readings 1 -m '{"spoof":true}'
ok 'wait_rows 5 "payload ? '\''spoof'\''" 1' "a reading on another device's topic is stored"
is "$(fg_psql_super "select device_id || '/' || municipality_id
	from fleetgate.readings where payload ? 'spoof'")" "dev-a/m1" \
	"... under the publisher's device id and municipality, not the topic's"

pub p1 dev-a water/m1/dev-a/status 1 -m '{"not":"a reading"}'
pub p1 dev-a water/m1/dev-a/readings 1 -m '{"marker":1}'
ok 'wait_rows 5 "payload ? '\''marker'\''" 1' "a later reading is stored"
is "$(rows "payload ? 'not'")" 0 "a message outside the readings filters is not stored"
is "$(fg_psql_super "select count(*) = count(distinct (broker_id, seq))
	from fleetgate.readings")" t "(broker_id, seq) is unique"
fg_broker_stop p1

# --- Bad payloads -------------------------------------------------------------
# sub_bg NAME BROKER CERT FILTER: mosquitto_sub in the background, one line
# per message ("topic payload") in $FG_TMP/NAME.sub.
sub_bg() {
	local name=$1 broker=$2 cert=$3 filter=$4
	mosquitto_sub -h 127.0.0.1 -p "${FG_TLS_PORT[$broker]}" \
		--cafile "$FG_CERTS/ca.crt" --cert "$FG_CERTS/$cert.crt" \
		--key "$FG_CERTS/$cert.key" -i "$cert" -V mqttv5 -q 1 -v \
		-t "$filter" >"$FG_TMP/$name.sub" 2>&1 &
	fg_track $!
	SUB_PID[$name]=$!
}
declare -A SUB_PID=()
sub_has() { grep -qF -- "$2" "$FG_TMP/$1.sub" 2>/dev/null; }

bad=$FG_TMP/bad
mkdir -p "$bad"
printf 'not json at all' >"$bad/not-json"
printf '[1,2,3]' >"$bad/array"
{
	printf '{"a":'
	printf '%.0s[' {1..40}
	printf '1'
	printf '%.0s]' {1..40}
	printf '}'
} >"$bad/deep"
head -c 70000 /dev/zero | tr '\0' 'x' | sed 's/^/{"big":"/; s/$/"}/' >"$bad/oversized"
printf '{"bad":"\xff\xfe"}' >"$bad/invalid-utf8"
printf '{"huge":1e999999}' >"$bad/huge-number"
printf '{"nul":"a\\u0000b"}' >"$bad/nul-escape"
printf '{"ts":"%s","v":1}' "$(date -u -d '+2 hours' +%Y-%m-%dT%H:%M:%SZ)" \
	>"$bad/future"
printf '{"ts":"2001-01-01T00:00:00Z","v":1}' >"$bad/past"
printf '{"ts":"yesterday","v":1}' >"$bad/bad-ts"
printf '{"a":1} trailing' >"$bad/trailing"
printf '' >"$bad/empty"

# Valid JSON that looks like SQL is stored as it is.
sql_text="'); drop table fleetgate.readings; --"
printf '{"note":"%s","n":7}' "$sql_text" >"$FG_TMP/sql-fragment"

fg_log_mark p1
start_persist p1 || fg_bail "broker p1 did not restart"
fg_wait_registry p1 || true
fg_audit_mark
sub_bg drop p1 dev-d 'water/m1/dev-e/#'
sleep 0.5
for f in "$bad"/*; do
	pub p1 dev-e water/m1/dev-e/readings 1 -f "$f"
done
pub p1 dev-e water/m1/dev-e/readings 1 -f "$FG_TMP/sql-fragment"
pub p1 dev-e water/m1/dev-e/readings 1 -m '{"after":"bad"}'
ok 'wait_rows 10 "device_id = '\''dev-e'\''" 2' \
	"after the bad payloads, the good readings from the same device are stored"
is "$(rows "device_id = 'dev-e'")" 2 "no bad payload is stored"
is "$(fg_psql_super "select payload->>'note' from fleetgate.readings
	where device_id = 'dev-e' and payload ? 'note'")" "$sql_text" \
	"a string holding SQL is stored unchanged, as data"
ok 'fg_broker_alive p1' "the broker survived every bad payload"
ok 'fg_wait_until 5 sub_has drop "{\"after\":\"bad\"}"' \
	"the subscriber receives the good reading"
ok '! grep -qE "not json|\[1,2,3\]|trailing|yesterday" "$FG_TMP/drop.sub"' \
	"with invalid drop, no bad payload reaches the subscriber"
fg_broker_alive p1
for reason in "not JSON" "not an object" "too deeply nested" "too large" \
	"invalid UTF-8" "number out of range" "NUL character" \
	"timestamp too far in the future" "timestamp too far in the past" \
	"bad timestamp" "trailing data"; do
	ok 'fg_log_has p1 "fleetgate-persist: invalid reading dropped: client_id=dev-e .*reason=\"$reason\""' \
		"refused and logged: $reason"
done
ok 'fg_wait_audit 5 "source = '\''persist'\'' and event = '\''invalid_payload'\''
	and device_id = '\''dev-e'\'' and outcome = '\''dropped'\''"' \
	"an audit event records the refusal"
is "$(fg_audit_count "source = 'persist' and event = 'invalid_payload'
	and device_id = 'dev-e'")" 1 \
	"the audit events of one device are throttled to one a minute"

# An MQTT 5 publisher at QoS 1 hears the refusal.
pub p1 dev-e water/m1/dev-e/readings 1 -m 'nope' -d
like "$FG_OUT" "PUBACK.*(rc:135|Not authorized|reason code: 135)|135" \
	"an MQTT 5 QoS 1 publisher gets reason code 0x87 for a refused payload"
fg_broker_stop p1

# invalid pass: delivered, not stored, audited.
start_persist p2 "plugin_opt_invalid pass" || fg_bail "broker p2 did not start"
fg_wait_registry p2 || true
sub_bg pass p2 dev-d 'water/m1/dev-e/#'
sleep 0.5
pub p2 dev-e water/m1/dev-e/readings 1 -m 'passing garbage'
ok 'fg_wait_until 5 sub_has pass "passing garbage"' \
	"with invalid pass, a bad payload reaches subscribers"
ok 'fg_wait_log p2 "invalid reading passed: client_id=dev-e .*reason=\"not JSON\"" 5' \
	"... and is logged as passed"
is "$(rows "broker_id = 'p2'")" 0 "... and is not stored"
fg_broker_stop p2

# --- Resends ----------------------------------------------------------------------
# The broker shows plugins no DUP flag: a copy is taken as a resend when a
# reconnected client repeats, among its first messages, a topic and payload
# it sent on an earlier connection within resend_window_s.
start_persist p3 "plugin_opt_resend_window_s 3" || fg_bail "broker p3 did not start"
fg_wait_registry p3 || true
printf '%s\n' '{"same":1}' '{"same":1}' |
	pub p3 dev-d water/m2/dev-d/readings 1 -l
ok 'wait_rows 5 "payload ? '\''same'\''" 2' \
	"two identical readings on one connection are both stored"
pub p3 dev-d water/m2/dev-d/readings 1 -m '{"same":1}'
pub p3 dev-d water/m2/dev-d/readings 1 -m '{"other":1}'
ok 'wait_rows 5 "payload ? '\''other'\''" 1' "a different reading is stored"
is "$(rows "payload ? 'same'")" 2 \
	"the same reading repeated first thing on a new connection within the window is taken as a resend"
sleep 3.5
pub p3 dev-d water/m2/dev-d/readings 1 -m '{"same":1}'
ok 'wait_rows 5 "payload ? '\''same'\''" 3' \
	"after the window the same payload is a new reading"
fg_broker_stop p3

# --- The loss oracle ------------------------------------------------------------
# Devices publish numbered QoS 1 readings with fg_oracle, which records
# every number the broker acknowledged; after each scenario every
# acknowledged number must be stored exactly once.
for i in $(seq 1 13); do
	fg_device_cert "o$i"
	fg_register_device "o$i" m1 "$FG_CERTS/o$i.crt"
done
declare -A ORACLE_PID=()

# oracle_bg DEVICE BROKER LAST [fg_oracle args...]: DEVICE publishes
# 1..LAST in the background; acknowledged numbers go to $FG_TMP/DEVICE.acked.
oracle_bg() {
	local dev=$1 broker=$2 last=$3
	shift 3
	"$ORACLE" --host 127.0.0.1 --port "${FG_TLS_PORT[$broker]}" \
		--cafile "$FG_CERTS/ca.crt" --cert "$FG_CERTS/$dev.crt" \
		--key "$FG_CERTS/$dev.key" --id "$dev" --keepalive 5 \
		--topic "water/m1/$dev/readings" --last "$last" --deadline 120 \
		-o "$FG_TMP/$dev.acked" "$@" >"$FG_TMP/$dev.oracle" 2>&1 &
	ORACLE_PID[$dev]=$!
	fg_track $!
}

# oracle_done DEVICE DESC: waits for the publisher (in this shell: a
# test condition runs in a subshell, which cannot wait for it) and passes
# when it got every number acknowledged.
oracle_done() {
	local rc=0
	wait "${ORACLE_PID[$1]}" || rc=$?
	fg_diag "$1: $(tail -n 1 "$FG_TMP/$1.oracle")"
	if ((rc == 0)); then
		pass "$2"
	else
		fail "$2" "fg_oracle exit status $rc"
	fi
}

acked_count() { grep -c . "$FG_TMP/$1.acked" 2>/dev/null || echo 0; }
stored_at_least() {
	(($(rows "device_id = '$1'") >= $(acked_count "$1")))
}

# oracle_check DEVICE SCENARIO: waits until the rows have caught up, then
# compares them with the acknowledged numbers, exactly once each.
oracle_check() {
	local dev=$1 what=$2 line
	fg_wait_until 60 stored_at_least "$dev" || true
	fg_psql_super "select payload->>'n' from fleetgate.readings
		where device_id = '$dev'" >"$FG_TMP/$dev.stored"
	if line=$(bash "$CHECK" "$FG_TMP/$dev.acked" "$FG_TMP/$dev.stored" \
		2>"$FG_TMP/$dev.check"); then
		pass "$what: every acknowledged reading is stored exactly once ($line)"
	else
		fail "$what: every acknowledged reading is stored exactly once" \
			"$line" "$(cat "$FG_TMP/$dev.check")"
	fi
}

acked_now() { acked_count "$1"; }

start_persist L1 || fg_bail "broker L1 did not start"
fg_wait_registry L1 || true

# Steady load: three devices at once, as fast as the broker acknowledges.
for d in o1 o2 o3; do oracle_bg "$d" L1 3000; done
for d in o1 o2 o3; do
	oracle_done "$d" "steady load: $d had all 3000 readings acknowledged"
done
for d in o1 o2 o3; do oracle_check "$d" "steady load, $d"; done

# PostgreSQL stopped and started three times while two devices publish.
oracle_bg o4 L1 6000 --rate 800
oracle_bg o5 L1 6000 --rate 800
for i in 1 2 3; do
	sleep 1
	fg_pg_stop || fail "PostgreSQL stop $i"
	sleep 1
	fg_pg_resume || fg_bail "PostgreSQL did not start again"
done
oracle_done o4 "PostgreSQL restarted three times: readings kept being acknowledged"
oracle_done o5 "PostgreSQL restarted three times: o5 too"
oracle_check o4 "PostgreSQL restarted three times, o4"
oracle_check o5 "PostgreSQL restarted three times, o5"
ok 'fg_log_has L1 "fleetgate-persist: database unreachable, readings wait in the journal"' \
	"the outage is logged"
ok 'fg_log_has L1 "fleetgate-persist: database reachable again, sending the journal from seq="' \
	"and so is the return"

# PostgreSQL frozen for 10 s: the broker keeps acknowledging.
oracle_bg o6 L1 6000 --rate 400
sleep 1
fg_pg_freeze
sleep 1
frozen_from=$(acked_now o6)
t0=$(fg_now_ms)
pub L1 o7 water/m1/o7/readings 1 -m '{"while":"frozen"}'
t1=$(fg_now_ms)
is "$FG_RC" 0 "PostgreSQL frozen: another device's QoS 1 reading is acknowledged"
fg_diag "acknowledged in $((t1 - t0)) ms (connect, TLS, publish) while PostgreSQL is frozen"
sleep 7
frozen_to=$(acked_now o6)
fg_pg_thaw
fg_diag "o6 acknowledged $((frozen_to - frozen_from)) readings in the 7 s the database was frozen"
ok '((frozen_to - frozen_from > 1000))' \
	"PostgreSQL frozen: the broker kept acknowledging readings"
oracle_done o6 "PostgreSQL frozen: all readings acknowledged"
oracle_check o6 "PostgreSQL frozen for 10 s"
ok 'wait_rows 30 "payload ? '\''while'\''" 1' "the reading sent during the freeze is stored after it"

# The broker killed with SIGKILL during load, and started again.
oracle_bg o8 L1 8000 --rate 2000
sleep 1.5
fg_broker_kill L1
sleep 0.5
fg_broker_restart L1 || fg_bail "broker L1 did not start after SIGKILL"
oracle_done o8 "broker SIGKILLed: the publisher got every reading acknowledged"
oracle_check o8 "broker SIGKILLed during load"
ok 'fg_log_has L1 "fleetgate-persist: started .*journal_backlog="' \
	"the restarted broker reports its journal backlog"

# QoS 2 through a SIGKILL: the publisher resends its unfinished QoS 2
# messages on the new connection, and none is stored twice.
oracle_bg o12 L1 6000 --rate 2000 --qos 2
sleep 1.5
fg_broker_kill L1
sleep 0.5
fg_broker_restart L1 || fg_bail "broker L1 did not start after SIGKILL"
oracle_done o12 "QoS 2, broker SIGKILLed: every reading completed"
oracle_check o12 "QoS 2, broker SIGKILLed during load"

# PostgreSQL and the broker down together.
oracle_bg o9 L1 8000 --rate 1000
sleep 1.5
fg_broker_kill L1
fg_pg_stop || fail "PostgreSQL stop"
sleep 0.5
fg_broker_restart L1 || fg_bail "broker L1 did not start without PostgreSQL"
sleep 2
fg_pg_resume || fg_bail "PostgreSQL did not start again"
oracle_done o9 "PostgreSQL and broker down together: every reading acknowledged"
oracle_check o9 "PostgreSQL and broker down together"

# The broker told to stop (SIGTERM) while PostgreSQL is frozen: its
# database calls give up, it ends by itself, and what it journaled is
# stored after its restart. (It used to wait for the database to thaw.)
oracle_bg o13 L1 8000 --rate 1000
sleep 1.5
fg_pg_freeze
sleep 1
stopping_pid=${FG_BROKER_PID[L1]}
broker_gone() { ! kill -0 "$stopping_pid" 2>/dev/null; }
t0=$(fg_now_ms)
kill -TERM "$stopping_pid"
if fg_wait_until 15 broker_gone; then
	pass "PostgreSQL frozen: the broker ends on SIGTERM without waiting for the database"
	fg_diag "it ended $(($(fg_now_ms) - t0)) ms after SIGTERM"
else
	fail "PostgreSQL frozen: the broker ends on SIGTERM without waiting for the database" \
		"still running $(($(fg_now_ms) - t0)) ms after SIGTERM"
fi
fg_broker_stop L1
is "${FG_BROKER_STATUS[L1]}" 0 "... with exit status 0"
ok 'fg_log_has L1 "fleetgate-persist: stopped waiting for the database at shutdown; what the writer was sending stays in the journal"' \
	"... and says that the journal keeps what was being sent"
fg_pg_thaw
fg_broker_restart L1 || fg_bail "broker L1 did not start again"
oracle_done o13 "broker stopped while PostgreSQL was frozen: every reading acknowledged"
oracle_check o13 "broker stopped while PostgreSQL was frozen"
fg_broker_stop L1

# fsync always and never store the same way (the difference is what a
# power cut could take, which no test here can cut).
for policy in always never; do
	start_persist "F$policy" "plugin_opt_fsync $policy" ||
		fg_bail "broker F$policy did not start"
	fg_wait_registry "F$policy" || true
	ok 'fg_log_has "F$policy" "fleetgate-persist: started .*fsync=$policy"' \
		"fsync $policy: the policy is in force"
	dev=o1
	[[ $policy == never ]] && dev=o2
	oracle_bg "$dev" "F$policy" 101000 --first 100001
	oracle_done "$dev" "fsync $policy: every reading acknowledged"
	fg_broker_stop "F$policy"
done
is "$(rows "device_id in ('o1', 'o2') and (payload->>'n')::int > 100000")" 2000 \
	"fsync always and never: every reading stored"

# Journal budget exhausted while PostgreSQL is down: with pushback the
# publisher is disconnected before its reading is acknowledged, and sends
# it again later.
start_persist L2 "plugin_opt_journal_budget_mb 1" \
	"plugin_opt_journal_segment_kb 64" || fg_bail "broker L2 did not start"
fg_wait_registry L2 || true
fg_pg_stop || fail "PostgreSQL stop"
oracle_bg o10 L2 3000 --size 1000 --rate 1000
ok 'fg_wait_log L2 "fleetgate-persist: journal full: disconnecting the publisher before acknowledging client_id=o10" 20' \
	"budget exhausted: the broker pushes back, and says so"
full_acked=$(acked_now o10)
sleep 2
ok '(($(acked_now o10) - full_acked < 50))' \
	"while the journal is full, readings are not acknowledged"
fg_pg_resume || fg_bail "PostgreSQL did not start again"
oracle_done o10 "budget exhausted: once PostgreSQL is back every reading is acknowledged"
oracle_check o10 "journal budget exhausted (pushback)"
fg_broker_stop L2

# The same with when_full stop: readings are acknowledged and delivered
# but not stored, loudly.
start_persist L3 "plugin_opt_journal_budget_mb 1" \
	"plugin_opt_journal_segment_kb 64" "plugin_opt_when_full stop" ||
	fg_bail "broker L3 did not start"
fg_wait_registry L3 || true
fg_pg_stop || fail "PostgreSQL stop"
oracle_bg o11 L3 2000 --size 1000 --rate 1000
oracle_done o11 "when_full stop: every reading is acknowledged"
ok 'fg_log_has L3 "fleetgate-persist: journal full: NOT STORING readings client_id=o11"' \
	"when_full stop: the log says loudly that readings are not stored"
fg_pg_resume || fg_bail "PostgreSQL did not start again"
fg_wait_until 30 rows_are "device_id = 'o11'" "$(rows "device_id = 'o11'")" || true
sleep 2
stored11=$(rows "device_id = 'o11'")
fg_diag "when_full stop: acked=$(acked_count o11) stored=$stored11"
ok '((stored11 > 500 && stored11 < 2000))' \
	"when_full stop: what fitted in the journal is stored, the rest not"
fg_broker_stop L3
ok 'fg_log_has L3 "not_stored_full=[1-9]"' "... and the count of readings not stored is logged"

# --- Two brokers side by side ------------------------------------------------------
fg_device_cert t1
fg_register_device t1 m1 "$FG_CERTS/t1.crt"
fg_device_cert t2
fg_register_device t2 m1 "$FG_CERTS/t2.crt"
start_persist T1 || fg_bail "broker T1 did not start"
start_persist T2 || fg_bail "broker T2 did not start"
fg_wait_registry T1 || true
fg_wait_registry T2 || true
oracle_bg t1 T1 4000
oracle_bg t2 T2 4000
oracle_done t1 "two brokers: the first acknowledged every reading"
oracle_done t2 "two brokers: the second acknowledged every reading"
oracle_check t1 "two brokers, through the first"
oracle_check t2 "two brokers, through the second"
is "$(fg_psql_super "select string_agg(distinct broker_id, ',')
	from fleetgate.readings where device_id in ('t1', 't2')")" "T1,T2" \
	"each row names the broker that received it"
is "$(fg_psql_super "select count(distinct journal_id) from
	fleetgate.persist_progress where broker_id in ('T1', 'T2')")" 2 \
	"each broker has its own progress row and journal"
is "$(fg_psql_super "select count(*) - count(distinct (broker_id, seq))
	from fleetgate.readings")" 0 "(broker_id, seq) stays unique across brokers"

# Two brokers cannot share one journal.
{
	echo "per_listener_settings false"
	echo "allow_anonymous false"
	[[ $(id -u) -eq 0 ]] && echo "user root"
	echo "log_dest stdout"
	fg_free_port port
	echo "listener $port 127.0.0.1"
	echo "plugin $FG_BUILD/fleetgate_persist.so"
	echo "plugin_opt_db_conninfo host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=fg_broker"
	echo "plugin_opt_broker_id T9"
	echo "plugin_opt_topics water/#"
	echo "plugin_opt_journal_dir $FG_TMP/T1.journal"
} >"$FG_TMP/shared.conf"
out=$(timeout 20 env "${SAN_ENV[@]}" mosquitto -c "$FG_TMP/shared.conf" 2>&1) &&
	rc=0 || rc=$?
like "$out" "fleetgate-persist: cannot start: journal .*T1.journal is in use by another process" \
	"a second broker on a journal in use refuses to start, and says why"
fg_broker_stop T1
fg_broker_stop T2

# --- Durable audit events ---------------------------------------------------------
# With PostgreSQL down, the auth plugin's events go into the journal and
# reach the table when it is back.
start_persist A1 || fg_bail "broker A1 did not start"
fg_wait_registry A1 || true
fg_audit_mark
fg_pg_stop || fail "PostgreSQL stop"
for i in 1 2 3; do fg_connect A1 dev-c; done
fg_connect A1 o12 not-o12
fg_broker_stop A1
start_persist A1 || fg_bail "broker A1 did not restart"
fg_pg_resume || fg_bail "PostgreSQL did not start again"
ok 'fg_wait_until 20 fg__audit_has "source = '\''auth'\'' and broker_id = '\''A1'\''
	and client_id = '\''dev-c'\'' and outcome = '\''accepted'\''"' \
	"audit events written while PostgreSQL was down reach it, across a broker restart"
three_connects() {
	[[ $(fg_audit_count "broker_id = 'A1' and client_id = 'dev-c'
		and event = 'connect'") == 3 ]]
}
ok 'fg_wait_until 20 three_connects' "... all three connects, once each"
ok 'fg_wait_until 20 fg__audit_has "broker_id = '\''A1'\'' and client_id = '\''not-o12'\''
	and outcome = '\''refused'\''"' "... and the refusal"
fg_broker_stop A1

# --- Broken configuration -----------------------------------------------------------
start_fails() {
	local desc=$1 re=$2
	shift 2
	fg_start_fails "$desc" "$re" "plugin $FG_BUILD/fleetgate_persist.so" \
		"plugin_opt_db_conninfo host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=fg_broker" "$@"
}
J="plugin_opt_journal_dir $FG_TMP/bad.journal"
start_fails "without topics the broker does not start" \
	"plugin_opt_topics is required" "$J"
start_fails "without a journal_dir the broker does not start" \
	"plugin_opt_journal_dir is required" "plugin_opt_topics water/#"
start_fails "an invalid topic filter is refused" \
	"plugin_opt_topics: invalid topic filter" "$J" "plugin_opt_topics a/#/b"
start_fails "an unknown fsync policy is refused, naming the option" \
	"fsync" "$J" "plugin_opt_topics water/#" "plugin_opt_fsync sometimes"
start_fails "a budget smaller than two segments is refused" \
	"journal_budget_mb must hold at least two segments" "$J" \
	"plugin_opt_topics water/#" "plugin_opt_journal_budget_mb 1" \
	"plugin_opt_journal_segment_kb 1024"
start_fails "a journal_dir that cannot be created is refused" \
	"cannot create journal_dir /proc/nope" \
	"plugin_opt_journal_dir /proc/nope/j" "plugin_opt_topics water/#"
start_fails "an unknown option is refused" "nonsense" "$J" \
	"plugin_opt_topics water/#" "plugin_opt_nonsense 1"
