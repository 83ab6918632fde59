#!/usr/bin/env bash
# ok takes its condition as a string to evaluate, hence single quotes.
# shellcheck disable=SC2016,SC2119 source-path=SCRIPTDIR
# ratelimit.sh: per-device budgets counted fleet-wide through Redis, with
# real clients, two brokers sharing one PostgreSQL and one Redis.
#
# Brokers A and B load ratelimit, auth and acl in that order (the order the
# example configuration prescribes), against one registry and one Redis
# that asks for a password (A reads it from the environment, B from a
# file). Devices publish with fg_flood (MQTT 5, QoS 1), which counts the
# broker's PUBACK reason codes: 0x87 is a refusal. A dashboard account
# subscribed on the same broker counts what was delivered.
#
# Cases: a device within its limit loses nothing; one device flooding at
# five times its limit through both brokers for 30 s gets 0.95 to 1.10 of
# its budget, with one audit row per broker and window whose counts add
# up to the refusals; byte limits with 50 kB payloads; a limit edited in
# SQL while the device publishes; Redis stopped and restarted under load;
# Redis frozen (SIGSTOP) under load, with the broker still answering;
# reconnect storms across both brokers and their cool-down; a device
# disconnected after windows over its limit; a wrong Redis password;
# broken options; no password in any log.
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
fg_setup

for p in auth acl ratelimit; do
	[[ -f $FG_BUILD/fleetgate_$p.so ]] ||
		fg_bail "$FG_BUILD/fleetgate_$p.so is not built: run make"
done
FLOOD=$FG_BUILD/tools/fg_flood
[[ -x $FLOOD ]] || fg_bail "$FLOOD is not built: run make"
command -v redis-server >/dev/null || fg_bail "redis-server is not installed"

MUNI=rlm
# The flood cases' rates and budgets are divided by this (5 under
# valgrind, where the broker serves far fewer messages a second);
# FG_RL_SCALE overrides it. The cases within the limit are light enough
# not to need it.
if [[ -z ${FG_RL_SCALE:-} ]]; then
	FG_RL_SCALE=1
	[[ ${FG_SANITIZE:-} == valgrind ]] && FG_RL_SCALE=5
fi
S=$FG_RL_SCALE
# The flood cases' budget a second.
L=$((100 / S))
WATCH_PW='rl watcher password'
REDIS_PW="rl-redis-$RANDOM-$RANDOM-secret"
export FG_RL_REDIS_PW=$REDIS_PW
printf '%s\n' "$REDIS_PW" >"$FG_TMP/redis.pw"
chmod 0600 "$FG_TMP/redis.pw"

# ------------------------------------------------------------ helpers ----

# rl_conf NAME [OPTION LINES...]: FG_BROKER_FIRST for broker NAME: the
# ratelimit block first, with the runtime options, a 50 ms exchange and
# the given options.
rl_conf() {
	local name=$1
	shift
	mapfile -t FG_BROKER_FIRST < <(
		echo "plugin $FG_BUILD/fleetgate_ratelimit.so"
		fg_broker_runtime_opts "$name"
		echo "plugin_opt_redis_host 127.0.0.1"
		echo "plugin_opt_redis_port $FG_REDIS_PORT"
		echo "plugin_opt_sync_interval_ms 50"
		echo "plugin_opt_local_share 0.5"
		printf '%s\n' "$@"
	)
}

# The acl plugin after auth, as in production.
ACL_LINES=("plugin $FG_BUILD/fleetgate_acl.so")

# rl_broker NAME [OPTION LINES...]: starts broker NAME with ratelimit.
rl_broker() {
	local name=$1
	shift
	rl_conf "$name" "$@"
	fg_broker_start "$name" "${ACL_LINES[@]}" &&
		fg_wait_registry "$name" 20
}

# flood NAME BROKER DEVICE [fg_flood args...]: fg_flood in the background
# as DEVICE on BROKER's TLS listener, publishing to its own topic; its
# output goes to $FG_TMP/clients/NAME.out.
flood() {
	local name=$1 broker=$2 dev=$3
	shift 3
	"$FLOOD" --host 127.0.0.1 --port "${FG_TLS_PORT[$broker]}" \
		--cafile "$FG_CERTS/ca.crt" --cert "$FG_CERTS/$dev.crt" \
		--key "$FG_CERTS/$dev.key" --id "$dev" \
		--topic "water/$MUNI/$dev/readings" "$@" \
		>"$FG_TMP/clients/$name.out" 2>&1 &
	FG_CLIENT_PID[$name]=$!
}

