//! Docker's own networking as tend uses it, against a real dockerd: a container made without a
//! network has loopback only (tend then moves it into its own namespace on tend's bridge).

mod common;

use std::process::Command;

use tend::docker::{DockerDriver, DockerSpec, Owner};

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
