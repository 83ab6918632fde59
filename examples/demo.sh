#!/usr/bin/env bash
# demo.sh: a simulated fleet spread over two brokers with the fleetgate
# fleetgate plugins and one PostgreSQL, from nothing (`make demo`).
#
# It starts a private PostgreSQL cluster with the fleetgate schema and two
# mosquitto brokers, north and south, each with the auth plugin against
# that one database (through test/lib.sh). It registers DEMO_PER_MUNI
# devices in each of two municipalities, each with its own certificate,
# and one dashboard account; riverton's devices and the dashboard connect
# to north, lakeside's to south. Then it shows:
#   - every registered device and the dashboard connect and stay connected,
#     counted per broker;
#   - a device with a certificate from the same CA that is not registered
#     is refused, and so is the dashboard with a wrong password (on the
#     broker it is not connected to: accounts are shared too);
#   - revoking a connected device's certificate in SQL disconnects it from
#     its broker (the time from the commit to the disconnect is measured),
#     and it can connect again to neither broker;
#   - suspending a device connected to the other broker disconnects it the
#     same way, and the first broker refuses it too;
#   - every other device stays connected;
#   - what the audit table recorded, per broker;
#   - with the acl plugin, also loaded on both brokers, and two topic rules
#     written in SQL (devices publish under water/%m/%c/#, dashboards
#     receive water/%m/#): on each broker a riverton device's reading
#     reaches a riverton dashboard session, a lakeside device may not
#     publish under water/riverton/ and the dashboard may not subscribe to
#     water/#; a deny rule added in SQL stops delivery on the live
#     subscriptions of both brokers (publishing every 100 ms, the time
#     from the commit to the first withheld message is measured); and the
#     acl audit rows. The brokers are not bridged: a message reaches only
#     the subscribers of the broker it was published on;
#   - with the persist plugin on both brokers, storing water/+/+/flow (the
#     acl steps' text messages on .../readings stay unstored): every device
#     publishes DEMO_READINGS numbered QoS 1 flow readings while
#     PostgreSQL is stopped for
#     2 s in the middle; every acknowledged reading is stored exactly once,
#     under the device and municipality of its certificate;
#   - with the ratelimit plugin on both brokers and one Redis: a device
#     limited in SQL to 20 messages a second publishes 50 a second through
#     each broker at once for 5 s, and the two brokers together accept
#     its fleet-wide budget (0.90 to 1.15 of it; in the partial windows at
#     either end, no more than it sent there) and refuse the rest.
# Output is plain text; the checks are TAP lines ("ok N - ..."). Exit
# status 0 when every expected outcome happened, 1 otherwise. Everything
# it started is stopped at exit, by PID. FG_KEEP=1 keeps the files.
set -euo pipefail
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/lib.sh
. "$repo/test/lib.sh"
# shellcheck source=test/bench/benchlib.sh
. "$repo/test/bench/benchlib.sh"

: "${DEMO_PER_MUNI:=12}"
: "${DEMO_READINGS:=100}"
munis=(riverton lakeside)
brokers=(north south)
# Which broker each municipality's devices connect to.
declare -A home=([riverton]=north [lakeside]=south)
stranger='stranger-0001'
victim='riverton-0003'   # revoked while connected to north
suspended='lakeside-0005' # suspended while connected to south
dash_user=dashboard
dash_password=demo-dashboard-password
dash_broker=north

fg_setup
# The two victims are picked by number.
((DEMO_PER_MUNI >= 5)) || fg_bail "DEMO_PER_MUNI must be at least 5"

say() {
	printf '%s\n' "$*"
}

step() {
	printf '\n== %s\n' "$*"
}

# audit_table SQL: a query on the audit table, printed as an aligned table.
audit_table() {
	fg_psql_super "$1" -P format=aligned -P tuples_only=off -P footer=off |
		sed -e '/^[[:space:]]*$/d' -e 's/^/    /'
}

# log_since BROKER REGEX: the first match of REGEX in what the broker
# logged after its fg_log_mark, or "(no line)".
log_since() {
	local line
	# sed, not grep -m 1, reads to the end: under pipefail an early exit
	# would make tail fail with SIGPIPE.
	line=$(tail -c +"$((${FG_LOG_MARK[$1]:-0} + 1))" "$FG_TMP/$1.log" |
		grep -oE -- "$2" | sed -n 1p) || true
	printf '%s\n' "${line:-(no line)}"
}

# commit_ms SQL [psql args]: runs SQL as fg_admin in a transaction and
# prints the database clock read just before COMMIT, in epoch ms. A kick
# measured from it includes the commit itself, so the figure is an upper
# bound (same host, same CLOCK_REALTIME as fg_client's epoch_ms).
commit_ms() {
	local sql=$1
	shift
	fg_psql_admin "begin;
		$sql;
		select (extract(epoch from clock_timestamp()) * 1000)::bigint;
		commit;" "$@" | grep -E '^[0-9]+$' | tail -n 1
}

