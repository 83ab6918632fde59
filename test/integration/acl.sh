#!/usr/bin/env bash
# ok takes its condition as a string to evaluate, hence single quotes.
# shellcheck disable=SC2016,SC2119 source-path=SCRIPTDIR
# acl.sh: the acl plugin decides who may publish, subscribe and receive,
# with real clients against a real broker and a real registry.
#
# Two databases in one PostgreSQL cluster:
#   fixture  test/acl-fixture.sql, the fleet of the unit tests' decision
#            table; broker "replay" runs every row of test/acl-cases.tsv
#            through real clients (skipped while those files are missing);
#   fleet    the fleet of the cases below (broker "main"): municipalities
#            north, south and east, whose devices are given deliberately
#            broad rules so that only the isolation backstop keeps them
#            apart, and accounts for dashboards, operators, $SYS, live rule
#            edits and hostile names.
#
# Then, on "main": municipalities kept apart through PUBLISH, SUBSCRIBE
# with '#', '+' and $share, retained messages and Wills; an account losing
# cross_municipality while subscribed to '#'; persistent sessions; $SYS;
# hostile topics (placeholders, SQL, 10,000 bytes, 5,000 levels, invalid
# UTF-8, wildcards) and accounts named '%c' or with client id '%u'; the
# denial audit and its throttling; rule and registry edits while clients
# are connected, timed on two brokers; the plugin's options; PostgreSQL
# stopped under a running broker and a broker started from its snapshot.
#
# The clients are fg_client --script processes, one per connection, fed
# commands through a FIFO. A PUBLISH is judged by its PUBACK (MQTT 5 QoS 1:
# 0x87 when refused), a SUBSCRIBE by its SUBACK (0x87 in MQTT 5, 0x80 in
# 3.1.1), a delivery by whether the message arrives. That a message did
# not arrive is asserted only after a later "fence" message, published
# after the one under test and allowed to the same subscriber, has arrived.
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
fg_setup

[[ -f $FG_BUILD/fleetgate_auth.so ]] ||
	fg_bail "$FG_BUILD/fleetgate_auth.so is not built: run make"
[[ -f $FG_BUILD/fleetgate_acl.so ]] ||
	fg_bail "$FG_BUILD/fleetgate_acl.so is not built: run make"

FIXTURE_SQL=$FG_ROOT/test/acl-fixture.sql
CASES_TSV=$FG_ROOT/test/acl-cases.tsv
PW='acl test password'
# A short reconnect back-off (a runtime option, here in the auth plugin's
# block), so that a broker stops quickly while PostgreSQL is down; $SYS
# every second for the $SYS cases; the acl plugin after the auth plugin,
# with its default options spelled out.
ACL_CONF=(
	"plugin_opt_retry_max_ms 300"
	"sys_interval 1"
	"plugin $FG_BUILD/fleetgate_acl.so"
	"plugin_opt_isolation true"
	"plugin_opt_municipality_level 1"
)
LIVE_LIMIT_MS=$((1000 * FG_SLOW))

# ------------------------------------------------------ script clients ----

SC_SEQ=0
SC_TAG=
SC_RC=
SC_LINE=

# sc_dev NAME BROKER CERT [fg_client args...]: a device over TLS, client id
# = the certificate's device id unless --id is given.
sc_dev() {
	local name=$1 broker=$2 cert=$3
	local -a args
	shift 3
	mapfile -t args < <(fg__tls_args "$broker" "$cert")
	sc_start "$name" "${args[@]}" --id "${FG_CERT_DEVICE[$cert]:-$cert}" "$@"
}

# sc_acct NAME BROKER USER PASSWORD CLIENT_ID [fg_client args...]: an
# account on the plain listener.
sc_acct() {
	local name=$1 broker=$2 user=$3 pass=$4 id=$5
	shift 5
	sc_start "$name" --host 127.0.0.1 --port "${FG_PLAIN_PORT[$broker]}" \
		--id "$id" --username "$user" --password "$pass" "$@"
}

# sc_die NAME: the client exits without DISCONNECT (its Will is sent).
sc_die() {
	local name=$1 fd=${SC_FD[$1]:-}
	sc_send "$name" die
	eval "exec $fd>&-"
	unset "SC_FD[$name]"
	fg_client_wait "$name" 3
}

sc__tag() {
	SC_SEQ=$((SC_SEQ + 1))
	SC_TAG=$1$SC_SEQ
}

# sc__answer NAME TAG [TIMEOUT]: waits for the answer to command TAG; sets
# SC_LINE and SC_RC (the reason code; "error" when libmosquitto refused
# the command, "none" when no answer came).
sc__answer() {
	local name=$1 tag=$2 re
	re="^[a-z]+ tag=$tag( |\$)"
	SC_LINE=
	SC_RC=none
	fg_wait_until "${3:-3}" sc__answered "$name" "$re" || true
	SC_LINE=$(grep -E -- "$re" "$FG_TMP/clients/$name.out" | tail -n 1) || true
	sc__rc_of_line
	if [[ $SC_RC == none ]] && sc__disconnected "$name"; then
		SC_RC=disconnected
	fi
}

# Sets SC_RC from the answer line SC_LINE.
sc__rc_of_line() {
	case $SC_LINE in
	'') SC_RC=none ;;
	sent\ *) SC_RC=0 ;;
	*err\ *) SC_RC=error ;;
	*) SC_RC=$(fg_field "$SC_LINE" rc) ;;
	esac
}

sc__disconnected() {
	grep -q '^disconnected ' "$FG_TMP/clients/$1.out" 2>/dev/null ||
		fg__client_gone "$1"
}

# An answer matching RE arrived, or none ever will.
sc__answered() {
	grep -qE -- "$2" "$FG_TMP/clients/$1.out" 2>/dev/null ||
		sc__disconnected "$1"
}

# Queued cases: q_sub / q_pub record a case and its command; q_run sends
# every queued command at once (in order, per client), waits for the last
# answer of each client and judges the cases in order.
Q_DESC=()
Q_NAME=()
Q_CMD=()
Q_TAG=()
Q_WANT=()
Q_WHAT=()

# q_sub DESC NAME FILTER allow|deny
q_sub() {
	sc__tag s
	Q_DESC+=("$1")
	Q_NAME+=("$2")
	Q_CMD+=("sub $SC_TAG 1 $3")
	Q_TAG+=("$SC_TAG")
	Q_WANT+=("$4")
	Q_WHAT+=("SUBSCRIBE '$(shown "$3")' by $2")
}

# q_pub DESC NAME TOPIC allow|deny [RETAIN]: the payload tag is in SC_TAG.
q_pub() {
	sc__tag p
	Q_DESC+=("$1")
	Q_NAME+=("$2")
	Q_CMD+=("pub $SC_TAG 1 ${5:-0} $3")
	Q_TAG+=("$SC_TAG")
	Q_WANT+=("$4")
	Q_WHAT+=("PUBLISH '$(shown "$3")' by $2")
}

