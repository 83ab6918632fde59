-- 003_reserved_persist.sql: a placeholder for version 3, which belongs to
-- the persist plugin's migration (developed on another branch).
--
-- It changes nothing but the version number, so that 004 (rate limits),
-- which checks that its predecessor is applied, can be applied on a branch
-- that does not have the real 003 yet. Delete this file when the persist
-- branch's 003 is merged: migrate.sh refuses two files for one version.

begin;

call fleetgate.assert_migration(3);

insert into fleetgate.schema_version (version) values (3);

commit;