# flood_wait NAME: waits for the flood to end; its result line in FG_OUT.
flood_wait() {
	fg_client_wait "$1" 120
	FG_OUT=$(grep '^flood ' <<<"$FG_OUT" || true)
}

field() {
	fg_field "$1" "$2"
}

# watcher NAME BROKER: a dashboard account subscribed to every topic of
# the municipality on BROKER; messages are counted in its output.
watcher() {
	local name=$1 broker=$2 cmds=$FG_TMP/clients/$1.cmds
	printf 'sub s1 1 water/%s/#\nsleep 600000\n' "$MUNI" >"$cmds"
	"$FG_CLIENT" --timeout 10 --script --host 127.0.0.1 \
		--port "${FG_PLAIN_PORT[$broker]}" --id "$name" \
		--username watcher --password "$WATCH_PW" <"$cmds" \
		>"$FG_TMP/clients/$name.out" 2>&1 &
	FG_CLIENT_PID[$name]=$!
	fg_client_wait_line "$name" '^suback tag=s1 rc=1$' 10
}

# delivered NAME DEVICE [FROM_MS TO_MS]: messages of DEVICE the watcher
# received (between the two times, when given).
delivered() {
	awk -v t="topic=water/$MUNI/$2/" -v from="${3:-0}" -v to="${4:-0}" '
		/^msg / && index($0, t) {
			split($4, a, "=")
			if (to == 0 || (a[2] >= from && a[2] < to)) n++
		}
		END { print n + 0 }' "$FG_TMP/clients/$1.out"
}

# set_limit DEVICE MESSAGES BYTES WINDOW_S BURST: the device's row.
set_limit() {
	fg_psql_admin "select fleetgate.set_rate_limit('device', :'d',
		nullif(:'m', '')::int, nullif(:'b', '')::bigint,
		nullif(:'w', '')::int, nullif(:'u', '')::int)" \
		-v d="$1" -v m="$2" -v b="$3" -v w="$4" -v u="$5" >/dev/null
}

# budget_of FIRST_MS LAST_MS PER_S: the budget of the time in between.
budget_of() {
	echo $((($2 - $1) * $3 / 1000))
}

# ratio A B: A / B with three decimals.
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", (b > 0 ? a / b : 0) }'
}

# flood_share NAME BROKER DEVICE: 6 s of DEVICE flooding BROKER at five
# times a limit of L a second; SHARE is the accepted part of that budget,
# FG_OUT the flood's line.
flood_share() {
	flood "$1" "$2" "$3" --rate $((500 / S)) --duration 6
	flood_wait "$1"
	SHARE=$(ratio "$(field "$FG_OUT" accepted)" \
		"$(budget_of "$(field "$FG_OUT" first_ms)" \
			"$(field "$FG_OUT" last_ms)" "$L")")
}

# within X LO HI: LO <= X <= HI (decimals allowed).
within() {
	awk -v x="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(x >= lo && x <= hi) }'
}

# expect_log_both DESC REGEX TIMEOUT: brokers A and B both log REGEX
# (after their marks); one case each, "broker X" appended to DESC.
expect_log_both() {
	local b
	for b in A B; do
		if fg_wait_log "$b" "$2" "$3"; then
			pass "$1: broker $b"
		else
			fail "$1: broker $b" \
				"$(grep ratelimit "$FG_TMP/$b.log" | tail -n 5)"
		fi
	done
}

# log_count NAME REGEX: lines of broker NAME's whole log matching REGEX.
log_count() {
	grep -cE -- "$2" "$FG_TMP/$1.log" 2>/dev/null || true
}

# ------------------------------------------------------------- set-up ----

fg_pg_start || fg_bail "PostgreSQL did not start"
fg_redis_start --requirepass "$REDIS_PW" || fg_bail "Redis did not start"
fg_ca_make ca
fg_server_cert

