-- interest-tree PostgreSQL schema, step 1: the tables SqliteStore has, in PostgreSQL types.
-- Every identifier column is COLLATE "C", so ordering and `>` paging compare bytes exactly as
-- SQLite does, whatever the database's default collation is.

CREATE TABLE items (
    item_id text COLLATE "C" PRIMARY KEY,
    title text NOT NULL,
    description text NOT NULL,
    categories text[] NOT NULL,
    tags text[] NOT NULL,
    update_time timestamptz NOT NULL
);

-- One float32 vector (little-endian bytes) per item and space; catalog_version is the
-- catalog counter of the write that stored it, so a replica can fetch what changed.
CREATE TABLE item_vectors (
    item_id text COLLATE "C" NOT NULL,
    space text COLLATE "C" NOT NULL,
    vector bytea NOT NULL,
    catalog_version bigint NOT NULL,
    PRIMARY KEY (item_id, space)
);
CREATE INDEX item_vectors_by_version ON item_vectors (space, catalog_version);

-- Deleted items, with the catalog counter of the delete, for replicas catching up.
CREATE TABLE item_tombstones (
    item_id text COLLATE "C" PRIMARY KEY,
    catalog_version bigint NOT NULL
);
CREATE INDEX item_tombstones_by_version ON item_tombstones (catalog_version);

CREATE TABLE events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL,
    item_id text COLLATE "C" NOT NULL,
    event_type integer NOT NULL,
    event_us bigint NOT NULL,
    weight double precision
);
CREATE INDEX events_by_user ON events (user_id, event_us, seq);

CREATE TABLE request_ids (
    request_id text COLLATE "C" PRIMARY KEY,
    recorded_count integer NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE trees (
    user_id text COLLATE "C" NOT NULL,
    revision integer NOT NULL,
    tree text NOT NULL,
    diff text NOT NULL,
    PRIMARY KEY (user_id, revision)
);

CREATE TABLE taxonomy_nodes (
    taxonomy_id text COLLATE "C" PRIMARY KEY,
    label text NOT NULL,
    aliases text[] NOT NULL DEFAULT '{}',
    vector bytea NOT NULL
);

CREATE TABLE tree_node_taxonomy (
    user_id text COLLATE "C" NOT NULL,
    node_id text COLLATE "C" NOT NULL,
    taxonomy_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (user_id, node_id)
);
CREATE INDEX tree_nodes_by_taxonomy ON tree_node_taxonomy (taxonomy_id);

-- Counters bumped by every write to one kind of data (taxonomy.ports *_VERSION_KEY).
CREATE TABLE meta (
    key text COLLATE "C" PRIMARY KEY,
    value bigint NOT NULL
);
