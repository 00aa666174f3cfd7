-- interest-tree PostgreSQL schema, step 2: event-derived models shared by every replica.
-- The replica holding the training advisory lock trains and stores the model here; the
-- others load it from here, so training happens once.

CREATE TABLE models (
    name text COLLATE "C" PRIMARY KEY,
    event_count bigint NOT NULL,
    payload bytea NOT NULL,
    trained_at timestamptz NOT NULL DEFAULT now()
);
