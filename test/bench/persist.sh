#!/usr/bin/env bash
# persist.sh: the persist plugin's benchmarks, each against a baseline
# measured in the same run on this machine (`make bench`).
#
#   1. QoS 1 publish throughput: BENCH_PUBLISHERS devices publish readings
#      as fast as the broker acknowledges them (fg_oracle, 20 in flight
#      each), to a bare broker and to one with auth and persist, in turn
#      for BENCH_ROUNDS rounds; medians and their ratio are printed, with
#      the share of the machine's CPUs PostgreSQL used meanwhile (it runs
#      here, on the CPUs the broker and the publishers share).
#   1b. The same, with the database on a CPU of its own (brokers and
#      publishers on CPU 0, PostgreSQL and the persist broker's worker
#      threads on CPU 1): what a database on another host leaves to the
#      broker, as near as two CPUs come.
#   2. A backlog: PostgreSQL is stopped, BENCH_BACKLOG readings are
#      published into the journal in BENCH_ROUNDS rounds; in each round
#      the bare broker and a broker with the auth plugin alone (the same
#      worker threads and identity lookups, nothing journaled) take the
#      same load, in an order that turns from round to round. Their
#      medians compare the plugin's own cost, with no database competing
#      for the CPUs. Then PostgreSQL is started, and the time until the
#      last reading is committed is measured: readings stored per second
#      from the journal.
#   3. The baseline for 2: the same rows (same size, same table, other
#      broker_id) loaded by one plain COPY from psql.
# The checks: every acknowledged reading is stored (counts compared).
#
# The publishers never sleep on their sockets (fg_oracle --pace-us
# BENCH_PACE_US): each pass publishes what the window allows, reads the
# acknowledgements there are, and sleeps until the next pass. A publisher
# that sleeps in poll() must be woken by the broker's write() of each
# PUBACK, and on loopback that wake-up runs on the broker's time: the
# slower broker finds its publishers asleep more often and pays more,
# where devices on other hosts cost the broker nothing of the kind.
# BENCH_PACE_US=0 runs the publishers of earlier versions of this
# benchmark.
#
# Environment: BENCH_ROUNDS (3), BENCH_PUBLISHERS (8), BENCH_COUNT (25000
# per publisher and round), BENCH_BACKLOG (1000000), BENCH_SIZE (200
# bytes a payload), BENCH_NICE (10), BENCH_PACE_US (250), and lib.sh's
# FG_BUILD, FG_KEEP.
set -euo pipefail
bench_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/lib.sh
. "$bench_dir/../lib.sh"
# shellcheck source=test/bench/benchlib.sh
. "$bench_dir/benchlib.sh"

: "${BENCH_ROUNDS:=3}"
: "${BENCH_PUBLISHERS:=8}"
: "${BENCH_COUNT:=25000}"
: "${BENCH_BACKLOG:=1000000}"
: "${BENCH_SIZE:=200}"
: "${BENCH_NICE:=10}"
: "${BENCH_PACE_US:=250}"
ORACLE=$FG_BUILD/tools/fg_oracle

fg_setup
[[ -x $ORACLE && -f $FG_BUILD/fleetgate_persist.so ]] ||
	fg_bail "build first: make"

echo "# persist benchmark on $(nproc) CPUs, $(uname -r)"
fg_pg_start || fg_bail "PostgreSQL did not start"
fg_ca_make ca >/dev/null
fg_server_cert >/dev/null
bench_fleet pub "$BENCH_PUBLISHERS" m1
bench_register_all || fg_bail "cannot register the devices"

