#!/usr/bin/env bash
# ok takes its condition as a string to evaluate, hence single quotes.
# shellcheck disable=SC2016,SC2119 source-path=SCRIPTDIR
# auth.sh: the auth plugin decides at connect, with real clients against a
# real broker and a real registry, and disconnects clients when the
# registry turns against them.
#
# One PostgreSQL cluster and one broker ("main") serve every case; a second
# broker ("second") joins for the last one. Devices the cases need are
# registered before the broker starts (its first registry load), except
# where a case is about a change that reaches a running broker.
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
fg_setup

[[ -f $FG_BUILD/fleetgate_auth.so ]] ||
	fg_bail "$FG_BUILD/fleetgate_auth.so is not built: run make"

# expect_rc WANT DESC: the last fg_client run exited with WANT (0 admitted,
# 2 refused with a CONNACK, 3 TLS/network failure; "2|3" for either).
# expect_audit DESC WHERE [psql -v args]: an audit row after the mark
# matches WHERE within 3 s.
expect_audit() {
	local desc=$1
	shift
	if fg_wait_audit 3 "$@"; then
		pass "$desc"
	else
		fail "$desc" "no audit row where $1; rows since the mark:" \
			"$(fg_audit_rows true)"
	fi
}

# refused_at_connect DESC CERT CLIENT_ID REASON: the plugin refuses the
# connect with a CONNACK, and the refusal is audited with REASON.
refused_at_connect() {
	local desc=$1 cert=$2 id=$3 reason=$4
	fg_connect main "$cert" "$id"
	expect_rc 2 "$desc"
	expect_audit "refused connect of $id is audited with reason $reason" \
		"event = 'connect' and outcome = 'refused' and reason = :'r'
		 and client_id = :'c' and broker_id = 'main'" \
		-v r="$reason" -v c="$id"
}

hex() {
	printf '%s' "$1" | od -An -tx1 | tr -d ' \n'
}

# --- registry and certificates --------------------------------------------
fg_pg_start || fg_bail "PostgreSQL did not start"
fg_ca_make ca
fg_ca_make impostor # same subject name as ca
fg_server_cert

for d in dev-ok dev-revoked dev-reg-expired dev-reg-future dev-victim \
	dev-other dev-susp dev-decom dev-kick-rev dev-kick-susp dev-seen \
	dev-multi dev-big dev-lock dev-lock-susp dev-lock2; do
	fg_device_cert "$d"
	fg_register_device "$d" m1 "$FG_CERTS/$d.crt"
done
fg_device_cert dev-big-new # registered while a broker runs
fg_device_cert dev-unknown # never registered

# The registry's window is in the past / future while the X.509 is valid.
fg_device_cert dev-reg-expired2
fg_register_device dev-reg-expired2 m1 "$FG_CERTS/dev-reg-expired2.crt" \
	"$(fg_iso_date '-10 days')" "$(fg_iso_date '-1 hour')"
fg_device_cert dev-reg-future2
fg_register_device dev-reg-future2 m1 "$FG_CERTS/dev-reg-future2.crt" \
	"$(fg_iso_date '+1 hour')" "$(fg_iso_date '+30 days')"
# The X.509 window is in the past / future while the registry's is current.
fg_device_cert_expired dev-x509-expired
fg_register_device dev-x509-expired m1 "$FG_CERTS/dev-x509-expired.crt" \
	"$(fg_iso_date '-60 days')" "$(fg_iso_date '+30 days')"
fg_device_cert_future dev-x509-future
fg_register_device dev-x509-future m1 "$FG_CERTS/dev-x509-future.crt" \
	"$(fg_iso_date '-1 day')" "$(fg_iso_date '+60 days')"