DEVICES=(rl-calm rl-flood rl-bytes rl-edit rl-outage rl-frozen rl-flap
	rl-kick rl-local rl-probe rl-snap)
for d in "${DEVICES[@]}"; do
	fg_device_cert "$d"
	fg_register_device "$d" "$MUNI" "$FG_CERTS/$d.crt"
done
fg_add_account watcher "$WATCH_PW" dashboard "$MUNI"
fg_psql_admin "
	select fleetgate.add_acl_rule('all_devices', null, 'water/%m/%c/#',
	                              'publish', 'allow');
	select fleetgate.add_acl_rule('role', 'dashboard', 'water/#',
	                              'receive', 'allow');" >/dev/null ||
	fg_bail "acl rules could not be added"
# A global default no case relies on, and one budget per device.
set_limit rl-calm 50 "" 1 0
set_limit rl-flood "$L" "" 1 0
set_limit rl-bytes 1000 200000 1 0
set_limit rl-edit $((20 / S)) "" 1 0
set_limit rl-outage "$L" "" 1 0
set_limit rl-frozen "$L" "" 1 0
set_limit rl-kick $((20 / S)) "" 1 0
set_limit rl-local "$L" "" 1 0
set_limit rl-snap "$L" "" 1 0
set_limit rl-probe 1000 "" 1 0

rl_broker A "plugin_opt_redis_password_env FG_RL_REDIS_PW" \
	"plugin_opt_connect_limit_per_minute 5" \
	"plugin_opt_connect_cooldown_s 8" ||
	fg_bail "broker A did not start"
rl_broker B "plugin_opt_redis_password_file $FG_TMP/redis.pw" \
	"plugin_opt_connect_limit_per_minute 5" \
	"plugin_opt_connect_cooldown_s 8" ||
	fg_bail "broker B did not start"

# Both brokers reach Redis once a device publishes (the first exchange).
flood probeA A rl-probe --rate 20 --count 5
flood_wait probeA
flood probeB B rl-probe --rate 20 --count 5
flood_wait probeB
expect_log_both "counting fleet-wide through Redis" \
	'fleetgate-ratelimit: redis reachable: counting fleet-wide' 10

# ------------------------------------------------- within the limit ----

watcher wA A || fg_bail "the watcher did not subscribe on A"
out=$(fg_worker_tables A fg-registry fg-audit fg-ratelimit 2>&1) && rc=0 || rc=$?
is "$rc:$out" "0:" "the worker threads (registry, audit, Redis) run on descriptor tables of their own"
flood calm A rl-calm --rate 25 --duration 6
flood_wait calm
sent=$(field "$FG_OUT" sent)
is "$(field "$FG_OUT" accepted)|$(field "$FG_OUT" refused)" "$sent|0" \
	"a device within its limit has every message accepted ($sent sent)"
fg_wait_until 10 eval '[[ $(delivered wA rl-calm) -ge $sent ]]' || true
is "$(delivered wA rl-calm)" "$sent" \
	"and every one of them is delivered"

# The same device through both brokers at once (40 a second in all), then
# moving from one broker to the other at once: nothing is refused.
flood calmA A rl-calm --rate 20 --duration 5
flood calmB B rl-calm --rate 20 --duration 5
flood_wait calmA
outA=$FG_OUT
flood_wait calmB
is "$(field "$outA" refused)|$(field "$FG_OUT" refused)|$(field "$outA" accepted)|$(field "$FG_OUT" accepted)" \
	"0|0|$(field "$outA" sent)|$(field "$FG_OUT" sent)" \
	"a device within its limit through both brokers at once loses nothing"
flood move1 A rl-calm --rate 40 --duration 3
flood_wait move1
out1=$FG_OUT
flood move2 B rl-calm --rate 40 --duration 3
flood_wait move2
is "$(field "$out1" refused)|$(field "$FG_OUT" refused)" "0|0" \
	"a device moving to the other broker at 40 a second (limit 50) loses nothing"

# --------------------------------------------- two brokers, accuracy ----

