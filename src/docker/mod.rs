//! docker driver (in progress).
