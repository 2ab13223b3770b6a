-- tend store, schema version 4: host uid/gid ranges of user-namespaced Containers.

-- One row per Container with `securityContext.userNamespace: true`: container ids 0..size-1
-- map to host ids first_id..first_id+size-1 (uids and gids alike). An owner holds at most one
-- range; the primary key on first_id makes handing out the same start twice impossible, and
-- allocation (one IMMEDIATE transaction) only picks a gap no held range overlaps.
CREATE TABLE id_ranges (
    first_id   INTEGER NOT NULL PRIMARY KEY,
    size       INTEGER NOT NULL,
    owner_uid  TEXT    NOT NULL UNIQUE,
    created_at TEXT    NOT NULL
);
