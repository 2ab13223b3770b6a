-- tend store, schema version 1: objects, the change feed, events.

-- Global counters: `revision` is the last assigned resourceVersion; `compacted` is the highest
-- revision whose change row has been dropped from the feed history.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('revision', 0), ('compacted', 0);

-- Desired state. `body` is the whole object as JSON (metadata, spec, status).
CREATE TABLE objects (
    kind      TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    uid       TEXT    NOT NULL UNIQUE,
    revision  INTEGER NOT NULL,
    body      TEXT    NOT NULL,
    PRIMARY KEY (kind, namespace, name)
) WITHOUT ROWID;

-- The change feed: one row per revision, in commit order, with the object as it was then.
CREATE TABLE changes (
    revision  INTEGER PRIMARY KEY,
    type      TEXT    NOT NULL CHECK (type IN ('ADDED', 'MODIFIED', 'DELETED')),
    kind      TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    body      TEXT    NOT NULL
);

-- Kubernetes-style events, deduplicated on (object, type, reason, message) with a count.
CREATE TABLE events (
    id              INTEGER PRIMARY KEY,
    namespace       TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    uid             TEXT    NOT NULL,
    type            TEXT    NOT NULL CHECK (type IN ('Normal', 'Warning')),
    reason          TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    count           INTEGER NOT NULL DEFAULT 1,
    first_timestamp TEXT    NOT NULL,
    last_timestamp  TEXT    NOT NULL,
    UNIQUE (uid, type, reason, message)
);
CREATE INDEX events_by_object ON events (namespace, kind, name);
CREATE INDEX events_by_time ON events (last_timestamp);