# measure_kick DEVICE BROKER COMMIT_MS: waits for the background client
# DEVICE (connected to BROKER) to be disconnected, prints what it and the
# broker said, and sets KICK_RC (fg_client's exit code: 0 when the broker
# disconnected it) and KICK_MS (ms from the commit, or -).
KICK_RC=
KICK_MS=-
measure_kick() {
	local id=$1 broker=$2 t0=$3 disc_ms
	fg_client_wait "$id" 5
	say "  fg_client ($id): $(tr '\n' ' ' <<<"$FG_OUT")"
	disc_ms=$(fg_field "$FG_OUT" epoch_ms)
	KICK_RC=$FG_RC
	KICK_MS=-
	if [[ $FG_RC == 0 && -n $disc_ms ]]; then
		KICK_MS=$((disc_ms - t0))
	fi
	say "  $broker's log: $(grep -m 1 -o "fleetgate-auth: kick .*client_id=$id.*" \
		"$FG_TMP/$broker.log" || echo '(no line)')"
	say "  kicked from $broker $KICK_MS ms after the commit" \
		"(limit $FG_KICK_LIMIT_MS ms)"
}

# reload_seen BROKER: waits (2 s at most) for BROKER to log a registry
# reload after its mark and prints that line. Only informative: the
# refused reconnect that follows is the check.
reload_seen() {
	if fg_wait_log "$1" 'registry loaded from database' 2; then
		say "  $1 reloaded the registry too; its log:" \
			"$(log_since "$1" 'fleetgate: registry loaded from database.*')"
	else
		say "  $1 logged no registry reload within 2 s of the commit"
	fi
}

# audit_why WHERE: the distinct "broker:reason" pairs of the auth audit
# rows matching WHERE, comma-separated, in order.
audit_why_sql() {
	printf '%s' "select coalesce(string_agg(distinct broker_id || ':' || reason,
		',' order by broker_id || ':' || reason), '')
		from fleetgate.audit_events where source = 'auth' and $1"
}

# audit_why WHERE EXPECTED: waits (5 s at most: the brokers write the audit
# table asynchronously) until audit_why_sql prints EXPECTED, then prints
# what it prints.
audit_why() {
	fg_wait_sql "$(audit_why_sql "$1")" "$2" 5 || true
	fg_psql_super "$(audit_why_sql "$1")"
}

# still_connected BROKER: the background clients of BROKER's devices (the
# two victims excluded) that are still connected.
still_connected() {
	local b=$1 id n=0
	for id in "${BENCH_DEVICES[@]}"; do
		[[ $id == "$victim" || $id == "$suspended" ]] && continue
		[[ ${home[${BENCH_MUNI[$id]}]} == "$b" ]] || continue
		if fg_client_alive "$id" && ! fg__client_has "$id" '^disconnected'; then
			n=$((n + 1))
		fi
	done
	printf '%s\n' "$n"
}

step "Starting PostgreSQL and applying the fleetgate schema"
fg_pg_start || fg_bail "PostgreSQL did not start"
fg_redis_start || fg_bail "Redis did not start"
say "  cluster on 127.0.0.1:$PGPORT, database $PGDATABASE, schema version" \
	"$(fg_psql_super "select max(version) from fleetgate.schema_version")"

step "Making certificates (EC P-256): a CA, the brokers, the fleet, a stranger"
fg_ca_make ca || fg_bail "cannot make the CA"
# One server certificate (CN=localhost) for both brokers: a device trusts
# the CA, not a particular broker, so it can be moved between them.
fg_server_cert ca >/dev/null || fg_bail "cannot make the server certificate"
for m in "${munis[@]}"; do
	bench_fleet "$m" "$DEMO_PER_MUNI" "$m" ||
		fg_bail "cannot make the certificates of $m"
done
fg_device_cert "$stranger" >/dev/null ||
	fg_bail "cannot make the stranger's certificate"
say "  ${#BENCH_DEVICES[@]} device certificates, plus $stranger: signed by" \
	"the same CA, so TLS accepts it, but never registered"

step "Registering the fleet and a dashboard account (as fg_admin)"
bench_register_all || fg_bail "cannot register the devices"
fg_add_account "$dash_user" "$dash_password" dashboard riverton ||
	fg_bail "cannot add the dashboard account"
say "  password hash made with mosquitto_passwd (role dashboard, municipality" \
	"riverton); the registry now holds:"
audit_table "select municipality_id as municipality, count(*) as devices,
	count(*) filter (where status = 'active') as active
	from fleetgate.devices group by 1 order by 1"
say "    accounts: $(fg_psql_super "select string_agg(username || ' (' || role || ')', ', ')
	from fleetgate.accounts")"

step "Starting two brokers, ${brokers[0]} and ${brokers[1]}, with the ratelimit, auth," \
	"acl and persist plugins, the same database and the same Redis"
# The acl plugin after the auth plugin, its options spelled out.
acl_conf=(
	"plugin $FG_BUILD/fleetgate_acl.so"
	"plugin_opt_isolation true"
	"plugin_opt_municipality_level 1"
)
# Nothing is shared between the brokers but PostgreSQL: each has its own
# config, ports, log and registry snapshot file, and its own broker_id.
# Migration 004's global default (60 messages a minute, burst 60) suits a
# meter; the demo's devices send much more, so the default is raised and
# one device gets a tight limit of its own below.
fg_psql_admin "select fleetgate.set_rate_limit('global', null, 1000000, null,
	60, 0, 'demo: a busy test fleet')" >/dev/null
