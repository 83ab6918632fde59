#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# run.sh: SQL tests of the fleetgate registry: role privileges, the
# append-only audit trail, the audit trigger, the admin functions, the
# registry notifications, the ACL rules of migration 002 and sql/migrate.sh.
#
# Usage:
#   test/sql/run.sh               use the server in PGHOST/PGPORT/PGDATABASE;
#                                 PGUSER is a superuser, migrations are
#                                 applied and the login users fg_broker and
#                                 fg_admin exist (trust auth on loopback)
#   test/sql/run.sh --standalone  start a private cluster first (see
#                                 pgcluster.sh) and remove it afterwards
#
# Output is TAP: "ok N - sentence" or "not ok N - sentence" followed by
# "#" lines saying what was expected and what came back. Exit status is 0
# only when every test passed. Every object the tests create carries a
# per-run prefix, so a shared database is not disturbed beyond new rows.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)

# The migrations in sql/, in order; tests that list them are written
# against this list, so that adding a migration needs no test edit.
migration_files=("$repo"/sql/[0-9][0-9][0-9]_*.sql)
latest=$((10#$(basename "${migration_files[-1]}" | cut -c1-3)))
all_versions=$(seq -s, 1 "$latest")

# migrate_lines applied|skipped FROM [TO]: what migrate.sh prints for the
# files of versions FROM..TO (default: to the newest).
migrate_lines() {
	local verb=$1 from=$2 to=${3:-$latest} f v name
	for f in "${migration_files[@]}"; do
		name=$(basename "$f")
		v=$((10#${name:0:3}))
		((v >= from && v <= to)) || continue
		if [[ $verb == applied ]]; then
			echo "migrate: applied $name (version $v)"
		else
			echo "migrate: skipped $name (version $v already applied)"
		fi
	done
}

standalone=0
case ${1:-} in
--standalone) standalone=1 ;;
'') ;;
*)
	echo "usage: $0 [--standalone]" >&2
	exit 2
	;;
esac

cluster_dir=
# Databases the migration tests create; cleanup drops them.
scratch_dbs=()
PSQL=${PSQL:-psql}

cleanup() {
	local status=$?
	local db
	for db in "${scratch_dbs[@]}"; do
		"$PSQL" -X -q -d postgres \
			-c "drop database if exists \"$db\"" >/dev/null 2>&1 || true
	done
	if [[ -n $cluster_dir ]]; then
		pg_cluster_stop "$cluster_dir" || status=1
		rm -rf -- "$cluster_dir"
	fi
	exit "$status"
}
trap cleanup EXIT

if ((standalone)); then
	# shellcheck source=pgcluster.sh disable=SC1091 # followed with -x
	. "$here/pgcluster.sh"
	# Under root the server user must be able to enter the directory, which
	# a private TMPDIR might not allow.
	tmp_base=${TMPDIR:-/tmp}
	[[ $(id -u) -eq 0 ]] && tmp_base=/tmp
	cluster_dir=$(mktemp -d "$tmp_base/fleetgate-sql.XXXXXX")
	pg_cluster_start "$cluster_dir"
	PSQL=$(_pg_cluster_bindir)/psql
	export PSQL
	pg_cluster_provision | sed 's/^/# /'
else
	for v in PGHOST PGPORT PGDATABASE PGUSER; do
		if [[ -z ${!v:-} ]]; then
			echo "run.sh: $v is not set (or use --standalone)" >&2
			exit 2
		fi
	done
	export PSQL
fi

superuser=$PGUSER
broker=fg_broker
admin=fg_admin

# TAP bookkeeping ----------------------------------------------------------

test_count=0
failures=0

pass() {
	test_count=$((test_count + 1))
	printf 'ok %d - %s\n' "$test_count" "$1"
}

# fail SENTENCE DETAIL...: each detail may span lines; all become comments.
fail() {
	test_count=$((test_count + 1))
	failures=$((failures + 1))
	printf 'not ok %d - %s\n' "$test_count" "$1"
	shift
	printf '%s\n' "$@" | sed 's/^/#   /'
}

# sql USER PSQL-ARGS...: run psql as USER; stdout and stderr together, so
# that error messages can be matched.
sql() {
	local user=$1
	shift
	"$PSQL" -X -q -At -v ON_ERROR_STOP=1 -U "$user" "$@" 2>&1
}

# q USER STATEMENT: one statement (or a ;-separated list) as USER. The
# empty lines that void functions print are dropped.
q() {
	sql "$1" -c "$2" | sed '/^$/d'
}

# expect_value SENTENCE USER EXPECTED STATEMENT
expect_value() {
	local name=$1 user=$2 expected=$3 stmt=$4 out
	if ! out=$(q "$user" "$stmt"); then
		fail "$name" "statement failed: $stmt" "output: $out"
	elif [[ $out == "$expected" ]]; then
		pass "$name"
	else
		fail "$name" "statement: $stmt" "expected: $expected" "got: $out"
	fi
}

# expect_error SENTENCE USER ERE STATEMENT: must fail with a matching message.
expect_error() {
	local name=$1 user=$2 pattern=$3 stmt=$4 out
	if out=$(q "$user" "$stmt"); then
		fail "$name" "statement succeeded: $stmt" "output: $out"
	elif grep -Eq -- "$pattern" <<<"$out"; then
		pass "$name"
	else
		fail "$name" "statement: $stmt" "expected an error matching: $pattern" \
			"got: $out"
	fi
}

# expect_ok SENTENCE USER STATEMENT
expect_ok() {
	local name=$1 user=$2 stmt=$3 out
	if out=$(q "$user" "$stmt"); then
		pass "$name"
	else
		fail "$name" "statement: $stmt" "output: $out"
	fi
}

# Test data ----------------------------------------------------------------

run_id=$(date +%s)-$$
muni=sqlt-$run_id-m
dev=sqlt-$run_id-d1        # lifecycle and last_seen tests
dev_gone=sqlt-$run_id-d2   # decommissioned
account=sqlt-$run_id-ops

# fingerprint N: a 64-hex fingerprint unique to this run.
fingerprint() {
	printf '%s' "$run_id-$1" | sha256sum | cut -c1-64
}
# colon_form HEX: the 'AB:CD:...' form openssl prints.
colon_form() {
	sed 's/../&:/g; s/:$//' <<<"$1" | tr a-f A-F
}

fp1=$(fingerprint 1)
fp2=$(fingerprint 2)
fp_unknown=$(fingerprint unknown)
# Hashes as mosquitto_passwd writes them; test values, not real secrets.
# shellcheck disable=SC2016 # the dollars are part of the hash
pw_hash='$7$101$QKGKy3XerOPb9GQY$YTJUTpzvV2TrY1HeTQWnTN/H6Thc6nFA/AF+OsHTK6B'
pw_hash+='fwvrDlViz/qSg+brFp05kBfcZdZfjYvv4GlFanO7YqQ=='
# shellcheck disable=SC2016
key_hash='$6$c2FsdHNhbHQ$bm90LWEtcmVhbC1rZXktaGFzaC1mb3ItdGVzdHMtb25seQ=='

# latest_audit EVENT WHERE COLUMNS: the newest admin audit row of EVENT.
latest_audit() {
	printf "select %s from fleetgate.audit_events
	        where source = 'admin' and event = '%s' and %s
	        order by id desc limit 1" "$3" "$1" "$2"
}

echo "# run id $run_id on $PGHOST:$PGPORT/$PGDATABASE"

# Schema -------------------------------------------------------------------

expect_value "the registry is at the newest schema version" "$superuser" "$latest" \
	"select max(version) from fleetgate.schema_version"

# Broker privileges --------------------------------------------------------

setup=$(q "$admin" "
	set fleetgate.actor = 'sqltest-setup';
	select fleetgate.add_municipality('$muni', 'Test municipality $run_id');
	select fleetgate.register_device('$dev', '$muni');
	select fleetgate.register_device('$dev_gone', '$muni');
	select fleetgate.add_certificate('$dev', '$fp1',
	                                 now() - interval '1 day',
	                                 now() + interval '1 year');") || {
	echo "Bail out! test fixtures could not be created: $setup"
	exit 1
}

expect_ok "broker can insert an audit row" "$broker" "
	insert into fleetgate.audit_events
	    (broker_id, source, event, outcome, reason, device_id, client_id,
	     fingerprint, address)
	values ('sqltest', 'auth', 'connect', 'accepted', 'ok', '$dev', '$dev',
	        '$fp1', '127.0.0.1')"
expect_value "the broker's audit row is stored" "$superuser" 1 "
	select count(*) from fleetgate.audit_events
	where broker_id = 'sqltest' and device_id = '$dev' and event = 'connect'"
expect_error "broker cannot update audit rows" "$broker" "permission denied" "
	update fleetgate.audit_events set outcome = 'refused'
	where device_id = '$dev'"
expect_error "broker cannot delete audit rows" "$broker" "permission denied" "
	delete from fleetgate.audit_events where device_id = '$dev'"
expect_error "broker cannot truncate the audit trail" "$broker" \
	"permission denied" "truncate fleetgate.audit_events"
expect_error "broker cannot read the audit trail" "$broker" \
	"permission denied" "select count(*) from fleetgate.audit_events"
expect_error "broker cannot forge an admin audit row" "$broker" \
	"written only by the registry trigger" "
	insert into fleetgate.audit_events (source, event, actor)
	values ('admin', 'devices_update', 'someone')"
expect_error "broker cannot insert into devices" "$broker" "permission denied" "
	insert into fleetgate.devices (id, municipality_id)
	values ('sqlt-$run_id-rogue', '$muni')"
expect_error "broker cannot update devices.status" "$broker" \
	"permission denied" "
	update fleetgate.devices set status = 'active' where id = '$dev_gone'"
expect_error "broker cannot change a certificate" "$broker" \
	"permission denied" "
	update fleetgate.device_certificates set revoked_at = null
	where fingerprint = '$fp1'"
expect_error "broker cannot run admin functions" "$broker" \
	"permission denied for function revoke_certificate" "
	select fleetgate.revoke_certificate('$fp1', 'broker tried')"
expect_value "broker can read the registry" "$broker" "$muni|$fp1" "
	select d.municipality_id || '|' || c.fingerprint
	from fleetgate.devices d
	join fleetgate.device_certificates c on c.device_id = d.id
	where d.id = '$dev'"

# last_seen_at: allowed, and neither audited nor notified.
audit_rows_before=$(q "$superuser" "
	select count(*) from fleetgate.audit_events where device_id = '$dev'")
if out=$(sql "$broker" -c "listen fleetgate_registry" -c "
	update fleetgate.devices set last_seen_at = now() where id = '$dev'" \
	-c "select last_seen_at is not null from fleetgate.devices
	    where id = '$dev'"); then
	if [[ $out == t ]]; then
		pass "broker can update devices.last_seen_at"
	else
		fail "broker can update devices.last_seen_at" "got: $out"
	fi
	if grep -q 'Asynchronous notification' <<<"$out"; then
		fail "a last_seen_at update sends no notification" "got: $out"
	else
		pass "a last_seen_at update sends no notification"
	fi
else
	fail "broker can update devices.last_seen_at" "output: $out"
	fail "a last_seen_at update sends no notification" "update failed"
fi
expect_value "a last_seen_at update leaves no audit row" "$superuser" \
	"$audit_rows_before" "
	select count(*) from fleetgate.audit_events where device_id = '$dev'"

# The audit trail is append-only ------------------------------------------

expect_error "admin cannot update audit rows" "$admin" "permission denied" "
	update fleetgate.audit_events set actor = 'nobody'
	where device_id = '$dev'"
expect_error "admin cannot delete audit rows" "$admin" "permission denied" "
	delete from fleetgate.audit_events where device_id = '$dev'"
expect_error "admin cannot truncate the audit trail" "$admin" \
	"permission denied" "truncate fleetgate.audit_events"
expect_error "even the table owner cannot update audit rows" "$superuser" \
	"append-only: UPDATE refused" "
	update fleetgate.audit_events set actor = 'nobody'
	where device_id = '$dev'"
expect_error "even the table owner cannot delete audit rows" "$superuser" \
	"append-only: DELETE refused" "
	delete from fleetgate.audit_events where device_id = '$dev'"
expect_error "admin cannot rewrite the schema version" "$admin" \
	"permission denied" "
	update fleetgate.schema_version set version = 2"

# Admin functions leave audit rows -----------------------------------------

expect_value "add_municipality leaves an audit row with actor and new value" \
	"$superuser" "sqltest-setup|$muni||" \
	"$(latest_audit municipalities_insert "new_value->>'id' = '$muni'" \
		"actor || '|' || (new_value->>'id') || '|' ||
		 coalesce(old_value::text, '') || '|' || coalesce(device_id, '')")"
expect_value "register_device leaves an audit row with device id and status" \
	"$superuser" "sqltest-setup|$dev|active|$muni" \
	"$(latest_audit devices_insert "device_id = '$dev'" \
		"actor || '|' || device_id || '|' || (new_value->>'status') || '|' ||
		 (new_value->>'municipality_id')")"
expect_value "the actor defaults to the session user" "$admin" \
	"fg_admin|fg_admin" "
	select fleetgate.add_municipality('$muni-2', 'Second');
	$(latest_audit municipalities_insert "new_value->>'id' = '$muni-2'" \
		"actor || '|' || (detail->>'session_user')")"

fp2_colon=$(colon_form "$fp2")
expect_value "add_certificate stores a colon-form fingerprint as lowercase hex" \
	"$admin" "$fp2"$'\n'"$dev" "
	select fleetgate.add_certificate('$dev', '$fp2_colon',
	                                 now() - interval '1 hour',
	                                 now() + interval '30 days');
	select device_id from fleetgate.device_certificates
	where fingerprint = '$fp2'"
expect_value "add_certificate leaves an audit row with fingerprint and device" \
	"$superuser" "fg_admin|$dev|$fp2|$fp2|" \
	"$(latest_audit device_certificates_insert "fingerprint = '$fp2'" \
		"actor || '|' || device_id || '|' || fingerprint || '|' ||
		 (new_value->>'fingerprint') || '|' ||
		 coalesce(new_value->>'revoked_at', '')")"
expect_error "add_certificate refuses an invalid fingerprint" "$admin" \
	"invalid certificate fingerprint" "
	select fleetgate.add_certificate('$dev', '${fp2:0:62}',
	                                 now(), now() + interval '1 day')"
expect_error "add_certificate refuses an unknown device" "$admin" \
	"unknown device 'sqlt-$run_id-nosuch'" "
	select fleetgate.add_certificate('sqlt-$run_id-nosuch', '$fp_unknown',
	                                 now(), now() + interval '1 day')"
expect_error "add_certificate refuses a fingerprint already registered" \
	"$admin" "certificate $fp1 is already registered" "
	select fleetgate.add_certificate('$dev', upper('$fp1'),
	                                 now(), now() + interval '1 day')"
expect_error "add_certificate refuses not_after before not_before" "$admin" \
	"must be later than not_before" "
	select fleetgate.add_certificate('$dev', '$fp_unknown',
	                                 now(), now() - interval '1 day')"

expect_value "revoke_certificate sets revoked_at and the reason" "$admin" \
	"true|key leaked" "
	set fleetgate.actor = 'alice@ops';
	select fleetgate.revoke_certificate('$fp1', 'key leaked');
	select (revoked_at is not null) || '|' || revocation_reason
	from fleetgate.device_certificates where fingerprint = '$fp1'"
changed='["revocation_reason", "revoked_at"]'
expect_value \
	"revoke_certificate leaves an audit row with actor, reason and old/new values" \
	"$superuser" "alice@ops|key leaked|$dev||true|key leaked|$changed" \
	"$(latest_audit device_certificates_update "fingerprint = '$fp1'" \
		"actor || '|' || reason || '|' || device_id || '|' ||
		 coalesce(old_value->>'revoked_at', '') || '|' ||
		 (new_value->>'revoked_at' is not null) || '|' ||
		 (new_value->>'revocation_reason') || '|' ||
		 (detail->'changed')::text")"
expect_error "revoking a revoked certificate fails" "$admin" \
	"certificate $fp1 is already revoked" "
	select fleetgate.revoke_certificate('$fp1', 'again')"
expect_error "revoking an unknown fingerprint fails with a clear error" \
	"$admin" "unknown certificate fingerprint $fp_unknown" "
	select fleetgate.revoke_certificate('$(colon_form "$fp_unknown")', 'lost')"
expect_error "revoking without a reason fails" "$admin" \
	"a revocation reason is required" "
	select fleetgate.revoke_certificate('$fp2', ' ')"

# psql prints notifications that arrive while it runs a command, so LISTEN
# and the change in one session show what a broker would receive.
if out=$(sql "$admin" -c "listen fleetgate_registry" -c "
	select fleetgate.revoke_certificate('$fp2_colon', 'notify test')"); then
	payload="{\"id\": \"$fp2\", \"op\": \"update\", \"table\": \"device_certificates\"}"
	expected="Asynchronous notification \"fleetgate_registry\" with payload \"$payload\""
	if grep -qF -- "$expected" <<<"$out"; then
		pass "revoke_certificate sends a notification on fleetgate_registry"
	else
		fail "revoke_certificate sends a notification on fleetgate_registry" \
			"expected: $expected" "got: $out"
	fi
else
	fail "revoke_certificate sends a notification on fleetgate_registry" \
		"output: $out"
fi

# Fingerprint normalisation.
expect_value "normalize_fingerprint accepts bare hex in any case and the colon form" \
	"$admin" "$fp1|$fp1|$fp1" "
	select fleetgate.normalize_fingerprint('$fp1') || '|' ||
	       fleetgate.normalize_fingerprint(upper('$fp1')) || '|' ||
	       fleetgate.normalize_fingerprint(lower('$(colon_form "$fp1")'))"
fp1_colon=$(colon_form "$fp1")
bad_fingerprints=(
	"63 hex digits|${fp1:0:63}"
	"66 hex digits|${fp1}00"
	"a non-hex digit|g${fp1:1}"
	"dashes for colons|${fp1_colon//:/-}"
	"a trailing colon|$fp1_colon:"
	"colons in the wrong places|${fp1:0:3}:${fp1:3}"
	"an empty string|"
)
for entry in "${bad_fingerprints[@]}"; do
	expect_error "normalize_fingerprint refuses ${entry%%|*}" "$admin" \
		"invalid certificate fingerprint" \
		"select fleetgate.normalize_fingerprint('${entry#*|}')"
done
expect_error "normalize_fingerprint refuses NULL" "$admin" \
	"invalid certificate fingerprint NULL" \
	"select fleetgate.normalize_fingerprint(null)"

# Device lifecycle.
expect_value "suspend_device suspends and audits old and new status with the reason" \
	"$admin" "suspended|fg_admin|active|suspended|maintenance" "
	select fleetgate.suspend_device('$dev', 'maintenance');
	select (select status from fleetgate.devices where id = '$dev') || '|' ||
	       a.actor || '|' || (a.old_value->>'status') || '|' ||
	       (a.new_value->>'status') || '|' || a.reason
	from ($(latest_audit devices_update "device_id = '$dev'" '*')) a"
expect_error "suspending a suspended device fails" "$admin" \
	"device '$dev' is already suspended" \
	"select fleetgate.suspend_device('$dev', 'twice')"
expect_value "reactivate_device reactivates and audits the change" "$admin" \
	"active|suspended|active" "
	select fleetgate.reactivate_device('$dev');
	select (select status from fleetgate.devices where id = '$dev') || '|' ||
	       (a.old_value->>'status') || '|' || (a.new_value->>'status')
	from ($(latest_audit devices_update "device_id = '$dev'" '*')) a"
expect_error "reactivating an active device fails" "$admin" \
	"device '$dev' is already active" \
	"select fleetgate.reactivate_device('$dev')"
expect_ok "decommission_device decommissions" "$admin" \
	"select fleetgate.decommission_device('$dev_gone', 'end of life')"
expect_error "a decommissioned device cannot be reactivated" "$admin" \
	"device '$dev_gone' is decommissioned; it cannot become active" \
	"select fleetgate.reactivate_device('$dev_gone')"
expect_error "a decommissioned device takes no new certificate" "$admin" \
	"is decommissioned" "
	select fleetgate.add_certificate('$dev_gone', '$fp_unknown',
	                                 now(), now() + interval '1 day')"
expect_error "suspending an unknown device fails" "$admin" \
	"unknown device 'sqlt-$run_id-nosuch'" \
	"select fleetgate.suspend_device('sqlt-$run_id-nosuch', 'x')"
expect_error "register_device refuses an unknown municipality" "$admin" \
	"unknown municipality 'sqlt-$run_id-nowhere'" \
	"select fleetgate.register_device('sqlt-$run_id-d9', 'sqlt-$run_id-nowhere')"
expect_error "register_device refuses an invalid device id" "$admin" \
	"invalid device id 'bad/id'" \
	"select fleetgate.register_device('bad/id', '$muni')"
expect_error "register_device refuses a duplicate" "$admin" \
	"device '$dev' is already registered" \
	"select fleetgate.register_device('$dev', '$muni')"

# Secrets stay out of the audit trail.
expect_value "set_device_api_key audits the change with the hash masked" \
	"$admin" "***|true|[\"api_key_hash\", \"require_api_key\"]" "
	select fleetgate.set_device_api_key('$dev', '$key_hash');
	select (a.new_value->>'api_key_hash') || '|' ||
	       (a.new_value->>'require_api_key') || '|' ||
	       (a.detail->'changed')::text
	from ($(latest_audit devices_update "device_id = '$dev'" '*')) a"
expect_value "add_account leaves an audit row with actor and the hash masked" \
	"$admin" "bob@ops|$account|***|operator|$muni" "
	set fleetgate.actor = 'bob@ops';
	select fleetgate.add_account('$account', '$pw_hash', 'operator', '$muni');
	select a.actor || '|' || a.username || '|' ||
	       (a.new_value->>'password_hash') || '|' ||
	       (a.new_value->>'role') || '|' || (a.new_value->>'municipality_id')
	from ($(latest_audit accounts_insert "username = '$account'" '*')) a"
expect_value "a direct password change is audited as a change, hashes masked" \
	"$admin" "***|***|[\"password_hash\"]" "
	update fleetgate.accounts set password_hash = '$key_hash'
	where username = '$account';
	select (a.old_value->>'password_hash') || '|' ||
	       (a.new_value->>'password_hash') || '|' ||
	       (a.detail->'changed')::text
	from ($(latest_audit accounts_update "username = '$account'" '*')) a"
# A renamed row is dropped by the brokers under its old key: the
# notification of an update that changed the key names both.
if out=$(sql "$admin" -c "listen fleetgate_registry" -c "
	update fleetgate.accounts set username = '$account-renamed'
	where username = '$account'" -c "
	update fleetgate.accounts set username = '$account'
	where username = '$account-renamed'" -c "
	update fleetgate.accounts set disabled = false
	where username = '$account'"); then
	renamed="{\"id\": \"$account-renamed\", \"op\": \"update\", \"table\": \"accounts\", \"old_id\": \"$account\"}"
	back="{\"id\": \"$account\", \"op\": \"update\", \"table\": \"accounts\", \"old_id\": \"$account-renamed\"}"
	plain="{\"id\": \"$account\", \"op\": \"update\", \"table\": \"accounts\"}"
	if grep -qF -- "payload \"$renamed\"" <<<"$out" &&
		grep -qF -- "payload \"$back\"" <<<"$out" &&
		grep -qF -- "payload \"$plain\"" <<<"$out"; then
		pass "an update that changes a key notifies the old key as old_id, and only then"
	else
		fail "an update that changes a key notifies the old key as old_id, and only then" \
			"expected: $renamed, $back and $plain" "got: $out"
	fi
else
	fail "an update that changes a key notifies the old key as old_id, and only then" \
		"output: $out"
fi
expect_value "no audit row contains a password or api key hash" "$superuser" \
	"0|0" "
	select count(*) filter (where strpos(a::text, '$pw_hash') > 0) || '|' ||
	       count(*) filter (where strpos(a::text, '$key_hash') > 0)
	from fleetgate.audit_events a"
name="add_account refuses a plain password and does not echo it"
if out=$(q "$admin" "
	select fleetgate.add_account('$account-2', 'hunter2-plain', 'operator')"); then
	fail "$name" "statement succeeded: $out"
elif [[ $out == *"password_hash is not a mosquitto_passwd hash"* &&
	$out != *hunter2* ]]; then
	pass "$name"
else
	fail "$name" "got: $out"
fi
expect_error "add_account refuses a duplicate username" "$admin" \
	"account '$account' already exists" \
	"select fleetgate.add_account('$account', '$pw_hash', 'operator')"

# Direct table changes by the admin are audited and notified as well.
if out=$(sql "$admin" -c "listen fleetgate_registry" -c "
	update fleetgate.municipalities set name = 'Renamed $run_id'
	where id = '$muni'"); then
	payload="{\"id\": \"$muni\", \"op\": \"update\", \"table\": \"municipalities\"}"
	expected="Asynchronous notification \"fleetgate_registry\" with payload \"$payload\""
	if grep -qF -- "$expected" <<<"$out"; then
		pass "a direct municipality update is notified"
	else
		fail "a direct municipality update is notified" \
			"expected: $expected" "got: $out"
	fi
else
	fail "a direct municipality update is notified" "output: $out"
fi
expect_value "a direct municipality update is audited with old and new name" \
	"$superuser" "fg_admin|Test municipality $run_id|Renamed $run_id" \
	"$(latest_audit municipalities_update "new_value->>'id' = '$muni'" \
		"actor || '|' || (old_value->>'name') || '|' || (new_value->>'name')")"

# ACL rules (migration 002) -------------------------------------------------

# Not registered: a rule may be written before its device exists.
rule_dev=sqlt-$run_id-d3

# acl_notified OUTPUT OP ID: whether psql OUTPUT shows the registry
# notification for acl rule ID and operation OP.
acl_notified() {
	local payload
	payload="{\"id\": \"$3\", \"op\": \"$2\", \"table\": \"acl_rules\"}"
	grep -qF -- \
		"Asynchronous notification \"fleetgate_registry\" with payload \"$payload\"" \
		<<<"$1"
}

name="add_acl_rule returns the new id and notifies the brokers"
rule_id=
if out=$(sql "$admin" -c "listen fleetgate_registry" \
	-c "set fleetgate.actor = 'carol@ops'" -c "
	select fleetgate.add_acl_rule('device', '$rule_dev', 'water/%m/%c/#',
	                              'publish', 'allow', 10, 'sqltest $run_id')"); then
	rule_id=$(head -n 1 <<<"$out")
	if [[ $rule_id =~ ^[0-9]+$ ]] && acl_notified "$out" insert "$rule_id"; then
		pass "$name"
	else
		fail "$name" "got: $out"
	fi
else
	fail "$name" "output: $out"
fi
[[ $rule_id =~ ^[0-9]+$ ]] || {
	echo "Bail out! add_acl_rule returned no id: $out"
	exit 1
}
expect_value "add_acl_rule stores a rule for a device not registered yet" \
	"$superuser" "device|$rule_dev|water/%m/%c/#|publish|allow|10|sqltest $run_id" "
	select concat_ws('|', subject_kind, subject, pattern, access, effect,
	                 priority, comment)
	from fleetgate.acl_rules where id = $rule_id"
expect_value "add_acl_rule leaves an audit row with actor and the new rule" \
	"$superuser" "carol@ops|water/%m/%c/#|$rule_dev||" \
	"$(latest_audit acl_rules_insert "new_value->>'id' = '$rule_id'" \
		"actor || '|' || (new_value->>'pattern') || '|' ||
		 (new_value->>'subject') || '|' || coalesce(old_value::text, '') ||
		 '|' || coalesce(device_id, '')")"

rule_all=$(q "$admin" "
	select fleetgate.add_acl_rule('all_devices', null, 'water/%m/+/status',
	                              'receive', 'deny')")
expect_value "a rule for all devices has no subject and priority 0 by default" \
	"$superuser" "all_devices|true|0|true" "
	select subject_kind || '|' || (subject is null) || '|' || priority || '|' ||
	       (comment is null)
	from fleetgate.acl_rules where id = '$rule_all'"
expect_ok "add_acl_rule accepts account, role and municipality subjects" \
	"$admin" "
	begin;
	select fleetgate.add_acl_rule('account', '$account', '\$SYS/#',
	                              'subscribe', 'allow');
	select fleetgate.add_acl_rule('role', 'operator', 'water/+/+/readings',
	                              'receive', 'allow', -5);
	select fleetgate.add_acl_rule('municipality', '$muni', 'water/%m/#',
	                              'publish', 'deny', 100, 'backstop');
	rollback"

# Patterns: MQTT topic filter syntax. Each check also runs through the
# table constraint, so a direct INSERT is judged the same way.
expect_value "valid topic patterns pass the pattern check" "$admin" \
	"ok,ok,ok,ok,ok,ok,ok,ok,ok,ok" "
	select string_agg(coalesce(fleetgate.topic_filter_problem(p), 'ok'), ','
	                  order by n)
	from unnest(array['#', '+', '+/+/#', '/', 'a//b', '\$SYS/#',
	                  'water/%m/%c', 'x/%c-in/y', 'a/b/#',
	                  repeat('a', 65535)]) with ordinality as t(p, n)"
expect_error "add_acl_rule refuses '#' before the last level" "$admin" \
	"invalid topic pattern '#/a': '#' must be the last level" "
	select fleetgate.add_acl_rule('role', 'operator', '#/a', 'publish',
	                              'allow')"
expect_error "add_acl_rule refuses '#' inside a level" "$admin" \
	"invalid topic pattern 'a/#b': '#' must be a level of its own" "
	select fleetgate.add_acl_rule('role', 'operator', 'a/#b', 'publish',
	                              'allow')"
expect_error "add_acl_rule refuses '+' inside a level" "$admin" \
	"invalid topic pattern 'a\\+/b': '\\+' must be a level of its own" "
	select fleetgate.add_acl_rule('role', 'operator', 'a+/b', 'publish',
	                              'allow')"
expect_error "add_acl_rule refuses an empty pattern" "$admin" \
	"invalid topic pattern '': the pattern is empty" "
	select fleetgate.add_acl_rule('role', 'operator', '', 'publish', 'allow')"
expect_error "add_acl_rule refuses a NULL pattern" "$admin" \
	"invalid topic pattern NULL: the pattern is empty" "
	select fleetgate.add_acl_rule('role', 'operator', null, 'publish',
	                              'allow')"
expect_error "add_acl_rule refuses a pattern over 65535 bytes" "$admin" \
	"the pattern is longer than 65535 bytes" "
	select fleetgate.add_acl_rule('role', 'operator', repeat('ä', 32768),
	                              'publish', 'allow')"
expect_error "a pattern cannot carry a NUL" "$admin" \
	"null character not permitted" "
	select fleetgate.add_acl_rule('role', 'operator', 'a' || chr(0),
	                              'publish', 'allow')"
expect_error "the table refuses a bad pattern inserted directly" "$admin" \
	"acl_rules_pattern_format" "
	insert into fleetgate.acl_rules (subject_kind, subject, pattern, access,
	                                 effect)
	values ('role', 'operator', 'a/#/b', 'publish', 'allow')"

# Kind, access, effect and priority.
expect_error "add_acl_rule refuses an unknown subject kind" "$admin" \
	"unknown subject kind 'devices'" "
	select fleetgate.add_acl_rule('devices', '$dev', 'a/b', 'publish',
	                              'allow')"
expect_error "add_acl_rule refuses an unknown access" "$admin" \
	"unknown access 'write'" "
	select fleetgate.add_acl_rule('device', '$dev', 'a/b', 'write', 'allow')"
expect_error "add_acl_rule refuses an unknown effect" "$admin" \
	"unknown effect 'permit'" "
	select fleetgate.add_acl_rule('device', '$dev', 'a/b', 'publish',
	                              'permit')"
expect_error "add_acl_rule refuses a NULL priority" "$admin" \
	"priority must be an integer, not NULL" "
	select fleetgate.add_acl_rule('device', '$dev', 'a/b', 'publish',
	                              'allow', null)"
expect_error "the table refuses an unknown access inserted directly" \
	"$admin" "acl_rules_access_known" "
	insert into fleetgate.acl_rules (subject_kind, subject, pattern, access,
	                                 effect)
	values ('device', '$dev', 'a/b', 'write', 'allow')"

# The subject is NULL exactly for all_devices.
expect_error "add_acl_rule refuses a subject for all_devices" "$admin" \
	"a rule for all_devices takes no subject \\(got '$dev'\\)" "
	select fleetgate.add_acl_rule('all_devices', '$dev', 'a/b', 'publish',
	                              'allow')"
expect_error "add_acl_rule refuses a device rule without a subject" "$admin" \
	"a rule for subject kind device needs a subject" "
	select fleetgate.add_acl_rule('device', null, 'a/b', 'publish', 'allow')"
expect_error "add_acl_rule refuses a municipality rule without a subject" \
	"$admin" "a rule for subject kind municipality needs a subject" "
	select fleetgate.add_acl_rule('municipality', null, 'a/b', 'publish',
	                              'allow')"
expect_error "the table refuses a subject for all_devices inserted directly" \
	"$admin" "acl_rules_subject_null_iff_all_devices" "
	insert into fleetgate.acl_rules (subject_kind, subject, pattern, access,
	                                 effect)
	values ('all_devices', '$dev', 'a/b', 'publish', 'allow')"
expect_error "the table refuses a role rule without a subject inserted directly" \
	"$admin" "acl_rules_subject_null_iff_all_devices" "
	insert into fleetgate.acl_rules (subject_kind, subject, pattern, access,
	                                 effect)
	values ('role', null, 'a/b', 'publish', 'allow')"
expect_error "add_acl_rule refuses a device subject no device can have" \
	"$admin" "invalid device subject 'dev/1'" "
	select fleetgate.add_acl_rule('device', 'dev/1', 'a/b', 'publish',
	                              'allow')"
expect_error "add_acl_rule refuses an account subject with '+'" "$admin" \
	"invalid account subject 'ops\\+1'" "
	select fleetgate.add_acl_rule('account', 'ops+1', 'a/b', 'publish',
	                              'allow')"

# Direct changes by the admin are audited and notified too.
name="a direct rule insert by the admin gets an id and is notified"
rule_direct=
if out=$(sql "$admin" -c "listen fleetgate_registry" -c "
	insert into fleetgate.acl_rules (subject_kind, subject, pattern, access,
	                                 effect, comment)
	values ('role', 'operator', 'water/%m/#', 'subscribe', 'allow',
	        'sqltest $run_id')
	returning id"); then
	rule_direct=$(head -n 1 <<<"$out")
	if [[ $rule_direct =~ ^[0-9]+$ ]] &&
		acl_notified "$out" insert "$rule_direct"; then
		pass "$name"
	else
		fail "$name" "got: $out"
	fi
else
	fail "$name" "output: $out"
fi
if out=$(sql "$admin" -c "listen fleetgate_registry" -c "
	update fleetgate.acl_rules set priority = 20
	where id = '$rule_direct'"); then
	if acl_notified "$out" update "$rule_direct"; then
		pass "a direct rule update is notified"
	else
		fail "a direct rule update is notified" "got: $out"
	fi
else
	fail "a direct rule update is notified" "output: $out"
fi
expect_value "a direct rule update is audited with the changed column" \
	"$superuser" "fg_admin|0|20|[\"priority\"]" \
	"$(latest_audit acl_rules_update "new_value->>'id' = '$rule_direct'" \
		"actor || '|' || (old_value->>'priority') || '|' ||
		 (new_value->>'priority') || '|' || (detail->'changed')::text")"

# remove_acl_rule.
if out=$(sql "$admin" -c "listen fleetgate_registry" -c "
	select fleetgate.remove_acl_rule($rule_id)"); then
	if acl_notified "$out" delete "$rule_id"; then
		pass "remove_acl_rule notifies the brokers"
	else
		fail "remove_acl_rule notifies the brokers" "got: $out"
	fi
else
	fail "remove_acl_rule notifies the brokers" "output: $out"
fi
expect_value "remove_acl_rule removes the rule" "$superuser" 0 "
	select count(*) from fleetgate.acl_rules where id = $rule_id"
expect_value "remove_acl_rule leaves an audit row with the old rule" \
	"$superuser" "fg_admin|water/%m/%c/#|publish|" \
	"$(latest_audit acl_rules_delete "old_value->>'id' = '$rule_id'" \
		"actor || '|' || (old_value->>'pattern') || '|' ||
		 (old_value->>'access') || '|' || coalesce(new_value::text, '')")"
expect_error "remove_acl_rule refuses an unknown id" "$admin" \
	"unknown acl rule $rule_id" \
	"select fleetgate.remove_acl_rule($rule_id)"
expect_error "remove_acl_rule refuses a NULL id" "$admin" \
	"an acl rule id is required" \
	"select fleetgate.remove_acl_rule(null)"

# The broker reads the rules and writes ACL audit rows, nothing more.
expect_value "broker can read the acl rules as the loader does" "$broker" \
	"$rule_all|all_devices||water/%m/+/status|receive|f|0" "
	select id, subject_kind, subject, pattern, access, effect = 'allow',
	       priority
	from fleetgate.acl_rules where id = $rule_all"
expect_error "broker cannot insert acl rules" "$broker" \
	"permission denied for table acl_rules" "
	insert into fleetgate.acl_rules (subject_kind, subject, pattern, access,
	                                 effect)
	values ('device', '$dev', '#', 'publish', 'allow')"
expect_error "broker cannot update acl rules" "$broker" \
	"permission denied for table acl_rules" "
	update fleetgate.acl_rules set effect = 'allow' where id = $rule_all"
expect_error "broker cannot delete acl rules" "$broker" \
	"permission denied for table acl_rules" "
	delete from fleetgate.acl_rules where id = $rule_all"
expect_error "broker cannot truncate acl rules" "$broker" \
	"permission denied for table acl_rules" \
	"truncate fleetgate.acl_rules"
expect_error "broker cannot run add_acl_rule" "$broker" \
	"permission denied for function add_acl_rule" "
	select fleetgate.add_acl_rule('device', '$dev', '#', 'publish', 'allow')"
expect_error "broker cannot run remove_acl_rule" "$broker" \
	"permission denied for function remove_acl_rule" \
	"select fleetgate.remove_acl_rule($rule_all)"
expect_ok "broker can insert an acl denial audit row with detail" "$broker" "
	insert into fleetgate.audit_events
	    (broker_id, source, event, outcome, reason, device_id, client_id,
	     username, detail)
	values ('sqltest-acl', 'acl', 'deny', 'denied', 'publish', '$dev', '$dev',
	        '$dev', jsonb_build_object('topic', 'water/other/$dev/readings',
	                                   'count', 3))"
expect_value "the broker's acl audit row is stored with its detail" \
	"$superuser" "acl|deny|denied|publish|$dev|water/other/$dev/readings|3" "
	select concat_ws('|', source, event, outcome, reason, username,
	                 detail->>'topic', detail->>'count')
	from fleetgate.audit_events
	where broker_id = 'sqltest-acl' and device_id = '$dev'"
expect_error "admin cannot truncate acl rules (it would bypass the audit)" \
	"$admin" "permission denied for table acl_rules" \
	"truncate fleetgate.acl_rules"

# Rate limits (004) ----------------------------------------------------------

expect_value "migration 004 gives every device a global default budget" \
	"$superuser" "60|1048576|60|60" "
	select concat_ws('|', messages_per_window, bytes_per_window, window_s,
	                 burst)
	from fleetgate.rate_limits where scope_kind = 'global'"
if out=$(sql "$admin" -c "listen fleetgate_registry" -c "
	select fleetgate.set_rate_limit('device', '$dev', 10, null, 1, 0)"); then
	if grep -q 'Asynchronous notification "fleetgate_registry"' <<<"$out"; then
		pass "a rate limit change notifies the brokers"
	else
		fail "a rate limit change notifies the brokers" "got: $out"
	fi
else
	fail "a rate limit change notifies the brokers" "output: $out"
fi
expect_value "a device limit inherits what it leaves NULL" "$broker" \
	"10||1|0" "
	select concat_ws('|', messages_per_window, coalesce(bytes_per_window::text, ''),
	                 window_s, burst)
	from fleetgate.rate_limits where scope_kind = 'device' and scope = '$dev'"
expect_ok "set_rate_limit replaces the row of a scope" "$admin" "
	select fleetgate.set_rate_limit('device', '$dev', 20, 5000, 2, 5)"
expect_value "the rate limit change is audited" "$superuser" \
	"rate_limits_update|[\"burst\", \"bytes_per_window\", \"messages_per_window\", \"window_s\"]" "
	select event || '|' || (detail->'changed')::text
	from fleetgate.audit_events
	where source = 'admin' and event like 'rate_limits_%'
	order by id desc limit 1"
expect_error "a zero budget is refused" "$admin" "limits must be positive" "
	select fleetgate.set_rate_limit('device', '$dev', 0, null, null, null)"
expect_error "a device limit needs a device" "$admin" \
	"scope must be NULL exactly for the global limit" "
	select fleetgate.set_rate_limit('device', null, 5, null, null, null)"
expect_error "an unknown scope kind is refused" "$admin" \
	"unknown scope kind 'fleet'" "
	select fleetgate.set_rate_limit('fleet', 'x', 5, null, null, null)"
expect_error "a window over a day is refused by the table too" "$admin" \
	"rate_limits_window_range" "
	update fleetgate.rate_limits set window_s = 86401
	where scope_kind = 'device' and scope = '$dev'"
expect_error "two rows for one scope are refused" "$admin" \
	"duplicate key value violates unique constraint" "
	insert into fleetgate.rate_limits (scope_kind, scope, messages_per_window)
	values ('device', '$dev', 3)"
expect_error "broker cannot change rate limits" "$broker" "permission denied" "
	update fleetgate.rate_limits set messages_per_window = 1000000"
expect_error "admin cannot truncate rate limits (it would bypass the audit)" \
	"$admin" "permission denied for table rate_limits" \
	"truncate fleetgate.rate_limits"
expect_ok "clear_rate_limit removes a scope's row" "$admin" "
	select fleetgate.clear_rate_limit('device', '$dev')"
expect_error "clearing a scope without a row says so" "$admin" \
	"no rate limit for 'device'" "
	select fleetgate.clear_rate_limit('device', '$dev')"

# migrate.sh ---------------------------------------------------------------

migrate=$repo/sql/migrate.sh

if out=$("$migrate" 2>&1); then
	if grep -q '^migrate: skipped 001_registry.sql' <<<"$out" &&
		grep -q '^migrate: skipped 002_acl.sql' <<<"$out" &&
		! grep -q '^migrate: applied' <<<"$out"; then
		pass "migrate.sh on a migrated database skips every file"
	else
		fail "migrate.sh on a migrated database skips every file" "got: $out"
	fi
else
	fail "migrate.sh on a migrated database skips every file" \
		"exit status non-zero" "got: $out"
fi

scratch_db=fleetgate_sqltest_$$
scratch_dbs+=("$scratch_db")
q "$superuser" "create database \"$scratch_db\"" >/dev/null
first=$(PGDATABASE=$scratch_db "$migrate" 2>&1) && first_rc=0 || first_rc=$?
second=$(PGDATABASE=$scratch_db "$migrate" 2>&1) && second_rc=0 || second_rc=$?
versions=$(PGDATABASE=$scratch_db q "$superuser" \
	"select string_agg(version::text, ',') from fleetgate.schema_version")
if [[ $first_rc == 0 && $first == "$(migrate_lines applied 1)" ]]; then
	pass "migrate.sh migrates an empty database"
else
	fail "migrate.sh migrates an empty database" "exit $first_rc" "$first"
fi
if [[ $second_rc == 0 && $second == *"skipped 001_registry.sql"* &&
	$second == *"skipped 002_acl.sql"* &&
	$second != *"migrate: applied"* && $versions == "$all_versions" ]]; then
	pass "migrate.sh run twice is idempotent"
else
	fail "migrate.sh run twice is idempotent" "exit $second_rc" "$second" \
		"versions: $versions"
fi

out=$(PGDATABASE=$scratch_db sql "$superuser" -f "$repo/sql/001_registry.sql") &&
	rc=0 || rc=$?
if [[ $rc != 0 && $out == *"fleetgate migration 001 is already applied"* ]]; then
	pass "001_registry.sql refuses to run twice"
else
	fail "001_registry.sql refuses to run twice" "exit $rc" "$out"
fi
out=$(PGDATABASE=$scratch_db sql "$superuser" -f "$repo/sql/002_acl.sql") &&
	rc=0 || rc=$?
if [[ $rc != 0 && $out == *"fleetgate migration 002 is already applied"* ]]; then
	pass "002_acl.sql refuses to run twice"
else
	fail "002_acl.sql refuses to run twice" "exit $rc" "$out"
fi

# 002 on a database that an earlier release left at version 1.
scratch_v1=fleetgate_sqltest_v1_$$
scratch_dbs+=("$scratch_v1")
q "$superuser" "create database \"$scratch_v1\"" >/dev/null
out=$(PGDATABASE=$scratch_v1 sql "$superuser" -f "$repo/sql/002_acl.sql") &&
	rc=0 || rc=$?
if [[ $rc != 0 && $out == *'schema "fleetgate" does not exist'* ]]; then
	pass "002_acl.sql refuses a database without 001"
else
	fail "002_acl.sql refuses a database without 001" "exit $rc" "$out"
fi
PGDATABASE=$scratch_v1 sql "$superuser" -f "$repo/sql/001_registry.sql" \
	>/dev/null
out=$(PGDATABASE=$scratch_v1 "$migrate" 2>&1) && rc=0 || rc=$?
if [[ $rc == 0 && $out == "$(migrate_lines skipped 1 1)
$(migrate_lines applied 2)" ]]; then
	pass "migrate.sh applies 002 on top of a database at version 1"
else
	fail "migrate.sh applies 002 on top of a database at version 1" \
		"exit $rc" "$out"
fi
PGDATABASE=$scratch_v1 expect_value \
	"the database migrated from version 1 has an empty acl_rules table" \
	"$superuser" "$latest|0" "
	select (select max(version) from fleetgate.schema_version) || '|' ||
	       (select count(*) from fleetgate.acl_rules)"

expect_error "a later migration refuses to run before its predecessor" \
	"$superuser" "migration $(printf %03d $((latest + 2))) needs the database at version $((latest + 1)), but it is at" \
	"begin; call fleetgate.assert_migration($((latest + 2))); rollback"
expect_error "a later migration refuses to run twice" "$superuser" \
	"fleetgate migration 001 is already applied" \
	"begin; call fleetgate.assert_migration(1); rollback"

# A pending migration is applied after the ones already recorded.
migrations_copy=$(mktemp -d "${TMPDIR:-/tmp}/fleetgate-sqltest-migrations.XXXXXX")
cp "$migrate" "${migration_files[@]}" "$migrations_copy/"
pending=$((latest + 1))
pending_name=$(printf '%03d_sqltest.sql' "$pending")
cat >"$migrations_copy/$pending_name" <<EOF
begin;
call fleetgate.assert_migration($pending);
create table fleetgate.sqltest_pending (x int);
insert into fleetgate.schema_version (version) values ($pending);
commit;
EOF
out=$(PGDATABASE=$scratch_db "$migrations_copy/migrate.sh" 2>&1) && rc=0 || rc=$?
rm -rf -- "$migrations_copy"
if [[ $rc == 0 && $out == "$(migrate_lines skipped 1)
migrate: applied $pending_name (version $pending)" ]]; then
	pass "migrate.sh applies only the pending migration"
else
	fail "migrate.sh applies only the pending migration" "exit $rc" "$out"
fi

PGDATABASE=$scratch_db q "$superuser" \
	"insert into fleetgate.schema_version (version) values (999)" >/dev/null
out=$(PGDATABASE=$scratch_db "$migrate" 2>&1) && rc=0 || rc=$?
if [[ $rc == 1 && $out == *"schema version 999, newer than the newest migration"* &&
	$out != *"migrate: applied"* ]]; then
	pass "migrate.sh refuses a database newer than its files"
else
	fail "migrate.sh refuses a database newer than its files" "exit $rc" "$out"
fi

# Readings, progress and retention (migration 003) ---------------------------

pbroker=sqlt-$run_id-persist
# reading_values SEQ RECEIVED_AT: one row of fleetgate.readings for pbroker.
reading_values() {
	printf "('%s', %s, %s, now(), '%s', '%s', null, '%s', 'water/%s/%s/readings',
	         '{\"level\": 1}')" "$pbroker" "$1" "$2" "$dev" "$muni" "$dev" \
		"$muni" "$dev"
}
readings_columns="(broker_id, seq, received_at, measured_at, device_id,
	municipality_id, account, client_id, topic, payload)"

expect_ok "broker can insert a reading" "$broker" "
	insert into fleetgate.readings $readings_columns
	values $(reading_values 1 "now()")"
name="broker can copy readings in as the writer does"
if out=$(printf '%s\t2\t%s\t%s\t%s\t%s\t\\N\t%s\twater/x\t{"level": 2}\n' \
	"$pbroker" "2024-01-01 00:00:00+00" "2024-01-01 00:00:00+00" "$dev" \
	"$muni" "$dev" | sql "$broker" -c "copy fleetgate.readings
	(broker_id, seq, received_at, measured_at, device_id, municipality_id,
	 account, client_id, topic, payload) from stdin"); then
	pass "$name"
else
	fail "$name" "output: $out"
fi
expect_error "a reading with a duplicate (broker_id, seq, received_at) is refused" \
	"$broker" "duplicate key value violates unique constraint" "
	insert into fleetgate.readings $readings_columns
	values $(reading_values 2 "'2024-01-01 00:00:00+00'")"
expect_ok "the writer's insert of a duplicate is a no-op with on conflict" \
	"$broker" "
	insert into fleetgate.readings $readings_columns
	values $(reading_values 2 "'2024-01-01 00:00:00+00'")
	on conflict do nothing"
expect_value "(broker_id, seq) with another received_at is a new row (the key holds received_at)" \
	"$superuser" "2" "
	insert into fleetgate.readings $readings_columns
	values $(reading_values 2 "'2024-01-02 00:00:00+00'");
	select count(*) from fleetgate.readings
	where broker_id = '$pbroker' and seq = 2"
expect_error "broker cannot read readings" "$broker" \
	"permission denied for table readings" "
	select count(*) from fleetgate.readings"
expect_error "broker cannot update readings" "$broker" \
	"permission denied for table readings" "
	update fleetgate.readings set topic = 'x' where broker_id = '$pbroker'"
expect_error "broker cannot delete readings" "$broker" \
	"permission denied for table readings" "
	delete from fleetgate.readings where broker_id = '$pbroker'"
expect_error "broker cannot read the default partition directly" "$broker" \
	"permission denied for table readings_default" "
	select count(*) from fleetgate.readings_default"
expect_ok "broker can insert a rejected entry" "$broker" "
	insert into fleetgate.readings_rejected
	    (broker_id, seq, received_at, payload, error)
	values ('$pbroker', 9, now(), '\\x00ff', 'sqltest')"

expect_value "broker can record, read and advance its progress" "$broker" \
	"$pbroker|j1|11" "
	insert into fleetgate.persist_progress (broker_id, journal_id, seq)
	values ('$pbroker', 'j1', 10) on conflict (broker_id) do nothing;
	update fleetgate.persist_progress set seq = 11, updated_at = now()
	where broker_id = '$pbroker' and journal_id = 'j1';
	select broker_id || '|' || journal_id || '|' || seq
	from fleetgate.persist_progress where broker_id = '$pbroker'"
expect_error "broker cannot delete progress rows" "$broker" \
	"permission denied for table persist_progress" "
	delete from fleetgate.persist_progress where broker_id = '$pbroker'"
expect_error "broker cannot delete audit events" "$broker" \
	"permission denied for table audit_events" "
	delete from fleetgate.audit_events where broker_id = '$pbroker'"
expect_error "broker cannot change the persist settings" "$broker" \
	"permission denied for table persist_settings" "
	update fleetgate.persist_settings set readings_keep = '1 day'"
expect_error "broker cannot run drop_old_readings" "$broker" \
	"permission denied for function drop_old_readings" "
	select fleetgate.drop_old_readings('1 day')"
expect_error "broker cannot run purge_audit_events" "$broker" \
	"permission denied for function purge_audit_events" "
	select fleetgate.purge_audit_events()"
# The first call may create a partition (an interval may have begun since
# the migration); a second one must not.
expect_value "broker can call ensure_reading_partitions" "$broker" "t" "
	select fleetgate.ensure_reading_partitions() >= 0"
expect_value "ensure_reading_partitions called again creates no partition" \
	"$broker" "0" "select fleetgate.ensure_reading_partitions()"

expect_value "admin can read readings" "$admin" "$pbroker|1|$dev|$muni|1" "
	select broker_id || '|' || seq || '|' || device_id || '|' ||
	       municipality_id || '|' || (payload->>'level')
	from fleetgate.readings where broker_id = '$pbroker' and seq = 1"
expect_error "admin cannot insert readings" "$admin" \
	"permission denied for table readings" "
	insert into fleetgate.readings $readings_columns
	values $(reading_values 3 "now()")"
expect_error "admin cannot delete readings" "$admin" \
	"permission denied for table readings" "
	delete from fleetgate.readings where broker_id = '$pbroker'"
readings_keep=$(q "$superuser" \
	"select readings_keep from fleetgate.persist_settings")
expect_value "admin can change readings_keep" "$admin" "400 days" "
	update fleetgate.persist_settings set readings_keep = '400 days';
	select readings_keep from fleetgate.persist_settings"
q "$superuser" "update fleetgate.persist_settings
	set readings_keep = '$readings_keep'" >/dev/null
expect_error "admin cannot change audit_keep_minimum" "$admin" \
	"permission denied for table persist_settings" "
	update fleetgate.persist_settings set audit_keep_minimum = '1 day'"
expect_error "the settings table holds one row" "$superuser" \
	"persist_settings_pkey|persist_settings_one_row" "
	insert into fleetgate.persist_settings (only_row) values (true)"

# Partitions for a far-future date, where no partition exists yet: a row
# received then first lands in readings_default and is moved.
# drop_partitions FROM TO: drop the partitions that start in [FROM, TO),
# left by an earlier run in a shared database or by this one.
drop_partitions() {
	q "$superuser" "do \$\$
	declare p record;
	begin
	    for p in select name from fleetgate.reading_partitions
	             where from_at >= '$1' and from_at < '$2' loop
	        execute format('drop table fleetgate.%I', p.name);
	        delete from fleetgate.reading_partitions where name = p.name;
	    end loop;
	end \$\$" >/dev/null
}

future=2999-06-15
drop_partitions 2999-01-01 3001-01-01
expect_value "a reading with no partition for its date lands in readings_default" \
	"$superuser" "fleetgate.readings_default" "
	insert into fleetgate.readings $readings_columns
	values $(reading_values 4 "'$future 12:00:00+00'");
	select tableoid::regclass from fleetgate.readings
	where broker_id = '$pbroker' and seq = 4"
ahead=$(q "$superuser" "select partitions_ahead + 1
	from fleetgate.persist_settings")
expect_value "ensure_reading_partitions creates the partitions for a far-future date" \
	"$broker" "$ahead" "
	select fleetgate.ensure_reading_partitions('$future 12:00:00+00')"
expect_value "ensure_reading_partitions for the same date again creates none" \
	"$broker" "0" "
	select fleetgate.ensure_reading_partitions('$future 12:00:00+00')"
future_part=$(q "$superuser" "select name from fleetgate.reading_partitions
	where from_at <= '$future 12:00:00+00' and to_at > '$future 12:00:00+00'")
expect_value "the row in readings_default moved into the new partition" \
	"$superuser" "fleetgate.$future_part|0" "
	select (select tableoid::regclass from fleetgate.readings
	        where broker_id = '$pbroker' and seq = 4) || '|' ||
	       (select count(*) from fleetgate.readings_default
	        where broker_id = '$pbroker' and seq = 4)"
expect_error "the new partition enforces the primary key" "$broker" \
	"duplicate key value violates unique constraint" "
	insert into fleetgate.readings $readings_columns
	values $(reading_values 4 "'$future 12:00:00+00'")"
drop_partitions 2999-01-01 3001-01-01

# partition_interval changed from week to month: the days of each month
# that no weekly partition covers get partitions of their own (named
# after the day they start), and a reading waiting in readings_default
# for one of them moves there.
interval=$(q "$superuser" "select partition_interval from fleetgate.persist_settings")
q "$superuser" "update fleetgate.persist_settings set partition_interval = 'week'" >/dev/null
q "$broker" "select fleetgate.ensure_reading_partitions('2999-06-15 12:00:00+00')" >/dev/null
q "$superuser" "insert into fleetgate.readings $readings_columns
	values $(reading_values 6 "'2999-06-01 12:00:00+00'")" >/dev/null
q "$superuser" "update fleetgate.persist_settings set partition_interval = 'month'" >/dev/null
expect_value "after a change from week to month, partitions are created for the rest of each month" \
	"$broker" "t" "
	select fleetgate.ensure_reading_partitions('2999-06-15 12:00:00+00') > 0"
expect_value "... so that every day of those months is in exactly one partition" \
	"$superuser" "0" "
	select count(*) from generate_series('2999-06-01 00:00:00+00'::timestamptz,
		(select max(to_at) from fleetgate.reading_partitions) - interval '1 day',
		'1 day') d
	where (select count(*) from fleetgate.reading_partitions p
	       where p.from_at <= d and p.to_at > d) <> 1"
expect_value "... and the reading of a day before the first weekly partition left readings_default" \
	"$superuser" "fleetgate.readings_29990601" "
	select tableoid::regclass from fleetgate.readings
	where broker_id = '$pbroker' and seq = 6"
expect_value "... and calling it again creates none" "$broker" "0" "
	select fleetgate.ensure_reading_partitions('2999-06-15 12:00:00+00')"
q "$superuser" "update fleetgate.persist_settings set partition_interval = '$interval'" >/dev/null
drop_partitions 2999-01-01 3001-01-01

# Partitions in the past, for drop_old_readings: 2001-01 and the next ones.
old=2001-01-15
drop_partitions 2000-01-01 2002-01-01
expect_value "ensure_reading_partitions creates partitions for a past date" \
	"$admin" "$ahead" "
	select fleetgate.ensure_reading_partitions('$old 00:00:00+00')"
old_parts=$(q "$superuser" "select string_agg(name, ',' order by from_at)
	from fleetgate.reading_partitions where from_at < '2002-01-01'")
first_old=${old_parts%%,*}
cut_at=$(q "$superuser" "select to_at + interval '1 hour'
	from fleetgate.reading_partitions where name = '$first_old'")
expect_ok "a reading in the oldest past partition is stored" "$superuser" "
	insert into fleetgate.readings $readings_columns
	values $(reading_values 5 "'$old 00:00:00+00'")"
expect_value "drop_old_readings drops only partitions entirely older than keep" \
	"$admin" "$first_old" "
	select * from fleetgate.drop_old_readings(now() - '$cut_at'::timestamptz)"
expect_value "the dropped partition's rows and registry entry are gone" \
	"$superuser" "0|0|${old_parts#*,}" "
	select (select count(*) from fleetgate.readings
	        where broker_id = '$pbroker' and seq = 5) || '|' ||
	       (select count(*) from pg_class where relname = '$first_old'
	        and relnamespace = 'fleetgate'::regnamespace) || '|' ||
	       (select string_agg(name, ',' order by from_at)
	        from fleetgate.reading_partitions where from_at < '2002-01-01')"
expect_value "the current partition and its readings survive drop_old_readings" \
	"$superuser" "1|1" "
	select (select count(*) from fleetgate.reading_partitions
	        where from_at <= now() and to_at > now()) || '|' ||
	       (select count(*) from fleetgate.readings
	        where broker_id = '$pbroker' and seq = 1)"
expect_value "drop_old_readings drops the rest once they are old enough" \
	"$admin" "${old_parts#*,}" "
	select string_agg(n, ',')
	from fleetgate.drop_old_readings(now() - '2002-01-01'::timestamptz) n"

# Audit retention.
q "$superuser" "
	insert into fleetgate.audit_events (at, broker_id, source, event)
	values (now() - interval '30 years', '$pbroker', 'persist', 'sqltest-old'),
	       (now() - interval '2 days', '$pbroker', 'persist', 'sqltest-new')
" >/dev/null
expect_error "purge_audit_events refuses a keep shorter than audit_keep_minimum" \
	"$admin" "audit events are kept at least" "
	select fleetgate.purge_audit_events('1 day')"
audit_keep=$(q "$superuser" "select audit_keep from fleetgate.persist_settings")
expect_error "purge_audit_events refuses an audit_keep setting below the minimum" \
	"$admin" "audit events are kept at least" "
	update fleetgate.persist_settings set audit_keep = '1 day';
	select fleetgate.purge_audit_events()"
q "$superuser" "update fleetgate.persist_settings
	set audit_keep = '$audit_keep'" >/dev/null
expect_value "purge_audit_events deletes only rows older than keep" "$admin" \
	"1"$'\n'"sqltest-new" "
	select fleetgate.purge_audit_events('29 years');
	select string_agg(event, ',') from fleetgate.audit_events
	where broker_id = '$pbroker'"
# The error rolls the insert back with the delete: nothing old is left.
expect_error "outside purge_audit_events the superuser still cannot delete old audit rows" \
	"$superuser" "append-only: DELETE refused" "
	insert into fleetgate.audit_events (at, broker_id, source, event)
	values (now() - interval '30 years', '$pbroker', 'persist', 'sqltest-old');
	delete from fleetgate.audit_events
	where broker_id = '$pbroker' and event = 'sqltest-old'"
expect_error "admin cannot delete audit rows either" "$admin" \
	"permission denied for table audit_events" "
	delete from fleetgate.audit_events where broker_id = '$pbroker'"
expect_value "the audit rows refused deletion are still there" "$superuser" \
	"sqltest-new" "
	select string_agg(event, ',') from fleetgate.audit_events
	where broker_id = '$pbroker'"

expect_error "drop_old_readings refuses a keep that is not positive" "$admin" \
	"keep must be positive" "select fleetgate.drop_old_readings('-1 day')"
expect_error "readings_keep cannot be set to zero or less" "$admin" \
	"persist_settings_readings_keep_positive" "
	update fleetgate.persist_settings set readings_keep = '0'"

# Summary ------------------------------------------------------------------

printf '1..%d\n' "$test_count"
if ((failures > 0)); then
	printf '# %d of %d tests failed\n' "$failures" "$test_count"
	exit 1
fi
printf '# all %d tests passed\n' "$test_count"
