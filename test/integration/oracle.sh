#!/usr/bin/env bash
# ok takes its condition as a string to evaluate, hence single quotes.
# shellcheck disable=SC2016 source-path=SCRIPTDIR
# oracle.sh: the loss oracle (fg_oracle and oracle-check.sh) tells the truth.
#
# The persist plugin's loss tests stand on it: fg_oracle must list every
# number the broker acknowledged, once, and only those, across broker
# crashes and disconnects; oracle-check.sh must catch a missing or
# duplicated row. Here the broker is a bare mosquitto without fleetgate
# plugins, on a port that stays the same across a restart (fg_broker_start
# picks new ports each time), so this suite starts its own and tracks it.
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
fg_setup

ORACLE=$FG_BUILD/tools/fg_oracle
CHECK=$FG_ROOT/test/oracle-check.sh
[[ -x $ORACLE ]] || fg_bail "fg_oracle not built ($ORACLE): run make"

port=
fg_free_port port || fg_bail "no free port"
conf=$FG_TMP/bare.conf
printf 'topic readwrite oracle/#\n' >"$FG_TMP/bare.acl"
{
	echo "per_listener_settings false"
	echo "allow_anonymous true"
	echo "acl_file $FG_TMP/bare.acl"
	echo "persistence false"
	# A subscriber that falls behind must not have messages dropped.
	echo "max_queued_messages 0"
	echo "log_dest file $FG_TMP/bare.log"
	if [[ $(id -u) -eq 0 ]]; then
		echo "user root"
	fi
	echo "listener $port 127.0.0.1"
} >"$conf"

