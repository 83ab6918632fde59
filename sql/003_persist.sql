-- 003_persist.sql: readings stored by the fleetgate persist plugin, the
-- progress of each broker's journal, and retention for readings and the
-- audit trail.
--
-- Applied by sql/migrate.sh after 002_acl.sql, as the same owner, in one
-- transaction.
--
-- How rows arrive: each broker appends every accepted reading to a local
-- journal before acknowledging it, and a writer thread copies journal
-- entries here in batches. A batch and the broker's progress row are
-- committed in one transaction, so after any crash the broker knows exactly
-- which entries the database holds and sends the rest, once.

begin;

call fleetgate.assert_migration(3);

-- Settings ------------------------------------------------------------------

-- One row. The partition width and how long readings and audit events are
-- kept; the retention functions read their defaults here.
create table fleetgate.persist_settings (
    only_row            boolean primary key default true
                        constraint persist_settings_one_row check (only_row),
    partition_interval  text not null default 'month'
                        constraint persist_settings_interval_known
                        check (partition_interval in ('day', 'week', 'month')),
    partitions_ahead    int not null default 2
                        constraint persist_settings_ahead_range
                        check (partitions_ahead between 1 and 24),
    readings_keep       interval not null default '13 months'
                        constraint persist_settings_readings_keep_positive
                        check (readings_keep > interval '0'),
    audit_keep          interval not null default '1 year',
    -- Audit events younger than this are never deleted, whatever a caller
    -- asks: the trail is evidence.
    audit_keep_minimum  interval not null default '1 year'
);
insert into fleetgate.persist_settings default values;

-- Readings ------------------------------------------------------------------

-- device_id and municipality_id come from the identity the broker
-- authenticated, never from the topic. A reading published by an account
-- (not a device) has device_id NULL and the account's username in account.
-- (broker_id, seq) identifies the journal entry; received_at is part of the
-- key because a partitioned table's keys must hold its partition column,
-- and a replayed entry carries the same received_at.
create table fleetgate.readings (
    broker_id        text not null,
    seq              bigint not null,
    received_at      timestamptz not null,
    measured_at      timestamptz not null,
    device_id        text,
    municipality_id  text,
    account          text,
    client_id        text not null,
    topic            text not null,
    payload          jsonb not null,
    primary key (broker_id, seq, received_at)
) partition by range (received_at);

-- Catches rows outside every partition (a clock far off, partitions not yet
-- created), so that no reading is ever refused for want of a partition.
create table fleetgate.readings_default
    partition of fleetgate.readings default;

create index readings_device_idx
    on fleetgate.readings (device_id, measured_at);
create index readings_municipality_idx
    on fleetgate.readings (municipality_id, measured_at);

-- Entries the database refused although the plugin had validated them
-- (should not happen; kept so that nothing accepted is ever lost).
create table fleetgate.readings_rejected (
    broker_id    text not null,
    seq          bigint not null,
    received_at  timestamptz not null,
    device_id    text,
    client_id    text,
    topic        text,
    payload      bytea,
    error        text not null,
    stored_at    timestamptz not null default now(),
    primary key (broker_id, seq)
);

-- How far each broker's journal has been committed. Updated in the same
-- transaction as the rows, so it is exact. journal_id names the journal
-- (created with it), so that a broker whose journal was replaced, or two
-- brokers configured with one broker_id, are noticed.
create table fleetgate.persist_progress (
    broker_id    text primary key,
    journal_id   text not null,
    seq          bigint not null,
    updated_at   timestamptz not null default now()
);

-- Partitions ----------------------------------------------------------------

create table fleetgate.reading_partitions (
    name       text primary key,
    from_at    timestamptz not null,
    to_at      timestamptz not null,
    constraint reading_partitions_range check (from_at < to_at)
);

-- Creates the partitions for the current interval and partitions_ahead more
-- (idempotent; brokers call it when they connect and once an hour). Rows
-- that landed in the default partition for a range are moved into the new
-- partition. Returns how many partitions it created.
create function fleetgate.ensure_reading_partitions(at timestamptz default now())
returns int
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    s fleetgate.persist_settings;
    step interval;
    lo timestamptz;
    hi timestamptz;
    pname text;
    created int := 0;
