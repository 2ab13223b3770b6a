-- tend store, schema version 2: IPv4 leases of Networks.

-- One row per address handed out. The primary key makes a duplicate address on one network
-- impossible, even when two processes allocate at once; an owner (a Container uid) holds at
-- most one address per network.
CREATE TABLE leases (
    network_uid TEXT    NOT NULL,
    address     TEXT    NOT NULL,
    -- The address as a 32-bit integer, for lowest-free-address search in order.
    address_int INTEGER NOT NULL,
    owner_uid   TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (network_uid, address),
    UNIQUE (network_uid, owner_uid)
) WITHOUT ROWID;
CREATE INDEX leases_by_owner ON leases (owner_uid);
