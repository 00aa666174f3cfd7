-- interest-tree PostgreSQL schema, step 4: what the review page's overview reads without
-- parsing every tree. `latest_trees` holds the latest revision of each user's tree with its
-- build time (microseconds since the epoch), `tree_citations` one row per node of that
-- revision and item the node cites as evidence, with the node's label. `save_tree` replaces
-- a user's rows in the transaction that stores a newer revision; `delete_user` deletes them.
-- Both are filled here from the trees already stored.

SET LOCAL timezone = 'UTC';

CREATE TABLE latest_trees (
    user_id text COLLATE "C" PRIMARY KEY,
    revision integer NOT NULL,
    create_us bigint NOT NULL
);
CREATE INDEX latest_trees_by_time ON latest_trees (create_us, user_id);

CREATE TABLE tree_citations (
    item_id text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    position integer NOT NULL,
    revision integer NOT NULL,
    label text NOT NULL,
    PRIMARY KEY (item_id, user_id, position)
);
CREATE INDEX tree_citations_by_user ON tree_citations (user_id);

INSERT INTO latest_trees (user_id, revision, create_us)
SELECT DISTINCT ON (user_id)
    user_id,
    revision,
    floor(extract(epoch FROM (tree::json ->> 'create_time')::timestamptz) * 1000000)::bigint
FROM trees
ORDER BY user_id, revision DESC;

INSERT INTO tree_citations (item_id, user_id, position, revision, label)
SELECT DISTINCT evidence.item_id, t.user_id, (node.ordinal - 1)::integer, t.revision,
    node.value ->> 'label'
FROM latest_trees l
JOIN trees t ON t.user_id = l.user_id AND t.revision = l.revision
CROSS JOIN LATERAL json_array_elements(t.tree::json -> 'nodes') WITH ORDINALITY
    AS node (value, ordinal)
CROSS JOIN LATERAL json_array_elements_text(node.value -> 'evidence_items')
    AS evidence (item_id);