# Five times the limit (100 a second, unscaled) through two brokers at
# once.
fg_audit_mark
start_at=$(($(fg_now_ms) + 1500))
flood accA A rl-flood --rate $((250 / S)) --duration 30 --start-at "$start_at"
flood accB B rl-flood --rate $((250 / S)) --duration 30 --start-at "$start_at"
flood_wait accA
outA=$FG_OUT
flood_wait accB
outB=$FG_OUT
acc=$(($(field "$outA" accepted) + $(field "$outB" accepted)))
ref=$(($(field "$outA" refused) + $(field "$outB" refused)))
sent=$(($(field "$outA" sent) + $(field "$outB" sent)))
first=$(field "$outA" first_ms)
last=$(field "$outA" last_ms)
(($(field "$outB" first_ms) < first)) && first=$(field "$outB" first_ms)
(($(field "$outB" last_ms) > last)) && last=$(field "$outB" last_ms)
budget=$(budget_of "$first" "$last" "$L")
windows=$((last / 1000 - first / 1000 + 1))
ACCURACY=$(ratio "$acc" "$budget")
fg_diag "accuracy: sent=$sent accepted=$acc (A $(field "$outA" accepted)," \
	"B $(field "$outB" accepted)) refused=$ref budget=$budget" \
	"over $((last - first)) ms ($windows windows): ratio $ACCURACY"
printf '%s\n' "$ACCURACY $acc $budget" >"$FG_TMP/accuracy"
is "$(field "$outA" other)|$(field "$outB" other)|$(field "$outA" unacked)|$(field "$outB" unacked)" \
	"0|0|0|0" "every PUBLISH of the flood got an answer, accepted or 0x87"
ok 'within "$ACCURACY" 0.95 1.10' \
	"a device at 5x its limit through two brokers gets 0.95-1.10 of its budget ($ACCURACY)"
ok '(($(field "$outA" accepted) > budget / 4 && $(field "$outB" accepted) > budget / 4))' \
	"both brokers took a fair part of the budget"
limit_sum() {
	fg_audit_count "source = 'ratelimit' and event = 'limit' and
		device_id = 'rl-flood'" >/dev/null &&
		fg_psql_super "select coalesce(sum((detail->>'count')::bigint), 0)
			from fleetgate.audit_events where id > $FG_AUDIT_MARK
			and source = 'ratelimit' and event = 'limit'
			and device_id = 'rl-flood'"
}
fg_wait_until 15 eval '[[ $(limit_sum) == "$ref" ]]' || true
is "$(limit_sum)" "$ref" \
	"the limit's audit rows count every refused message, once"