# Signed by the impostor CA, with its fingerprint registered, so that only
# the CA check can stop it.
fg_device_cert dev-impostor impostor
fg_register_device dev-impostor m1 "$FG_CERTS/dev-impostor.crt"
# A device id of exactly 64 characters, the longest allowed.
long_id=dev-$(printf 'L%.0s' {1..60})
fg_device_cert "$long_id" ca 30 dev-long
fg_register_device "$long_id" m1 "$FG_CERTS/dev-long.crt"
# Rotation: the old certificate now, the new one once the broker runs.
fg_device_cert dev-rot ca 30 dev-rot-old
fg_register_device dev-rot m1 "$FG_CERTS/dev-rot-old.crt"
fg_device_cert dev-rot ca 30 dev-rot-new

fg_revoke dev-revoked "key leaked"
fg_psql_admin "select fleetgate.decommission_device('dev-decom', 'scrapped')" \
	>/dev/null
fg_add_account dash 'correct horse' dashboard m1
fg_add_account dash-off 'battery staple' dashboard m1
fg_add_account dash-lock 'lock pick' dashboard m1
fg_add_account dash-ren 'new name' dashboard m1

fg_audit_mark
fg_broker_start main || fg_bail "broker main did not start"

# --- admitted -------------------------------------------------------------
start=$(fg_now_ms)
fg_connect_until 0 5 main dev-ok || true
expect_rc 0 "a registered device with a valid certificate is admitted"
if (($(fg_now_ms) - start > 300)); then
	fg_diag "the first admission took $(($(fg_now_ms) - start)) ms after the broker started"
fi
expect_audit "the admission is audited as 'connect accepted'" \
	"event = 'connect' and outcome = 'accepted' and client_id = 'dev-ok'
	 and device_id = 'dev-ok' and broker_id = 'main' and source = 'auth'"
expect_audit "the audit row of the admission records the fingerprint" \
	"event = 'connect' and outcome = 'accepted' and client_id = 'dev-ok'
	 and fingerprint = :'fp'" -v fp="${FG_FP[dev-ok]}"
ok 'mosquitto_pub -h 127.0.0.1 -p "${FG_TLS_PORT[main]}" --cafile "$FG_CERTS/ca.crt" \
	--cert "$FG_CERTS/dev-ok.crt" --key "$FG_CERTS/dev-ok.key" -i dev-ok \
	-t fg/test -m hello -q 1' \
	"mosquitto_pub with the valid device certificate is admitted"
fg_connect main dev-ok dev-ok --v311
expect_rc 0 "the valid device is admitted over MQTT 3.1.1 as well"
fg_connect main dev-long
expect_rc 0 "a device id of 64 characters is admitted"

# --- refused by the plugin -------------------------------------------------
refused_at_connect "a certificate the registry does not know is refused" \
	dev-unknown dev-unknown unknown_certificate
refused_at_connect "a revoked certificate is refused" \
	dev-revoked dev-revoked certificate_revoked
refusal="fleetgate-auth: connect refused .*client_id=dev-revoked"
refusal+=" .*reason=certificate_revoked"
ok 'fg_wait_log main "$refusal" 2' \
	"the refusal is logged with client id and reason"
ok '! mosquitto_pub -h 127.0.0.1 -p "${FG_TLS_PORT[main]}" --cafile "$FG_CERTS/ca.crt" \
	--cert "$FG_CERTS/dev-revoked.crt" --key "$FG_CERTS/dev-revoked.key" \
	-i dev-revoked -t fg/test -m hello -q 1 2>/dev/null' \
	"mosquitto_pub with the revoked certificate is refused"
refused_at_connect \
	"a certificate past the registry's not_after is refused although its X.509 is valid" \
	dev-reg-expired2 dev-reg-expired2 certificate_expired
refused_at_connect \
	"a certificate before the registry's not_before is refused although its X.509 is valid" \
	dev-reg-future2 dev-reg-future2 certificate_not_yet_valid
refused_at_connect "a decommissioned device is refused" \
	dev-decom dev-decom device_decommissioned

