//! The fast, non-cryptographic hasher of the core's internal maps: the
//! `rustc-hash` crate's Fx hash (the one rustc's own maps use).
//!
//! Only for maps whose *contents* the producer of events cannot choose: the
//! catalog's tables (filled from the validated catalog; an event's fields are
//! only looked up in them, so a hostile key can at worst walk the longest
//! probe sequence the catalog made) and the engine's integer state keys. Maps
//! filled from event data (hash owners, fingerprints) use a keyed hasher
//! (`period_rating::DigestState`).

pub use rustc_hash::{FxHashMap, FxHashSet};
