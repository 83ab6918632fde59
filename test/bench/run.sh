#!/usr/bin/env bash
# run.sh: TLS connects per second with the fleetgate auth plugin, against
# the bare broker, measured in one run on this machine (`make bench`).
#
# It makes a CA, a server certificate and BENCH_DEVICE_COUNT device
# certificates (EC P-256), starts a private PostgreSQL cluster with the
# schema from sql/, registers the devices, and starts two brokers:
#   bare    mosquitto alone. allow_anonymous true, because without a
#           plugin or a password file mosquitto 2.0 refuses every client
#           that sends no username; the TLS listener still requires a
#           client certificate signed by the CA.
#   plugin  mosquitto with fleetgate_auth.so, allow_anonymous false.
# Both have the same TLS listener and logging. fg_connbench then loads
# them in turn (bare, plugin, bare, plugin, ...) for BENCH_ROUNDS rounds of
# BENCH_SECONDS each, so that drift and noise on the machine fall on both
# alike, and the medians and their ratio are printed.
#
# The client runs at nice 19: on a small machine it competes with the
# broker for CPU, and the broker, which serves every client from one
# thread, must get all it asks for if it is to be what limits the rate.
# broker_main_cpu near 1.00 in the round lines shows that it was.
#
# It checks that the plugin accepted every connect and that the audit
# table holds one "connect accepted" row per accepted connect, and, when
# the objects in build/obj are there, times the decision itself with
# test/bench/decide/fg_decidebench.c.
#
# Environment: BENCH_ROUNDS (3), BENCH_SECONDS (10), BENCH_THREADS (6),
# BENCH_DEVICE_COUNT (50), BENCH_NICE (19), and lib.sh's FG_BUILD, FG_KEEP.
# Exit status: 0 when every check passed, 1 otherwise.
set -euo pipefail
bench_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/lib.sh
. "$bench_dir/../lib.sh"
# shellcheck source=test/bench/benchlib.sh
. "$bench_dir/benchlib.sh"

: "${BENCH_ROUNDS:=3}"
: "${BENCH_SECONDS:=10}"
: "${BENCH_THREADS:=6}"
: "${BENCH_DEVICE_COUNT:=50}"
: "${BENCH_NICE:=19}"
tool=$FG_BUILD/tools/fg_connbench

fg_setup
[[ -x $tool ]] || fg_bail "$tool not built: run make"

say() {
	printf '%s\n' "$*"
}

# run_load BROKER LABEL SECONDS: one fg_connbench run; prints its line.
run_load() {
	nice -n "$BENCH_NICE" "$tool" --port "${BENCH_PORT[$1]}" \
		--cafile "$FG_CERTS/ca.crt" --certdir "$FG_CERTS" \
		--devices "$FG_TMP/devices.txt" --threads "$BENCH_THREADS" \
		--duration "$3" --label "$2" --broker-pid "${BENCH_PID[$1]}" \
		2>>"$FG_TMP/connbench.err"
}

# per_connect CORES RATE: CPU microseconds per connect.
per_connect() {
	awk -v c="$1" -v r="$2" 'BEGIN {
		if (c == "-" || r + 0 == 0) print "-"
		else printf "%.0f\n", c / r * 1e6 }'
}

# capacity US: connects one second of broker CPU serves.
capacity() {
	awk -v u="$1" 'BEGIN {
		if (u == "-" || u + 0 == 0) print "-"; else printf "%.1f\n", 1e6 / u }'
}

# minus A B: A - B, rounded.
minus() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f\n", a - b }'
}

# saturated LINE: "yes" when the broker's main thread used at least 0.9
# of a CPU in that run, i.e. the broker, not the client or the rest of the
# machine, set the rate.
saturated() {
	awk -v c="$(fg_field "$1" broker_main_cpu)" 'BEGIN {
		print (c != "-" && c + 0 >= 0.9) ? "yes" : "no" }'
}

accepted_rows() {
	fg_audit_count "source = 'auth' and event = 'connect' and
		outcome = 'accepted' and broker_id = 'plugin'"
}

rows_are() {
	[[ $(accepted_rows 2>/dev/null) == "$1" ]]
}

say "fleetgate connect benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
say "machine: $(nproc) CPUs, $cpu_model," \
	"$(mosquitto -h 2>/dev/null | head -n 1), $(openssl version | cut -d' ' -f1-2)"

