-- tend store, schema version 3: numbered revisions of Container specs.

-- One row per spec generation of a Container, written in the transaction that changed the
-- spec. `created_by` and `cause` come from the request; `snapshot` names the read-only tree
-- that holds this revision's data as it was when a rollout left it; `restore_snapshot` asks
-- the controller to restore that tree's data when this revision rolls out (`rollout undo
-- --data`). Rows go with their object.
CREATE TABLE revisions (
    uid              TEXT    NOT NULL,
    revision         INTEGER NOT NULL,
    generation       INTEGER NOT NULL,
    spec             TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    created_by       TEXT    NOT NULL,
    cause            TEXT    NOT NULL DEFAULT '',
    snapshot         TEXT,
    restore_snapshot TEXT,
    PRIMARY KEY (uid, revision),
    UNIQUE (uid, generation)
) WITHOUT ROWID;
