#!/usr/bin/env bash
# ratelimit.sh: what the ratelimit plugin costs a broker's publish
# throughput, and how closely two brokers hold one device to its budget,
# measured in one run on this machine.
#
# Throughput: RL_PUBLISHERS devices publish MQTT 5 QoS 1 messages (16-byte
# payloads, 100 in flight each, as fast as the broker acknowledges them;
# test/tools/fg_flood.c at nice 19) over TLS for RL_SECONDS to one of three
# brokers, in turn, for RL_ROUNDS rounds:
#   bare       mosquitto alone (allow_anonymous true; the TLS listener
#              still requires a certificate of the CA)
#   auth+acl   fleetgate_auth.so then fleetgate_acl.so, no rate limit
#   ratelimit  fleetgate_ratelimit.so, auth and acl, counting through a
#              private Redis every 50 ms; the devices' budget (10^9 a
#              second) is never reached, so every message takes the whole
#              accounting path and none is refused
# and prints messages per second, the broker main thread's CPU per
# message, their medians and the ratios ratelimit/bare and
# ratelimit/(auth+acl), of the rates and of the capacities (the inverse of
# CPU per message: where other jobs share the machine, the steadier
# figure). Every message must be accepted.
#
# Accuracy: one device (limit 100 a second) publishes at 250 a second
# through each of two ratelimit brokers sharing the PostgreSQL and the
# Redis, for RL_ACCURACY_SECONDS; accepted / (100 x seconds published) is
# printed (goal 0.95 to 1.10).
#
# Environment: RL_ROUNDS (5), RL_SECONDS (5), RL_PUBLISHERS (4),
# RL_ACCURACY_SECONDS (30), RL_NICE (19), and lib.sh's FG_BUILD, FG_KEEP.
# About 2.5 minutes with the defaults.
# Exit status: 0 when every check passed, 1 otherwise.
set -euo pipefail
bench_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/lib.sh disable=SC2119
. "$bench_dir/../lib.sh"
# shellcheck source=test/bench/benchlib.sh
. "$bench_dir/benchlib.sh"

: "${RL_ROUNDS:=5}"
: "${RL_SECONDS:=5}"
: "${RL_PUBLISHERS:=4}"
: "${RL_ACCURACY_SECONDS:=30}"
: "${RL_NICE:=19}"
FLOOD=$FG_BUILD/tools/fg_flood

fg_setup
for f in "$FLOOD" "$FG_BUILD/fleetgate_ratelimit.so"; do
	[[ -e $f ]] || fg_bail "$f is not built: run make"
done

# thread_cpu_us PID: CPU time (user + system) of the process's main
# thread, in microseconds.
thread_cpu_us() {
	local tck
	tck=$(getconf CLK_TCK)
	awk -v t="$tck" '{ sub(/^.*\) /, ""); print ($12 + $13) * 1000000 / t }' \
		"/proc/$1/task/$1/stat"
}