begin
    -- Two brokers starting together must not both create one partition.
    perform pg_advisory_xact_lock(hashtext('fleetgate.reading_partitions'));
    select * into s from fleetgate.persist_settings;
    -- Rows must not enter the default partition between moving its rows
    -- of a range out and attaching that range's partition.
    lock table fleetgate.readings_default in share row exclusive mode;
    step := ('1 ' || s.partition_interval)::interval;
    lo := date_trunc(s.partition_interval, at, 'UTC');
    for i in 0 .. s.partitions_ahead loop
        hi := lo + step;
        pname := 'readings_' || to_char(lo at time zone 'UTC',
                                         'YYYYMMDD');
        if not exists (select 1 from fleetgate.reading_partitions p
                       where p.from_at < hi and p.to_at > lo) then
            execute format('create table fleetgate.%I (like '
                           'fleetgate.readings including defaults)', pname);
            execute format('with moved as (delete from '
                           'fleetgate.readings_default where received_at '
                           '>= %L and received_at < %L returning *) '
                           'insert into fleetgate.%I select * from moved',
                           lo, hi, pname);
            execute format('alter table fleetgate.readings attach partition '
                           'fleetgate.%I for values from (%L) to (%L)',
                           pname, lo, hi);
            insert into fleetgate.reading_partitions values (pname, lo, hi);
            created := created + 1;
        end if;
        lo := hi;
    end loop;
    return created;
end
$$;

-- Drops the partitions whose whole range is older than keep (default: the
-- readings_keep setting). Returns the names dropped.
create function fleetgate.drop_old_readings(keep interval default null)
returns setof text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    cutoff timestamptz;
    p record;
begin
    if keep is not null and keep <= interval '0' then
        raise exception 'drop_old_readings: keep must be positive, not %', keep
            using errcode = 'invalid_parameter_value';
    end if;
    cutoff := now() - coalesce(keep, (select readings_keep
                                      from fleetgate.persist_settings));
    perform pg_advisory_xact_lock(hashtext('fleetgate.reading_partitions'));
    for p in select name from fleetgate.reading_partitions
             where to_at <= cutoff order by from_at loop
        execute format('drop table fleetgate.%I', p.name);
        delete from fleetgate.reading_partitions where name = p.name;
        return next p.name;
    end loop;
    delete from fleetgate.readings_default where received_at < cutoff;
end
$$;

-- Audit retention -----------------------------------------------------------

-- The append-only guard of 001, with one exception: purge_audit_events,
-- running as the owner, may delete rows older than the minimum kept.
create or replace function fleetgate.audit_events_guard()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if tg_op = 'DELETE'
       and current_setting('fleetgate.audit_purge', true) = 'on'
       and pg_has_role(current_user,
                       (select relowner from pg_class where oid = tg_relid),
                       'USAGE')
       and old.at < now() - (select audit_keep_minimum
                             from fleetgate.persist_settings) then
        return old;
    end if;
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

-- Deletes audit events older than keep (default: the audit_keep setting).
-- Refuses a keep shorter than audit_keep_minimum. Returns the rows deleted.
create function fleetgate.purge_audit_events(keep interval default null)
returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    s fleetgate.persist_settings;
    k interval;
    n bigint;
begin
    select * into s from fleetgate.persist_settings;
    k := coalesce(keep, s.audit_keep);
    if k < s.audit_keep_minimum then
        raise exception 'audit events are kept at least %; % refused',
                        s.audit_keep_minimum, k
            using errcode = 'invalid_parameter_value';
    end if;
    perform set_config('fleetgate.audit_purge', 'on', true);
    delete from fleetgate.audit_events where at < now() - k;
    get diagnostics n = row_count;
    perform set_config('fleetgate.audit_purge', 'off', true);
    return n;
end
$$;

do $$ begin perform fleetgate.ensure_reading_partitions(); end $$;

-- Privileges ----------------------------------------------------------------

revoke all on fleetgate.persist_settings, fleetgate.readings,
              fleetgate.readings_default, fleetgate.readings_rejected,
              fleetgate.persist_progress, fleetgate.reading_partitions
    from public;
revoke all on function
    fleetgate.ensure_reading_partitions(timestamptz),
    fleetgate.drop_old_readings(interval),
    fleetgate.purge_audit_events(interval)
    from public;

-- The broker appends readings, records its progress and makes sure the
-- partitions exist; it reads nothing but its own progress.
grant insert on fleetgate.readings, fleetgate.readings_rejected
    to fleetgate_broker;
grant select, insert, update on fleetgate.persist_progress
    to fleetgate_broker;
grant execute on function fleetgate.ensure_reading_partitions(timestamptz)
    to fleetgate_broker;

-- Administrators read everything, tune the settings and run retention.
grant select on fleetgate.persist_settings, fleetgate.readings,
                fleetgate.readings_rejected, fleetgate.persist_progress,
                fleetgate.reading_partitions
    to fleetgate_admin;
-- Not audit_keep_minimum: only the owner may shorten what the trail keeps.
grant update (partition_interval, partitions_ahead, readings_keep, audit_keep)
    on fleetgate.persist_settings to fleetgate_admin;
grant execute on function
    fleetgate.ensure_reading_partitions(timestamptz),
    fleetgate.drop_old_readings(interval),
    fleetgate.purge_audit_events(interval)
    to fleetgate_admin;

insert into fleetgate.schema_version (version) values (3);

commit;
