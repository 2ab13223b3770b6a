//! cgroup driver (in progress).