rows=$(fg_audit_count "source = 'ratelimit' and event = 'limit' and
	device_id = 'rl-flood'")
fg_diag "limit audit rows: $rows for $windows windows on two brokers"
ok '((rows >= windows - 2 && rows <= 2 * windows))' \
	"one aggregated audit row per broker and window, not one per message ($rows)"
odd="source = 'ratelimit' and event = 'limit' and device_id = 'rl-flood'
	and (outcome is distinct from 'refused' or reason is distinct from
	'messages' or username is distinct from 'rl-flood' or client_id is
	distinct from 'rl-flood')"
if [[ $(fg_audit_count "$odd") == 0 ]]; then
	pass "the rows say refused, messages, device, client id"
else
	fail "the rows say refused, messages, device, client id" \
		"$(fg_audit_rows "$odd")"
fi

# ---------------------------------------------------------- bytes ----

# 200,000 bytes a second, 50,000-byte payloads at 20 a second: 4 of
# them fit in each window.
fg_audit_mark
flood bytes A rl-bytes --rate 20 --duration 6 --size 50000
flood_wait bytes
acc=$(field "$FG_OUT" accepted)
first=$(field "$FG_OUT" first_ms)
last=$(field "$FG_OUT" last_ms)
windows=$((last / 1000 - first / 1000 + 1))
fg_diag "bytes: $FG_OUT; $windows windows"
ok '((acc <= 4 * windows && acc >= 4 * (windows - 2)))' \
	"a byte budget admits 4 payloads of 50 kB per 200 kB window ($acc in $windows windows)"
ok '(($(field "$FG_OUT" refused) > 0 && $(field "$FG_OUT" other) == 0))' \
	"large payloads over the byte budget get 0x87"
fg_wait_until 10 eval '[[ $(delivered wA rl-bytes) -ge $acc ]]' || true
is "$(delivered wA rl-bytes)" "$acc" "exactly the accepted payloads are delivered"
if fg_wait_audit 5 "source = 'ratelimit' and device_id = 'rl-bytes' and
	reason = 'bytes'"; then
	pass "byte refusals are audited with reason bytes"
else
	fail "byte refusals are audited with reason bytes" "$(fg_audit_rows true)"
fi

# ----------------------------------------------------- a live edit ----

# 20 a second, raised to 60 while the device publishes at 100.
flood edit A rl-edit --rate $((100 / S)) --duration 12
sleep 5
t_edit0=$(fg_now_ms)
set_limit rl-edit $((60 / S)) "" 1 0
t_edit1=$(fg_now_ms)
flood_wait edit
first=$(field "$FG_OUT" first_ms)
last=$(field "$FG_OUT" last_ms)
fg_wait_until 10 eval '[[ $(delivered wA rl-edit) -ge $(field "$FG_OUT" accepted) ]]' || true
# Whole windows only: before the edit, and from one second after it.
b_from=$((first / 1000 * 1000 + 1000))
b_to=$((t_edit0 / 1000 * 1000))
a_from=$(((t_edit1 + 1000) / 1000 * 1000 + 1000))
a_to=$((last / 1000 * 1000))
before=$(ratio "$(delivered wA rl-edit "$b_from" "$b_to")" $(((b_to - b_from) / 1000)))
after=$(ratio "$(delivered wA rl-edit "$a_from" "$a_to")" $(((a_to - a_from) / 1000)))
fg_diag "edit: $FG_OUT; per second before $before, after $after" \
	"(the commit took $((t_edit1 - t_edit0)) ms)"
lo_hi() {
	awk -v x="$1" 'BEGIN { printf "%.2f %.2f\n", x * 0.95, x * 1.02 }'
}
# shellcheck disable=SC2034 # lo and hi are read by the conditions
read -r lo hi < <(lo_hi $((20 / S)))
ok 'within "$before" "$lo" "$hi"' \
	"before the edit the device gets $((20 / S)) a second ($before)"
# shellcheck disable=SC2034
read -r lo hi < <(lo_hi $((60 / S)))
ok 'within "$after" "$lo" "$hi"' \
	"from a second after the edit in SQL it gets $((60 / S)) a second ($after)"

# ------------------------------------------- Redis away during load ----

# log_since NAME REGEX: lines matching REGEX since the broker's log mark.
log_since() {
	tail -c +"$((${FG_LOG_MARK[$1]:-0} + 1))" "$FG_TMP/$1.log" |
		grep -cE -- "$2" || true
}

UNAVAILABLE='fleetgate-ratelimit: redis unavailable'
RESUMED='fleetgate-ratelimit: redis reachable again: fleet-wide counting resumed'

# outage_case DEVICE WHAT BREAK MEND: floods DEVICE at 5x its limit
# through both brokers for 24 s; BREAK runs 6 s in, MEND 14 s in.
outage_case() {
	local dev=$1 what=$2 brk=$3 mend=$4 b outA outB acc first last budget r
	fg_log_mark A
	fg_log_mark B
	start_at=$(($(fg_now_ms) + 1000))
	flood "o${dev}A" A "$dev" --rate $((250 / S)) --duration 24 \
		--start-at "$start_at"
	flood "o${dev}B" B "$dev" --rate $((250 / S)) --duration 24 \
		--start-at "$start_at"
	sleep 7
	$brk
	expect_log_both "$what: falls back to its local share" "$UNAVAILABLE" 10
	if [[ $what == frozen ]]; then
		# A device publishing now is answered while Redis answers
		# nothing: the broker does not wait for it.
		flood "p${dev}" A rl-probe --rate 50 --count 20
		flood_wait "p${dev}"
		if [[ $(ps -o stat= -p "$FG_REDIS_PID") == T* &&
			$(field "$FG_OUT" accepted) == 20 ]]; then
			pass "frozen: a device is answered while Redis is stopped"
		else
			fail "frozen: a device is answered while Redis is stopped" \
				"$FG_OUT" "redis state $(ps -o stat= -p "$FG_REDIS_PID")"
		fi
	fi
	sleep "$((15 - 7 - 1))"
	$mend
	expect_log_both "$what: counts fleet-wide again" "$RESUMED" 20
	flood_wait "o${dev}A"
	outA=$FG_OUT
	flood_wait "o${dev}B"
	outB=$FG_OUT
	acc=$(($(field "$outA" accepted) + $(field "$outB" accepted)))
	first=$(field "$outA" first_ms)
	last=$(field "$outA" last_ms)
	budget=$(budget_of "$first" "$last" "$L")
	r=$(ratio "$acc" "$budget")
	fg_diag "$what: accepted $acc (A $(field "$outA" accepted), B" \
		"$(field "$outB" accepted)) of a budget of $budget: $r"
	ok 'within "$r" 0.90 1.15' \
		"$what: the fleet stays within 0.90-1.15 of the budget ($r)"
	is "$(field "$outA" unacked)|$(field "$outB" unacked)|$(field "$outA" other)|$(field "$outB" other)" \
		"0|0|0|0" "$what: every PUBLISH is answered throughout"
	for b in A B; do
		is "$(log_since "$b" "$UNAVAILABLE")|$(log_since "$b" "$RESUMED")" \
			"1|1" "$what: broker $b logs each switch once"
	done
}

outage_case rl-outage "stopped and restarted" fg_redis_stop fg_redis_start
outage_case rl-frozen frozen fg_redis_freeze fg_redis_thaw

# ------------------------------------------------ reconnect storms ----

# Five connects a minute, counted across both brokers, then 8 s of
# cool-down. The connect windows are minutes of the clock: the ten
# connects (a few seconds) start early enough in one not to reach the next,
# where counting starts afresh.
now_s=$(date +%s)
if ((now_s % 60 > 45)); then
	sleep $((61 - now_s % 60))
fi
fg_audit_mark
seq=
for i in 1 2 3 4 5 6 7 8 9 10; do
	b=A
	((i % 2 == 0)) && b=B
	fg_connect "$b" rl-flap
	seq+="$FG_RC "
	sleep 0.3
done
is "$seq" "0 0 0 0 0 2 2 2 2 2 " \
	"a device connecting alternately to both brokers is refused after 5 connects a minute"
if fg_wait_audit 5 "source = 'ratelimit' and event = 'flapping' and
	outcome = 'cooldown' and device_id = 'rl-flap'
	and (detail->>'count')::int = 6"; then
	pass "the start of the cool-down is audited with the fleet's 6 connects"
else
	fail "the start of the cool-down is audited with the fleet's 6 connects" \
		"$(fg_audit_rows "source = 'ratelimit'")"
fi
cool_refused() {
	fg_psql_super "select coalesce(sum((detail->>'count')::int), 0)
		from fleetgate.audit_events where id > $FG_AUDIT_MARK and
		source = 'ratelimit' and event = 'flapping' and
		outcome = 'refused' and device_id = 'rl-flap'"
}
fg_wait_until 20 eval '[[ $(cool_refused) -ge 4 ]]' || true
is "$(cool_refused)" 4 \
	"when the cool-down ends, the connects it refused are audited (4)"
fg_connect_until 0 10 A rl-flap
expect_rc 0 "after the cool-down the device connects again (A)"
fg_connect_until 0 10 B rl-flap
expect_rc 0 "after the cool-down the device connects again (B)"

# ---------------------------------------------- kick, local only ----

# Broker C disconnects a device over its limit 3 windows in a row.
rl_broker C "plugin_opt_redis_password_file $FG_TMP/redis.pw" \
	"plugin_opt_kick_after_windows 3" || fg_bail "broker C did not start"
fg_audit_mark
flood kick C rl-kick --rate $((100 / S)) --duration 30 --stop-on-disconnect
flood_wait kick
fg_diag "kick: $FG_OUT"
ok '[[ $(field "$FG_OUT" disconnected) == 1 && $(field "$FG_OUT" sent) -lt $((1500 / S)) ]]' \
	"a device over its limit 3 windows in a row is disconnected (kick_after_windows)"
if fg_wait_audit 5 "source = 'ratelimit' and event = 'kick' and
	outcome = 'kicked' and device_id = 'rl-kick' and broker_id = 'C'"; then
	pass "the kick is audited"
else
	fail "the kick is audited" "$(fg_audit_rows "source = 'ratelimit'")"
fi
fg_broker_stop C

# Broker D has the wrong Redis password: it says so once and enforces its
# local share (0.5) alone.
export FG_RL_WRONG_PW=not-the-password
rl_broker D "plugin_opt_redis_password_env FG_RL_WRONG_PW" ||
	fg_bail "broker D did not start"
flood_share loc D rl-local
r=$SHARE
fg_diag "local: $FG_OUT: $r of the budget"
ok 'within "$r" 0.45 0.60' \
	"without Redis a broker admits its local share of the budget ($r)"
is "$(log_count D "$UNAVAILABLE \\(AUTH")" 1 \
	"a wrong Redis password is logged once, as the reason for local counting"
fg_broker_stop D

# ------------------------------------------- started from the snapshot ----

# Broker F reads the registry from the database (and writes its snapshot),
# stops, and starts again while PostgreSQL is down: the device's own
# limit, kept in the snapshot, applies, not the default_* options (no
# limit here: every message would be accepted).
rl_broker F "plugin_opt_redis_password_file $FG_TMP/redis.pw" ||
	fg_bail "broker F did not start"
fg_broker_stop F
fg_pg_stop || fg_bail "PostgreSQL did not stop"
fg_log_mark F
rl_broker F "plugin_opt_redis_password_file $FG_TMP/redis.pw" ||
	fg_bail "broker F did not start from its snapshot"
ok 'fg_log_has F "fleetgate: using registry snapshot"' \
	"broker F started from its snapshot with PostgreSQL down"
flood_share snap F rl-snap
r=$SHARE
fg_diag "snapshot: $FG_OUT: $r of the budget"
# Six seconds touch seven one-second windows (the defaults would give
# about 5).
ok 'within "$r" 0.85 1.25' \
	"started from the snapshot, a device is held to its own limit ($r of it), not to the defaults"
ok '! fg_log_has F "has no limit table"' \
	"and the plugin does not fall back to its default limits"
fg_broker_stop F
fg_pg_resume || fg_bail "PostgreSQL did not start again"

# --------------------------------------------------------- options ----

# bad_option DESC REGEX OPTION LINES...: broker E must refuse to start,
# saying REGEX.
bad_option() {
	local desc=$1 re=$2
	shift 2
	rl_conf E "$@"
	if fg_broker_start E "${ACL_LINES[@]}" >/dev/null 2>&1; then
		fail "$desc" "the broker started"
	elif fg_log_has E "$re"; then
		pass "$desc"
	else
		fail "$desc" "$(tail -n 5 "$FG_TMP/E.log")"
	fi
	fg_broker_stop E
}
bad_option "a local_share above 1 stops the broker, naming the option" \
	'fleetgate-ratelimit: cannot start: plugin_opt_local_share' \
	"plugin_opt_local_share 2"
bad_option "an unset password variable stops the broker" \
	'plugin_opt_redis_password_env: the environment variable FG_RL_NOPE is not set' \
	"plugin_opt_redis_password_env FG_RL_NOPE"
cp "$FG_TMP/redis.pw" "$FG_TMP/redis-open.pw"
chmod 0644 "$FG_TMP/redis-open.pw"
bad_option "a password file readable by everyone stops the broker" \
	'redis-open.pw is readable by everyone' \
	"plugin_opt_redis_password_file $FG_TMP/redis-open.pw"
bad_option "an unknown option stops the broker" 'plugin_opt_redis_hots' \
	"plugin_opt_redis_hots 127.0.0.1"

# ------------------------------------------------------------ end ----

leaks=$(grep -lF -- "$REDIS_PW" "$FG_TMP"/*.log "$FG_TMP"/*.stdout \
	"$FG_TMP"/*.conf 2>/dev/null || true)
is "$leaks" "" "the Redis password appears in no log and no configuration"
