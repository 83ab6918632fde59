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

fg_diag "suite continues"
