-- 005_partition_gaps.sql: a change of partition_interval leaves no days
-- without a partition.
--
-- Applied by sql/migrate.sh after 004, as the same owner, in one
-- transaction.
--
-- Until now ensure_reading_partitions skipped an interval that overlapped
-- an existing partition: after a change from 'week' to 'month', the days
-- of the month before the first weekly partition and after the last went
-- to readings_default, where retention does not reach them by partition.
-- The function now creates a partition for each part of an interval that
-- no partition covers, named after the day that part starts, moving the
-- rows readings_default holds for it. Only the function changes.

begin;

call fleetgate.assert_migration(5);

create or replace function fleetgate.ensure_reading_partitions(
    at timestamptz default now())
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
    gap_lo timestamptz;
    gap_hi timestamptz;
    p record;
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
        -- Walk the partitions overlapping [lo, hi) in order; each stretch
        -- before one of them (and after the last) is a gap.
        gap_lo := lo;
        for p in select from_at, to_at from fleetgate.reading_partitions
                 where from_at < hi and to_at > lo
                 union all
                 select hi, hi
                 order by 1 loop
            gap_hi := least(p.from_at, hi);
            if gap_hi > gap_lo then
                -- Partition bounds are midnights (UTC), and a gap starts
                -- where no partition does: the day names it uniquely.
                pname := 'readings_' || to_char(gap_lo at time zone 'UTC',
                                                 'YYYYMMDD');
                execute format('create table fleetgate.%I (like '
                               'fleetgate.readings including defaults)',
                               pname);
                execute format('with moved as (delete from '
                               'fleetgate.readings_default where '
                               'received_at >= %L and received_at < %L '
                               'returning *) insert into fleetgate.%I '
                               'select * from moved', gap_lo, gap_hi, pname);
                execute format('alter table fleetgate.readings attach '
                               'partition fleetgate.%I for values from (%L) '
                               'to (%L)', pname, gap_lo, gap_hi);
                insert into fleetgate.reading_partitions
                    values (pname, gap_lo, gap_hi);
                created := created + 1;
            end if;
            gap_lo := greatest(gap_lo, p.to_at);
        end loop;
        lo := hi;
    end loop;
    return created;
end
$$;

insert into fleetgate.schema_version (version) values (5);

commit;
