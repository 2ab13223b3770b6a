//! tend-schema: the data contract — resource types, validation, quantities, and the store.
//!
//! Everything that says what a tend object *is* lives here; the controllers say what it *does*.

pub mod decode;
pub mod failpoint;
pub mod field;
pub mod kinds;
pub mod meta;
pub mod object;
pub mod policy;
pub mod quantity;
pub mod selector;
pub mod store;

pub use field::{FieldError, FieldErrors};
pub use kinds::Kind;
pub use meta::{Condition, ConditionStatus, ObjectMeta, OwnerReference, Time};
pub use object::{AnyObject, Object, ObjectKey};
pub use quantity::Quantity;

/// The API group and version every tend kind belongs to.
pub const API_VERSION: &str = "tend.dev/v1";
/// The API group alone, as Kubernetes discovery names it.
pub const API_GROUP: &str = "tend.dev";
/// The namespace an object lands in when its metadata names none.
pub const DEFAULT_NAMESPACE: &str = "default";
