//! Host object names derived from object uids, with tend's prefixes, within the 15-byte limit.

/// Prefix of bridges tend owns (`tnd-<10 hex>`).
pub const BRIDGE_PREFIX: &str = "tnd-";
/// Prefix of host-side veth ends tend owns (`tnv-<10 hex><network index>`).
pub const VETH_PREFIX: &str = "tnv-";
/// Prefix of named network namespaces tend owns (`tend-<uid>`).
pub const NETNS_PREFIX: &str = "tend-";

/// Whether an interface name carries one of tend's prefixes (so an orphan sweep may touch it).
pub fn is_tend_link(name: &str) -> bool {
    name.starts_with(BRIDGE_PREFIX) || name.starts_with(VETH_PREFIX)
}

/// Ten hex digits identifying `uid`: its first ten hex digits when it is a UUID-like hex string,
/// else a 40-bit FNV-1a hash of it.
pub fn uid_tag(uid: &str) -> String {
    let hex: String = uid.chars().filter(|c| *c != '-').collect();
    if hex.len() >= 10 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return hex[..10].to_ascii_lowercase();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

/// The bridge of the Network with this uid: `tnd-` and ten hex digits (14 bytes).
pub fn bridge_name(network_uid: &str) -> String {
    format!("{BRIDGE_PREFIX}{}", uid_tag(network_uid))
}

/// The host end of a container's veth on its `index`-th network (0..16): `tnv-`, ten hex
/// digits and one hex digit for the index (15 bytes).
///
/// # Panics
/// When `index` is 16 or more (a container has at most 16 networks).
pub fn host_veth_name(container_uid: &str, index: usize) -> String {
    assert!(
        index < 16,
        "at most 16 networks per container, got index {index}"
    );
    format!("{VETH_PREFIX}{}{index:x}", uid_tag(container_uid))
}

/// The interface name inside the namespace for the `index`-th network: `eth0`, `eth1`…
pub fn ns_ifname(index: usize) -> String {
    format!("eth{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_names_fit_and_are_stable() {
        let uid = "3f2a9c1e-77b0-4d2e-9a11-0c5e8f6b1234";
        assert_eq!(bridge_name(uid), "tnd-3f2a9c1e77");
        assert_eq!(host_veth_name(uid, 0), "tnv-3f2a9c1e770");
        assert_eq!(host_veth_name(uid, 15), "tnv-3f2a9c1e77f");
        assert!(host_veth_name(uid, 15).len() <= 15);
        assert_eq!(ns_ifname(1), "eth1");
    }

    #[test]
    fn non_hex_uids_are_hashed_to_ten_hex_digits() {
        let a = uid_tag("not-a-uuid");
        let b = uid_tag("not-a-uuid2");
        assert_eq!(a.len(), 10);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(a, uid_tag("not-a-uuid"));
    }

    #[test]
    fn only_prefixed_links_are_tends() {
        assert!(is_tend_link("tnd-0123456789"));
        assert!(is_tend_link("tnv-01234567890"));
        assert!(!is_tend_link("eth0"));
        assert!(!is_tend_link("docker0"));
        assert!(!is_tend_link("tn-x"));
    }

    #[test]
    #[should_panic(expected = "at most 16 networks")]
    fn veth_index_is_bounded() {
        host_veth_name("abc", 16);
    }
}
