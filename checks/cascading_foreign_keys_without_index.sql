-- name: cascading_foreign_keys_without_index
-- from: 001
-- at: last
-- meaning: foreign keys with an ON DELETE action and no valid index leading with their columns (one delete becomes a full scan under lock)
-- Checked where the application meets the schema (the last checkpoint): 005 adds the
-- workspace keys in the same window where 007 and 008 build their indexes.
SELECT c.conname AS constraint_name, n.nspname || '.' || t.relname AS table_name,
       (SELECT string_agg(a.attname, ', ' ORDER BY k.ord)
        FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) AS columns,
       CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' ELSE 'SET DEFAULT' END AS on_delete,
       c.confrelid::regclass::text AS references_table
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE c.contype = 'f'
  AND c.confdeltype IN ('c', 'n', 'd')
  -- every schema but the system's, an extension's and the gate's own (docs/contract.md §8)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'migration_gate')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT FROM pg_depend d
                  WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')
  AND NOT EXISTS (
      SELECT FROM pg_index i
      WHERE i.indrelid = c.conrelid
        AND i.indisvalid AND i.indisready AND i.indislive
        AND i.indpred IS NULL
        AND (SELECT array_agg(key ORDER BY key)
             FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS u(key, ord)
             WHERE u.ord <= cardinality(c.conkey))
          = (SELECT array_agg(key ORDER BY key) FROM unnest(c.conkey) AS key)
  )
ORDER BY 2, 1
