-- interest-tree PostgreSQL schema, step 3: the catalog taxonomy (one vocabulary built from
-- the catalog), replaced whole by each rebuild.

CREATE TABLE catalog_taxonomy (
    position integer PRIMARY KEY,
    taxonomy_id text COLLATE "C" NOT NULL UNIQUE,
    node text NOT NULL
);
