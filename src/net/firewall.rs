//! tend's nftables table (`ip tend-<instance>`): forwarding between tend's bridges, and the
//! NAT rules of published ports. Driven through the `nftables` crate (nft's JSON interface);
//! every change is one atomic transaction that rebuilds the table, and nothing outside this
//! table is ever read for writing or changed.
//!
//! Chains: `prerouting` and `output` (nat, dstnat priority) DNAT `hostIP:hostPort` to the
//! container, for traffic arriving from outside and for the host's own (127.0.0.1 included);
//! `postrouting` (nat, srcnat) masquerades loopback-sourced and hairpin traffic only, so outside
//! clients keep their source address; `forward` (filter) accepts traffic between tend's bridges
//! and DNATed traffic to them. An operator's own tables still apply: in nftables a packet
//! dropped by any base chain is dropped (see docs/ports.md).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use nftables::schema::Nftables;
use serde_json::{json, Value};
use tend_controllers::network::{PortDriver, PortRule};
use tend_schema::kinds::Protocol;

/// Errors applying or reading tend's table.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("nftables {op} table ip {table}: {source}")]
    Nft {
        op: &'static str,
        table: String,
        #[source]
        source: Box<nftables::helper::NftablesError>,
    },
    #[error("building the nftables request for table ip {table}: {source}")]
    Build {
        table: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The table of instance `instance`: `tend-<instance>`.
pub fn table_name(instance: &str) -> String {
    format!("tend-{instance}")
}

/// The rules of one tend instance in its own nftables table, kept as wanted: published ports
/// per container, rebuilt atomically on change, compared with the kernel's copy on
/// [`Firewall::verify`].
pub struct Firewall {
    table: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    ports: BTreeMap<String, Vec<PortRule>>,
    /// The table as the kernel listed it after the last apply, without handles.
    expected: Option<Vec<Value>>,
}

impl Firewall {
    /// Makes tend's table afresh for `instance`: rules of an earlier run (orphans) are swept,
    /// the containers' reconciles publish theirs again. Blocking (runs `nft`).
    ///
    /// # Errors
    /// When `nft` is missing or refuses the table.
    pub fn start(instance: &str) -> Result<Self, FirewallError> {
        let fw = Firewall {
            table: table_name(instance),
            state: Mutex::default(),
        };
        let mut st = fw.lock();
        fw.apply(&mut st, true)?;
        drop(st);
        Ok(fw)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `rules` for container `uid` (replacing its earlier ones; empty removes them).
    /// Unchanged rules cost one listing: the cheap check of every reconcile. Blocking.
    pub fn publish_blocking(&self, uid: &str, rules: Vec<PortRule>) -> Result<(), FirewallError> {
        let mut st = self.lock();
        let current = st.ports.get(uid).map(Vec::as_slice).unwrap_or(&[]);
        if current == rules.as_slice() {
            // A container without ports costs nothing; one with ports checks the table.
            if rules.is_empty() {
                return Ok(());
            }
            return self.verify_locked(&mut st).map(|_| ());
        }
        for b in rules
            .iter()
            .map(|r| r.bridge.as_str())
            .collect::<BTreeSet<_>>()
        {
            route_localnet(b)?;
        }
        let old = if rules.is_empty() {
            st.ports.remove(uid)
        } else {
            st.ports.insert(uid.to_string(), rules)
        };
        if let Err(e) = self.apply(&mut st, false) {
            // The transaction failed as a whole: the host still has the old rules.
            match old {
                Some(o) => st.ports.insert(uid.to_string(), o),
                None => st.ports.remove(uid),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Compares the kernel's table with what tend last applied and, when they differ (a rule
    /// or chain deleted, changed or added behind tend's back, or the whole table gone),
    /// applies it again. Returns what was wrong. Blocking.
    pub fn verify_blocking(&self) -> Result<Option<String>, FirewallError> {
        let mut st = self.lock();
        self.verify_locked(&mut st)
    }

    fn verify_locked(&self, st: &mut State) -> Result<Option<String>, FirewallError> {
        let now = match self.list() {
            Ok(v) => Some(v),
            // A table deleted behind tend's back cannot be listed.
            Err(FirewallError::Nft { .. }) => None,
            Err(e) => return Err(e),
        };
        if now.is_some() && now == st.expected {
            return Ok(None);
        }
        let problem = match &now {
            None => format!("table ip {} is missing", self.table),
            Some(v) => {
                let want = st.expected.as_ref().map_or(0, Vec::len);
                format!(
                    "table ip {} differs ({} objects, {} expected)",
                    self.table,
                    v.len(),
                    want
                )
            }
        };
        self.apply(st, false)?;
        Ok(Some(problem))
    }

    /// Deletes tend's table (a test's or an uninstall's cleanup). Blocking.
    pub fn delete_table(instance: &str) -> Result<(), FirewallError> {
        let table = table_name(instance);
        let req = json!({"nftables": [
            {"add": {"table": {"family": "ip", "name": table}}},
            {"delete": {"table": {"family": "ip", "name": table}}},
        ]});
        run(&table, "delete", req)
    }

    /// One transaction: the table (made afresh when `fresh`), its flushed chains, every rule.
    fn apply(&self, st: &mut State, fresh: bool) -> Result<(), FirewallError> {
        let t = &self.table;
        let mut cmds = vec![json!({"add": {"table": {"family": "ip", "name": t}}})];
        if fresh {
            cmds.push(json!({"delete": {"table": {"family": "ip", "name": t}}}));
            cmds.push(json!({"add": {"table": {"family": "ip", "name": t}}}));
        } else {
            cmds.push(json!({"flush": {"table": {"family": "ip", "name": t}}}));
        }
        for (name, kind, hook, prio) in [
            ("prerouting", "nat", "prerouting", -100),
            ("output", "nat", "output", -100),
            ("postrouting", "nat", "postrouting", 100),
            ("forward", "filter", "forward", 0),
        ] {
            cmds.push(json!({"add": {"chain": {
                "family": "ip", "table": t, "name": name,
                "type": kind, "hook": hook, "prio": prio, "policy": "accept"
            }}}));
        }
        let rule = |chain: &str, expr: Vec<Value>, comment: &str| {
            json!({"add": {"rule": {
                "family": "ip", "table": t, "chain": chain, "expr": expr, "comment": comment
            }}})
        };
        cmds.push(rule(
            "forward",
            vec![
                is(meta("iifname"), json!("tnd-*")),
                is(meta("oifname"), json!("tnd-*")),
                json!({"accept": null}),
            ],
            "tend-bridges",
        ));
        cmds.push(rule(
            "forward",
            vec![
                is(meta("oifname"), json!("tnd-*")),
                json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}),
                json!({"accept": null}),
            ],
            "tend-published",
        ));
        let mut bridges = BTreeSet::new();
        for (uid, rules) in &st.ports {
            for r in rules {
                for chain in ["prerouting", "output"] {
                    cmds.push(rule(chain, dnat(r), uid));
                }
                bridges.insert(r.bridge.clone());
            }
        }
        for b in &bridges {
            // Loopback-sourced traffic cannot leave with 127.0.0.1 as its source; hairpin
            // (a container to a published port served on its own bridge) must come back
            // through the host. Outside clients are not masqueraded: the container sees them.
            cmds.push(rule(
                "postrouting",
                vec![
                    is(meta("oifname"), json!(b)),
                    is(
                        payload("ip", "saddr"),
                        json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
                    ),
                    json!({"masquerade": null}),
                ],
                "tend-loopback",
            ));
            cmds.push(rule(
                "postrouting",
                vec![
                    is(meta("iifname"), json!(b)),
                    is(meta("oifname"), json!(b)),
                    json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}),
                    json!({"masquerade": null}),
                ],
                "tend-hairpin",
            ));
        }
        run(t, "apply", json!({ "nftables": cmds }))?;
        st.expected = Some(self.list()?);
        Ok(())
    }

    /// The table as the kernel has it, without handles (they change on every rebuild).
    fn list(&self) -> Result<Vec<Value>, FirewallError> {
        let t = &self.table;
        let got = nftables::helper::get_current_ruleset_with_args(
            None::<&str>,
            ["list", "table", "ip", t.as_str()],
        )
        .map_err(|source| FirewallError::Nft {
            op: "list",
            table: t.clone(),
            source: Box::new(source),
        })?;
        let v = serde_json::to_value(&got).map_err(|source| FirewallError::Build {
            table: t.clone(),
            source,
        })?;
        Ok(normalize(v))
    }
}

/// [`PortDriver`] over a shared [`Firewall`], off the executor.
pub struct NftPorts(pub Arc<Firewall>);

#[async_trait]
impl PortDriver for NftPorts {
    async fn publish(
        &self,
        uid: &str,
        rules: Vec<PortRule>,
    ) -> Result<(), tend_controllers::Error> {
        let (fw, uid) = (self.0.clone(), uid.to_string());
        crate::util::blocking(move || fw.publish_blocking(&uid, rules))
            .await
            .map_err(Into::into)
    }

    async fn verify(&self) -> Result<Option<String>, tend_controllers::Error> {
        let fw = self.0.clone();
        crate::util::blocking(move || fw.verify_blocking())
            .await
            .map_err(Into::into)
    }
}

/// nfnetlink's multicast group of nftables ruleset changes (`NFNLGRP_NFTABLES`).
const NFNLGRP_NFTABLES: u32 = 7;

/// Wakes the returned receiver whenever the host's nftables ruleset changes (any table: the
/// events name no owner cheaply, so the receiver checks tend's table, which costs one listing).
/// Bursts are coalesced into one wake. A thread blocks on the netlink socket for the daemon's
/// life.
///
/// # Errors
/// When the nfnetlink socket cannot be opened or joined to the group.
pub fn watch_ruleset() -> std::io::Result<tokio::sync::mpsc::Receiver<()>> {
    let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.add_membership(NFNLGRP_NFTABLES)?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    std::thread::Builder::new()
        .name("nft-watch".into())
        .spawn(move || {
            let mut buf = Vec::with_capacity(1 << 16);
            loop {
                buf.clear();
                let r = sock.recv(&mut buf, 0);
                // ENOBUFS (events lost) is a change too; any other error ends the watch.
                if let Err(e) = &r {
                    if e.raw_os_error() != Some(libc::ENOBUFS) {
                        tracing::warn!(error = %e, "nftables event socket failed; resync only");
                        return;
                    }
                }
                match tx.try_send(()) {
                    Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => return,
                }
            }
        })?;
    Ok(rx)
}

/// The listing's objects without metainfo and handles.
fn normalize(v: Value) -> Vec<Value> {
    fn strip(v: &mut Value) {
        if let Value::Object(m) = v {
            m.remove("handle");
            m.values_mut().for_each(strip);
        } else if let Value::Array(a) = v {
            a.iter_mut().for_each(strip);
        }
    }
    let mut items = match v.get("nftables") {
        Some(Value::Array(a)) => a.clone(),
        _ => vec![],
    };
    items.retain(|o| o.get("metainfo").is_none());
    items.iter_mut().for_each(strip);
    items
}

fn run(table: &str, op: &'static str, req: Value) -> Result<(), FirewallError> {
    let nft: Nftables = serde_json::from_value(req).map_err(|source| FirewallError::Build {
        table: table.to_string(),
        source,
    })?;
    nftables::helper::apply_ruleset(&nft).map_err(|source| FirewallError::Nft {
        op,
        table: table.to_string(),
        source: Box::new(source),
    })
}

fn is(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

/// `ip daddr HOST` (or any local address for 0.0.0.0) `tcp|udp dport P dnat to ADDR:PORT`.
fn dnat(r: &PortRule) -> Vec<Value> {
    let l4 = match r.port.protocol {
        Protocol::TCP => "tcp",
        Protocol::UDP => "udp",
    };
    let daddr = if r.host == Ipv4Addr::UNSPECIFIED {
        is(
            json!({"fib": {"result": "type", "flags": ["daddr"]}}),
            json!("local"),
        )
    } else {
        is(payload("ip", "daddr"), json!(r.host.to_string()))
    };
    vec![
        daddr,
        is(payload(l4, "dport"), json!(r.port.host_port)),
        json!({"dnat": {"addr": r.address.to_string(), "port": r.port.container_port}}),
    ]
}

/// Lets packets with a 127.0.0.0/8 source be routed out of `bridge` (they are masqueraded on
/// the way): what makes `127.0.0.1:hostPort` reach a container without a userland proxy.
fn route_localnet(bridge: &str) -> Result<(), FirewallError> {
    let path = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
    std::fs::write(&path, "1").map_err(|source| FirewallError::Sysctl { path, source })
}
