//! snapshot driver (in progress).