# publish_round BROKER FIRST: every device publishes BENCH_COUNT readings
# numbered from FIRST; prints the acknowledged readings per second of all
# devices together (total / wall time of the slowest).
publish_round() {
	local broker=$1 first=$2 last d t0 t1 rc=0
	local -a pids=()
	last=$((first + BENCH_COUNT - 1))
	t0=$(fg_now_ms)
	local -a pin=()
	[[ -z ${BENCH_PUB_CPUS:-} ]] || pin=(taskset -c "$BENCH_PUB_CPUS")
	for d in "${BENCH_DEVICES[@]}"; do
		"${pin[@]}" nice -n "$BENCH_NICE" "$ORACLE" --host 127.0.0.1 \
			--port "${BENCH_PORT[$broker]}" --cafile "$FG_CERTS/ca.crt" \
			--cert "$FG_CERTS/$d.crt" --key "$FG_CERTS/$d.key" --id "$d" \
			--topic "water/m1/$d/readings" --first "$first" --last "$last" \
			--size "$BENCH_SIZE" --deadline 600 --pace-us "$BENCH_PACE_US" \
			-o "$FG_TMP/$broker-$d.acked" >>"$FG_TMP/$broker-$d.out" 2>&1 &
		pids+=($!)
		fg_track $!
	done
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	t1=$(fg_now_ms)
	((rc == 0)) || {
		echo "a publisher failed on $broker" >&2
		return 1
	}
	awk -v n=$((BENCH_COUNT * ${#BENCH_DEVICES[@]})) -v ms=$((t1 - t0)) \
		'BEGIN { printf "%.0f\n", n * 1000 / ms }'
}

# pg_cpu_ticks: CPU time (clock ticks) used so far by the PostgreSQL
# server's processes; a process that exited in between is not counted.
pg_cpu_ticks() {
	local pid total=0 f
	for pid in $(fg__pg_pids 2>/dev/null); do
		f=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
		total=$((total + ${f% *} + ${f#* }))
	done
	echo "$total"
}

# cpu_idle_ticks: idle time of all CPUs so far (/proc/stat, clock ticks).
cpu_idle_ticks() {
	awk '$1 == "cpu" { print $5 + $6; exit }' /proc/stat
}

rows_of() {
	fg_psql_super "select count(*) from fleetgate.readings where broker_id = '$1'"
}
rows_at_least() { (($(rows_of "$1") >= $2)); }

# --- 1. QoS 1 publish throughput ----------------------------------------------
bench_broker_start bare bare || fg_bail "bare broker did not start"
bench_broker_start persist persist || fg_bail "persist broker did not start"
# Auth alone, for part 2; started while the database is up, so that it
# has the registry in memory when the database is away.
bench_broker_start auth plugin || fg_bail "auth broker did not start"
bare_rates=() persist_rates=() db_cpus=()
hz=$(getconf CLK_TCK)
first=1
for ((r = 1; r <= BENCH_ROUNDS; r++)); do
	i0=$(cpu_idle_ticks)
	t0=$(fg_now_ms)
	b=$(publish_round bare "$first") || fg_bail "round $r failed (bare)"
	idle=$(awk -v t=$(($(cpu_idle_ticks) - i0)) -v hz="$hz" \
		-v ms=$(($(fg_now_ms) - t0)) 'BEGIN { printf "%.2f", t / hz * 1000 / ms }')
	c0=$(pg_cpu_ticks)
	t0=$(fg_now_ms)
	p=$(publish_round persist "$first") || fg_bail "round $r failed (persist)"
	# The database's share of this machine's CPUs while it stored the
	# round: what the broker and its publishers could not have.
	db=$(awk -v t=$(($(pg_cpu_ticks) - c0)) -v hz="$hz" \
		-v ms=$(($(fg_now_ms) - t0)) 'BEGIN { printf "%.2f", t / hz * 1000 / ms }')
	bare_rates+=("$b")
	persist_rates+=("$p")
	db_cpus+=("$db")
	printf '# round %d: bare %s/s (CPUs idle %s), auth+persist %s/s, ratio %s, database used %s of %d CPUs\n' \
		"$r" "$b" "$idle" "$p" "$(bench_ratio "$p" "$b")" "$db" "$(nproc)"
	first=$((first + BENCH_COUNT))
done
bm=$(bench_median "${bare_rates[@]}")
pm=$(bench_median "${persist_rates[@]}")
expected=$((BENCH_ROUNDS * BENCH_COUNT * BENCH_PUBLISHERS))
fg_wait_until 120 rows_at_least persist "$expected" || true
stored=$(rows_of persist)
dbm=$(bench_median "${db_cpus[@]}")
printf 'qos1_publish bare_msgs_per_s=%s persist_msgs_per_s=%s ratio=%s publishers=%d payload_bytes=%d database_cpus=%s\n' \
	"$bm" "$pm" "$(bench_ratio "$pm" "$bm")" "$BENCH_PUBLISHERS" "$BENCH_SIZE" \
	"$dbm"
# The bare broker and its publishers keep every CPU busy; what the
# database takes bounds the persist broker's rate from above.
printf '# the CPUs left to the broker and its publishers: %s of the bare run'"'"'s\n' \
	"$(awk -v d="$dbm" -v n="$(nproc)" 'BEGIN { printf "%.3f", (n - d) / n }')"
if [[ $stored == "$expected" ]]; then
	ok true "every reading acknowledged by the persist broker is stored ($stored)"
else
	fail "every reading acknowledged by the persist broker is stored" \
		"stored $stored, expected $expected"
fi

# --- 1b. The database on a CPU of its own --------------------------------------
# What a database on another host leaves to the broker, as near as two CPUs
# come: the brokers and their publishers run on CPU 0, PostgreSQL and the
# persist broker's worker threads on CPU 1. The bare and persist brokers
# take the same load in turn for BENCH_ROUNDS rounds.
own_cpu_part() {
	local r b p t pids
	bench_broker_start bare0 bare 0 || return 1
	bench_broker_start persist0 persist 0 || return 1
	for t in /proc/"${BENCH_PID[persist0]}"/task/*; do
		[[ $(cat "$t/comm" 2>/dev/null) == fg-* ]] &&
			taskset -p -c 1 "${t##*/}" >/dev/null
	done
	own_bare=() own_persist=() own_ratio=()
	for ((r = 1; r <= BENCH_ROUNDS; r++)); do
		# (new backends inherit the postmaster's CPU; pinned again
		# each round for any the server started since)
		pids=$(fg__pg_pids 2>/dev/null) || true
		for p in $pids; do taskset -a -p -c 1 "$p" >/dev/null 2>&1 || true; done
		b=$(BENCH_PUB_CPUS=0 publish_round bare0 "$first") || return 1
		p=$(BENCH_PUB_CPUS=0 publish_round persist0 "$first") || return 1
		own_bare+=("$b")
		own_persist+=("$p")
		own_ratio+=("$(bench_ratio "$p" "$b")")
		printf '# database on CPU 1, round %d: bare %s/s, auth+persist %s/s, ratio %s\n' \
			"$r" "$b" "$p" "${own_ratio[-1]}"
		first=$((first + BENCH_COUNT))
	done
	pids=$(fg__pg_pids 2>/dev/null) || true
	for p in $pids; do taskset -a -p -c "0-$(($(nproc) - 1))" "$p" >/dev/null 2>&1 || true; done
	return 0
}
if (($(nproc) >= 2)) && command -v taskset >/dev/null; then
	own_first=$first
	own_cpu_part || fg_bail "the database-on-its-own-CPU rounds failed"
	ob=$(bench_median "${own_bare[@]}")
	op=$(bench_median "${own_persist[@]}")
	printf 'qos1_publish_database_own_cpu bare_msgs_per_s=%s persist_msgs_per_s=%s ratio=%s median_of_round_ratios=%s rounds=%d\n' \
		"$ob" "$op" "$(bench_ratio "$op" "$ob")" \
		"$(bench_median "${own_ratio[@]}")" "$BENCH_ROUNDS"
	expected=$((first - own_first))
	expected=$((expected * BENCH_PUBLISHERS))
	fg_wait_until 120 rows_at_least persist0 "$expected" || true
	is "$(rows_of persist0)" "$expected" \
		"every reading acknowledged with the database on its own CPU is stored"
	bench_broker_stop bare0
	bench_broker_stop persist0
fi

# --- 2. Draining a backlog ------------------------------------------------------
before=$(rows_of persist)
fg_pg_stop || fg_bail "PostgreSQL did not stop"
# BENCH_ROUNDS rounds; in each the persist, bare and auth brokers take
# the same load in turn, each round starting with the next one, so that
# drift on the machine falls on all three alike. The persist rounds
# together journal the backlog.
# (rounded up: the backlog is at least BENCH_BACKLOG readings)
per=$(((BENCH_BACKLOG + BENCH_PUBLISHERS * BENCH_ROUNDS - 1) / (BENCH_PUBLISHERS * BENCH_ROUNDS)))
BENCH_COUNT=$per
away_order=(persist bare auth)
away_persist=() away_bare=() away_auth=() r_pb=() r_pa=() r_ab=()
journal_ms=0
for ((r = 0; r < BENCH_ROUNDS; r++)); do
	declare -A got=()
	for ((k = 0; k < 3; k++)); do
		who=${away_order[$(((r + k) % 3))]}
		t0=$(fg_now_ms)
		got[$who]=$(publish_round "$who" "$first") ||
			fg_bail "round $((r + 1)) failed ($who, database away)"
		if [[ $who == persist ]]; then
			journal_ms=$((journal_ms + $(fg_now_ms) - t0))
		fi
	done
	away_persist+=("${got[persist]}")
	away_bare+=("${got[bare]}")
	away_auth+=("${got[auth]}")
	r_pb+=("$(bench_ratio "${got[persist]}" "${got[bare]}")")
	r_pa+=("$(bench_ratio "${got[persist]}" "${got[auth]}")")
	r_ab+=("$(bench_ratio "${got[auth]}" "${got[bare]}")")
	printf '# database away, round %d: persist %s/s, bare %s/s, auth %s/s, persist/bare %s\n' \
		$((r + 1)) "${got[persist]}" "${got[bare]}" "${got[auth]}" "${r_pb[-1]}"
	first=$((first + per))
	unset got
done
backlog=$((per * BENCH_PUBLISHERS * BENCH_ROUNDS))
jr=$(bench_median "${away_persist[@]}")
br=$(bench_median "${away_bare[@]}")
ar=$(bench_median "${away_auth[@]}")
printf 'qos1_publish_database_away bare_msgs_per_s=%s auth_msgs_per_s=%s persist_msgs_per_s=%s ratio=%s ratio_persist_auth=%s ratio_auth_bare=%s rounds=%d\n' \
	"$br" "$ar" "$jr" "$(bench_ratio "$jr" "$br")" "$(bench_ratio "$jr" "$ar")" \
	"$(bench_ratio "$ar" "$br")" "$BENCH_ROUNDS"
printf 'qos1_publish_database_away median_of_round_ratios persist/bare=%s persist/auth=%s auth/bare=%s\n' \
	"$(bench_median "${r_pb[@]}")" "$(bench_median "${r_pa[@]}")" \
	"$(bench_median "${r_ab[@]}")"
bench_broker_stop bare
bench_broker_stop auth
printf '# backlog of %d readings journaled in %.1f s while PostgreSQL was down; journal %s\n' \
	"$backlog" "$(awk -v ms="$journal_ms" 'BEGIN { print ms / 1000 }')" \
	"$(du -sh "$FG_TMP/persist.journal" | cut -f1)"
fg_pg_resume || fg_bail "PostgreSQL did not start again"
# Progress is followed in persist_progress (a row read, not a count of a
# growing table, which would compete with the drain). The clock starts
# when the progress row first moves (so the writer's reconnect backoff is
# not counted) and stops at its last move.
progress() {
	fg_psql_super "select seq from fleetgate.persist_progress
		where broker_id = 'persist'" 2>/dev/null || echo 0
}
p0=$(progress)
t0=
t1=
last=$p0
still_ms=0
while ((still_ms < 2000)); do
	sleep 0.1
	p=$(progress)
	now=$(fg_now_ms)
	if [[ $p != "$last" ]]; then
		[[ -n $t0 ]] || { t0=$now; p_t0=$p; }
		t1=$now
		last=$p
		still_ms=0
	elif [[ -n $t0 ]]; then
		still_ms=$((still_ms + 100))
	fi
done
drain_ms=$((t1 - t0))
# Entries committed between the first and the last move of the progress.
drain_rate=$(awk -v n=$((last - p_t0)) -v ms="$drain_ms" \
	'BEGIN { printf "%.0f", n * 1000 / ms }')
printf 'backlog_drain readings=%d seconds=%.1f stored_per_s=%s\n' "$backlog" \
	"$(awk -v ms="$drain_ms" 'BEGIN { print ms / 1000 }')" "$drain_rate"
is "$(rows_of persist)" $((before + backlog)) \
	"the whole backlog is stored, once"
bench_broker_stop persist

# --- 3. The baseline: one plain COPY of the same rows ------------------------------
copy_file=$FG_TMP/readings.copy
cols="broker_id, seq, received_at, measured_at, device_id, municipality_id,"
cols+=" account, client_id, topic, payload"
fg_psql_super "\\copy (select 'rawcopy', seq, received_at, measured_at, device_id, municipality_id, account, client_id, topic, payload from fleetgate.readings where broker_id = 'persist' order by seq desc limit $backlog) to '$copy_file'"
t0=$(fg_now_ms)
fg_psql_super "\\copy fleetgate.readings ($cols) from '$copy_file'" >/dev/null
t1=$(fg_now_ms)
copy_rate=$(awk -v n="$backlog" -v ms=$((t1 - t0)) 'BEGIN { printf "%.0f", n * 1000 / ms }')
printf 'raw_copy readings=%d seconds=%.1f stored_per_s=%s\n' "$backlog" \
	"$(awk -v ms=$((t1 - t0)) 'BEGIN { print ms / 1000 }')" "$copy_rate"
printf 'persist_vs_raw_copy ratio=%s\n' "$(bench_ratio "$drain_rate" "$copy_rate")"
is "$(rows_of rawcopy)" "$backlog" "the raw COPY stored every row"