broker_pid=
broker_up() {
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

broker_start() {
	mosquitto -c "$conf" >>"$FG_TMP/bare.stdout" 2>&1 &
	broker_pid=$!
	fg_track "$broker_pid"
	fg_wait_until 5 broker_up
}

lines() {
	wc -l <"$1"
}

# distinct_payloads_per_number FILE: 1 when every number in FILE (a
# subscriber's output) came with one payload only, however often it came.
distinct_payloads_per_number() {
	sort -u "$1" | grep -ao '"n":[0-9]*' | sort | uniq -d | wc -l
}

broker_start || fg_bail "mosquitto did not start on port $port"

# --- the broker is killed and restarted -----------------------------------
out=$FG_TMP/kill
"$ORACLE" --port "$port" --id dev-kill --topic oracle/kill --last 20000 \
	--rate 5000 --deadline "$((30 * FG_SLOW))" -o "$out.acked" \
	>"$out.summary" 2>"$out.err" &
oracle_pid=$!
fg_track "$oracle_pid"
fg_wait_until 10 test -s "$out.acked" || true
fg_wait_until 10 eval '(($(lines "$out.acked") >= 5000))' || true
acked_at_kill=$(lines "$out.acked")
# The braces keep bash's "Killed" notice out of the TAP output.
{
	kill -KILL "$broker_pid"
	wait "$broker_pid" || true
} 2>/dev/null
sleep 0.3
broker_start || fg_bail "mosquitto did not restart on port $port"
rc=0
wait "$oracle_pid" || rc=$?
summary=$(cat "$out.summary")
fg_diag "killed the broker after $acked_at_kill acks: $summary"
is "$rc" 0 "fg_oracle acknowledges every number although the broker was killed (SIGKILL) and restarted"
ok '(($(fg_field "$summary" reconnects) >= 1))' \
	"fg_oracle reconnected to the restarted broker"
is "$(sort -u "$out.acked" | wc -l) $(lines "$out.acked")" "20000 20000" \
	"the ack file lists each of the 20000 numbers once"
is "$(fg_field "$summary" acked)" 20000 "the summary counts 20000 acks"

# --- the broker closes the publisher's connection -------------------------
# A client that connects with the publisher's client id takes its session
# over: the broker disconnects the publisher, which reconnects. The
# subscriber stays connected, so it must see every acknowledged number.
out=$FG_TMP/takeover
mosquitto_sub -h 127.0.0.1 -p "$port" -i oracle-sub -q 2 \
	-t oracle/takeover >"$out.sub" 2>"$out.sub.err" &
sub_pid=$!
fg_track "$sub_pid"
sleep 0.3
"$ORACLE" --port "$port" --id dev-take --topic oracle/takeover --last 20000 \
	-V 311 --qos 2 --inflight 50 --rate 5000 --size 200 \
	--deadline "$((30 * FG_SLOW))" -o "$out.acked" \
	>"$out.summary" 2>"$out.err" &
oracle_pid=$!
fg_track "$oracle_pid"
for _ in 1 2 3; do
	sleep 0.8
	mosquitto_pub -h 127.0.0.1 -p "$port" -i dev-take -V mqttv311 \
		-t oracle/intruder -m x 2>/dev/null || true
done
rc=0
wait "$oracle_pid" || rc=$?
summary=$(cat "$out.summary")
fg_diag "session taken over three times: $summary"
is "$rc" 0 "fg_oracle (MQTT 3.1.1, QoS 2) acknowledges every number although the broker closed its connection"
ok '(($(fg_field "$summary" reconnects) >= 3))' \
	"fg_oracle reconnected after each takeover"
fg_wait_until 10 eval '(($(grep -ac "\"n\":" "$out.sub") >= 20000))' || true
grep -ao '"n":[0-9]*' "$out.sub" | cut -d: -f2 >"$out.delivered"
if "$CHECK" "$out.acked" <(sort -u "$out.delivered") >"$out.check" 2>&1; then
	pass "a subscriber received every acknowledged number"
else
	fail "a subscriber received every acknowledged number" \
		"$(cat "$out.check")"
fi
is "$(distinct_payloads_per_number "$out.sub")" 0 \
	"a number sent again carries the same payload"
like "$(head -n 1 "$out.sub")" \
	'^\{"n":[0-9]+,"device":"dev-take","flow_lps":[0-9]+\.[0-9],"pad":"x+"\}$' \
	"the payload is the documented JSON object"
is "$(head -n 1 "$out.sub" | tr -d '\n' | wc -c)" 200 \
	"--size pads the payload to the size asked for"

# --- the broker refuses the messages ---------------------------------------
# mosquitto 2.0.11 answers a publication its ACL denies with PUBACK 0x87
# (MQTT 5) and then closes the connection.
out=$FG_TMP/refused
rc=0
"$ORACLE" --port "$port" --id dev-deny --topic denied/t --last 30 \
	--deadline "$((10 * FG_SLOW))" -o "$out.acked" --refused "$out.refused" \
	>"$out.summary" 2>"$out.err" || rc=$?
summary=$(cat "$out.summary")
fg_diag "$summary"
is "$rc" 1 "fg_oracle exits 1 when the broker refused messages"
is "$(lines "$out.acked") $(sort -u "$out.refused" | wc -l)" "0 30" \
	"every refused number is in the refused file, none in the ack file"
is "$(fg_field "$summary" refused)" 30 "the summary counts 30 refusals"

# --- oracle-check.sh -------------------------------------------------------
# Each case: acked numbers, stored numbers (space-separated), the expected
# line, the expected exit status.
check_case() {
	local acked=$1 stored=$2 want=$3 want_rc=$4 desc=$5 got rc=0
	printf '%s' "$acked" | tr ' ' '\n' >"$FG_TMP/c.acked"
	printf '%s' "$stored" | tr ' ' '\n' >"$FG_TMP/c.stored"
	got=$("$CHECK" "$FG_TMP/c.acked" "$FG_TMP/c.stored" 2>/dev/null) ||
		rc=$?
	is "$got rc=$rc" "$want rc=$want_rc" "oracle-check: $desc"
}
check_case $'1 2 3\n' $'3 2 1\n' \
	"acked=3 stored=3 missing=0 duplicates=0 extra=0" 0 \
	"every acked number stored once passes"
check_case $'1 2 3\n' $'1 2 3 4\n' \
	"acked=3 stored=4 missing=0 duplicates=0 extra=1" 0 \
	"a stored number never acked passes, as extra"
check_case $'1 2 3\n' $'1 3\n' \
	"acked=3 stored=2 missing=1 duplicates=0 extra=0" 1 \
	"an acked number not stored fails"
check_case $'1 2 3\n' $'1 2 2 3\n' \
	"acked=3 stored=4 missing=0 duplicates=1 extra=0" 1 \
	"a number stored twice fails"
check_case '1 2 3' $'1 2\n' \
	"acked=2 stored=2 missing=0 duplicates=0 extra=0" 0 \
	"an unterminated last line of the ack file is ignored"
check_case $'1 1 2\n' $'1 2\n' \
	"acked=2 stored=2 missing=0 duplicates=0 extra=0" 1 \
	"an ack file listing a number twice fails"