for b in "${brokers[@]}"; do
	# ratelimit is loaded first (see mosquitto.conf.example); both
	# brokers count against one Redis.
	mapfile -t FG_BROKER_FIRST < <(
		echo "plugin $FG_BUILD/fleetgate_ratelimit.so"
		fg_broker_runtime_opts "$b"
		echo "plugin_opt_redis_host 127.0.0.1"
		echo "plugin_opt_redis_port $FG_REDIS_PORT"
		echo "plugin_opt_local_share 0.5"
	)
	fg_broker_start "$b" "${acl_conf[@]}" \
		"plugin $FG_BUILD/fleetgate_persist.so" \
		"plugin_opt_topics water/+/+/flow" \
		"plugin_opt_journal_dir $FG_TMP/$b.journal" ||
		fg_bail "broker $b did not start"
done
for b in "${brokers[@]}"; do
	fg_wait_log "$b" 'registry loaded from database' 10 ||
		fg_bail "the plugin of $b did not load the registry"
	say "  $b: PID ${FG_BROKER_PID[$b]}, devices on TLS port ${FG_TLS_PORT[$b]}" \
		"(client certificate required), accounts on port ${FG_PLAIN_PORT[$b]}"
	say "    $(grep -m 1 -o 'fleetgate: registry loaded from database.*' \
		"$FG_TMP/$b.log")"
done

step "Connecting the fleet (one fg_client process per device, kept connected)"
for b in "${brokers[@]}"; do
	fg_log_mark "$b"
done
for id in "${BENCH_DEVICES[@]}"; do
	fg_connect_bg "$id" "${home[${BENCH_MUNI[$id]}]}" "$id" "$id" \
		--wait-disconnect 600
done
fg_client_bg "$dash_user" --host 127.0.0.1 \
	--port "${FG_PLAIN_PORT[$dash_broker]}" --id dashboard-1 \
	--username "$dash_user" --password "$dash_password" --wait-disconnect 600
connected=0
not_connected=()
declare -A n_on=()
for id in "${BENCH_DEVICES[@]}"; do
	if fg_client_wait_line "$id" '^ready' 15; then
		connected=$((connected + 1))
		n_on[${BENCH_MUNI[$id]}]=$((${n_on[${BENCH_MUNI[$id]}]:-0} + 1))
	else
		not_connected+=("$id: $(fg_client_out "$id" | tr '\n' ' ')")
	fi
done
dash_ok=no
if fg_client_wait_line "$dash_user" '^ready' 15; then
	dash_ok=yes
fi
# The brokers' own view: connection_messages logs one line per admitted
# client, so each broker's count comes from its log, not from the clients.
declare -A n_log=()
for b in "${brokers[@]}"; do
	n_log[$b]=$(tail -c +"$((FG_LOG_MARK[$b] + 1))" "$FG_TMP/$b.log" |
		grep -c 'New client connected from ' || true)
done
for m in "${munis[@]}"; do
	say "  ${home[$m]}: $m ${n_on[$m]:-0} of $DEMO_PER_MUNI devices connected"
done
say "  $dash_broker: dashboard account '$dash_user' (client id dashboard-1):" \
	"connected=$dash_ok"
for b in "${brokers[@]}"; do
	say "  $b's log: ${n_log[$b]} clients admitted"
done
for m in "${munis[@]}"; do
	is "${n_on[$m]:-0}" "$DEMO_PER_MUNI" "every $m device is connected to ${home[$m]}"
