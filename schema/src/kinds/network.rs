//! Network: a bridge with an IPv4 subnet; containers attach through veth pairs.

use crate::field::FieldErrors;
use crate::meta::CommonStatus;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSpec {
    /// IPv4 CIDR, e.g. `10.88.0.0/24`.
    pub subnet: String,
    /// Default: the first address of the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Default 1500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// A parsed IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 CIDR (like 10.88.0.0/24)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?} has no valid IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{s:?} has no valid prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!("{s:?}: prefix length must be between 8 and 30"));
        }
        let mask = Self::mask_of(prefix);
        if u32::from(addr) & !mask != 0 {
            return Err(format!(
                "{s:?} has host bits set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(u32::from(addr) & mask)
            ));
        }
        Ok(Self {
            network: addr,
            prefix,
        })
    }

    fn mask_of(prefix: u8) -> u32 {
        u32::MAX << (32 - prefix as u32)
    }

    pub fn mask(&self) -> u32 {
        Self::mask_of(self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// True when the address is usable by a host (not the network or broadcast address).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.network && ip != self.broadcast()
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let m = self.mask() & other.mask();
        u32::from(self.network) & m == u32::from(other.network) & m
    }

    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
}

impl NetworkSpec {
    pub fn subnet(&self) -> Result<Subnet, String> {
        Subnet::parse(&self.subnet)
    }

    /// The gateway, defaulted to the subnet's first host address.
    pub fn gateway(&self) -> Result<Ipv4Addr, String> {
        match &self.gateway {
            Some(g) => g
                .parse()
                .map_err(|_| format!("{g:?} is not an IPv4 address")),
            None => Ok(self.subnet()?.first_host()),
        }
    }

    pub fn mtu(&self) -> u32 {
        self.mtu.unwrap_or(1500)
    }

    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::default();
        match self.subnet() {
            Err(m) => errs.push("spec.subnet", m),
            Ok(subnet) => match self.gateway() {
                Err(m) => errs.push("spec.gateway", m),
                Ok(gw) if !subnet.is_host(gw) => errs.push(
                    "spec.gateway",
                    format!("{gw} is not a host address in {}", self.subnet),
                ),
                Ok(_) => {}
            },
        }
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                errs.push("spec.mtu", format!("{mtu} is outside 68..65535"));
            }
        }
        errs.into_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default)]
    pub leases: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let s = Subnet::parse("10.88.0.0/24").unwrap();
        assert!(s.is_host("10.88.0.1".parse().unwrap()));
        assert!(!s.is_host("10.88.0.255".parse().unwrap()));
        assert!(!s.contains("10.89.0.1".parse().unwrap()));
        assert!(s.overlaps(&Subnet::parse("10.88.0.0/16").unwrap()));
        assert!(!s.overlaps(&Subnet::parse("10.88.1.0/24").unwrap()));
        assert!(Subnet::parse("10.88.0.1/24")
            .unwrap_err()
            .contains("host bits"));
        assert!(Subnet::parse("nope").is_err());
        assert!(Subnet::parse("10.0.0.0/31").is_err());
    }

    #[test]
    fn gateway_must_be_inside() {
        let spec = NetworkSpec {
            subnet: "10.88.0.0/24".into(),
            gateway: Some("10.9.0.1".into()),
            mtu: None,
        };
        let err = spec.validate().unwrap_err();
        assert_eq!(err.0[0].field, "spec.gateway");
    }
}
