//! shim driver (in progress).
