//! tend: Linux drivers (snapshots, netlink, cgroups, shim, Docker), the CLI and daemon wiring.
//!
//! Logic lives in `tend-schema` (the data contract) and `tend-controllers` (the reconcile
//! loops); this crate reaches the kernel and wires the pieces together.

pub mod api;
pub mod bench;
pub mod cgroup;
pub mod cli;
pub mod daemon;
pub mod docker;
pub mod image;
/// Failpoints for fault-injection tests (defined in `tend-schema` so the store can use them).
pub use tend_schema::failpoint;
pub mod net;
pub mod probe;
pub mod runtime_docker;
pub mod runtime_native;
pub mod shim;
pub mod snapshot;
pub mod util;
