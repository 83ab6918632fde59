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
fg_diag "suite continues"
