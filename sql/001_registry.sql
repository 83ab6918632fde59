-- 001_registry.sql: the fleetgate device registry, its audit trail and the
-- roles the broker and the administrators connect as.
--
-- Applied by sql/migrate.sh as a superuser (or as a role that may create
-- roles and schemas). The whole file is one transaction: it either creates
-- everything or leaves the database untouched.
--
-- Session settings read by the audit trigger:
--   fleetgate.actor   who is making the change (an admin tool sets it to the
--                     human operator); defaults to the session user.
--   fleetgate.reason  why; the admin functions set it for their own change.

begin;

-- Refuse to run unless the database is at version 0 (no fleetgate schema).
do $$
begin
    -- Two migrate.sh runs against one database must not interleave.
    perform pg_catalog.pg_advisory_xact_lock(
        pg_catalog.hashtext('fleetgate.schema_migration'));

    if to_regclass('fleetgate.schema_version') is not null then
        if exists (select 1 from fleetgate.schema_version where version >= 1) then
            raise exception 'fleetgate migration 001 is already applied'
                using errcode = 'object_not_in_prerequisite_state';
        end if;
    end if;
    if exists (select 1 from pg_catalog.pg_namespace
               where nspname = 'fleetgate') then
        raise exception 'schema fleetgate exists but has no version 1 row; '
                        'it was not created by these migrations'
            using errcode = 'object_not_in_prerequisite_state';
    end if;
end
$$;

-- Group roles. Roles are shared by every database of the cluster, so another
-- database may already have created them; a concurrent creator is tolerated.
do $$
declare
    r text;
begin
    foreach r in array array['fleetgate_broker', 'fleetgate_admin'] loop
        if not exists (select 1 from pg_catalog.pg_roles where rolname = r) then
            begin
                execute format('create role %I nologin', r);
            exception when duplicate_object then
                null;
            end;
        end if;
    end loop;
end
$$;

create schema fleetgate;
revoke all on schema fleetgate from public;

create table fleetgate.schema_version (
    version     int primary key,
    applied_at  timestamptz not null default now()
);

-- Migrations after this one start with "call fleetgate.assert_migration(N);"
-- so that each refuses to run out of order, exactly as this file does.
create procedure fleetgate.assert_migration(this_version int)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    current_version int;
begin
    perform pg_advisory_xact_lock(hashtext('fleetgate.schema_migration'));
    select max(version) into current_version from fleetgate.schema_version;
    if exists (select 1 from fleetgate.schema_version
               where version = this_version) then
        raise exception 'fleetgate migration % is already applied',
                        lpad(this_version::text, 3, '0')
            using errcode = 'object_not_in_prerequisite_state';
    end if;
    if current_version is distinct from this_version - 1 then
        raise exception 'fleetgate migration % needs the database at version %, '
                        'but it is at version %',
                        lpad(this_version::text, 3, '0'), this_version - 1,
                        coalesce(current_version, 0)
            using errcode = 'object_not_in_prerequisite_state';
    end if;
end
$$;

-- Input checks -------------------------------------------------------------

-- Fingerprints arrive in the form openssl prints them ('AB:CD:...') or as
-- bare hex; the registry stores exactly one form so that the broker can
-- compare with a plain equality on the primary key.
create function fleetgate.normalize_fingerprint(fingerprint text)
returns text
language plpgsql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    s text := btrim(fingerprint);
begin
    if s ~ '^[0-9A-Fa-f]{64}$' then
        return lower(s);
    end if;
    if s ~ '^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31}$' then
        return lower(replace(s, ':', ''));
    end if;
    raise exception 'invalid certificate fingerprint %',
                    coalesce(quote_literal(left(fingerprint, 120)), 'NULL')
        using errcode = 'invalid_parameter_value',
              hint = 'Give the SHA-256 fingerprint of the DER certificate as '
                     '64 hex digits or as 32 colon-separated hex pairs '
                     '(openssl x509 -noout -fingerprint -sha256).';
end
$$;

