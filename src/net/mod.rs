//! net driver (in progress).