done
if ((${#not_connected[@]} > 0)); then
	fg_diag "not connected:" "${not_connected[@]}"
fi
is "$dash_ok" yes "the dashboard account is connected to $dash_broker"
is "${n_log[north]} ${n_log[south]}" "$((DEMO_PER_MUNI + 1)) $DEMO_PER_MUNI" \
	"the brokers' logs agree: north admitted riverton and the dashboard, south lakeside"

step "The stranger tries to connect to north (valid certificate, not registered)"
fg_log_mark north
fg_connect north "$stranger"
say "  fg_client: $FG_OUT"
stranger_rc=$FG_RC
fg_wait_log north "fleetgate-auth: .*client_id=$stranger" 5 || true
say "  north's log: $(log_since north "fleetgate-auth: .*client_id=$stranger.*")"
is "$stranger_rc" 2 "the unregistered device is refused with a CONNACK"

step "The dashboard account, on south, with a wrong password"
fg_connect_plain south dashboard-2 --username "$dash_user" --password wrong
say "  fg_client: $FG_OUT"
is "$FG_RC" 2 "a wrong dashboard password is refused"

step "Revoking $victim's certificate in SQL while it is connected to north"
fp=${FG_FP[$victim]}
say "  fingerprint $fp"
fg_log_mark south
t_commit=$(commit_ms "select fleetgate.revoke_certificate(:'fp',
	'demo: device reported stolen')" -v fp="$fp") ||
	fg_bail "the revocation failed"
say "  committed at epoch_ms=$t_commit"
measure_kick "$victim" north "$t_commit"
revoke_kick_ms=$KICK_MS
is "$KICK_RC" 0 "the revoked device is disconnected from north"
ok "[[ $KICK_MS != - ]] && ((KICK_MS <= FG_KICK_LIMIT_MS))" \
	"the revoked device is disconnected within $FG_KICK_LIMIT_MS ms of the commit"

fg_connect north "$victim"
say "  reconnect attempt to north: $FG_OUT"
is "$FG_RC" 2 "the revoked device cannot connect to north again"
reload_seen south
fg_connect south "$victim"
say "  reconnect attempt to south: $FG_OUT"
is "$FG_RC" 2 "the revoked device cannot connect to south either"

step "Suspending $suspended (fleetgate.suspend_device) while it is connected to south"
fg_log_mark north
t_commit=$(commit_ms "select fleetgate.suspend_device(:'dev',
	'demo: sent for repair')" -v dev="$suspended") ||
	fg_bail "the suspension failed"
say "  committed at epoch_ms=$t_commit"
measure_kick "$suspended" south "$t_commit"
suspend_kick_ms=$KICK_MS
is "$KICK_RC" 0 "the suspended device is disconnected from south"
ok "[[ $KICK_MS != - ]] && ((KICK_MS <= FG_KICK_LIMIT_MS))" \
	"the suspended device is disconnected within $FG_KICK_LIMIT_MS ms of the commit"
reload_seen north
fg_connect north "$suspended"
say "  connect attempt to north: $FG_OUT"
is "$FG_RC" 2 "the suspended device cannot connect to north instead"

step "The rest of the fleet"
declare -A others=()
for b in "${brokers[@]}"; do
	others[$b]=$(still_connected "$b")
done
n_others=$((DEMO_PER_MUNI - 1))
dash_alive=$(fg_client_alive "$dash_user" && echo yes || echo no)
for m in "${munis[@]}"; do
	say "  ${home[$m]}: ${others[${home[$m]}]} of $n_others other $m devices" \
		"still connected"
done
say "  $dash_broker: dashboard still connected: $dash_alive"
is "${others[north]} ${others[south]} $dash_alive" "$n_others $n_others yes" \
	"every other device, and the dashboard, stays connected on both brokers"

step "Disconnecting the fleet"
for id in "${BENCH_DEVICES[@]}" "$dash_user"; do
	[[ $id == "$victim" || $id == "$suspended" ]] && continue
	fg_client_stop "$id"
done
say "  all clients sent a clean DISCONNECT and exited"

step "What the audit table recorded (source 'auth', written by the brokers)"
# The brokers write audit rows asynchronously: wait for the last ones.
r_kick=$(audit_why "event = 'kick' and client_id = '$victim'" \
	north:certificate_revoked)
r_again=$(audit_why "outcome = 'refused' and client_id = '$victim'" \
	north:certificate_revoked,south:certificate_revoked)
r_susp=$(audit_why "event = 'kick' and client_id = '$suspended'" \
	south:device_suspended)
r_susp_again=$(audit_why "outcome = 'refused' and client_id = '$suspended'" \
	north:device_suspended)
r_stranger=$(audit_why "outcome = 'refused' and client_id = '$stranger'" \
	north:unknown_certificate)
r_dash=$(audit_why "outcome = 'refused' and username = '$dash_user'" \
	south:bad_password)
audit_table "select broker_id as broker, event, outcome, reason, count(*) as rows
	from fleetgate.audit_events where source = 'auth'
	group by 1, 2, 3, 4 order by 1, 2, 3 desc, 4"
say
# In time order: each broker writes its rows in batches, so the ids of
# the two brokers' rows interleave by when they were written, not by when
# the event happened.
say "  the last rows, by time:"
audit_table "select id, to_char(at, 'HH24:MI:SS.MS') as at, broker_id as broker,
	event, outcome, reason, coalesce(device_id, username, client_id) as who
	from (select * from fleetgate.audit_events where source = 'auth'
	      order by at desc, id desc limit 7) last order by at, id"
say
say "  administrative changes recorded by the registry trigger:"
audit_table "select event, count(*) as rows, max(reason) as last_reason
	from fleetgate.audit_events where source = 'admin' group by 1 order by 1"

# per_broker WHERE: "north=N south=M" for the auth rows matching WHERE.
per_broker() {
	fg_psql_super "select string_agg(b || '=' || coalesce(n, 0), ' ' order by b)
		from unnest(array['${brokers[0]}', '${brokers[1]}']) b
		left join (select broker_id, count(*) n from fleetgate.audit_events
		           where source = 'auth' and $1 group by 1) a
		on a.broker_id = b"
}
n_acc=$(per_broker "event = 'connect' and outcome = 'accepted'")
n_ref=$(per_broker "event = 'connect' and outcome = 'refused'")
n_kick=$(per_broker "event = 'kick' and outcome = 'kicked'")
is "$n_acc" "north=$((DEMO_PER_MUNI + 1)) south=$DEMO_PER_MUNI" \
	"one accepted row per device and one for the dashboard, each from its broker"
is "$r_stranger" north:unknown_certificate \
	"the stranger's refusal is audited by north as unknown_certificate"
is "$r_dash" south:bad_password "the wrong password is audited by south as bad_password"
is "$r_kick" north:certificate_revoked "the kick is audited by north as certificate_revoked"
is "$r_again" north:certificate_revoked,south:certificate_revoked \
	"the refused reconnects are audited by both brokers as certificate_revoked"
is "$r_susp" south:device_suspended "the suspension kick is audited by south as device_suspended"
is "$r_susp_again" north:device_suspended \
	"the refused connect to north is audited by north as device_suspended"

# ------------------------------------------------------- topic rules ----
# The clients of this part are fg_client --script processes, fed commands
# through a FIFO: a PUBLISH is judged by its PUBACK (MQTT 5 QoS 1: 0x87
# when refused), a SUBSCRIBE by its SUBACK, a delivery by whether the
# message arrives. They connect only now, after the auth audit checks
# above, which count connections.

# sc_dev NAME BROKER DEVICE: the device over TLS (client id = device id).
sc_dev() {
	local -a args
	mapfile -t args < <(fg__tls_args "$2" "$3")
	sc_start "$1" "${args[@]}" --id "$3"
}

# sc_dash NAME BROKER CLIENT_ID: the dashboard account, plain listener.
sc_dash() {
	sc_start "$1" --host 127.0.0.1 --port "${FG_PLAIN_PORT[$2]}" --id "$3" \
		--username "$dash_user" --password "$dash_password"
}

# sc_do NAME KIND TAG COMMAND: sends COMMAND and waits (3 s at most) for
# its answer, "KIND tag=TAG rc=N"; prints N (the reason code), or "none".
sc_do() {
	local line
	sc_send "$1" "$4"
	fg_client_wait_line "$1" "^$2 tag=$3 " 3 || true
	line=$(grep -E -- "^$2 tag=$3 " "$FG_TMP/clients/$1.out" | tail -n 1) || true
	line=$(fg_field "$line" rc)
	printf '%s\n' "${line:-none}"
}

# verdict RC: allowed (a reason code below 128), refused, or what happened.
verdict() {
	if [[ $1 =~ ^[0-9]+$ ]]; then
		if (($1 < 128)); then echo allowed; else echo refused; fi
	else
		echo "no answer ($1)"
	fi
}

acl_limit_ms=$((1000 * FG_SLOW))

step "Topic rules in SQL (the acl plugin, on both brokers)"
for b in "${brokers[@]}"; do
	fg_log_mark "$b"
done
fg_psql_admin "select fleetgate.add_acl_rule('all_devices', null,
	'water/%m/%c/#', 'publish', 'allow', 0,
	'demo: every device publishes under its own topics')" >/dev/null ||
	fg_bail "cannot add the devices' rule"
fg_psql_admin "select fleetgate.add_acl_rule('role', 'dashboard',
	'water/%m/#', 'receive', 'allow', 0,
	'demo: dashboards read their municipality')" >/dev/null ||
	fg_bail "cannot add the dashboards' rule"
audit_table "select id, subject_kind, coalesce(subject, '-') as subject,
	pattern, access, effect, priority from fleetgate.acl_rules order by id"
for b in "${brokers[@]}"; do
	if fg_wait_log "$b" 'registry loaded from database' 3; then
		say "  $b: $(log_since "$b" 'fleetgate: registry loaded from database.*')"
	else
		say "  $b logged no registry reload within 3 s of the commits"
	fi
done
say "  municipality isolation (plugin_opt_isolation true, level 1) is on:"
say "  water/<municipality>/... belongs to that municipality alone"

# Per broker: a dashboard session (the same riverton account), a riverton
# device and a lakeside device. riverton-0002 and lakeside-0002 connect
# to the broker that is not their usual one: devices may use either.
declare -A acl_dash=([north]=dashboard-3 [south]=dashboard-4)
declare -A acl_rdev=([north]=riverton-0001 [south]=riverton-0002)
declare -A acl_ldev=([north]=lakeside-0002 [south]=lakeside-0001)
declare -A acl_seen=() acl_stop=()
for b in "${brokers[@]}"; do
	step "The rules at work on $b (dashboard ${acl_dash[$b]}," \
		"${acl_rdev[$b]}, ${acl_ldev[$b]})"
	d=dash-$b r=rdev-$b l=ldev-$b
	sc_dash "$d" "$b" "${acl_dash[$b]}" ||
		fg_bail "the dashboard did not connect to $b: $(fg_client_out "$d")"
	sc_dev "$r" "$b" "${acl_rdev[$b]}" ||
		fg_bail "${acl_rdev[$b]} did not connect to $b: $(fg_client_out "$r")"
	sc_dev "$l" "$b" "${acl_ldev[$b]}" ||
		fg_bail "${acl_ldev[$b]} did not connect to $b: $(fg_client_out "$l")"

	rc=$(sc_do "$d" suback "S1$b" "sub S1$b 1 water/riverton/#")
	say "  dashboard SUBSCRIBE water/riverton/#: rc=$rc $(verdict "$rc")"
	is "$(verdict "$rc")" allowed "[$b] the riverton dashboard may subscribe to water/riverton/#"
	rc=$(sc_do "$d" suback "S2$b" "sub S2$b 1 water/#")
	[[ ${acl_wide:-} =~ ^[0-9]+$ && $acl_wide -ge 128 ]] || acl_wide=$rc
	say "  dashboard SUBSCRIBE water/#: rc=$rc $(verdict "$rc")" \
		"(it spans municipalities)"
	is "$(verdict "$rc")" refused "[$b] its SUBSCRIBE to water/# is refused (municipality isolation)"

	t_fake=water/riverton/${acl_ldev[$b]}/readings
	rc_fake=$(sc_do "$l" puback "F$b" "pub F$b 1 0 $t_fake")
	say "  ${acl_ldev[$b]} PUBLISH $t_fake: rc=$rc_fake $(verdict "$rc_fake")"
	t_real=water/riverton/${acl_rdev[$b]}/readings
	rc_real=$(sc_do "$r" puback "R$b" "pub R$b 1 0 $t_real")
	say "  ${acl_rdev[$b]} PUBLISH $t_real: rc=$rc_real $(verdict "$rc_real")"
	got=no
	fg_client_wait_line "$d" " payload=R$b topic=" 3 && got=yes
	# The refused PUBLISH was answered before the allowed one was sent:
	# had it been delivered, it would have arrived first.
	got_fake=no
	sc_got "$d" "F$b" && got_fake=yes
	say "  the dashboard received: ${acl_rdev[$b]}'s reading $got," \
		"${acl_ldev[$b]}'s $got_fake"
	acl_seen[$b]="riverton reading $([[ $got == yes ]] && echo delivered ||
		echo NOT delivered), lakeside publish $(verdict "$rc_fake")"
	is "$(verdict "$rc_real") $got" "allowed yes" \
		"[$b] ${acl_rdev[$b]}'s reading is accepted and reaches the riverton dashboard on $b"
	is "$(verdict "$rc_fake") $got_fake" "refused no" \
		"[$b] ${acl_ldev[$b]} may not publish under water/riverton/ (refused, not delivered)"