-- mosquitto_passwd hashes: $6$salt$hash (SHA-512) or $7$iterations$salt$hash
-- (PBKDF2-SHA-512), base64 parts. Used by the CHECK constraints and by the
-- admin functions, so there is one definition of the format.
create function fleetgate.is_passwd_hash(hash text)
returns boolean
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select hash ~ '^\$(6|7\$[0-9]+)\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}$'
$$;

-- Registry tables ----------------------------------------------------------

-- Municipality ids end up in topic names and log lines, hence the narrow
-- alphabet (no '/', '+', '#' or blanks).
create table fleetgate.municipalities (
    id          text primary key
                constraint municipalities_id_format
                check (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    name        text not null
                constraint municipalities_name_not_blank
                check (btrim(name) <> ''),
    created_at  timestamptz not null default now()
);

-- The device id is also the MQTT client id the device must connect with.
create table fleetgate.devices (
    id               text primary key
                     constraint devices_id_format
                     check (id ~ '^[A-Za-z0-9._:-]{1,64}$'),
    municipality_id  text not null references fleetgate.municipalities (id),
    status           text not null default 'active'
                     constraint devices_status_known
                     check (status in ('active', 'suspended', 'decommissioned')),
    require_api_key  boolean not null default false,
    api_key_hash     text null
                     constraint devices_api_key_hash_format
                     check (api_key_hash is null
                            or fleetgate.is_passwd_hash(api_key_hash)),
    created_at       timestamptz not null default now(),
    last_seen_at     timestamptz null
);
create index devices_municipality_id_idx
    on fleetgate.devices (municipality_id);

create table fleetgate.device_certificates (
    -- SHA-256 of the DER certificate, lowercase hex without colons.
    fingerprint        text primary key
                       constraint device_certificates_fingerprint_format
                       check (fingerprint ~ '^[0-9a-f]{64}$'),
    device_id          text not null references fleetgate.devices (id),
    not_before         timestamptz not null,
    not_after          timestamptz not null,
    revoked_at         timestamptz null,
    revocation_reason  text null,
    added_at           timestamptz not null default now(),
    constraint device_certificates_validity_order
        check (not_after > not_before),
    -- A reason without a revocation would be misleading in the snapshot.
    constraint device_certificates_reason_needs_revocation
        check (revoked_at is not null or revocation_reason is null)
);
create index device_certificates_device_id_idx
    on fleetgate.device_certificates (device_id);

create table fleetgate.accounts (
    username            text primary key
                        constraint accounts_username_format
                        check (username ~ '^[^[:cntrl:][:space:]]{1,64}$'),
    password_hash       text not null
                        constraint accounts_password_hash_format
                        check (fleetgate.is_passwd_hash(password_hash)),
    role                text not null
                        constraint accounts_role_format
                        check (role ~ '^[A-Za-z0-9._-]{1,64}$'),
    municipality_id     text null references fleetgate.municipalities (id),
    cross_municipality  boolean not null default false,
    disabled            boolean not null default false,
    created_at          timestamptz not null default now()
);

-- Audit trail --------------------------------------------------------------

-- Written by the brokers (source 'auth' and later 'acl', 'ratelimit',
-- 'persist') and by the registry trigger below (source 'admin').
-- device_id carries no foreign key: history must outlive the device.
create table fleetgate.audit_events (
    id           bigserial primary key,
    at           timestamptz not null default now(),
    broker_id    text,
    source       text not null
                 constraint audit_events_source_known
                 check (source in ('auth', 'admin', 'acl', 'ratelimit',
                                   'persist')),
    event        text not null,
    outcome      text,
    reason       text,
    device_id    text,
    client_id    text,
    username     text,
    fingerprint  text,
    address      text,
    actor        text,
    old_value    jsonb,
    new_value    jsonb,
    detail       jsonb
);
create index audit_events_at_idx on fleetgate.audit_events (at);
create index audit_events_device_id_at_idx
    on fleetgate.audit_events (device_id, at);

-- History is append-only for everyone, the table owner included: privileges
-- keep the broker and admin roles out, and this trigger stops a superuser's
-- stray UPDATE or DELETE too. Retention is a deliberate owner operation
-- (TRUNCATE, or disabling this trigger), never an accident.
-- Rows with source 'admin' are reserved for the registry trigger, so that a
-- broker credential cannot forge an administrator's change.
create function fleetgate.audit_events_guard()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if tg_op <> 'INSERT' then
        raise exception 'fleetgate.audit_events is append-only: % refused',
                        tg_op
            using errcode = 'insufficient_privilege';
    end if;
    if new.source = 'admin' and not pg_has_role(
            current_user,
            (select relowner from pg_class where oid = tg_relid),
            'USAGE') then
        raise exception 'audit rows with source ''admin'' are written only by '
                        'the registry trigger'
            using errcode = 'insufficient_privilege';
    end if;
    return new;
end
$$;

create trigger append_only
    before update or delete on fleetgate.audit_events
    for each row execute function fleetgate.audit_events_guard();
create trigger reserve_admin_source
    before insert on fleetgate.audit_events
    for each row when (new.source = 'admin')
    execute function fleetgate.audit_events_guard();

-- Secrets never enter the audit trail: a hash is replaced by '***' (a NULL
-- stays NULL, so that clearing a key remains visible).
create function fleetgate.redact_secrets(row_value jsonb)
returns jsonb
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select row_value || coalesce(
        (select jsonb_object_agg(k, '***'::text)
         from unnest(array['password_hash', 'api_key_hash']) as k
         where row_value ->> k is not null),
        '{}'::jsonb)
$$;

-- One audit row and one notification per changed registry row.
-- SECURITY DEFINER because the roles that change the registry hold no INSERT
-- on audit_events, and rows with source 'admin' are reserved for the owner;
-- session_user still names the connected user, which the actor falls back to.
create function fleetgate.audit_registry_change()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    op         text := lower(tg_op);
    old_row    jsonb;
    new_row    jsonb;
    row_value  jsonb;
    key_name   text;
    changed    jsonb;
begin
    if tg_op <> 'INSERT' then
        old_row := to_jsonb(old);
    end if;
    if tg_op <> 'DELETE' then
        new_row := to_jsonb(new);
    end if;
    row_value := coalesce(new_row, old_row);
    key_name := case tg_table_name
                    when 'device_certificates' then 'fingerprint'
                    when 'accounts' then 'username'
                    else 'id'
                end;

    -- Names of the columns that changed, computed before redaction so that
    -- a new password shows up as a change even though both sides read '***'.
    if tg_op = 'UPDATE' then
        select coalesce(jsonb_agg(n.key order by n.key), '[]'::jsonb)
          into changed
          from jsonb_each(new_row) as n
         where n.value is distinct from old_row -> n.key;
    end if;

    insert into fleetgate.audit_events
        (source, event, actor, reason, device_id, fingerprint, username,
         old_value, new_value, detail)
    values (
        'admin',
        tg_table_name || '_' || op,
        coalesce(nullif(current_setting('fleetgate.actor', true), ''),
                 session_user::text),
        nullif(current_setting('fleetgate.reason', true), ''),
        case tg_table_name
            when 'devices' then row_value ->> 'id'
            when 'device_certificates' then row_value ->> 'device_id'
        end,
        case when tg_table_name = 'device_certificates'
             then row_value ->> 'fingerprint' end,
        case when tg_table_name = 'accounts'
             then row_value ->> 'username' end,
        fleetgate.redact_secrets(old_row),
        fleetgate.redact_secrets(new_row),
        jsonb_strip_nulls(jsonb_build_object(
            'session_user', session_user::text,
            'changed', changed)));

    -- Brokers LISTEN here and reload; the payload only says what to look at.
    perform pg_notify('fleetgate_registry',
                      jsonb_build_object('table', tg_table_name,
                                         'op', op,
                                         'id', row_value ->> key_name)::text);
    return null;
end
$$;

create trigger audit_change
    after insert or update or delete on fleetgate.municipalities
    for each row execute function fleetgate.audit_registry_change();

-- The brokers write last_seen_at in batches; an update that touches nothing
-- else is bookkeeping, not an administrative change, and must neither fill
-- the audit trail nor wake every broker. Comparing the whole row minus that
-- column keeps columns added later audited without editing this condition.
create trigger audit_change
    after insert or delete on fleetgate.devices
    for each row execute function fleetgate.audit_registry_change();
create trigger audit_update
    after update on fleetgate.devices
    for each row
    when ((to_jsonb(old) - 'last_seen_at')
          is distinct from (to_jsonb(new) - 'last_seen_at'))
    execute function fleetgate.audit_registry_change();

create trigger audit_change
    after insert or update or delete on fleetgate.device_certificates
    for each row execute function fleetgate.audit_registry_change();

create trigger audit_change
    after insert or update or delete on fleetgate.accounts
    for each row execute function fleetgate.audit_registry_change();

-- Admin functions ----------------------------------------------------------
--
-- Plain (SECURITY INVOKER) functions: they only do what the caller's table
-- privileges allow, and exist to validate input and to give clear errors.
-- Error codes: invalid_parameter_value for bad input, no_data_found for an
-- unknown object, unique_violation for a duplicate, and
-- object_not_in_prerequisite_state for a change the current state forbids.
-- Values echoed in messages are quoted and cut to 120 characters; hashes are
-- never echoed, since a caller might pass a plain password by mistake.

create function fleetgate.add_municipality(id text, name text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if add_municipality.id is null
       or add_municipality.id !~ '^[A-Za-z0-9._-]{1,64}$' then
        raise exception 'invalid municipality id %',
                        coalesce(quote_literal(left(add_municipality.id, 120)),
                                 'NULL')
            using errcode = 'invalid_parameter_value',
                  hint = '1 to 64 characters from A-Z a-z 0-9 . _ -';
    end if;
    if coalesce(btrim(add_municipality.name), '') = '' then
        raise exception 'municipality name must not be empty'
            using errcode = 'invalid_parameter_value';
    end if;
    if exists (select 1 from fleetgate.municipalities m
               where m.id = add_municipality.id) then
        raise exception 'municipality % already exists',
                        quote_literal(add_municipality.id)
            using errcode = 'unique_violation';
    end if;
    insert into fleetgate.municipalities (id, name)
    values (add_municipality.id, add_municipality.name);
end
$$;

create function fleetgate.register_device(id text, municipality_id text,
                                          require_api_key boolean default false)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if register_device.id is null
       or register_device.id !~ '^[A-Za-z0-9._:-]{1,64}$' then
        raise exception 'invalid device id %',
                        coalesce(quote_literal(left(register_device.id, 120)),
                                 'NULL')
            using errcode = 'invalid_parameter_value',
                  hint = '1 to 64 characters from A-Z a-z 0-9 . _ : -; '
                         'it is the MQTT client id of the device';
    end if;
    if register_device.require_api_key is null then
        raise exception 'require_api_key must be true or false'
            using errcode = 'invalid_parameter_value';
    end if;
    if not exists (select 1 from fleetgate.municipalities m
                   where m.id = register_device.municipality_id) then
        raise exception 'unknown municipality %',
                        coalesce(quote_literal(
                                     left(register_device.municipality_id, 120)),
                                 'NULL')
            using errcode = 'no_data_found';
    end if;
    if exists (select 1 from fleetgate.devices d
               where d.id = register_device.id) then
        raise exception 'device % is already registered',
                        quote_literal(register_device.id)
            using errcode = 'unique_violation';
    end if;
    insert into fleetgate.devices (id, municipality_id, require_api_key)
    values (register_device.id, register_device.municipality_id,
            register_device.require_api_key);
end
$$;

-- Returns the fingerprint as stored (lowercase hex).
create function fleetgate.add_certificate(device_id text, fingerprint text,
                                          not_before timestamptz,
                                          not_after timestamptz)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    fp            text := fleetgate.normalize_fingerprint(
                              add_certificate.fingerprint);
    device_status text;
    owner_id      text;
begin
    if add_certificate.not_before is null or add_certificate.not_after is null then
        raise exception 'not_before and not_after are both required'
            using errcode = 'invalid_parameter_value';
    end if;
    if add_certificate.not_after <= add_certificate.not_before then
        raise exception 'not_after (%) must be later than not_before (%)',
                        add_certificate.not_after, add_certificate.not_before
            using errcode = 'invalid_parameter_value';
    end if;

    -- Lock the device row so that it cannot be decommissioned meanwhile.
    select d.status into device_status
      from fleetgate.devices d
     where d.id = add_certificate.device_id
       for update;
    if not found then
        raise exception 'unknown device %',
                        coalesce(quote_literal(left(add_certificate.device_id,
                                                    120)), 'NULL')
            using errcode = 'no_data_found';
    end if;
    if device_status = 'decommissioned' then
        raise exception 'device % is decommissioned; it takes no new certificates',
                        quote_literal(add_certificate.device_id)
            using errcode = 'object_not_in_prerequisite_state';
    end if;

    select c.device_id into owner_id
      from fleetgate.device_certificates c
     where c.fingerprint = fp;
    if found then
        raise exception 'certificate % is already registered (device %)',
                        fp, quote_literal(owner_id)
            using errcode = 'unique_violation';
    end if;

    insert into fleetgate.device_certificates
        (fingerprint, device_id, not_before, not_after)
    values (fp, add_certificate.device_id, add_certificate.not_before,
            add_certificate.not_after);
    return fp;
end
$$;

create function fleetgate.revoke_certificate(fingerprint text, reason text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    fp           text := fleetgate.normalize_fingerprint(
                             revoke_certificate.fingerprint);
    revoked      timestamptz;
    prior_reason text := current_setting('fleetgate.reason', true);
begin
    if coalesce(btrim(revoke_certificate.reason), '') = '' then
        raise exception 'a revocation reason is required'
            using errcode = 'invalid_parameter_value';
    end if;

    select c.revoked_at into revoked
      from fleetgate.device_certificates c
     where c.fingerprint = fp
       for update;
    if not found then
        raise exception 'unknown certificate fingerprint %', fp
            using errcode = 'no_data_found';
    end if;
    if revoked is not null then
        raise exception 'certificate % is already revoked (since %)',
                        fp, revoked
            using errcode = 'object_not_in_prerequisite_state';
    end if;

    -- The reason travels to the audit row through the session setting.
    perform set_config('fleetgate.reason', revoke_certificate.reason, true);
    update fleetgate.device_certificates c
       set revoked_at = now(),
           revocation_reason = revoke_certificate.reason
     where c.fingerprint = fp;
    perform set_config('fleetgate.reason', coalesce(prior_reason, ''), true);
end
$$;

-- The device lifecycle: active <-> suspended, and either of them to
-- decommissioned, which is final. The rules live here, in one place, so that
-- suspend/reactivate/decommission cannot drift apart.
create function fleetgate.change_device_status(device_id text,
                                               new_status text,
                                               reason text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    current_status text;
    allowed_from   text[];
    prior_reason   text := current_setting('fleetgate.reason', true);
begin
    allowed_from := case change_device_status.new_status
                        when 'active' then array['suspended']
                        when 'suspended' then array['active']
                        when 'decommissioned' then array['active', 'suspended']
                    end;
    if allowed_from is null then
        raise exception 'unknown device status %',
                        coalesce(quote_literal(
                                     left(change_device_status.new_status, 120)),
                                 'NULL')
            using errcode = 'invalid_parameter_value',
                  hint = 'active, suspended or decommissioned';
    end if;

    select d.status into current_status
      from fleetgate.devices d
     where d.id = change_device_status.device_id
       for update;
    if not found then
        raise exception 'unknown device %',
                        coalesce(quote_literal(
                                     left(change_device_status.device_id, 120)),
                                 'NULL')
            using errcode = 'no_data_found';
    end if;
    if current_status = change_device_status.new_status then
        raise exception 'device % is already %',
                        quote_literal(change_device_status.device_id),
                        current_status
            using errcode = 'object_not_in_prerequisite_state';
    end if;
    if not current_status = any (allowed_from) then
        raise exception 'device % is %; it cannot become %',
                        quote_literal(change_device_status.device_id),
                        current_status, change_device_status.new_status
            using errcode = 'object_not_in_prerequisite_state',
                  hint = case when current_status = 'decommissioned'
                              then 'Decommissioning is final; register the '
                                   'hardware under a new device id.'
                              else 'Only a suspended device can be '
                                   'reactivated, only an active one suspended.'
                         end;
    end if;

    -- The reason travels to the audit row through the session setting.
    perform set_config('fleetgate.reason',
                       coalesce(change_device_status.reason, ''), true);
    update fleetgate.devices d
       set status = change_device_status.new_status
     where d.id = change_device_status.device_id;
    perform set_config('fleetgate.reason', coalesce(prior_reason, ''), true);
end
$$;

create function fleetgate.suspend_device(id text, reason text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if coalesce(btrim(suspend_device.reason), '') = '' then
        raise exception 'a suspension reason is required'
            using errcode = 'invalid_parameter_value';
    end if;
    perform fleetgate.change_device_status(suspend_device.id, 'suspended',
                                           suspend_device.reason);
end
$$;

create function fleetgate.reactivate_device(id text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    perform fleetgate.change_device_status(reactivate_device.id, 'active',
                                           null);
end
$$;

create function fleetgate.decommission_device(id text, reason text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if coalesce(btrim(decommission_device.reason), '') = '' then
        raise exception 'a decommissioning reason is required'
            using errcode = 'invalid_parameter_value';
    end if;
    perform fleetgate.change_device_status(decommission_device.id,
                                           'decommissioned',
                                           decommission_device.reason);
end
$$;

-- A NULL hash with require = false removes the key.
create function fleetgate.set_device_api_key(id text, api_key_hash text,
                                             require boolean default true)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    device_status text;
begin
    if set_device_api_key.require is null then
        raise exception 'require must be true or false'
            using errcode = 'invalid_parameter_value';
    end if;
    if set_device_api_key.api_key_hash is null and set_device_api_key.require then
        raise exception 'an api key hash is needed when the key is required'
            using errcode = 'invalid_parameter_value';
    end if;
    if set_device_api_key.api_key_hash is not null
       and not fleetgate.is_passwd_hash(set_device_api_key.api_key_hash) then
        raise exception 'api_key_hash is not a mosquitto_passwd hash'
            using errcode = 'invalid_parameter_value',
                  hint = 'Pass the $6$ or $7$ hash that mosquitto_passwd '
                         'writes, never the key itself.';
    end if;

    select d.status into device_status
      from fleetgate.devices d
     where d.id = set_device_api_key.id
       for update;
    if not found then
        raise exception 'unknown device %',
                        coalesce(quote_literal(left(set_device_api_key.id, 120)),
                                 'NULL')
            using errcode = 'no_data_found';
    end if;
    if device_status = 'decommissioned' then
        raise exception 'device % is decommissioned',
                        quote_literal(set_device_api_key.id)
            using errcode = 'object_not_in_prerequisite_state';
    end if;

    update fleetgate.devices d
       set api_key_hash = set_device_api_key.api_key_hash,
           require_api_key = set_device_api_key.require
     where d.id = set_device_api_key.id;
end
$$;

create function fleetgate.add_account(username text, password_hash text,
                                      role text,
                                      municipality_id text default null,
                                      cross_municipality boolean default false)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if add_account.username is null
       or add_account.username !~ '^[^[:cntrl:][:space:]]{1,64}$' then
        raise exception 'invalid username %',
                        coalesce(quote_literal(left(add_account.username, 120)),
                                 'NULL')
            using errcode = 'invalid_parameter_value',
                  hint = '1 to 64 characters, no blanks or control characters';
    end if;
    if add_account.password_hash is null
       or not fleetgate.is_passwd_hash(add_account.password_hash) then
        raise exception 'password_hash is not a mosquitto_passwd hash'
            using errcode = 'invalid_parameter_value',
                  hint = 'Pass the $6$ or $7$ hash that mosquitto_passwd '
                         'writes, never the password itself.';
    end if;
    if add_account.role is null
       or add_account.role !~ '^[A-Za-z0-9._-]{1,64}$' then
        raise exception 'invalid account role %',
                        coalesce(quote_literal(left(add_account.role, 120)),
                                 'NULL')
            using errcode = 'invalid_parameter_value',
                  hint = '1 to 64 characters from A-Z a-z 0-9 . _ -';
    end if;
    if add_account.cross_municipality is null then
        raise exception 'cross_municipality must be true or false'
            using errcode = 'invalid_parameter_value';
    end if;
    if add_account.municipality_id is not null
       and not exists (select 1 from fleetgate.municipalities m
                       where m.id = add_account.municipality_id) then
        raise exception 'unknown municipality %',
                        quote_literal(left(add_account.municipality_id, 120))
            using errcode = 'no_data_found';
    end if;
    if exists (select 1 from fleetgate.accounts a
               where a.username = add_account.username) then
        raise exception 'account % already exists',
                        quote_literal(add_account.username)
            using errcode = 'unique_violation';
    end if;

    insert into fleetgate.accounts
        (username, password_hash, role, municipality_id, cross_municipality)
    values (add_account.username, add_account.password_hash, add_account.role,
            add_account.municipality_id, add_account.cross_municipality);
end
$$;

-- Privileges ---------------------------------------------------------------
--
-- New functions are executable by PUBLIC by default; take that back first,
-- then grant each role exactly what it needs.

revoke all on all tables in schema fleetgate from public;
revoke all on all sequences in schema fleetgate from public;
revoke all on all routines in schema fleetgate from public;

-- The broker reads the registry, appends audit rows and records when a
-- device was last seen; nothing else.
grant usage on schema fleetgate to fleetgate_broker;
grant select on fleetgate.municipalities, fleetgate.devices,
                fleetgate.device_certificates, fleetgate.accounts,
                fleetgate.schema_version
    to fleetgate_broker;
grant insert on fleetgate.audit_events to fleetgate_broker;
grant usage on sequence fleetgate.audit_events_id_seq to fleetgate_broker;
grant update (last_seen_at) on fleetgate.devices to fleetgate_broker;
-- The CHECK constraints on devices call is_passwd_hash, and PostgreSQL checks
-- EXECUTE on it for every UPDATE of a row, last_seen_at included.
grant execute on function fleetgate.normalize_fingerprint(text),
                          fleetgate.is_passwd_hash(text)
    to fleetgate_broker;

-- Administrators change the registry (directly or through the functions,
-- both audited) and read everything, but write no audit row themselves.
grant usage on schema fleetgate to fleetgate_admin;
grant select on all tables in schema fleetgate to fleetgate_admin;
grant insert, update, delete on fleetgate.municipalities, fleetgate.devices,
                                fleetgate.device_certificates,
                                fleetgate.accounts
    to fleetgate_admin;
grant execute on function
    fleetgate.normalize_fingerprint(text),
    fleetgate.is_passwd_hash(text),
    fleetgate.add_municipality(text, text),
    fleetgate.register_device(text, text, boolean),
    fleetgate.add_certificate(text, text, timestamptz, timestamptz),
    fleetgate.revoke_certificate(text, text),
    fleetgate.change_device_status(text, text, text),
    fleetgate.suspend_device(text, text),
    fleetgate.reactivate_device(text),
    fleetgate.decommission_device(text, text),
    fleetgate.set_device_api_key(text, text, boolean),
    fleetgate.add_account(text, text, text, text, boolean)
    to fleetgate_admin;

-- Stated explicitly so that a later blanket grant is a visible change.
revoke update, delete, truncate on fleetgate.audit_events
    from public, fleetgate_broker, fleetgate_admin;

insert into fleetgate.schema_version (version) values (1);

commit;
