//! CLI helpers.