# --- refused by TLS (or by the plugin) ---------------------------------------
fg_connect main dev-x509-expired
expect_rc '2|3' "an X.509-expired certificate is refused (TLS or plugin)"
fg_connect main dev-x509-future
expect_rc '2|3' "an X.509-not-yet-valid certificate is refused (TLS or plugin)"
fg_connect main dev-impostor
expect_rc '2|3' "a registered certificate signed by another CA with the same name is refused"
is "$(fg_audit_count "outcome = 'accepted' and client_id in
	('dev-x509-expired', 'dev-x509-future', 'dev-impostor')")" 0 \
	"none of them was admitted"

# --- client id ------------------------------------------------------------
fg_connect_bg victim main dev-victim dev-victim --hold 30
if fg_client_wait_line victim '^connack rc=0 ' 5; then
	pass "the victim device is connected"
else
	fail "the victim device is connected" "$(fg_client_out victim)"
fi
refused_at_connect "a valid certificate with another device's client id is refused" \
	dev-other dev-victim client_id_mismatch
sleep 0.3
if fg_client_alive victim && ! grep -q disconnected "$FG_TMP/clients/victim.out"; then
	pass "the other device's existing session is not taken over"
else
	fail "the other device's existing session is not taken over" \
		"$(fg_client_out victim)"
fi
fg_client_stop victim

