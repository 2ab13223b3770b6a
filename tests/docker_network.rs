//! Docker networks through the driver against a real dockerd: an owned bridge network with the
//! requested subnet, idempotent ensure, a container attached at the requested address.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;

use ipnet::Ipv4Net;
use tend::docker::{DockerDriver, DockerError, DockerSpec, NetworkAttachment, Owner};

const IMAGE: &str = "tend-test/busybox:latest";

/// Removes, on drop, the container and network this test created (container first).
struct Cleanup {
    container: String,
    network: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

fn ensure_image() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker-test-image.sh");
    let out = Command::new(script)
        .output()
        .expect("run docker-test-image.sh");
    assert!(
        out.status.success(),
        "docker-test-image.sh failed (is dockerd running?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn owner(name: &str) -> Owner {
    Owner {
        uid: uuid::Uuid::new_v4().to_string(),
        namespace: "default".into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn network_gets_subnet_and_container_gets_requested_ip() {
    if !common::privileged("network_gets_subnet_and_container_gets_requested_ip") {
        return;
    }
    ensure_image();
    let d = DockerDriver::connect(None).unwrap();
    let name = common::unique("tendnet");
    let net_owner = owner(&name);
    let ctr_owner = owner("web");
    let _clean = Cleanup {
        container: ctr_owner.container_name(),
        network: name.clone(),
    };

    // A /24 picked from this process id; step on when another Docker network already has it.
    let mut picked = None;
    for i in 0..8u32 {
        let third = ((std::process::id() + i * 37) % 200 + 20) as u8;
        let subnet: Ipv4Net = format!("10.231.{third}.0/24").parse().unwrap();
        let gateway = Ipv4Addr::new(10, 231, third, 1);
        match d.ensure_network(&name, subnet, gateway, &net_owner).await {
            Ok(id) => {
                picked = Some((subnet, gateway, id));
                break;
            }
            Err(DockerError::Other { message, .. }) if message.contains("overlap") => continue,
            Err(e) => panic!("ensure_network: {e}"),
        }
    }
    let (subnet, gateway, id) = picked.expect("a free /24 in 10.231.0.0/16");

    // Idempotent: same id; a different subnet for the same name is refused, not changed.
    assert_eq!(
        d.ensure_network(&name, subnet, gateway, &net_owner)
            .await
            .unwrap(),
        id
    );
    let other: Ipv4Net = "10.232.0.0/24".parse().unwrap();
    let err = d
        .ensure_network(&name, other, Ipv4Addr::new(10, 232, 0, 1), &net_owner)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DockerError::NetworkMismatch { .. }),
        "{err:?}"
    );
    let owned = d.list_owned_networks().await.unwrap();
    let listed = owned.iter().find(|n| n.id == id).expect("listed as owned");
    assert_eq!(listed.owner, net_owner);
    assert_eq!(listed.subnets, [subnet.to_string()]);
    assert!(owned.iter().all(|n| n.name != "bridge"));

    let ip = Ipv4Addr::from(u32::from(subnet.network()) + 10);
    let spec = DockerSpec {
        image: IMAGE.into(),
        cmd: vec!["sleep".into(), "60".into()],
        network: Some(NetworkAttachment {
            network: name.clone(),
            ipv4: Some(ip),
        }),
        ..Default::default()
    };
    let cid = d.create_and_start(&ctr_owner, &spec).await.unwrap();
    let info = d.inspect(&cid).await.unwrap();
    assert_eq!(info.networks.len(), 1, "{:?}", info.networks);
    assert_eq!(info.networks[0].network, name);
    assert_eq!(info.networks[0].ipv4, Some(ip));
    // Inside the container, as a user would look: eth0 has the address and the gateway answers.
    let addr = d.exec(&cid, &["ip", "-4", "addr", "show"]).await.unwrap();
    assert!(addr.output.contains(&format!("{ip}/24")), "{}", addr.output);
    let ping = d
        .exec(&cid, &["ping", "-c", "1", "-W", "2", &gateway.to_string()])
        .await
        .unwrap();
    assert_eq!(ping.exit_code, 0, "{}", ping.output);

    // Removing the network while attached fails; after the container is gone it works, twice.
    assert!(d.remove_network(&name).await.is_err());
    assert!(d.remove(&cid, true).await.unwrap());
    assert!(d.remove_network(&name).await.unwrap());
    assert!(!d.remove_network(&name).await.unwrap());
}

#[tokio::test]
async fn no_network_means_loopback_only() {
    if !common::privileged("no_network_means_loopback_only") {
        return;
    }
    ensure_image();
    let d = DockerDriver::connect(None).unwrap();
    let o = owner("isolated");
    let _clean = Cleanup {
        container: o.container_name(),
        network: String::new(),
    };
    let spec = DockerSpec {
        image: IMAGE.into(),
        cmd: vec!["sleep".into(), "60".into()],
        ..Default::default()
    };
    let cid = d.create_and_start(&o, &spec).await.unwrap();
    let links = d.exec(&cid, &["ip", "-o", "link"]).await.unwrap();
    assert!(links.output.contains("lo:"), "{}", links.output);
    assert!(!links.output.contains("eth0"), "{}", links.output);
}