t0=$(fg_now_ms)
fg_pg_start || fg_bail "PostgreSQL did not start"
fg_ca_make ca || fg_bail "cannot make the CA"
fg_server_cert ca >/dev/null || fg_bail "cannot make the server certificate"
bench_fleet bench "$BENCH_DEVICE_COUNT" north south ||
	fg_bail "cannot make the device certificates"
bench_register_all || fg_bail "cannot register the devices"
printf '%s\n' "${BENCH_DEVICES[@]}" >"$FG_TMP/devices.txt"
bench_broker_start bare bare || fg_bail "the bare broker did not start"
bench_broker_start plugin plugin || fg_bail "the plugin broker did not start"
say "setup: $BENCH_DEVICE_COUNT devices (EC P-256 certificates) in 2" \
	"municipalities, registered in PostgreSQL; 2 brokers; took" \
	"$((($(fg_now_ms) - t0) / 1000)) s"
say "bare:   mosquitto without plugins, allow_anonymous true (mosquitto 2.0" \
	"refuses clients without a username when no plugin or password file" \
	"decides); TLS still requires a device certificate signed by the CA"
say "plugin: mosquitto with fleetgate_auth.so, allow_anonymous false"
say "client: fg_connbench threads=$BENCH_THREADS nice=$BENCH_NICE, MQTT" \
	"3.1.1, full TLS handshake each connect (no session resumption)," \
	"CONNECT, CONNACK, DISCONNECT; both brokers set_tcp_nodelay true"
say "rounds: $BENCH_ROUNDS x (bare ${BENCH_SECONDS}s, plugin" \
	"${BENCH_SECONDS}s), after a 2 s warm-up of each"

# Warm-up: first handshakes, the plugin's database connections, caches.
run_load bare warmup 2 >/dev/null || fg_bail "warm-up against bare failed"
fg_audit_mark
run_load plugin warmup 2 >"$FG_TMP/warmup.out" ||
	fg_bail "warm-up against plugin failed"
warm=$(fg_field "$(cat "$FG_TMP/warmup.out")" accepted)
fg_wait_until 30 rows_are "$warm" || true

declare -A rate=() cpu_us=() lines=()
declare -A all_rate=() all_cpu=() all_main=() all_p50=() all_p99=()
round_ratios=() capacity_ratios=()
plugin_accepted=0 plugin_bad=0 bare_bad=0 audit_total=0
for ((r = 1; r <= BENCH_ROUNDS; r++)); do
	for mode in bare plugin; do
		if [[ $mode == plugin ]]; then
			fg_audit_mark
		fi
		line=$(run_load "$mode" "$mode" "$BENCH_SECONDS") ||
			fg_bail "fg_connbench against $mode failed:" \
				"$(tail -n 3 "$FG_TMP/connbench.err")"
		say "round $r $line"
		lines[$mode]=$line
		rate[$mode]=$(fg_field "$line" rate)
		cpu_us[$mode]=$(per_connect "$(fg_field "$line" broker_main_cpu)" "${rate[$mode]}")
		all_rate[$mode]+=" ${rate[$mode]}"
		all_main[$mode]+=" ${cpu_us[$mode]}"
		all_cpu[$mode]+=" $(per_connect "$(fg_field "$line" broker_cpu)" "${rate[$mode]}")"
		all_p50[$mode]+=" $(fg_field "$line" p50_ms)"
		all_p99[$mode]+=" $(fg_field "$line" p99_ms)"
	done
	for mode in bare plugin; do
		bad=$(($(fg_field "${lines[$mode]}" refused) +
			$(fg_field "${lines[$mode]}" errors)))
		if [[ $mode == bare ]]; then
			bare_bad=$((bare_bad + bad))
		else
			plugin_bad=$((plugin_bad + bad))
		fi
	done
	accepted=$(fg_field "${lines[plugin]}" accepted)
	plugin_accepted=$((plugin_accepted + accepted))
	# The audit writer flushes every 200 ms; give it time to drain
	# before the next round, and before counting.
	fg_wait_until 30 rows_are "$accepted" || true
	rows=$(accepted_rows)
	audit_total=$((audit_total + rows))
	say "round $r audit connect_accepted_rows=$rows expected=$accepted"
	round_ratios+=("$(bench_ratio "${rate[plugin]}" "${rate[bare]}")")
	capacity_ratios+=("$(bench_ratio "${cpu_us[bare]}" "${cpu_us[plugin]}")")
	say "round $r rate_ratio=${round_ratios[-1]}" \
		"broker_main_cpu_us_per_connect bare=${cpu_us[bare]}" \
		"plugin=${cpu_us[plugin]} capacity_ratio=${capacity_ratios[-1]}" \
		"broker_bound bare=$(saturated "${lines[bare]}")" \
		"plugin=$(saturated "${lines[plugin]}")"