fg_audit_mark
for id in 'dev-ok+' 'dev-ok#' 'dev/ok' "dev-ok$(printf 'x%.0s' {1..59})"; do
	fg_connect main dev-ok "$id"
	shown=$id
	if ((${#id} > 20)); then
		shown="${id:0:10}... (${#id} characters)"
	fi
	expect_rc 2 "the hostile client id '$shown' is refused"
done
if fg_wait_until 3 fg_sql_is "select count(*) >= 4 from fleetgate.audit_events
	where id > $FG_AUDIT_MARK and event = 'connect' and outcome = 'refused'
	and reason = 'invalid_client_id'" t; then
	pass "the hostile client ids are audited with reason invalid_client_id"
else
	fail "the hostile client ids are audited with reason invalid_client_id" \
		"$(fg_audit_rows "event = 'connect'")"
fi
for ctl in 01 1b 7f; do
	fg_client_run --raw --id-hex "$(hex dev-ok)$ctl" --host 127.0.0.1 \
		--port "${FG_TLS_PORT[main]}" --cafile "$FG_CERTS/ca.crt" \
		--cert "$FG_CERTS/dev-ok.crt" --key "$FG_CERTS/dev-ok.key"
	expect_rc '2|3' "a client id holding control character 0x$ctl is refused (broker or plugin)"
done
is "$(fg_audit_count "outcome = 'accepted'")" 0 \
	"no hostile client id was admitted"

# --- suspension and reactivation -----------------------------------------
fg_psql_admin "select fleetgate.suspend_device('dev-susp', 'stolen')" >/dev/null
fg_audit_mark
fg_connect_until 2 3 main dev-susp || true
expect_rc 2 "a suspended device is refused"
expect_audit "the refusal of the suspended device is audited with reason device_suspended" \
	"event = 'connect' and outcome = 'refused' and reason = 'device_suspended'
	 and client_id = 'dev-susp'"
fg_psql_admin "select fleetgate.reactivate_device('dev-susp')" >/dev/null
fg_connect_until 0 3 main dev-susp || true
expect_rc 0 "the device is admitted again once reactivated"

# --- rotation -------------------------------------------------------------
fg_add_certificate dev-rot "$FG_CERTS/dev-rot-new.crt" >/dev/null
fg_connect_until 0 3 main dev-rot-new || true
expect_rc 0 "during rotation the new certificate is admitted"
fg_connect main dev-rot-old
expect_rc 0 "during rotation the old certificate is still admitted"
fg_revoke dev-rot-old "rotated"
fg_audit_mark
fg_connect_until 2 3 main dev-rot-old || true
expect_rc 2 "after the old certificate is revoked it is refused"
expect_audit "the refusal of the old certificate is audited with reason certificate_revoked" \
	"event = 'connect' and outcome = 'refused' and reason = 'certificate_revoked'
	 and client_id = 'dev-rot' and fingerprint = :'fp'" -v fp="${FG_FP[dev-rot-old]}"
fg_connect main dev-rot-new
expect_rc 0 "after the old certificate is revoked the new one is still admitted"

# --- kicks ----------------------------------------------------------------
fg_connect_bg kick-rev main dev-kick-rev dev-kick-rev --wait-disconnect 10
fg_connect_bg kick-susp main dev-kick-susp dev-kick-susp --v311 --wait-disconnect 10
fg_client_wait_line kick-rev '^ready$' 5 || true
fg_client_wait_line kick-susp '^ready$' 5 || true
fg_audit_mark
fg_expect_kick \
	"revoking a connected device's certificate kicks it within ${FG_KICK_LIMIT_MS} ms" \
	kick-rev fg_revoke dev-kick-rev "stolen"
like "$(fg_field "$FG_OUT" rc)" '^152$' \
	"the MQTT 5 client is told why (DISCONNECT 0x98, administrative action)"
expect_audit "the kick is audited as 'kick kicked' with reason certificate_revoked" \
	"event = 'kick' and outcome = 'kicked' and device_id = 'dev-kick-rev'
	 and reason = 'certificate_revoked' and broker_id = 'main'"
fg_connect main dev-kick-rev
expect_rc 2 "the kicked device cannot come back"
fg_expect_kick \
	"suspending a connected device disconnects it within ${FG_KICK_LIMIT_MS} ms of the commit" \
	kick-susp fg_psql_admin "select fleetgate.suspend_device('dev-kick-susp', 'lost')"
expect_audit "the kick is audited with reason device_suspended" \
	"event = 'kick' and outcome = 'kicked' and device_id = 'dev-kick-susp'
	 and reason = 'device_suspended'"

# --- accounts on the plain listener ---------------------------------------
fg_audit_mark
ok 'mosquitto_pub -h 127.0.0.1 -p "${FG_PLAIN_PORT[main]}" -u dash -P "correct horse" \
	-i dash-pub -t fg/dash -m hello -q 1' \
	"a dashboard account with the right password is admitted (mosquitto_pub)"
ok 'mosquitto_sub -h 127.0.0.1 -p "${FG_PLAIN_PORT[main]}" -u dash -P "correct horse" \
	-i dash-sub -t fg/dash -E' \
	"a dashboard account with the right password is admitted (mosquitto_sub)"
fg_connect_plain main dash-1 --username dash --password 'correct horse'
expect_rc 0 "a dashboard account with the right password is admitted (fg_client)"
expect_audit "the account's admission is audited with its username" \
	"event = 'connect' and outcome = 'accepted' and username = 'dash'
	 and client_id = 'dash-1'"
ok '! mosquitto_pub -h 127.0.0.1 -p "${FG_PLAIN_PORT[main]}" -u dash -P wrong \
	-i dash-pub -t fg/dash -m hello -q 1 2>/dev/null' \
	"a dashboard account with a wrong password is refused (mosquitto_pub)"
fg_connect_plain main dash-2 --username dash --password wrong
expect_rc 2 "a dashboard account with a wrong password is refused (fg_client)"
expect_audit "the wrong password is audited with reason bad_password" \
	"event = 'connect' and outcome = 'refused' and reason = 'bad_password'
	 and client_id = 'dash-2' and username = 'dash'"
fg_connect_plain main dash-3 --username nobody-here --password 'correct horse'
expect_rc 2 "an unknown username is refused"
expect_audit "the unknown username is audited with reason unknown_account" \
	"event = 'connect' and outcome = 'refused' and reason = 'unknown_account'
	 and client_id = 'dash-3'"
fg_connect_plain main dash-4
expect_rc 2 "a client without certificate or username is refused"
expect_audit "it is audited with reason no_credentials" \
	"event = 'connect' and outcome = 'refused' and reason = 'no_credentials'
	 and client_id = 'dash-4'"
fg_connect_plain main 'dash#5' --username dash --password 'correct horse'
expect_rc 2 "an account with a hostile client id is refused"
fg_connect_plain main dash-6 --username dash-off --password 'battery staple'
expect_rc 0 "a second account is admitted before it is disabled"
fg_psql_admin "update fleetgate.accounts set disabled = true
	where username = 'dash-off'" >/dev/null
fg_retry_rc 2 3 fg_connect_plain main dash-6 --username dash-off \
	--password 'battery staple' || true
expect_rc 2 "a disabled account is refused"
expect_audit "the disabled account is audited with reason account_disabled" \
	"event = 'connect' and outcome = 'refused' and reason = 'account_disabled'
	 and username = 'dash-off'"

# --- last seen --------------------------------------------------------------
is "$(fg_psql_super "select last_seen_at is null from fleetgate.devices
	where id = 'dev-seen'")" t "a device that never connected has no last_seen_at"
before=$(fg_psql_super "select now()")
fg_connect_bg seen main dev-seen dev-seen --hold 10
fg_client_wait_line seen '^connack rc=0 ' 5 || true
if fg_wait_sql "select last_seen_at >= '$before'::timestamptz - interval '1 second'
	from fleetgate.devices where id = 'dev-seen'" t 5; then
	pass "last_seen_at is set within 5 s of a connect"
else
	fail "last_seen_at is set within 5 s of a connect" \
		"$(fg_psql_super "select last_seen_at from fleetgate.devices
			where id = 'dev-seen'")"
fi
fg_client_stop seen

# --- two brokers, one registry ---------------------------------------------
fg_broker_start second || fg_bail "broker second did not start"
fg_connect_bg multi-main main dev-multi dev-multi --wait-disconnect 10
fg_connect_bg multi-second second dev-multi dev-multi --wait-disconnect 10
ready=0
fg_client_wait_line multi-main '^ready$' 5 && ready=$((ready + 1))
# The second broker's first registry load may still be under way.
for _ in 1 2 3 4 5 6 7 8 9 10; do
	if fg_client_wait_line multi-second '^ready$' 5; then
		ready=$((ready + 1))
		break
	fi
	fg_client_wait multi-second 1
	fg_connect_bg multi-second second dev-multi dev-multi --wait-disconnect 10
	sleep 0.2
done
is "$ready" 2 "one device is connected to each of two brokers"
fg_audit_mark
fg_expect_kick \
	"revoking its certificate disconnects it from both brokers within ${FG_KICK_LIMIT_MS} ms" \
	"multi-main multi-second" fg_revoke dev-multi "compromised"
if fg_wait_sql "select string_agg(distinct broker_id, ',' order by broker_id)
	from fleetgate.audit_events where id > $FG_AUDIT_MARK and event = 'kick'
	and device_id = 'dev-multi'" "main,second" 3; then
	pass "each broker audits its own kick"
else
	fail "each broker audits its own kick" "$(fg_audit_rows "event = 'kick'")"
fi

ok 'fg_broker_alive main && fg_broker_alive second' \
	"both brokers are still running at the end"

# --- withdrawals ahead of the full reload ----------------------------------
# The loader reads the rows a burst of notifications names; when it cannot
# patch the registry with them, it hands the broker what they withdraw and
# reads the whole registry again. A new municipality in the burst is a
# change no patch covers. An administrator's transaction that holds a
# lock on a table the full read needs (rate_limits, read last) holds up the
# reload; a revocation, a suspension and a disabled account, committed
# together, still take effect. The read gives up the lock after 500 ms
# and is tried again, following notifications in between: a revocation
# committed while the lock is still held takes effect too, and is not
# patched into a registry that lacks the first burst.
fg_connect_bg lock-rev main dev-lock dev-lock --wait-disconnect 10
fg_connect_bg lock-rev2 main dev-lock2 dev-lock2 --wait-disconnect 10
fg_connect_bg lock-susp main dev-lock-susp dev-lock-susp --v311 --wait-disconnect 10
fg_client_bg lock-acct --host 127.0.0.1 --port "${FG_PLAIN_PORT[main]}" \
	--id dash-lock-1 --username dash-lock --password 'lock pick' \
	--wait-disconnect 10
fg_client_wait_line lock-rev '^ready$' 5 || true
fg_client_wait_line lock-rev2 '^ready$' 5 || true
fg_client_wait_line lock-susp '^ready$' 5 || true
fg_client_wait_line lock-acct '^ready$' 5 || true
fg_log_mark main
fg_psql_super "begin;
	lock table fleetgate.rate_limits in access exclusive mode;
	select pg_sleep(5);
	commit;" >/dev/null 2>&1 &
lock_pid=$!
fg_track "$lock_pid"
lock_held() {
	[[ $(fg_psql_super "select count(*) from pg_locks l
		join pg_class c on c.oid = l.relation
		where c.relname = 'rate_limits' and l.mode = 'AccessExclusiveLock'
		  and l.granted") == 1 ]]
}
ok 'fg_wait_until 5 lock_held' "a transaction holds a lock on rate_limits"
fg_expect_kick \
	"while the registry reload waits for the lock, revoking a certificate, suspending a device and disabling an account in one transaction kick within ${FG_KICK_LIMIT_MS} ms" \
	"lock-rev lock-susp lock-acct" fg_psql_admin "begin;
		select fleetgate.add_municipality('m-lock', 'Lock test');
		select fleetgate.revoke_certificate(:'fp', 'stolen');
		select fleetgate.suspend_device('dev-lock-susp', 'lost');
		update fleetgate.accounts set disabled = true
			where username = 'dash-lock';
		commit;" -v fp="${FG_FP[dev-lock]}"
ok 'fg_wait_log main "a registry table is locked by another transaction; reading it again" 5' \
	"the broker logs that the registry read met a locked table"
fg_expect_kick \
	"a revocation committed while the lock is still held kicks within ${FG_KICK_LIMIT_MS} ms" \
	lock-rev2 fg_revoke dev-lock2 "stolen too"
fg_connect main dev-lock dev-lock
expect_rc 2 "while the reload waits, the revoked device cannot come back"
fg_connect main dev-lock-susp dev-lock-susp
expect_rc 2 "while the reload waits, the suspended device cannot come back"
fg_connect_plain main dash-lock-2 --username dash-lock --password 'lock pick'
expect_rc 2 "while the reload waits, the disabled account cannot log in"
fg_connect main dev-ok dev-ok
expect_rc 0 "while the reload waits, other devices are admitted"
ok 'lock_held' "the lock was held throughout (the full reload had not run)"
ok '! fg_log_has main "registry (loaded|patched) from database"' \
	"no registry was loaded or patched meanwhile"
ok 'fg_log_has main "access withdrawn ahead of the registry reload: certificates=1 devices=1 accounts=1"' \
	"the broker logs what was withdrawn ahead of the reload"
ok 'fg_log_has main "access withdrawn ahead of the registry reload: certificates=2 devices=1 accounts=1"' \
	"the second revocation joins the set in force"
wait "$lock_pid" || true
ok 'fg_wait_log main "registry loaded from database" 15' \
	"the registry is loaded once the lock is released"
fg_connect main dev-lock dev-lock
expect_rc 2 "after the reload the revoked device is still refused"
fg_connect_plain main dash-lock-3 --username dash-lock --password 'lock pick'
expect_rc 2 "after the reload the disabled account is still refused"

# --- a renamed account ------------------------------------------------------
# A patch drops a renamed row under its old key (the notification names
# both): a client logged in under the old username is disconnected, and
# the new one logs in with the same password. The new name holds a quote
# and a backslash, which the loader's query by key must escape.
fg_client_bg ren-acct --host 127.0.0.1 --port "${FG_PLAIN_PORT[main]}" \
	--id dash-ren-1 --username dash-ren --password 'new name' \
	--wait-disconnect 10
fg_client_wait_line ren-acct '^ready$' 5 || true
fg_log_mark main
fg_expect_kick \
	"renaming an account disconnects the client logged in under the old username within ${FG_KICK_LIMIT_MS} ms" \
	ren-acct fg_psql_admin "update fleetgate.accounts set username = :'new'
		where username = 'dash-ren'" -v new='dash-"re\named'
ok 'fg_wait_log main "registry patched from database" 5' \
	"the rename is patched into the registry, not read in full"
fg_connect_plain main dash-ren-2 --username dash-ren --password 'new name'
expect_rc 2 "the old username is refused"
fg_connect_plain main dash-ren-3 --username 'dash-"re\named' --password 'new name'
expect_rc 0 "the new username logs in with the same password"

# A notification without a payload asks for a full read.
fg_log_mark main
fg_psql_super "notify fleetgate_registry" >/dev/null
ok 'fg_wait_log main "registry loaded from database" 5' \
	"NOTIFY fleetgate_registry without a payload makes the broker read the whole registry"

# --- churn: many small changes, two brokers ---------------------------------
# 400 administrator changes, each its own transaction, committed as fast
# as psql sends them with a short pause after every tenth (but for the
# last 100, some of which arrive while the loader reads the rows of earlier
# ones): devices,
# certificates and accounts added, changed, revoked, renamed and removed
# (test/integration/registry_churn.py). Both
# brokers patch their registries burst by burst; once the changes stop,
# each broker's snapshot (written from its newest registry) must hold
# exactly the rows the database holds.
fg_ensure_municipality m-churn
fg_log_mark main
fg_log_mark second
churn_sql=$FG_TMP/churn.sql
python3 "$FG_ROOT/test/integration/registry_churn.py" sql 7 400 \
	"$(fg_passwd_hash churn 'churn pw')" >"$churn_sql"
ok 'fg_psql_super "$(cat "$churn_sql")" >/dev/null' \
	"400 registry changes are committed one by one"
churn_dump() {
	fg_psql_super "select 'd|' || id || '|' || municipality_id || '|' || status
		from fleetgate.devices
		union all
		select 'c|' || fingerprint || '|' || device_id || '|' ||
		       case when revoked_at is null then 'False' else 'True' end
		from fleetgate.device_certificates
		union all
		select 'a|' || username || '|' || role || '|' ||
		       coalesce(municipality_id, 'None') || '|' ||
		       case when disabled then 'True' else 'False' end
		from fleetgate.accounts" >"$FG_TMP/churn.dump"
}
churn_dump
for b in main second; do
	same() {
		python3 "$FG_ROOT/test/integration/registry_churn.py" compare \
			"$FG_TMP/$1.snapshot" "$FG_TMP/churn.dump" \
			>"$FG_TMP/churn-$1.diff" 2>&1
	}
	if fg_wait_until 15 same "$b"; then
		pass "[$b] after the churn its registry holds exactly the database's rows"
	else
		fail "[$b] after the churn its registry holds exactly the database's rows" \
			"$(cat "$FG_TMP/churn-$b.diff")"
	fi
	patches=$(tail -c +"$((${FG_LOG_MARK[$b]:-0} + 1))" "$FG_TMP/$b.log" |
		grep -c 'patched the registry' || true)
	fulls=$(tail -c +"$((${FG_LOG_MARK[$b]:-0} + 1))" "$FG_TMP/$b.log" |
		grep -c 'read the whole registry' || true)
	fg_diag "[$b] churn: $patches patches, $fulls full reads"
	ok '((patches >= 20))' "[$b] the churn was patched in ($patches patches, $fulls full reads)"
done

# --- changes with a large registry ------------------------------------------
# With a fleet of 100,000 devices (fewer under the sanitizers, which slow
# the loader down by more than their FG_SLOW) a revocation must still
# disconnect within FG_KICK_LIMIT_MS, and a device registered while the
# broker runs is admitted as fast: each change is patched into the
# registry (the rows it names, read by key), where a full read of the
# registry takes hundreds of milliseconds. The snapshot file is written
# after the broker thread has the new registry, not before.
big=$((100000 / (FG_SLOW * FG_SLOW)))
# Filler rows in bulk, without the per-row audit trigger and NOTIFY.
fg_psql_super "set session_replication_role = replica;
	insert into fleetgate.devices (id, municipality_id, status)
	select 'fill-' || i, 'm1', 'active' from generate_series(1, $big) i;
	insert into fleetgate.device_certificates (fingerprint, device_id,
		not_before, not_after)
	select encode(sha256(('filler ' || i)::bytea), 'hex'), 'fill-' || i,
		now() - interval '1 day', now() + interval '1 year'
	from generate_series(1, $big) i;" >/dev/null ||
	fail "the filler devices were added"
ndev=$(fg_psql_super "select count(*) from fleetgate.devices")
ncert=$(fg_psql_super "select count(*) from fleetgate.device_certificates")
fg_broker_start big || fg_bail "broker big did not start"
ok 'fg_wait_log big "fleetgate: registry loaded from database devices=$ndev certificates=$ncert " 30' \
	"a registry with $big filler devices is loaded ($ndev devices, $ncert certificates)"
fg_connect_bg kick-big big dev-big dev-big --wait-disconnect 10
fg_client_wait_line kick-big '^ready$' 10 || true
fg_log_mark big
fg_expect_kick \
	"with $big more devices registered, revoking a certificate still kicks within ${FG_KICK_LIMIT_MS} ms" \
	kick-big fg_revoke dev-big "stolen"
ok 'fg_wait_log big "registry patched from database devices=$ndev certificates=$ncert " 5' \
	"the revocation is patched into the registry of $ndev devices"
# A device registered while the broker runs: the time from the commit to
# its first admitted connect.
t0=$(fg_now_ms)
fg_register_device dev-big-new m1 "$FG_CERTS/dev-big-new.crt" ||
	fail "dev-big-new was registered"
admitted() {
	fg_connect big dev-big-new dev-big-new
	[[ $FG_RC == 0 ]]
}
if fg_wait_until $(((FG_KICK_LIMIT_MS / 1000) + 5)) admitted; then
	t1=$(fg_now_ms)
	fg_diag "dev-big-new: admitted $((t1 - t0)) ms after its registration began"
	ok '((t1 - t0 < FG_KICK_LIMIT_MS))' \
		"with $ndev devices registered, a new device is admitted within ${FG_KICK_LIMIT_MS} ms of its registration [$((t1 - t0)) ms]"
else
	fail "with $ndev devices registered, a new device is admitted" \
		"last attempt (rc=$FG_RC): $FG_OUT"
fi
patched=$(grep -o 'patched the registry: rows=[0-9]* in [0-9]* ms' \
	"$FG_TMP/big.log" | tail -n 1) || true
full=$(grep -o 'read the whole registry: devices=[0-9]* in [0-9]* ms' \
	"$FG_TMP/big.log" | head -n 1) || true
fg_diag "loader, $ndev devices: $full; last change: $patched"
ok '[[ -n $patched && -n $full ]]' \
	"the loader logs how long the full read and the patches took"
fg_broker_stop big
fg_psql_super "set session_replication_role = replica;
	delete from fleetgate.device_certificates where device_id like 'fill-%';
	delete from fleetgate.devices where id like 'fill-%';" >/dev/null
