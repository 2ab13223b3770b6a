//! Host IPv4 routes of the main table, and whether a subnet overlaps one of them.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use rtnetlink::RouteMessageBuilder;

use super::{Error, NetDriver, Result};

/// A unicast IPv4 route of the host's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    /// Destination subnet (`0.0.0.0/0` for the default route).
    pub destination: Ipv4Net,
    /// Output interface index, when the route names one.
    pub oif: Option<u32>,
    /// Gateway, when the route has one.
    pub gateway: Option<Ipv4Addr>,
}

impl NetDriver {
    /// The unicast IPv4 routes of the host's main table.
    pub async fn host_routes(&self) -> Result<Vec<HostRoute>> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(Error::netlink("dump routes", "host"))?;
        Ok(msgs.iter().filter_map(host_route).collect())
    }

    /// The first host route (other than the default route, and other than routes through the
    /// interfaces in `ignore_oifs`, such as the Network's own bridge) whose destination
    /// overlaps `subnet`, or `None`.
    pub async fn route_overlap(
        &self,
        subnet: Ipv4Net,
        ignore_oifs: &[u32],
    ) -> Result<Option<HostRoute>> {
        Ok(find_overlap(
            &self.host_routes().await?,
            subnet,
            ignore_oifs,
        ))
    }
}

/// Overlap check on a route list (the default route overlaps everything and is skipped).
pub fn find_overlap(
    routes: &[HostRoute],
    subnet: Ipv4Net,
    ignore_oifs: &[u32],
) -> Option<HostRoute> {
    routes
        .iter()
        .filter(|r| r.destination.prefix_len() > 0)
        .filter(|r| !r.oif.is_some_and(|o| ignore_oifs.contains(&o)))
        .find(|r| overlaps(r.destination, subnet))
        .cloned()
}

/// Whether two IPv4 subnets share an address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn host_route(m: &RouteMessage) -> Option<HostRoute> {
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut dest = Ipv4Addr::UNSPECIFIED;
    let (mut oif, mut gateway) = (None, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dest = *d,
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            _ => {}
        }
    }
    Some(HostRoute {
        destination: Ipv4Net::new(dest, m.header.destination_prefix_length)
            .ok()?
            .trunc(),
        oif,
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, oif: u32) -> HostRoute {
        HostRoute {
            destination: s.parse().unwrap(),
            oif: Some(oif),
            gateway: None,
        }
    }

    #[test]
    fn overlap_ignores_default_route_and_own_bridge() {
        let routes = vec![
            r("0.0.0.0/0", 2),
            r("192.0.2.0/24", 2),
            r("10.88.0.0/24", 7),
        ];
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert_eq!(find_overlap(&routes, net("10.99.0.0/24"), &[]), None);
        assert_eq!(
            find_overlap(&routes, net("192.0.2.128/25"), &[]),
            Some(routes[1].clone())
        );
        assert_eq!(
            find_overlap(&routes, net("192.0.0.0/16"), &[]),
            Some(routes[1].clone())
        );
        assert_eq!(find_overlap(&routes, net("10.88.0.0/24"), &[7]), None);
        assert!(find_overlap(&routes, net("10.88.0.0/24"), &[]).is_some());
    }
}
