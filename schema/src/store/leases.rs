//! IPv4 leases of Networks: lowest-free or fixed allocation, release by owner, listing.
//!
//! Allocation runs in one `BEGIN IMMEDIATE` transaction on the writer, so it is serialized
//! across processes by SQLite's write lock; the `(network_uid, address)` primary key makes a
//! duplicate impossible even if that ever failed.

use super::{Result, StoreError};
use crate::kinds::network::Subnet;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// An address held by an owner (a Container uid) on a Network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub network_uid: String,
    pub address: Ipv4Addr,
    pub owner_uid: String,
    pub created_at: String,
}

/// What to allocate: one address for `owner_uid` on the network with this subnet and gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    pub network_uid: String,
    /// The network's current subnet; a held lease outside it is replaced.
    pub subnet: Subnet,
    /// Never handed out.
    pub gateway: Ipv4Addr,
    pub owner_uid: String,
    /// A fixed address the owner asks for; refused when taken, outside the subnet or the gateway.
    pub requested: Option<Ipv4Addr>,
}

/// Which leases to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseFilter {
    pub network_uid: Option<String>,
    pub owner_uid: Option<String>,
}

/// Why an address could not be leased.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Every host address of the subnet is taken.
    #[error("subnet {subnet} of network {network_uid} is exhausted ({used} addresses leased)")]
    SubnetExhausted {
        network_uid: String,
        subnet: String,
        used: u64,
    },
    /// The requested fixed address cannot be given to this owner.
    #[error("address {address} on network {network_uid} is unavailable: {reason}")]
    AddressUnavailable {
        network_uid: String,
        address: Ipv4Addr,
        reason: String,
    },
}

fn subnet_str(s: &Subnet) -> String {
    format!("{}/{}", s.network, s.prefix)
}

fn row_to_lease(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_lease(
    (network_uid, address, owner_uid, created_at): (String, String, String, String),
) -> Lease {
    Lease {
        network_uid,
        address: address.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
        owner_uid,
        created_at,
    }
}

/// Allocates inside an open write transaction. Idempotent: an owner that already holds a
/// fitting address on the network gets it back.
pub(super) fn allocate(c: &Connection, req: &LeaseRequest, now: &str) -> Result<Lease> {
    let held: Option<String> = c
        .query_row(
            "SELECT address FROM leases WHERE network_uid = ?1 AND owner_uid = ?2",
            params![req.network_uid, req.owner_uid],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(addr) = held.as_deref().and_then(|a| a.parse::<Ipv4Addr>().ok()) {
        let fits = req.subnet.is_host(addr) && addr != req.gateway;
        if fits && req.requested.is_none_or(|r| r == addr) {
            return lease_of(c, &req.network_uid, addr);
        }
        c.execute(
            "DELETE FROM leases WHERE network_uid = ?1 AND owner_uid = ?2",
            params![req.network_uid, req.owner_uid],
        )?;
    }
    let address = match req.requested {
        Some(a) => check_fixed(c, req, a)?,
        None => lowest_free(c, req)?,
    };
    c.execute(
        "INSERT INTO leases (network_uid, address, address_int, owner_uid, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            req.network_uid,
            address.to_string(),
            u32::from(address),
            req.owner_uid,
            now
        ],
    )?;
    lease_of(c, &req.network_uid, address)
}

fn unavailable(req: &LeaseRequest, address: Ipv4Addr, reason: String) -> StoreError {
    StoreError::Lease(LeaseError::AddressUnavailable {
        network_uid: req.network_uid.clone(),
        address,
        reason,
    })
}

fn check_fixed(c: &Connection, req: &LeaseRequest, a: Ipv4Addr) -> Result<Ipv4Addr> {
    if !req.subnet.is_host(a) {
        let why = format!("not a host address of subnet {}", subnet_str(&req.subnet));
        return Err(unavailable(req, a, why));
    }
    if a == req.gateway {
        return Err(unavailable(req, a, "it is the network's gateway".into()));
    }
    let owner: Option<String> = c
        .query_row(
            "SELECT owner_uid FROM leases WHERE network_uid = ?1 AND address = ?2",
            params![req.network_uid, a.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    match owner {
        Some(o) => Err(unavailable(req, a, format!("already leased to {o}"))),
        None => Ok(a),
    }
}

fn lowest_free(c: &Connection, req: &LeaseRequest) -> Result<Ipv4Addr> {
    let mut st = c.prepare(
        "SELECT address_int FROM leases WHERE network_uid = ?1 AND address_int > ?2 AND address_int < ?3 ORDER BY address_int",
    )?;
    let first = u32::from(req.subnet.network) + 1;
    let last = u32::from(req.subnet.broadcast()) - 1;
    let used = st.query_map(params![req.network_uid, first - 1, last + 1], |r| {
        r.get::<_, u32>(0)
    })?;
    let gw = u32::from(req.gateway);
    let skip_gateway = |c: u32| if c == gw { c + 1 } else { c };
    let mut candidate = skip_gateway(first);
    let mut count = 0u64;
    // `used` is ascending and unique: walk it until a gap shows up at the candidate.
    for u in used {
        let u = u?;
        count += 1;
        if u > candidate {
            break;
        }
        if u == candidate {
            candidate = skip_gateway(candidate + 1);
        }
    }
    if candidate > last {
        return Err(StoreError::Lease(LeaseError::SubnetExhausted {
            network_uid: req.network_uid.clone(),
            subnet: subnet_str(&req.subnet),
            used: count,
        }));
    }
    Ok(Ipv4Addr::from(candidate))
}

fn lease_of(c: &Connection, network_uid: &str, a: Ipv4Addr) -> Result<Lease> {
    Ok(to_lease(c.query_row(
        "SELECT network_uid, address, owner_uid, created_at FROM leases
         WHERE network_uid = ?1 AND address = ?2",
        params![network_uid, a.to_string()],
        row_to_lease,
    )?))
}

/// Deletes the leases of `owner_uid` (on one network, or all); returns how many went.
pub(super) fn release(c: &Connection, owner_uid: &str, network_uid: Option<&str>) -> Result<u64> {
    let n = match network_uid {
        Some(n) => c.execute(
            "DELETE FROM leases WHERE owner_uid = ?1 AND network_uid = ?2",
            params![owner_uid, n],
        )?,
        None => c.execute(
            "DELETE FROM leases WHERE owner_uid = ?1",
            params![owner_uid],
        )?,
    };
    Ok(n as u64)
}

/// Deletes every lease of a network (when the Network itself goes).
pub(super) fn release_network(c: &Connection, network_uid: &str) -> Result<u64> {
    Ok(c.execute(
        "DELETE FROM leases WHERE network_uid = ?1",
        params![network_uid],
    )? as u64)
}

/// Leases matching `f`, ordered by network and address.
pub(super) fn list(c: &Connection, f: &LeaseFilter) -> Result<Vec<Lease>> {
    let mut st = c.prepare(
        "SELECT network_uid, address, owner_uid, created_at FROM leases
         WHERE (?1 IS NULL OR network_uid = ?1) AND (?2 IS NULL OR owner_uid = ?2)
         ORDER BY network_uid, address_int",
    )?;
    let rows = st.query_map(params![f.network_uid, f.owner_uid], row_to_lease)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(to_lease(r?));
    }
    Ok(out)
}