# publish_run BROKER SECONDS: every bench device floods BROKER; prints
# "MSGS_PER_S CPU_US_PER_MSG REFUSED".
publish_run() {
	local name=$1 secs=$2 dev c0 c1 acc=0 ref=0 i=0 out
	local -a pids=()
	c0=$(thread_cpu_us "${BENCH_PID[$name]}")
	for dev in "${BENCH_DEVICES[@]}"; do
		nice -n "$RL_NICE" "$FLOOD" --host 127.0.0.1 \
			--port "${BENCH_PORT[$name]}" --cafile "$FG_CERTS/ca.crt" \
			--cert "$FG_CERTS/$dev.crt" --key "$FG_CERTS/$dev.key" \
			--id "$dev" --topic "water/${BENCH_MUNI[$dev]}/$dev/readings" \
			--rate 0 --inflight 100 --duration "$secs" \
			>"$FG_TMP/flood.$i" 2>&1 &
		pids+=($!)
		i=$((i + 1))
	done
	wait "${pids[@]}" || true
	c1=$(thread_cpu_us "${BENCH_PID[$name]}")
	for ((i = 0; i < ${#pids[@]}; i++)); do
		out=$(grep '^flood ' "$FG_TMP/flood.$i" || echo "flood accepted=0")
		acc=$((acc + $(fg_field "$out" accepted)))
		ref=$((ref + $(fg_field "$out" refused) + $(fg_field "$out" other) +
			$(fg_field "$out" unacked)))
	done
	awk -v a="$acc" -v s="$secs" -v c="$((${c1%.*} - ${c0%.*}))" -v r="$ref" \
		'BEGIN { printf "%.0f %.2f %d\n", a / s, (a > 0 ? c / a : 0), r }'
}

# ------------------------------------------------------------- set-up ----

fg_pg_start || fg_bail "PostgreSQL did not start"
fg_redis_start || fg_bail "Redis did not start"
fg_ca_make ca
fg_server_cert ca
bench_fleet bench-rl "$RL_PUBLISHERS" north
bench_register_all || fg_bail "the bench devices could not be registered"
fg_device_cert bench-acc >/dev/null
fg_register_device bench-acc north "$FG_CERTS/bench-acc.crt"
fg_psql_admin "
	select fleetgate.add_acl_rule('all_devices', null, 'water/%m/%c/#',
	                              'publish', 'allow');
	select fleetgate.set_rate_limit('municipality', 'north', 1000000000,
	                                null, 1, 0);
	select fleetgate.set_rate_limit('device', 'bench-acc', 100, null, 1, 0);
	" >/dev/null || fg_bail "rules and limits could not be set"

# ratelimit_lines NAME: BENCH_PLUGINS_FIRST for a ratelimit broker.
ratelimit_lines() {
	BENCH_PLUGINS_FIRST=(
		"plugin $FG_BUILD/fleetgate_ratelimit.so"
		"plugin_opt_redis_host 127.0.0.1"
		"plugin_opt_redis_port $FG_REDIS_PORT"
		"plugin_opt_sync_interval_ms 50"
	)
	mapfile -t -O 4 BENCH_PLUGINS_FIRST < <(bench_runtime_opts "$1")
}
BENCH_PLUGINS_AFTER=("plugin $FG_BUILD/fleetgate_acl.so")

bench_broker_start bare bare || fg_bail "the bare broker did not start"
BENCH_PLUGINS_FIRST=()
bench_broker_start authacl plugin || fg_bail "the auth+acl broker did not start"
ratelimit_lines ratelimit
bench_broker_start ratelimit plugin ||
	fg_bail "the ratelimit broker did not start"

# -------------------------------------------------------- throughput ----

echo "# ratelimit benchmark: $RL_PUBLISHERS publishers, QoS 1, $RL_ROUNDS rounds of ${RL_SECONDS}s"
declare -A rate=() cpu=()
round_ratios=
checks_failed=0
publish_run ratelimit 1 >/dev/null # warm-up: connections, first exchange
for ((r = 1; r <= RL_ROUNDS; r++)); do
	line="round $r:"
	for mode in bare authacl ratelimit; do
		read -r mps cpm refused < <(publish_run "$mode" "$RL_SECONDS")
		rate[$mode]+="$mps "
		cpu[$mode]+="$cpm "
		declare "last_$mode=$mps"
		line+=" $mode=${mps}/s (${cpm} us/msg)"
		if ((refused != 0)); then
			echo "# FAIL: $refused messages of $mode were not accepted"
			checks_failed=1
		fi
	done
	# shellcheck disable=SC2154 # last_* are set by declare above
	round_ratios+="$(bench_ratio "$last_ratelimit" "$last_bare") "
	echo "# $line"
done
# shellcheck disable=SC2086 # word splitting of the lists is intended
{
	m_bare=$(bench_median ${rate[bare]})
	m_aa=$(bench_median ${rate[authacl]})
	m_rl=$(bench_median ${rate[ratelimit]})
	c_bare=$(bench_median ${cpu[bare]})
	c_aa=$(bench_median ${cpu[authacl]})
	c_rl=$(bench_median ${cpu[ratelimit]})
}
printf '# median msg/s: bare %s, auth+acl %s, ratelimit %s\n' \
	"$m_bare" "$m_aa" "$m_rl"
printf '# median broker main-thread CPU per message: bare %s us, auth+acl %s us, ratelimit %s us\n' \
	"$c_bare" "$c_aa" "$c_rl"
# shellcheck disable=SC2086 # the list is blank-separated numbers
printf '# ratio ratelimit/bare %s (goal >= 0.95; median of the rounds'"'"' ratios %s), ratelimit/auth+acl %s\n' \
	"$(bench_ratio "$m_rl" "$m_bare")" "$(bench_median $round_ratios)" \
	"$(bench_ratio "$m_rl" "$m_aa")"
# Capacity: messages a second the broker's thread could serve, from its
# CPU per message; steadier than the rate while other jobs share the
# machine.
printf '# capacity ratio (CPU per message) ratelimit/bare %s, ratelimit/auth+acl %s\n' \
	"$(bench_ratio "$c_bare" "$c_rl")" "$(bench_ratio "$c_aa" "$c_rl")"
for b in bare authacl ratelimit; do
	bench_broker_stop "$b"
done

# ---------------------------------------------------------- accuracy ----

for b in accA accB; do
	ratelimit_lines "$b"
	bench_broker_start "$b" plugin || fg_bail "broker $b did not start"
done
start_at=$(($(fg_now_ms) + 1500))
pids=()
for b in accA accB; do
	"$FLOOD" --host 127.0.0.1 --port "${BENCH_PORT[$b]}" \
		--cafile "$FG_CERTS/ca.crt" --cert "$FG_CERTS/bench-acc.crt" \
		--key "$FG_CERTS/bench-acc.key" --id bench-acc \
		--topic water/north/bench-acc/readings --rate 250 \
		--duration "$RL_ACCURACY_SECONDS" --start-at "$start_at" \
		>"$FG_TMP/$b.flood" 2>&1 &
	pids+=($!)
	fg_track $!
done
wait "${pids[@]}" || true
outA=$(grep '^flood ' "$FG_TMP/accA.flood")
outB=$(grep '^flood ' "$FG_TMP/accB.flood")
acc=$(($(fg_field "$outA" accepted) + $(fg_field "$outB" accepted)))
first=$(fg_field "$outA" first_ms)
last=$(fg_field "$outA" last_ms)
(($(fg_field "$outB" first_ms) < first)) && first=$(fg_field "$outB" first_ms)
(($(fg_field "$outB" last_ms) > last)) && last=$(fg_field "$outB" last_ms)
budget=$(((last - first) / 10))
acc_ratio=$(bench_ratio "$acc" "$budget")
printf '# accuracy: one device at 5x its limit (100/s) through two brokers for %ss: accepted %s (%s + %s) of a budget of %s: %s (goal 0.95-1.10)\n' \
	"$RL_ACCURACY_SECONDS" "$acc" "$(fg_field "$outA" accepted)" \
	"$(fg_field "$outB" accepted)" "$budget" "$acc_ratio"
if ! awk -v x="$acc_ratio" 'BEGIN { exit !(x >= 0.95 && x <= 1.10) }'; then
	echo "# FAIL: accuracy outside 0.95-1.10"
	checks_failed=1
fi
pass "ratelimit benchmark ran"
exit "$checks_failed"