done
say
say "  (the brokers are not bridged: a reading reaches the dashboard sessions"
say "  of the broker it was published on; both brokers apply the same rules)"

step "A deny rule added in SQL while both dashboards are subscribed"
# Each riverton device publishes a reading every 100 ms (QoS 0); once a
# few arrived, a deny rule withholds readings from dashboards. Then each
# sends one status message, still allowed: once it arrived, everything
# published before it would have arrived too.
n_stream=30
cmds=()
for ((i = 1; i <= n_stream; i++)); do
	cmds+=("pub L$i 0 0 water/riverton/@DEV@/readings" "sleep 100")
done
for b in "${brokers[@]}"; do
	sc_send "rdev-$b" "${cmds[@]//@DEV@/${acl_rdev[$b]}}"
done
fg_client_wait_line rdev-north '^sent tag=L8 ' 3 || true
t_deny=$(commit_ms "select fleetgate.add_acl_rule('role', 'dashboard',
	'water/riverton/+/readings', 'receive', 'deny', 10,
	'demo: readings withheld from dashboards')") ||
	fg_bail "the deny rule could not be added"
say "  deny rule (role dashboard, receive water/riverton/+/readings, priority 10)" \
	"committed at epoch_ms=$t_deny"
for b in "${brokers[@]}"; do
	fg_client_wait_line "rdev-$b" "^sent tag=L$n_stream " 6 || true
	rc=$(sc_do "rdev-$b" puback "Z$b" \
		"pub Z$b 1 0 water/riverton/${acl_rdev[$b]}/status")
	fence=no
	fg_client_wait_line "dash-$b" " payload=Z$b topic=" 3 && fence=yes
	# When delivery stopped, from the send times and what arrived.
	declare -A sent_ms=() got=()
	while read -r _ tagf msf; do
		sent_ms[${tagf#tag=}]=${msf#ms=}
	done < <(grep -E '^sent tag=L[0-9]+ ' "$FG_TMP/clients/rdev-$b.out")
	while read -r tag; do
		got[$tag]=1
	done < <(grep -oE ' payload=L[0-9]+ ' "$FG_TMP/clients/dash-$b.out" |
		sed 's/ payload=//; s/ $//')
	before=0 after=0 stop_i='' last_i='' late=0
	for ((i = 1; i <= n_stream; i++)); do
		s=${sent_ms[L$i]:-}
		[[ -n $s ]] || continue
		if [[ -n ${got[L$i]:-} ]]; then
			last_i=$i
			if ((s < t_deny)); then before=$((before + 1)); else after=$((after + 1)); fi
			[[ -n $stop_i ]] && late=$((late + 1))
		elif [[ -z $stop_i ]] && ((s >= t_deny)); then
			stop_i=$i
		fi
	done
	stop_ms=-
	[[ -n $stop_i ]] && stop_ms=$((${sent_ms[L$stop_i]} - t_deny))
	last_txt='none'
	[[ -n $last_i ]] && last_txt="L$last_i, sent at commit$(printf '%+d' \
		$((${sent_ms[L$last_i]} - t_deny))) ms"
	say "  $b: ${#sent_ms[@]} readings sent, $before delivered before the commit," \
		"$after after; last delivered $last_txt;" \
		"first withheld ${stop_i:+L$stop_i, sent at commit+}$stop_ms ms;" \
		"$late delivered after that; status message delivered: $fence"
	acl_stop[$b]=$stop_ms
	ok "((before > 0)) && [[ $fence == yes ]]" \
		"[$b] readings reach the dashboard every 100 ms before the edit, other topics after it"
	ok "[[ $stop_ms != - ]] && ((stop_ms <= acl_limit_ms && late == 0))" \
		"[$b] the deny rule stops delivery on the live subscription within $acl_limit_ms ms of the commit"
	unset sent_ms got
done

for name in dash-north rdev-north ldev-north dash-south rdev-south ldev-south; do
	sc_close "$name" || true
done

step "What the audit table recorded (source 'acl': denials, one row per client," \
	"topic and minute)"
# acl_why WHERE EXPECTED: as audit_why, for the acl rows.
acl_why_sql() {
	printf '%s' "select coalesce(string_agg(distinct broker_id || ':' || reason,
		',' order by broker_id || ':' || reason), '')
		from fleetgate.audit_events where source = 'acl' and $1"
}
acl_why() {
	fg_wait_sql "$(acl_why_sql "$1")" "$2" 5 || true
	fg_psql_super "$(acl_why_sql "$1")"
}
a_sub=$(acl_why "client_id in ('dashboard-3', 'dashboard-4')
	and detail->>'topic' = 'water/#'" north:subscribe,south:subscribe)
a_pub=$(acl_why "detail->>'topic' like 'water/riverton/lakeside-%'" \
	north:publish,south:publish)
a_recv=$(acl_why "client_id in ('dashboard-3', 'dashboard-4')
	and detail->>'topic' like 'water/riverton/riverton-%/readings'" \
	north:receive,south:receive)
audit_table "select id, broker_id as broker, event, reason,
	coalesce(device_id, username, client_id) as who, client_id,
	detail->>'topic' as topic, detail->>'count' as count
	from fleetgate.audit_events where source = 'acl' order by at, id"
is "$a_sub" north:subscribe,south:subscribe \
	"the refused SUBSCRIBE to water/# is audited by both brokers"
is "$a_pub" north:publish,south:publish \
	"the refused PUBLISH under water/riverton/ is audited by both brokers"
is "$a_recv" north:receive,south:receive \
	"the withheld readings are audited by both brokers as receive denials"
n_acl=$(fg_psql_super "select count(*) from fleetgate.audit_events where source = 'acl'")

# ---------------------------------------------------------- readings ----
step "Readings: every device publishes $DEMO_READINGS numbered QoS 1 readings;" \
	"PostgreSQL is stopped for 2 s in the middle"
readers=()
for dev in "${BENCH_DEVICES[@]}"; do
	[[ $dev == "$victim" || $dev == "$suspended" ]] && continue
	b=${home[${BENCH_MUNI[$dev]}]}
	"$FG_BUILD/tools/fg_oracle" --host 127.0.0.1 --port "${FG_TLS_PORT[$b]}" \
		--cafile "$FG_CERTS/ca.crt" --cert "$FG_CERTS/$dev.crt" \
		--key "$FG_CERTS/$dev.key" --id "$dev" --last "$DEMO_READINGS" \
		--topic "water/${BENCH_MUNI[$dev]}/$dev/flow" --rate 50 \
		--deadline 60 -o "$FG_TMP/$dev.acked" >"$FG_TMP/$dev.oracle" 2>&1 &
	fg_track $!
	readers+=("$dev:$!")
done
sleep 1
fg_pg_stop || fg_bail "PostgreSQL did not stop"
say "  PostgreSQL stopped; the brokers keep acknowledging into their journals"
sleep 2
fg_pg_resume || fg_bail "PostgreSQL did not start again"
say "  PostgreSQL started again"
acked_total=0
all_acked=1
for r in "${readers[@]}"; do
	wait "${r#*:}" || all_acked=0
	acked_total=$((acked_total + $(grep -c . "$FG_TMP/${r%%:*}.acked")))
done
ok "((all_acked == 1))" "every device had all $DEMO_READINGS readings acknowledged"
expected=$((${#readers[@]} * DEMO_READINGS))
demo_rows() { fg_psql_super "select count(*) from fleetgate.readings"; }
demo_caught_up() { (($(demo_rows) >= expected)); }
fg_wait_until 30 demo_caught_up || true
exact=0
for r in "${readers[@]}"; do
	dev=${r%%:*}
	fg_psql_super "select payload->>'n' from fleetgate.readings
		where device_id = '$dev'" >"$FG_TMP/$dev.stored"
	bash "$repo/test/oracle-check.sh" "$FG_TMP/$dev.acked" \
		"$FG_TMP/$dev.stored" >/dev/null 2>&1 && exact=$((exact + 1))
done
ok "((exact == ${#readers[@]}))" \
	"every acknowledged reading of every device is stored exactly once ($exact of ${#readers[@]} devices)"
say "  readings stored, per broker and municipality (from the authenticated identity):"
audit_table "select broker_id as broker, municipality_id as municipality,
	count(*) as readings, count(distinct device_id) as devices,
	min(received_at)::time(0) as first, max(received_at)::time(0) as last
	from fleetgate.readings group by 1, 2 order by 1, 2"
readings_stored=$(demo_rows)

# -------------------------------------------------------- rate limit ----
rl_dev=riverton-0007
rl_limit=20
step "Rate limit: $rl_dev may send $rl_limit messages a second, fleet-wide;" \
	"it sends 100 a second through both brokers at once for 5 s"
fg_psql_admin "select fleetgate.set_rate_limit('device', :'d', :lim, null, 1,
	0, 'demo: a chatty meter')" -v d="$rl_dev" -v lim="$rl_limit" >/dev/null
sleep 1.5
start_at=$(($(fg_now_ms) + 500))
rl_out=()
for b in "${brokers[@]}"; do
	"$FG_BUILD/tools/fg_flood" --host 127.0.0.1 --port "${FG_TLS_PORT[$b]}" \
		--cafile "$FG_CERTS/ca.crt" --cert "$FG_CERTS/$rl_dev.crt" \
		--key "$FG_CERTS/$rl_dev.key" --id "$rl_dev" \
		--topic "water/riverton/$rl_dev/status" --rate 50 --duration 5 \
		--start-at "$start_at" >"$FG_TMP/flood-$b.out" 2>&1 &
	fg_track $!
	rl_out+=("$!")
done
for pid in "${rl_out[@]}"; do wait "$pid" || true; done
rl_acc=0 rl_ref=0 rl_first= rl_last=
for b in "${brokers[@]}"; do
	line=$(grep '^flood ' "$FG_TMP/flood-$b.out" || true)
	say "  $b: ${line:-no result}"
	a=$(fg_field "$line" accepted)
	r=$(fg_field "$line" refused)
	f=$(fg_field "$line" first_ms)
	l=$(fg_field "$line" last_ms)
	rl_acc=$((rl_acc + ${a:-0}))
	rl_ref=$((rl_ref + ${r:-0}))
	[[ -z $rl_first || ${f:-0} -lt $rl_first ]] && rl_first=${f:-0}
	[[ -z $rl_last || ${l:-0} -gt $rl_last ]] && rl_last=${l:-0}
done
rl_windows=$((rl_last / 1000 - rl_first / 1000 + 1))
# The budget of each one-second window the flood touched, but no more
# than the flood sent in it: the first and last windows are partial (a
# flood ending 40 ms into a window sent 4 messages in it, not 20).
rl_budget=$(awk -v f="$rl_first" -v l="$rl_last" -v lim="$rl_limit" \
	-v rate=$((50 * ${#brokers[@]})) 'BEGIN {
		for (w = int(f / 1000); w <= int(l / 1000); w++) {
			a = w * 1000 > f ? w * 1000 : f
			b = (w + 1) * 1000 < l ? (w + 1) * 1000 : l
			sent = (b - a) * rate / 1000
			sent = sent == int(sent) ? sent : int(sent) + 1
			total += sent < lim ? sent : lim
		}
		print total
	}')
rl_ratio=$(awk -v a="$rl_acc" -v b="$rl_budget" 'BEGIN { printf "%.3f", a / b }')
say "  accepted $rl_acc, refused $rl_ref over $rl_windows one-second windows:" \
	"budget $rl_budget, ratio $rl_ratio"
ok "awk -v r=$rl_ratio 'BEGIN { exit !(r >= 0.90 && r <= 1.15) }'" \
	"two brokers together hold the device to its fleet-wide budget (0.90 to 1.15)"
ok "((rl_ref > 0))" "messages over the budget are refused (PUBACK 0x87)"

for b in "${brokers[@]}"; do
	fg_broker_stop "$b"
done

step "Summary"
say "  fleet:      ${#BENCH_DEVICES[@]} devices in ${#munis[@]} municipalities" \
	"(${munis[0]} $DEMO_PER_MUNI, ${munis[1]} $DEMO_PER_MUNI), each with its" \
	"own certificate; 1 dashboard account"
say "  brokers:    ${brokers[0]} and ${brokers[1]}, one PostgreSQL;" \
	"${munis[0]} and the dashboard on ${home[${munis[0]}]}," \
	"${munis[1]} on ${home[${munis[1]}]}"
say "  connected:  $connected of ${#BENCH_DEVICES[@]} devices" \
	"(north ${n_on[riverton]:-0}, south ${n_on[lakeside]:-0}); dashboard $dash_ok"
say "  stranger:   refused (${r_stranger:-no audit row})"
say "  dashboard with a wrong password: refused (${r_dash:-no audit row})"
say "  revocation: $victim kicked $revoke_kick_ms ms after the commit" \
	"(${r_kick:-no audit row}); reconnect refused (${r_again:-no audit row})"
say "  suspension: $suspended kicked $suspend_kick_ms ms after the commit" \
	"(${r_susp:-no audit row}); connect refused (${r_susp_again:-no audit row})"
say "  others:     north ${others[north]}, south ${others[south]} stayed connected;" \
	"dashboard $dash_alive"
say "  audit:      accepted $n_acc; refused $n_ref; kicked $n_kick"
say "  acl:        north: ${acl_seen[north]}; south: ${acl_seen[south]};" \
	"dashboard water/# $(verdict "${acl_wide:-none}") (${a_sub:-no audit row})"
say "  acl edit:   deny rule stopped delivery on north ${acl_stop[north]} ms," \
	"south ${acl_stop[south]} ms after the commit (limit $acl_limit_ms ms);" \
	"$n_acl acl audit rows (${a_recv:-no receive denial row})"
say "  readings:   $acked_total acknowledged, $readings_stored stored (each once)," \
	"through a 2 s PostgreSQL outage"
say "  rate limit: $rl_dev accepted $rl_acc of $((rl_acc + rl_ref)) through two brokers," \
	"$rl_ratio of its fleet-wide budget"
if ((FG_T_FAILED == 0)); then
	say "  result:     every expected outcome happened"
else
	say "  result:     $FG_T_FAILED expected outcome(s) did NOT happen (see 'not ok' above)"
fi
say