q_run() {
	local i name line tag
	local -A last=() answer=()
	for i in "${!Q_CMD[@]}"; do
		sc_send "${Q_NAME[$i]}" "${Q_CMD[$i]}"
		last[${Q_NAME[$i]}]=${Q_TAG[$i]}
	done
	for name in "${!last[@]}"; do
		fg_wait_until 5 sc__answered "$name" \
			"^[a-z]+ tag=${last[$name]}( |\$)" || true
		while IFS= read -r line; do
			tag=${line#* tag=}
			answer[$name/${tag%% *}]=$line
		done < <(grep -E '^[a-z]+ tag=' "$FG_TMP/clients/$name.out")
	done
	for i in "${!Q_CMD[@]}"; do
		SC_LINE=${answer[${Q_NAME[$i]}/${Q_TAG[$i]}]:-}
		sc__rc_of_line
		if [[ $SC_RC == none ]] && sc__disconnected "${Q_NAME[$i]}"; then
			SC_RC=disconnected
		fi
		sc__judge "${Q_DESC[$i]}" "${Q_WANT[$i]}" "${Q_WHAT[$i]}"
	done
	Q_DESC=() Q_NAME=() Q_CMD=() Q_TAG=() Q_WANT=() Q_WHAT=()
}

# sc_sub NAME FILTER [QOS]: SUBSCRIBE and wait for the SUBACK.
sc_sub() {
	sc__tag s
	sc_send "$1" "sub $SC_TAG ${3:-1} $2"
	sc__answer "$1" "$SC_TAG"
}

# sc_pub NAME TOPIC [RETAIN] [QOS]: PUBLISH (payload: a fresh tag, left in
# SC_TAG) and wait for the PUBACK (QoS 0: until it was sent).
sc_pub() {
	sc__tag p
	sc_send "$1" "pub $SC_TAG ${4:-1} ${3:-0} $2"
	sc__answer "$1" "$SC_TAG"
}

# sc_wait_got NAME TAG [TIMEOUT]
sc_wait_got() {
	fg_client_wait_line "$1" " payload=$2 topic=" "${3:-3}"
}

# sc_verdict: allow, deny, or what happened instead, from SC_RC.
sc_verdict() {
	if [[ $SC_RC =~ ^[0-9]+$ ]]; then
		if ((SC_RC < 128)); then
			echo allow
		else
			echo deny
		fi
	else
		echo "no verdict (${SC_RC})"
	fi
}

# shown TEXT: TEXT, cut for a test name.
shown() {
	local t=$1
	if ((${#t} > 60)); then
		printf '%s...(%d bytes)' "${t:0:40}" "${#t}"
	else
		printf '%s' "$t"
	fi
}

sc__judge() {
	local desc=$1 want=$2 what=$3 got
	got=$(sc_verdict)
	if [[ $got == "$want" ]]; then
		pass "$desc"
	else
		fail "$desc" "$what: expected $want, got $got" \
			"client said: ${SC_LINE:0:200}"
	fi
}

# expect_sub DESC NAME FILTER allow|deny
expect_sub() {
	sc_sub "$2" "$3"
	sc__judge "$1" "$4" "SUBSCRIBE '$(shown "$3")' by $2"
}

# expect_pub DESC NAME TOPIC allow|deny [RETAIN]: an MQTT 5 client's QoS 1
# PUBLISH. The payload tag is left in SC_TAG.
expect_pub() {
	sc_pub "$2" "$3" "${5:-0}"
	sc__judge "$1" "$4" "PUBLISH '$(shown "$3")' by $2"
}

# fence NAME TOPIC: ops publishes to TOPIC, which NAME receives; true once
# it arrived, so that whatever was published before would have arrived
# too. Records a failed case when it does not arrive.
fence() {
	local name=$1 topic=$2
	sc_pub "${FENCE_PUBLISHER:-ops}" "$topic"
	if sc_wait_got "$name" "$SC_TAG" 3; then
		return 0
	fi
	fail "the fence message on $topic reaches $name" \
		"(the negative cases that follow prove nothing)" \
		"$(tail -n 5 "$FG_TMP/clients/$name.out")"
	return 1
}

# expect_not_got DESC TAG NAME...: none of the clients received TAG.
expect_not_got() {
	local desc=$1 tag=$2 name bad='' first=''
	shift 2
	for name in "$@"; do
		if sc_got "$name" "$tag"; then
			bad+=" $name"
			first=${first:-$name}
		fi
	done
	if [[ -z $bad ]]; then
		pass "$desc"
	else
		fail "$desc" "message $tag was delivered to:$bad" \
			"$(grep -hF -- " payload=$tag topic=" \
				"$FG_TMP/clients/$first.out" | head -n 3 | cut -c1-200)"
	fi
}

# expect_got DESC NAME TAG [TIMEOUT]
expect_got() {
	if sc_wait_got "$2" "$3" "${4:-3}"; then
		pass "$1"
	else
		fail "$1" "$2 did not receive $3; its last lines:" \
			"$(tail -n 5 "$FG_TMP/clients/$2.out" | cut -c1-200)"
	fi
}

# ----------------------------------------------------------- registry ----

# rule KIND SUBJECT PATTERN ACCESS EFFECT [PRIORITY]: adds a rule as
# fg_admin (SUBJECT - for none); prints its id.
rule() {
	fg_psql_admin "select fleetgate.add_acl_rule(:'k', nullif(:'s', '-'),
		:'p', :'a', :'e', :'prio'::int)" -v k="$1" -v s="$2" -v p="$3" \
		-v a="$4" -v e="$5" -v prio="${6:-0}"
}

# log_has NAME REGEX / log_wait NAME REGEX TIMEOUT: fg_log_has and
# fg_wait_log without a pipeline, which under pipefail fails when grep
# leaves early and tail dies of SIGPIPE (this suite's logs are large).
log_has() {
	grep -qE -- "$2" <(tail -c +"$((${FG_LOG_MARK[$1]:-0} + 1))" \
		"$FG_TMP/$1.log" 2>/dev/null)
}

log_wait() {
	fg_wait_until "$3" log_has "$1" "$2"
}

acl_audit_count() {
	fg_audit_count "source = 'acl' and ($1)" "${@:2}"
}

# ---------------------------------------------------- the case table ----

# mqtt_match FILTER TOPIC: MQTT matching (wildcards at the first level do
# not match '$' topics), for the notes of the replayed cases.
mqtt_match() {
	local f=$1 t=$2 i
	local -a fl tl
	[[ $f == '$share/'*/* ]] && f=${f#\$share/*/}
	if [[ $t == '$'* && ($f == '+'* || $f == '#'*) ]]; then
		return 1
	fi
	IFS=/ read -r -a fl <<<"$f"
	IFS=/ read -r -a tl <<<"$t"
	for ((i = 0; i < ${#fl[@]}; i++)); do
		if [[ ${fl[$i]} == '#' ]]; then
			return 0
		fi
		((i < ${#tl[@]})) || return 1
		[[ ${fl[$i]} == '+' || ${fl[$i]} == "${tl[$i]}" ]] || return 1
	done
	((${#fl[@]} == ${#tl[@]}))
}

# sc_got_topic NAME TOPIC: the client received a message on exactly TOPIC.
sc_got_topic() {
	awk -v s=" topic=$2" 'substr($0, 1, 4) == "msg " &&
		substr($0, length($0) - length(s) + 1) == s { f = 1 }
		END { exit !f }' "$FG_TMP/clients/$1.out"
}

# sc__more_lines NAME REGEX N: the output has more than N lines matching.
sc__more_lines() {
	local n
	n=$(grep -c -- "$2" "$FG_TMP/clients/$1.out") || true
	((n > $3))
}

# candidate_filters TOPIC: TOPIC itself and every filter above it ending
# in '#', narrowest first.
candidate_filters() {
	local t=$1 p
	printf '%s\n' "$t"
	p=$t
	while [[ $p == */* ]]; do
		p=${p%/*}
		printf '%s\n' "$p/#"
	done
	printf '%s\n' '#'
}

# replay_cases: every row of test/acl-cases.tsv, against broker "replay"
# on database "fixture" loaded with test/acl-fixture.sql. A device
# connects with its certificate (an unregistered one when the fixture has
# no such device), an account with its username as client id. publish:
# the PUBACK of a QoS 1 PUBLISH; subscribe: the SUBACK; receive: whether a
# message on the topic arrives over any SUBSCRIBE the subject was granted
# among the topic itself and every filter above it ending in '#'. The
# message comes from an injector account, except on $SYS topics, which
# only the broker may publish: there the broker's own $SYS messages (every
# second) and log lines ($SYS/broker/log/N, log_dest topic) are awaited.
# $CONTROL messages are never delivered by the broker: for those the SUBACK
# of the topic itself decides.
replay_cases() {
	local header k s a t w d i key name hash cert f tag line rc got
	local -a ck=() cs=() ca=() ct=() cw=() cd=() keys=() fixture_devices=()
	local -A sname=() up=() seen=() rcmds=() last=() answer=() granted=()
	local -A itag=() ctag=()
	IFS= read -r header <"$CASES_TSV"
	if [[ $header != $'subject_kind\tsubject\taccess\ttopic\texpected\tdescription' ]]; then
		fail "test/acl-cases.tsv has the columns this suite reads" \
			"header: $header"
		return 0
	fi
	while IFS=$'\t' read -r k s a t w d; do
		ck+=("$k") cs+=("$s") ca+=("$a") ct+=("$t") cw+=("$w") cd+=("$d")
		key=$k:$s
		if [[ -z ${seen[$key]:-} ]]; then
			seen[$key]=1
			keys+=("$key")
		fi
	done < <(tail -n +2 "$CASES_TSV")

	# The fixture, plus an injector account that may publish anywhere
	# (its rules name only itself).
	fg_psql_super "create database fixture" >/dev/null
	if ! PGDATABASE=fixture "$FG_ROOT/sql/migrate.sh" \
		>"$FG_TMP/migrate-fixture.log" 2>&1; then
		fail "the fixture database is migrated" "$(cat "$FG_TMP/migrate-fixture.log")"
		return 0
	fi
	hash=$(fg_passwd_hash fixture "$PW")
	if ! PGDATABASE=fixture PGUSER=fg_admin psql -XAtq -v ON_ERROR_STOP=1 \
		-v pwhash="$hash" -f "$FIXTURE_SQL" >"$FG_TMP/fixture.log" 2>&1; then
		fail "test/acl-fixture.sql loads" "$(cat "$FG_TMP/fixture.log")"
		return 0
	fi
	PGDATABASE=fixture fg_psql_admin "select fleetgate.add_account(
		'fg-injector', :'h', 'fg-injector', null, true)" -v h="$hash" >/dev/null
	PGDATABASE=fixture rule account fg-injector '#' publish allow >/dev/null
	PGDATABASE=fixture rule account fg-injector '$SYS/broker/log/#' receive \
		allow >/dev/null
	mapfile -t fixture_devices < <(PGDATABASE=fixture fg_psql_super \
		"select id from fleetgate.devices order by id")
	for s in "${fixture_devices[@]}"; do
		fg_device_cert "$s" >/dev/null
		PGDATABASE=fixture fg_add_certificate "$s" "$FG_CERTS/$s.crt" >/dev/null
	done
	fg_device_cert ghost ca 30 unregistered >/dev/null
	if ! PGDATABASE=fixture fg_broker_start replay "${ACL_CONF[@]}" \
		"log_dest topic"; then
		fail "broker replay starts"
		return 0
	fi
	fg_wait_registry replay || fail "broker replay has a registry"
	# The injector first: its log subscription shows that log lines are
	# published, for the one case about them.
	sc_acct rinj replay fg-injector "$PW" fg-injector ||
		fail "the injector account connects" "$(fg_client_out rinj)"
	sc_sub rinj '$SYS/broker/log/#'

	# One connection per subject.
	i=0
	for key in "${keys[@]}"; do
		i=$((i + 1))
		name=r$i
		sname[$key]=$name
		k=${key%%:*}
		s=${key#*:}
		if [[ $k == device ]]; then
			cert=unregistered
			for f in "${fixture_devices[@]}"; do
				[[ $f == "$s" ]] && cert=$s
			done
			sc_dev "$name" replay "$cert" --id "$s" && up[$key]=1
		else
			sc_acct "$name" replay "$s" "$PW" "$s" && up[$key]=1
		fi
	done

	# Commands: candidate subscriptions for the receive cases, then each
	# subscribe and publish case.
	for i in "${!ck[@]}"; do
		key=${ck[$i]}:${cs[$i]}
		[[ -n ${up[$key]:-} ]] || continue
		name=${sname[$key]}
		case ${ca[$i]} in
		receive)
			while IFS= read -r f; do
				[[ -n ${ctag[$name/$f]:-} ]] && continue
				sc__tag c
				ctag[$name/$f]=$SC_TAG
				rcmds[$name]+="sub $SC_TAG 1 $f"$'\n'
				last[$name]=$SC_TAG
			done < <(candidate_filters "${ct[$i]}")
			;;
		subscribe)
			rcmds[$name]+="sub q$i 1 ${ct[$i]}"$'\n'
			last[$name]=q$i
			;;
		publish)
			rcmds[$name]+="pub q$i 1 0 ${ct[$i]}"$'\n'
			last[$name]=q$i
			;;
		esac
	done
	for name in "${!rcmds[@]}"; do
		sc_write "$name" "${rcmds[$name]}"
	done
	for name in "${!last[@]}"; do
		fg_wait_until 5 sc__answered "$name" "^[a-z]+ tag=${last[$name]}( |\$)" || true
		while IFS= read -r line; do
			tag=${line#* tag=}
			answer[$name/${tag%% *}]=$line
		done < <(grep -E '^[a-z]+ tag=' "$FG_TMP/clients/$name.out")
	done
	for f in "${!ctag[@]}"; do
		line=${answer[${f%%/*}/${ctag[$f]}]:-}
		rc=$(fg_field "$line" rc)
		[[ $line == suback* && $rc =~ ^[0-9]+$ ]] && ((rc < 128)) &&
			granted[$f]=1
	done

	# The injector publishes each receive case's topic once.
	rcmds=()
	for i in "${!ck[@]}"; do
		[[ ${ca[$i]} == receive && -z ${itag[${ct[$i]}]:-} ]] || continue
		[[ ${ct[$i]} == '$SYS/'* ]] && continue
		sc__tag i
		itag[${ct[$i]}]=$SC_TAG
		rcmds[x]+="pub $SC_TAG 1 0 ${ct[$i]}"$'\n'
	done
	sc_write rinj "${rcmds[x]:-}"
	fg_wait_until 5 sc__answered rinj "^[a-z]+ tag=i$SC_SEQ( |\$)" || true
	# A notice for $SYS/broker/log/N, now that everyone has subscribed.
	line=$(grep -c ' topic=\$SYS/broker/log/N$' "$FG_TMP/clients/rinj.out") || true
	fg_connect_plain replay fg-injector-2 --username fg-injector --password "$PW"
	fg_wait_until 3 sc__more_lines rinj ' topic=\$SYS/broker/log/N$' "$line" ||
		fail "the broker publishes its log lines on \$SYS/broker/log/N" \
			"(the replayed case on it proves nothing)"
	# Expected deliveries first; the rest then had time to arrive too.
	for i in "${!ck[@]}"; do
		key=${ck[$i]}:${cs[$i]}
		[[ ${ca[$i]} == receive && ${cw[$i]} == allow && -n ${up[$key]:-} ]] ||
			continue
		[[ ${ct[$i]} == '$CONTROL/'* ]] && continue
		if [[ ${ct[$i]} == '$SYS/'* ]]; then
			fg_wait_until 3 sc_got_topic "${sname[$key]}" "${ct[$i]}" || true
		else
			fg_wait_until 2 sc_got "${sname[$key]}" "${itag[${ct[$i]}]}" || true
		fi
	done
	sleep "$(fg__scale 0.3)"

	# The verdicts, in the table's order.
	local ncase=0 nfail=0 how
	for i in "${!ck[@]}"; do
		ncase=$((ncase + 1))
		key=${ck[$i]}:${cs[$i]}
		name=${sname[$key]}
		t=${ct[$i]}
		how=
		if [[ -z ${up[$key]:-} ]]; then
			got=deny
			how="refused at connect: $(head -n 1 "$FG_TMP/clients/$name.out")"
		else
			case ${ca[$i]} in
			subscribe | publish)
				SC_LINE=${answer[$name/q$i]:-}
				sc__rc_of_line
				got=$(sc_verdict)
				how=${SC_LINE%% *}" rc=$SC_RC"
				;;
			receive)
				if [[ $t == '$CONTROL/'* ]]; then
					SC_LINE=${answer[$name/${ctag[$name/$t]}]:-}
					sc__rc_of_line
					got=$(sc_verdict)
					how="SUBACK rc=$SC_RC to the topic itself"
					how+=" (the broker delivers no \$CONTROL message)"
				elif [[ $t == '$SYS/'* ]] && sc_got_topic "$name" "$t"; then
					got=allow
					how="the broker's message delivered"
				elif [[ $t != '$SYS/'* ]] && sc_got "$name" "${itag[$t]}"; then
					got=allow
					how=delivered
				else
					got=deny
					how="no granted subscription covers it"
					for f in $(candidate_filters "$t"); do
						if [[ -n ${granted[$name/$f]:-} ]]; then
							how="not delivered, though"
							how+=" subscribed to '$f'"
							break
						fi
					done
				fi
				;;
			esac
		fi
		if [[ $got == "${cw[$i]}" ]]; then
			pass "case $ncase: ${cd[$i]} [$how]"
		else
			nfail=$((nfail + 1))
			fail "case $ncase: ${cd[$i]}" \
				"input: ${ck[$i]} '$(shown "${cs[$i]}")' ${ca[$i]} '$t'" \
				"expected: ${cw[$i]}" "got: $got ($how)"
		fi
	done
	fg_diag "replayed $ncase cases of acl-cases.tsv, $nfail failed"
	for key in "${keys[@]}"; do
		sc_close "${sname[$key]}" >/dev/null 2>&1 || true
	done
	sc_close rinj
	fg_broker_stop replay
}

# section NAME: a diagnostic line with the time since the start.
section() {
	fg_diag "--- $1 (at $((SECONDS - SUITE_START)) s)"
}
SUITE_START=$SECONDS

# ======================================================================
fg_pg_start || fg_bail "PostgreSQL did not start"
fg_ca_make ca
fg_server_cert

if [[ -f $FIXTURE_SQL && -f $CASES_TSV ]]; then
	section "the case table"
	replay_cases
else
	fg_diag "test/acl-fixture.sql or test/acl-cases.tsv missing:" \
		"the case table is not replayed"
fi

# --- the fleet of the cases below -----------------------------------------
section "the fleet of the cases below"
for spec in n1:north n2:north s1:south s2:south e1:east e2:east mv:north \
	p1:north p2:north; do
	fg_device_cert "${spec%%:*}" >/dev/null
	fg_register_device "${spec%%:*}" "${spec#*:}" \
		"$FG_CERTS/${spec%%:*}.crt"
done
fg_add_account dash-north "$PW" dashboard north
fg_add_account ops "$PW" ops
fg_add_account sysmon "$PW" monitor north
fg_add_account sysroot "$PW" sysadmin north
fg_add_account roam "$PW" roamer north
fg_add_account live "$PW" live north
fg_add_account '%c' "$PW" hostile east
fg_add_account evil "$PW" hostile east
fg_add_account nomuni "$PW" nomuni
fg_psql_admin "update fleetgate.accounts set cross_municipality = true
	where username in ('ops', 'roam')" >/dev/null

# Devices of north and south may do anything by rule: only the isolation
# backstop keeps them apart. East's devices get the usual narrow rules.
rules_sql=
while read -r kind subject pattern access effect priority; do
	printf -v line "select fleetgate.add_acl_rule('%s', '%s', '%s', '%s', '%s', %d);" \
		"$kind" "$subject" "$pattern" "$access" "$effect" "${priority:-0}"
	rules_sql+=$line$'\n'
done <<'EOF'
municipality north # publish allow
municipality north # receive allow
municipality south # publish allow
municipality south # receive allow
municipality east water/%m/%c/# publish allow
municipality east water/%m/%c/# receive allow
role dashboard water/%m/# receive allow
role dashboard water/%m/secret/# receive deny 10
role dashboard water/%m/+/cmd publish allow
role dashboard water/%m/raw/# subscribe deny
role ops # publish allow
role ops # receive allow
role monitor # receive allow
role sysadmin $SYS/# receive allow
role roamer # receive allow
role hostile acct/%m/%u/# publish allow
role hostile acct/%m/%u/# receive allow
role hostile cid/%m/%c/# publish allow
account %c secret/%m/# publish allow
role nomuni # publish allow
role nomuni # receive allow
EOF
fg_psql_admin "$rules_sql" >/dev/null
LIVE_RULE=$(rule role live 'water/north/live/#' receive allow)

fg_broker_start main "${ACL_CONF[@]}" || fg_bail "broker main did not start"
fg_wait_registry main || fail "broker main has a registry"
ok 'log_wait main "fleetgate-acl: " 3' "the acl plugin is loaded (it logs)"

# --- municipalities stay apart ----------------------------------------------
section "municipalities stay apart"
sc_dev n1 main n1 || fg_bail "device n1 did not connect: $(fg_client_out n1)"
sc_dev n2 main n2 --v311 || fg_bail "device n2 did not connect"
sc_dev s1 main s1 || fg_bail "device s1 did not connect"
sc_dev s2 main s2 || fg_bail "device s2 did not connect"
sc_acct dash main dash-north "$PW" dash-north-1 || fg_bail "dash-north did not connect"
sc_acct ops main ops "$PW" ops-1 || fg_bail "ops did not connect"

while read -r name filter; do
	q_sub "$name may subscribe to $filter" "$name" "$filter" allow
done <<'EOF'
n1 water/north/#
n2 water/north/#
s1 water/south/#
s2 water/south/#
dash water/north/#
ops #
n1 +/north/#
n1 $share/g/water/north/#
n1 water
EOF

while read -r name filter; do
	q_sub "$name may not subscribe to $filter" "$name" "$filter" deny
done <<'EOF'
n1 water/south/#
n1 #
n1 water/#
n1 water/+/#
n1 +/+/#
n1 water/+/s1/readings
n1 +/south/#
n1 $share/g/water/south/#
n1 $share/g/#
n1 $share/g/water/+/#
n1 $share/g/+/south/#
n2 water/south/#
n2 #
n2 $share/g/water/south/#
s1 water/north/#
s1 water/+/n1/readings
dash water/south/#
dash #
dash water/+/#
dash $share/g/water/south/#
EOF
q_run
sc_sub n2 water/south/#
is "$SC_RC" 128 "a refused MQTT 3.1.1 SUBSCRIBE is answered with 0x80"
sc_sub n1 water/south/#
is "$SC_RC" 135 "a refused MQTT 5 SUBSCRIBE is answered with 0x87"

expect_pub "s1 may not publish to a north topic" s1 water/north/s1/readings deny
t_s1_north=$SC_TAG
expect_pub "n1 may not publish to a south topic" n1 water/south/n1/readings deny
t_n1_south=$SC_TAG
expect_pub "the north dashboard may not command a south device" dash \
	water/south/s1/cmd deny
t_dash_south=$SC_TAG
expect_pub "s1 may publish to its own municipality" s1 water/south/s1/readings allow
t_s1_own=$SC_TAG
expect_pub "n1 may publish to its own municipality" n1 water/north/n1/readings allow
t_n1_own=$SC_TAG
expect_pub "the north dashboard may command a north device" dash \
	water/north/n1/cmd allow
t_dash_cmd=$SC_TAG
sc_pub n2 water/south/n2/readings # MQTT 3.1.1: the PUBACK says nothing
t_n2_south=$SC_TAG
sc_pub s1 water/north/s1/qos2 0 2
is "$SC_RC" 135 "a refused QoS 2 PUBLISH is answered with PUBREC 0x87"
t_s1_qos2=$SC_TAG
sc__tag u
sc_send n1 "unsub $SC_TAG water/south/#"
sc__answer n1 "$SC_TAG"
like "$SC_LINE" '^unsuback ' "an UNSUBSCRIBE is always answered, even of a filter never granted"

for spec in n1:water/north/f n2:water/north/f dash:water/north/f \
	s1:water/south/f s2:water/south/f ops:water/north/f; do
	fence "${spec%%:*}" "${spec#*:}" || true
done
everyone=(n1 n2 s1 s2 dash ops)
north=(n1 n2 dash)
expect_not_got "south's message to a north topic reaches nobody" \
	"$t_s1_north" "${everyone[@]}"
expect_not_got "north's message to a south topic reaches nobody" \
	"$t_n1_south" "${everyone[@]}"
expect_not_got "the dashboard's command to south reaches nobody" \
	"$t_dash_south" "${everyone[@]}"
expect_not_got "an MQTT 3.1.1 device's message to another municipality reaches nobody" \
	"$t_n2_south" "${everyone[@]}"
expect_not_got "the refused QoS 2 message reaches nobody" "$t_s1_qos2" \
	"${everyone[@]}"
expect_not_got "south's own message reaches no north client (#, +, \$share)" \
	"$t_s1_own" "${north[@]}"
expect_not_got "north's own message reaches no south client" \
	"$t_n1_own" s1 s2
expect_got "south's own message reaches the south devices" s2 "$t_s1_own"
expect_got "south's own message reaches the cross-municipality operator" \
	ops "$t_s1_own"
expect_got "north's own message reaches north through the \$share subscription too" \
	n1 "$t_n1_own"
expect_got "the dashboard's command reaches the north device" n1 "$t_dash_cmd"

# --- retained messages --------------------------------------------------------
section "retained messages"
expect_pub "s1 publishes a retained message in south" s1 water/south/s1/state \
	allow 1
t_ret_south=$SC_TAG
expect_pub "n1 publishes a retained message in north" n1 water/north/n1/state \
	allow 1
t_ret_north=$SC_TAG
sc_acct dash2 main dash-north "$PW" dash-north-2 || fg_bail "dash-north-2 did not connect"
while read -r name filter; do
	q_sub "a north client subscribing later may not subscribe to $filter" \
		"$name" "$filter" deny
done <<'EOF'
dash2 water/south/s1/state
dash2 water/+/s1/state
dash2 +/+/s1/state
n2 water/south/s1/state
n2 water/+/+/state
EOF
q_run
expect_sub "a north client may subscribe to a north retained topic" dash2 \
	water/north/n1/state allow
expect_got "and gets the north retained message" dash2 "$t_ret_north"
expect_sub "a south device may subscribe to the south retained topic" s2 \
	water/south/s1/state allow
if fg_client_wait_line s2 " retain=1 .* payload=$t_ret_south topic=" 3; then
	pass "the south device gets the south retained message"
else
	fail "the south device gets the south retained message" \
		"$(tail -n 3 "$FG_TMP/clients/s2.out")"
fi
fence dash2 water/north/n1/state || true
expect_not_got "no north client got the south retained message" \
	"$t_ret_south" dash2 "${north[@]}"
# Retained messages on subscribe pass the receive rules too.
sc_pub ops water/north/secret/state 1
t_ret_secret=$SC_TAG
sc_acct dash3 main dash-north "$PW" dash-north-3 || fg_bail "dash-north-3 did not connect"
expect_sub "a dashboard subscribing later may subscribe to water/north/#" dash3 \
	'water/north/#' allow
expect_got "and gets the north retained message" dash3 "$t_ret_north"
fence dash3 water/north/f11 || true
expect_not_got "but not a retained message its receive deny covers" \
	"$t_ret_secret" dash3
sc_close dash3

# --- Wills ----------------------------------------------------------------------
section "Wills"
sc_close s2
sc_dev s2w main s2 --will-topic water/north/s2/alarm --will-payload willx ||
	fail "s2 connects with a Will on a north topic" "$(fg_client_out s2w)"
fg_audit_mark
sc_die s2w
sc_dev s2v main s2 --will-topic water/south/s2/alarm --will-payload willok ||
	fail "s2 connects with a Will on its own topic" "$(fg_client_out s2v)"
sc_die s2v
expect_got "a Will on the device's own topic reaches an allowed subscriber" \
	s1 willok
expect_got "and the cross-municipality operator" ops willok
fence n1 water/north/f3 || true
fence dash water/north/f3 || true
expect_not_got "a south device's Will on a north topic is not delivered" willx \
	n1 n2 dash dash2 ops s1
expect_not_got "the south Will reaches no north client" willok n1 n2 dash dash2
if fg_wait_audit 3 "source = 'acl' and reason = 'publish' and client_id = 's2'
	and detail->>'topic' = 'water/north/s2/alarm'"; then
	pass "the refused Will is audited as a publish denial"
else
	fail "the refused Will is audited as a publish denial" \
		"$(fg_audit_rows "source = 'acl'")"
fi

# --- isolation on delivery: an operator loses cross_municipality -------------
section "isolation on delivery: an operator loses cross_municipality"
sc_acct roam main roam "$PW" roam-1 || fg_bail "roam did not connect"
expect_sub "the cross-municipality account may subscribe to #" roam '#' allow
sc_pub ops water/south/s9/readings
expect_got "and receives south" roam "$SC_TAG"
t0=$(fg_now_ms)
fg_psql_admin "update fleetgate.accounts set cross_municipality = false
	where username = 'roam'" >/dev/null
stopped=
for ((i = 0; i < 40; i++)); do
	sc_pub ops water/south/s9/readings
	t_south=$SC_TAG
	FENCE_PUBLISHER=ops fence roam water/north/f4 >/dev/null || break
	if ! sc_got roam "$t_south"; then
		stopped=$(($(fg_now_ms) - t0))
		break
	fi
	sleep 0.05
done
d="once roam is no longer cross-municipality, south messages on its #"
d+=" subscription stop"
if [[ -n $stopped ]]; then
	pass "$d (after at most $stopped ms)"
else
	fail "$d" "still delivered after $(($(fg_now_ms) - t0)) ms"
fi
sc_pub ops water/south/s9/readings
t_south=$SC_TAG
fence roam water/north/f5 || true
expect_not_got "and they stay stopped" "$t_south" roam
expect_sub "roam may no longer subscribe to #" roam '#' deny
expect_sub "roam may subscribe to its own municipality" roam 'water/north/#' allow
sc_close roam

# --- persistent sessions -------------------------------------------------------
section "persistent sessions"
# A QoS 1 message published while a device with a persistent session is
# offline is queued for it (the broker checks receive for it then, and
# again when the device comes back) and delivered when it reconnects.
for spec in p1:--v5 p2:--v311; do
	name=${spec%%:*}
	sc_dev "$name" main "$name" "${spec#*:}" --no-clean ||
		fg_bail "device $name did not connect"
	expect_sub "$name (${spec#*--}, persistent session) subscribes to its commands" \
		"$name" "water/north/$name/cmd" allow
	sc_close "$name"
	sleep 0.2 # past the broker's next loop: the device is offline
	sc_pub ops "water/north/$name/cmd"
	t_queued=$SC_TAG
	sc_dev "$name" main "$name" "${spec#*:}" --no-clean ||
		fail "device $name connects again" "$(fg_client_out "$name")"
	expect_got "$name (${spec#*--}): a command sent while offline arrives on its return" \
		"$name" "$t_queued"
	sc_close "$name"
done

# --- $SYS -------------------------------------------------------------------------
section "\$SYS"
sc_acct sysmon main sysmon "$PW" sysmon-1 || fg_bail "sysmon did not connect"
sc_acct sysroot main sysroot "$PW" sysroot-1 || fg_bail "sysroot did not connect"
expect_sub "a '#' receive rule does not grant \$SYS/#" sysmon '$SYS/#' deny
expect_sub "nor one \$SYS topic" sysmon '$SYS/broker/uptime' deny
expect_sub "nor \$share/g/\$SYS/#" sysmon '$share/g/$SYS/#' deny
expect_sub "the operator's '#' receive rule does not grant \$SYS/#" ops '$SYS/#' deny
expect_sub "a '\$SYS/#' rule grants \$SYS/#" sysroot '$SYS/#' allow
if fg_client_wait_line sysroot ' topic=\$SYS/broker/' 4; then
	pass "and \$SYS messages arrive"
else
	fail "and \$SYS messages arrive" "$(tail -n 3 "$FG_TMP/clients/sysroot.out")"
fi
sleep "$(fg__scale 1.2)" # one more $SYS round
ok '! grep -q " topic=\$SYS" "$FG_TMP/clients/ops.out"' \
	"the operator subscribed to # receives no \$SYS message"
ok '! grep -q " topic=\$SYS" "$FG_TMP/clients/sysmon.out"' \
	"the refused monitor receives no \$SYS message"
expect_pub "a '#' publish rule does not grant \$SYS" ops '$SYS/broker/fake' deny
expect_pub "nor \$CONTROL" ops '$CONTROL/dynamic-security/v1' deny
expect_pub "a \$SYS receive rule does not grant publishing there" sysroot \
	'$SYS/broker/fake' deny
sc_close sysmon
sc_close sysroot

# --- hostile topics and identities --------------------------------------------
section "hostile topics and identities"
sc_dev e1 main e1 || fg_bail "device e1 did not connect"
long_a=$(printf 'a%.0s' {1..10000})
long_levels=$(printf 'a/%.0s' {1..5000})
long_levels=${long_levels%/}
expect_pub "e1 may publish under its own topics" e1 water/east/e1/readings allow
hostile_tags=()
while IFS= read -r topic; do
	q_pub "e1 may not publish to '$(shown "$topic")'" e1 "$topic" deny
	hostile_tags+=("$SC_TAG")
done <<EOF
water/east/%c/readings
water/east/%u/readings
water/east/e1%/readings
water/east/e2/readings
water/east/e2/x' or '1'='1
water/east/e2'; delete from fleetgate.acl_rules; --
water/east/%' or 1=1 --/readings
water/%m/e1/readings
water/%/e1/readings
water/east/e2/$long_a
water/east
EOF
q_pub "e1 may publish a 10,000-byte topic under its own prefix (rules decide, not length)" \
	e1 "water/east/e1/$long_a" allow
while IFS= read -r filter; do
	q_sub "e1 may not subscribe to '$(shown "$filter")'" e1 "$filter" deny
done <<EOF
water/east/%c/#
water/east/+/#
water/east/#
water/east/e2/#
water/east/e2/$long_a
water/east/%' or '1'='1/#
EOF
q_sub "e1 may subscribe to its own topics" e1 'water/east/e1/#' allow
q_run
# Mosquitto itself refuses topics of more than 200 levels: it drops the
# connection. Either that or a refusal is fine; nothing may get through.
sc_pub e1 "water/east/e2/$long_levels"
hostile_tags+=("$SC_TAG")
if [[ $SC_RC == disconnected || $SC_RC == 135 ]]; then
	pass "a 5,000-level topic is refused ($SC_RC)"
else
	fail "a 5,000-level topic is refused" "got $SC_RC: $SC_LINE"
fi
sc_close e1
sc_dev e1 main e1 || fg_bail "device e1 did not connect again"
fence ops water/north/f6 || true
leaked=
for tag in "${hostile_tags[@]}"; do
	if sc_got ops "$tag"; then
		leaked+=" $tag"
	fi
done
is "$leaked" "" "no refused hostile topic reached the operator's # subscription"
is "$(fg_psql_super "select count(*) > 0 from fleetgate.acl_rules")" t \
	"the rules are still there"

# Invalid UTF-8, sent by hand: the broker drops the connection itself, or
# the plugin refuses; either way nothing gets through.
hex() {
	printf '%s' "$1" | od -An -tx1 | tr -d ' \n'
}
mapfile -t tls_e2 < <(fg__tls_args main e2)
fg_client_run --raw --id-hex "$(hex e2)" "${tls_e2[@]}" \
	--raw-publish-hex "$(hex water/east/e1/)ff"
like "$FG_RC/$FG_OUT" '^(4/.*connection closed|0/.*puback rc=(1[3-9][0-9]|2[0-5][0-9]))' \
	"an invalid UTF-8 PUBLISH to another device's topic is dropped (broker or plugin)"
fg_client_run --raw --id-hex "$(hex e2)" "${tls_e2[@]}" \
	--raw-publish-hex "$(hex water/east/e2/)c328"
like "$FG_RC/$FG_OUT" '^(4/.*connection closed|0/.*puback rc=[0-9]+)' \
	"a PUBLISH to its own topic with a broken UTF-8 sequence is answered or dropped"
fg_client_run --raw --id-hex "$(hex e2)" "${tls_e2[@]}" \
	--raw-subscribe-hex "$(hex water/east/)ff$(hex /#)"
like "$FG_RC/$FG_OUT" '^(4/.*connection closed|0/.*suback rc=(1[3-9][0-9]|2[0-5][0-9]))' \
	"a SUBSCRIBE with an invalid UTF-8 byte is refused (broker or plugin)"
for topic in water/east/+/readings water/east/#; do
	fg_client_run --raw --id-hex "$(hex e2)" "${tls_e2[@]}" \
		--raw-publish-hex "$(hex "$topic")"
	like "$FG_RC/$FG_OUT" '^(4/.*connection closed|0/.*puback rc=(1[3-9][0-9]|2[0-5][0-9]))' \
		"a PUBLISH to the wildcard topic $topic is dropped (broker or plugin)"
done
fence ops water/north/f7 || true
ok '! grep -q " payload=raw " "$FG_TMP/clients/ops.out"' \
	"no invalid UTF-8 or wildcard message reached the operator"

# Municipality names are compared byte for byte.
while IFS='|' read -r desc name kind arg want; do
	"q_$kind" "$desc" "$name" "$arg" "$want"
done <<'EOF'
n1 may not publish under NORTH (case differs)|n1|pub|water/NORTH/n1/readings|deny
n1 may not publish under a Greek-omicron north|n1|pub|water/nοrth/n1/readings|deny
n1 may not publish under 'north ' (trailing blank)|n1|pub|water/north /n1/readings|deny
n1 may not publish under an empty municipality level|n1|pub|water//n1/readings|deny
n1 may not subscribe to NORTH|n1|sub|water/NORTH/#|deny
EOF
q_run

# Accounts named like placeholders (municipality east, level 1).
sc_acct pct main '%c' "$PW" victim || fg_bail "account %c did not connect"
sc_acct evil main evil "$PW" '%u' || fg_bail "account evil did not connect"
while IFS='|' read -r desc name kind arg want; do
	"q_$kind" "$desc" "$name" "$arg" "$want"
done <<'EOF'
account '%c' (id victim) may not publish to acct/east/victim/...|pct|pub|acct/east/victim/x|deny
account '%c' may publish to its own space, acct/east/%c/...|pct|pub|acct/east/%c/x|allow
account '%c' may not subscribe to acct/east/victim/#|pct|sub|acct/east/victim/#|deny
account '%c' may subscribe to acct/east/%c/#|pct|sub|acct/east/%c/#|allow
account '%c' may publish to cid/east/victim/..., its client id|pct|pub|cid/east/victim/x|allow
the rule of account '%c' applies to it|pct|pub|secret/east/x|allow
the rule of account '%c' does not apply to another account|evil|pub|secret/east/x|deny
client id '%u' of account evil may not publish to cid/east/evil/...|evil|pub|cid/east/evil/x|deny
client id '%u' is substituted literally into cid/%m/%c/#|evil|pub|cid/east/%u/x|allow
evil may publish to its own space|evil|pub|acct/east/evil/x|allow
evil may not publish into the space of account '%c'|evil|pub|acct/east/%c/x|deny
evil may not subscribe to the space of account '%c'|evil|sub|acct/east/%c/#|deny
EOF
q_run
sc_close pct
sc_close evil

sc_acct nomuni main nomuni "$PW" nomuni-1 || fg_bail "nomuni did not connect"
expect_pub "an account of no municipality may publish a one-level topic" nomuni \
	status allow
expect_pub "but no two-level topic" nomuni water/north deny
expect_pub "nor a municipality topic" nomuni water/north/n1/readings deny
expect_sub "it may subscribe to +" nomuni '+' allow
expect_sub "but not to #" nomuni '#' deny
expect_sub "nor to a municipality" nomuni 'water/north/#' deny
sc_close nomuni

# --- deny audit -------------------------------------------------------------------
section "deny audit"
fg_audit_mark
for _ in 1 2 3 4 5; do
	sc_pub n1 water/south/n1/audit
done
sc_pub n1 water/south/n1/audit2
for _ in 1 2 3; do
	sc_sub dash water/south/audit/#
done
sc_pub ops water/north/secret/a
sc_pub ops water/north/secret/a
t_secret=$SC_TAG
fence dash water/north/f8 || true
expect_not_got "a narrower receive deny filters messages on a granted subscription" \
	"$t_secret" dash
long_deny="water/east/e2/$(printf 'x%.0s' {1..600})"
for _ in 1 2 3; do
	sc_pub e1 "$long_deny"
done
sql_topic="water/east/e2'); drop table fleetgate.acl_rules; --"
sc_pub e1 "$sql_topic"
# Many distinct denied topics, then the first again: still one row each.
cmds=()
for ((i = 1; i <= 140; i++)); do
	cmds+=("pub fl$i 1 0 water/south/n1/flood/$i")
done
cmds+=("pub fr1 1 0 water/south/n1/flood/1" "pub fr2 1 0 water/south/n1/flood/1")
sc_send n1 "${cmds[@]}"
sc__answer n1 fr2 5
fg_wait_audit 3 "source = 'acl' and detail->>'topic' = :'t'" -v t="$sql_topic" || true
sleep "$(fg__scale 1)" # room for rows that should not be there

is "$(acl_audit_count "event = 'deny' and outcome = 'denied'
	and reason = 'publish' and client_id = 'n1' and username = 'n1'
	and device_id = 'n1' and broker_id = 'main'
	and detail->>'topic' = 'water/south/n1/audit'
	and (detail->>'count')::bigint >= 1")" 1 \
	"five publish denials of one topic within a minute make one audit row"
is "$(acl_audit_count "reason = 'publish' and client_id = 'n1'
	and detail->>'topic' = 'water/south/n1/audit2'")" 1 \
	"a denial of another topic makes its own row"
is "$(acl_audit_count "event = 'deny' and reason = 'subscribe'
	and client_id = 'dash-north-1' and username = 'dash-north'
	and device_id is null and detail->>'topic' = 'water/south/audit/#'")" 1 \
	"three subscribe denials of one filter within a minute make one audit row"
is "$(acl_audit_count "reason = 'receive' and client_id = 'dash-north-1'
	and detail->>'topic' = 'water/north/secret/a'")" 1 \
	"two receive denials of one topic make one audit row"
# The audit row may hold the topic cut short.
is "$(acl_audit_count "reason = 'publish' and client_id = 'e1'
	and starts_with(:'t', detail->>'topic')
	and length(detail->>'topic') > 200" -v t="$long_deny")" 1 \
	"three denials of one 614-byte topic within a minute make one audit row"
fg_diag "the 614-byte topic is audited with $(fg_psql_super "select
	max(octet_length(detail->>'topic')) from fleetgate.audit_events
	where id > $FG_AUDIT_MARK and source = 'acl' and client_id = 'e1'
	and detail->>'topic' like 'water/east/e2/xxx%'") bytes of it"
is "$(acl_audit_count "reason = 'publish' and client_id = 'e1'
	and detail->>'topic' = :'t'" -v t="$sql_topic")" 1 \
	"a topic holding SQL is audited verbatim"
is "$(fg_psql_super "select to_regclass('fleetgate.acl_rules') is not null")" t \
	"and the SQL in it did nothing"
is "$(acl_audit_count "client_id = 'n1'
	and detail->>'topic' like 'water/south/n1/flood/%'")" 140 \
	"140 distinct denied topics make 140 rows, and repeating one after them adds none"
is "$(acl_audit_count "client_id = 'n1'
	and detail->>'topic' = 'water/south/n1/flood/1'")" 1 \
	"the first of 140 denied topics, denied again within the minute, still has one row"
is "$(FG_AUDIT_MARK=0 acl_audit_count "reason not in ('publish', 'subscribe', 'receive')
	or event <> 'deny' or outcome <> 'denied'")" 0 \
	"every acl audit row is a denial of publish, subscribe or receive (none for UNSUBSCRIBE)"
ok 'log_has main "fleetgate-acl: .*deny.*client_id=n1"' \
	"denials are logged with the prefix fleetgate-acl:"
fg_diag "acl audit rows of this section:" \
	"$(fg_psql_super "select reason, client_id, left(detail::text, 90)
		from fleetgate.audit_events where id > $FG_AUDIT_MARK
		and source = 'acl' and detail->>'topic' not like '%/flood/%'
		order by id")"

# --- rule edits while subscribed ----------------------------------------------
section "rule edits while subscribed"
# The same edit must reach every broker: a second broker on the same
# registry gets the same clients and the same measurement.
fg_broker_start second "${ACL_CONF[@]}" || fg_bail "broker second did not start"
fg_wait_registry second || fail "broker second has a registry"
sc_acct live main live "$PW" live-1 || fg_bail "live did not connect"
sc_acct live2 second live "$PW" live-2 || fg_bail "live did not connect to second"
sc_acct ops2 second ops "$PW" ops-2 || fg_bail "ops did not connect to second"
expect_sub "the live account may subscribe under its rule (main)" live \
	'water/north/live/#' allow
expect_sub "the live account may subscribe under its rule (second)" live2 \
	'water/north/live/#' allow
# One message every 50 ms: 10 before the removal, then the gap until the
# re-add (longer than the limit), then the limit and a second more.
gap_ms=$((LIVE_LIMIT_MS + 800))
n_live=$((10 + (gap_ms + LIVE_LIMIT_MS + 1000) / 50))
cmds=()
for ((i = 1; i <= n_live; i++)); do
	cmds+=("pub L$i 0 0 water/north/live/x" "sleep 50")
done
sc_send ops "${cmds[@]}"
sc_send ops2 "${cmds[@]}"
fg_client_wait_line ops '^sent tag=L10 ' 3 || true
t0=$(fg_now_ms)
fg_psql_admin "select fleetgate.remove_acl_rule(:'id')" -v id="$LIVE_RULE" >/dev/null
t1=$(fg_now_ms)
sleep "$(awk -v ms="$gap_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
t2=$(fg_now_ms)
LIVE_RULE=$(rule role live 'water/north/live/#' receive allow)
t3=$(fg_now_ms)
fg_client_wait_line ops "^sent tag=L$n_live " "$((LIVE_LIMIT_MS / 1000 + 5))" ||
	true
fg_client_wait_line ops2 "^sent tag=L$n_live " 3 || true
fence live water/north/live/fence || true
FENCE_PUBLISHER=ops2 fence live2 water/north/live/fence || true

# live_verdicts PUBLISHER SUBSCRIBER BROKER: when delivery stopped after
# t0 (removal) and resumed after t2 (re-add), from the publisher's send
# times and what the subscriber got.
live_verdicts() {
	local pub=$1 sub=$2 broker=$3 tagf msf tag s i up
	local stop_i='' resume_i='' flaps=0 before=0
	local -A sent_ms=() got=()
	while read -r _ tagf msf; do
		sent_ms[${tagf#tag=}]=${msf#ms=}
	done < <(grep -E '^sent tag=L[0-9]+ ' "$FG_TMP/clients/$pub.out")
	while read -r tag; do
		got[$tag]=1
	done < <(grep -oE ' payload=L[0-9]+ ' "$FG_TMP/clients/$sub.out" |
		sed 's/ payload=//; s/ $//')
	for ((i = 1; i <= n_live; i++)); do
		s=${sent_ms[L$i]:-}
		[[ -n $s ]] || continue
		if ((s < t0)); then
			[[ -n ${got[L$i]:-} ]] && before=$((before + 1))
			continue
		fi
		if [[ -z $stop_i ]]; then
			[[ -z ${got[L$i]:-} ]] && stop_i=$i
			continue
		fi
		if ((s < t2)); then
			[[ -n ${got[L$i]:-} ]] && flaps=$((flaps + 1))
			continue
		fi
		if [[ -z $resume_i && -n ${got[L$i]:-} ]]; then
			resume_i=$i
		elif [[ -n $resume_i && -z ${got[L$i]:-} ]]; then
			flaps=$((flaps + 1))
		fi
	done
	d="[$broker] messages arrive every 50 ms while the rule is in force"
	if ((before > 0)); then
		pass "$d ($before before the edit)"
	else
		fail "$d"
	fi
	d="[$broker] removing the receive rule stops delivery"
	d+=" within $LIVE_LIMIT_MS ms"
	if [[ -n $stop_i ]]; then
		up=$((${sent_ms[L$stop_i]} - t0))
		fg_diag "[$broker] removal: commit within t0..t0+$((t1 - t0)) ms;" \
			"  first message not delivered (L$stop_i) sent at t0+$up ms"
		if ((up < LIVE_LIMIT_MS)); then
			pass "$d ($up ms)"
		else
			fail "$d" "first undelivered message sent $up ms" \
				"after the removal started"
		fi
	else
		fail "$d" "every message was delivered"
	fi
	d="[$broker] adding the rule back resumes delivery"
	d+=" within $LIVE_LIMIT_MS ms"
	if [[ -n $resume_i ]]; then
		up=$((${sent_ms[L$resume_i]} - t2))
		fg_diag "[$broker] re-adding: commit within t2..t2+$((t3 - t2)) ms;" \
			"  first message delivered again (L$resume_i) sent at t2+$up ms"
		if ((up < LIVE_LIMIT_MS)); then
			pass "$d ($up ms)"
		else
			fail "$d" "first delivered message sent $up ms" \
				"after the re-add started"
		fi
	else
		fail "$d" "no message was delivered after the rule came back"
	fi
	is "$flaps" 0 "[$broker] delivery does not flap in between"
}
live_verdicts ops live main
live_verdicts ops2 live2 second
sc_close live
sc_close live2
sc_close ops2
fg_broker_stop second

# poll_until_pub RC TIMEOUT_MS NAME TOPIC: publishes (QoS 1) every 50 ms
# until the PUBACK code is RC. (Not in a subshell: the tags must stay
# unique.)
poll_until_pub() {
	local want=$1 timeout_ms=$2 name=$3 topic=$4 start
	start=$(fg_now_ms)
	while (($(fg_now_ms) - start < timeout_ms)); do
		sc_pub "$name" "$topic"
		if [[ $SC_RC == "$want" ]]; then
			return 0
		fi
		sleep 0.05
	done
	return 1
}

# A publish rule added while the device is connected.
expect_pub "e1 publishes to its own blocked/ topic before the deny rule" e1 \
	water/east/e1/blocked/x allow
t0=$(fg_now_ms)
rule device e1 'water/east/%c/blocked/#' publish deny 50 >/dev/null
# The PUBACK 0x87 arrives after the broker refused: the time from the
# start of the statement to its arrival bounds the delay from above.
d="a publish deny rule added while connected applies within"
d+=" $LIVE_LIMIT_MS ms"
if poll_until_pub 135 3000 e1 water/east/e1/blocked/x; then
	up=$(($(fg_now_ms) - t0))
	if ((up < LIVE_LIMIT_MS)); then
		pass "$d ($up ms)"
	else
		fail "$d" "first refusal $up ms after the statement started"
	fi
else
	fail "$d" "never refused"
fi
expect_pub "and the rest of e1's topics are still allowed" e1 \
	water/east/e1/readings allow

# A device moved to another municipality while connected.
sc_dev mv main mv || fg_bail "device mv did not connect"
expect_sub "mv subscribes to north while it belongs to north" mv 'water/north/#' allow
expect_pub "mv publishes in north" mv water/north/mv/readings allow
t0=$(fg_now_ms)
fg_psql_admin "update fleetgate.devices set municipality_id = 'south'
	where id = 'mv'" >/dev/null
d="a device moved to south while connected may no longer publish in"
d+=" north (within $LIVE_LIMIT_MS ms)"
if poll_until_pub 135 3000 mv water/north/mv/readings; then
	up=$(($(fg_now_ms) - t0))
	if ((up < LIVE_LIMIT_MS)); then
		pass "$d ($up ms)"
	else
		fail "$d" "first refusal after $up ms"
	fi
else
	fail "$d" "never refused"
fi
expect_pub "it publishes in south now" mv water/south/mv/readings allow
expect_sub "it may subscribe to south now" mv 'water/south/#' allow
sc_pub ops water/north/n1/readings
t_north=$SC_TAG
fence mv water/south/f10 || true
expect_not_got "its north subscription from before the move delivers no more north messages" \
	"$t_north" mv
sc_close mv

# --- plugin options ------------------------------------------------------------
section "plugin options"
fg_broker_start noiso "plugin $FG_BUILD/fleetgate_acl.so" \
	"plugin_opt_isolation false" || fg_bail "broker noiso did not start"
fg_broker_start lvl2 "plugin $FG_BUILD/fleetgate_acl.so" \
	"plugin_opt_municipality_level 2" || fg_bail "broker lvl2 did not start"
fg_wait_registry noiso || fail "broker noiso has a registry"
fg_wait_registry lvl2 || fail "broker lvl2 has a registry"
sc_dev n1o noiso n1 || fg_bail "n1 did not connect to noiso"
sc_dev e1o noiso e1 || fg_bail "e1 did not connect to noiso"
sc_dev n1l lvl2 n1 || fg_bail "n1 did not connect to lvl2"
while IFS='|' read -r desc name kind arg want; do
	"q_$kind" "$desc" "$name" "$arg" "$want"
done <<'EOF'
isolation false: a north device's # rule lets it publish to south|n1o|pub|water/south/n1/x|allow
isolation false: and subscribe to #|n1o|sub|#|allow
isolation false: narrow rules still decide|e1o|pub|water/east/e2/readings|deny
isolation false: %m still names the own municipality|e1o|pub|water/north/e1/readings|deny
municipality_level 2: level 2 names the municipality (own)|n1l|pub|site/a/north/x|allow
municipality_level 2: level 2 names the municipality (other)|n1l|pub|site/a/south/x|deny
municipality_level 2: water/south/n1/... has n1 at level 2|n1l|pub|water/south/n1/readings|deny
municipality_level 2: two-level topics are no municipality topics|n1l|pub|water/south|allow
municipality_level 2: + before level 2 is fine|n1l|sub|site/+/north/#|allow
municipality_level 2: + at level 2 is refused|n1l|sub|site/a/+/#|deny
municipality_level 2: # at level 1 is refused|n1l|sub|site/#|deny
EOF
q_run
for name in n1o e1o n1l; do
	sc_close "$name"
done
fg_broker_stop noiso
fg_broker_stop lvl2
# Runtime options may be given in any one fleetgate plugin's block, and
# repeated with the same value (README); another value stops the broker.
if fg_broker_start rtopt "plugin $FG_BUILD/fleetgate_acl.so" \
	"plugin_opt_audit_flush_ms 100" >/dev/null 2>&1; then
	pass "a runtime option given only in the acl plugin's block is accepted"
else
	fail "a runtime option given only in the acl plugin's block is accepted" \
		"conf: no audit_flush_ms in the auth plugin's block," \
		"  plugin_opt_audit_flush_ms 100 in the acl plugin's block" \
		"$(grep -h 'fleetgate' "$FG_TMP/rtopt.stdout" | tail -n 2)"
fi
fg_broker_stop rtopt
if fg_broker_start rtsame "plugin $FG_BUILD/fleetgate_acl.so" \
	"plugin_opt_broker_id rtsame" >/dev/null 2>&1; then
	pass "a runtime option repeated with the same value in the acl plugin's block is accepted"
else
	fail "a runtime option repeated with the same value in the acl plugin's block is accepted" \
		"$(grep -h 'fleetgate' "$FG_TMP/rtsame.stdout" | tail -n 2)"
fi
fg_broker_stop rtsame
for opt in "municipality_level 17" "isolaton true" "broker_id other"; do
	key=${opt%% *}
	if fg_broker_start badopt "plugin $FG_BUILD/fleetgate_acl.so" \
		"plugin_opt_$opt" >/dev/null 2>&1; then
		fail "plugin_opt_$opt stops the broker at start"
	elif log_has badopt "fleetgate-acl: .*$key"; then
		pass "plugin_opt_$opt stops the broker at start, naming the option"
	else
		fail "plugin_opt_$opt stops the broker at start, naming the option" \
			"$(tail -n 3 "$FG_TMP/badopt.log")"
	fi
	fg_broker_stop badopt
done

# --- PostgreSQL goes away -------------------------------------------------------
section "PostgreSQL goes away"
fg_pg_stop || fg_bail "PostgreSQL did not stop"
pg_down_cases() {
	local when=$1
	expect_pub "$when: an allowed publish is still allowed" n1 \
		water/north/n1/pgdown allow
	expect_got "$when: and delivered" ops "$SC_TAG"
	expect_pub "$when: a publish across municipalities is still refused" n1 \
		water/south/n1/pgdown deny
	expect_pub "$when: a narrow device rule still allows" e1 \
		water/east/e1/pgdown allow
	expect_pub "$when: and still refuses" e1 water/east/e2/pgdown deny
	expect_sub "$when: a subscribe across municipalities is still refused" n1 \
		'water/south/#' deny
	expect_sub "$when: an allowed subscribe is still granted" dash \
		'water/north/+/readings' allow
	sc_pub ops water/north/secret/pgdown
	local t=$SC_TAG
	fence dash water/north/f9 || true
	expect_not_got "$when: a receive deny still filters" "$t" dash
	expect_pub "$when: \$SYS is still refused to the operator" ops '$SYS/x' deny
}
pg_down_cases "PostgreSQL stopped under a running broker"

for name in n1 n2 s1 dash dash2 ops e1; do
	sc_close "$name" >/dev/null 2>&1 || true
done
fg_broker_stop main
fg_broker_start main "${ACL_CONF[@]}" ||
	fg_bail "broker main did not start while PostgreSQL is down"
ok 'log_wait main "fleetgate[-a-z]*: .*using registry snapshot" 3' \
	"a broker started while PostgreSQL is down uses its snapshot"
sc_dev n1 main n1 || fail "n1 connects from the snapshot" "$(fg_client_out n1)"
sc_dev e1 main e1 || fail "e1 connects from the snapshot" "$(fg_client_out e1)"
sc_acct ops main ops "$PW" ops-1 || fail "ops connects from the snapshot"
sc_acct dash main dash-north "$PW" dash-north-1 ||
	fail "dash-north connects from the snapshot"
expect_sub "from the snapshot: ops subscribes to #" ops '#' allow
expect_sub "from the snapshot: dash-north subscribes to north" dash \
	'water/north/#' allow
pg_down_cases "started from the snapshot"
sc_acct live main live "$PW" live-2 || fail "live connects from the snapshot"
expect_sub "from the snapshot: the rule added last is in force" live \
	'water/north/live/#' allow
sc_acct roam main roam "$PW" roam-2 || fail "roam connects from the snapshot"
expect_sub "from the snapshot: the account change made last is in force" roam \
	'#' deny

ok 'fg_broker_alive main' "the broker is still running at the end"