done

# shellcheck disable=SC2086 # the lists are blank-separated numbers
{
	m_bare=$(bench_median ${all_rate[bare]})
	m_plugin=$(bench_median ${all_rate[plugin]})
	mu_bare=$(bench_median ${all_main[bare]})
	mu_plugin=$(bench_median ${all_main[plugin]})
	say "median connects_per_s bare=$m_bare plugin=$m_plugin" \
		"ratio_plugin_bare=$(bench_ratio "$m_plugin" "$m_bare")" \
		"median_of_round_ratios=$(bench_median "${round_ratios[@]}")"
	say "median broker_main_cpu_us_per_connect bare=$mu_bare" \
		"plugin=$mu_plugin extra_us=$(minus "$mu_plugin" "$mu_bare")" \
		"(process, all threads: bare=$(bench_median ${all_cpu[bare]})" \
		"plugin=$(bench_median ${all_cpu[plugin]}))"
	say "median capacity connects_per_broker_cpu_s bare=$(capacity "$mu_bare")" \
		"plugin=$(capacity "$mu_plugin")" \
		"ratio_plugin_bare=$(bench_ratio "$mu_bare" "$mu_plugin")" \
		"median_of_round_ratios=$(bench_median "${capacity_ratios[@]}")"
	say "median latency_ms p50 bare=$(bench_median ${all_p50[bare]})" \
		"plugin=$(bench_median ${all_p50[plugin]})" \
		"p99 bare=$(bench_median ${all_p99[bare]})" \
		"plugin=$(bench_median ${all_p99[plugin]})"
}
say "audit connect_accepted_rows=$audit_total plugin_accepted_connects=$plugin_accepted"
say "note: connects_per_s measures the broker only where broker_bound=yes" \
	"(its one thread near a full CPU); otherwise other processes took CPU" \
	"(other_cpu) and the per-connect CPU figures and capacity ratio are" \
	"the fairer comparison"

is "$plugin_bad" 0 "the plugin accepted every connect (refused + errors = 0)"
is "$bare_bad" 0 "the bare broker accepted every connect"
is "$audit_total" "$plugin_accepted" \
	"the audit table has one connect-accepted row per accepted connect"
problems=$(grep -E 'fleetgate[a-z-]*: .*(error|lost|dropped|full|unreachable|failed)' \
	"$FG_TMP/plugin.log" | head -n 5 || true)
is "$problems" "" "the plugin logged no errors or lost events during the run"

# The decision alone, without broker or network (optional: needs the
# object files of `make` and the -dev headers).
decide_src=$bench_dir/decide/fg_decidebench.c
decide_bin=$FG_TMP/fg_decidebench
if [[ -f $decide_src ]] && compgen -G "$FG_BUILD/obj/common/*.o" >/dev/null &&
	ar rcs "$FG_TMP/libfgobjs.a" "$FG_BUILD"/obj/common/*.o \
		"$FG_BUILD"/obj/plugins/auth/*.o 2>/dev/null &&
	cc -std=c11 -D_GNU_SOURCE -O2 -Wall -pthread -I"$FG_ROOT/common" \
		-I"$FG_ROOT/plugins/auth" \
		-I"$(pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)" \
		-o "$decide_bin" "$decide_src" "$FG_TMP/libfgobjs.a" \
		-lssl -lcrypto -lpthread >"$FG_TMP/decide.build" 2>&1; then
	while IFS= read -r line; do
		say "decide $line"
	done < <("$decide_bin" "$FG_CERTS/${BENCH_DEVICES[0]}.crt" "${BENCH_DEVICES[0]}")
else
	say "decide: skipped (the decision harness did not build; see" \
		"$FG_TMP/decide.build with FG_KEEP=1)"
fi

bench_broker_stop plugin
bench_broker_stop bare
