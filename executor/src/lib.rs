#![doc = include_str!("../README.md")]
// Unsafe code is one raw waker (`context_waker`), nowhere else.
#![deny(unsafe_code)]

pub mod context_waker;
mod executor;
mod id_map;
mod registry;
mod waker;

pub use executor::{Executor, Owner, TaskId};
pub use id_map::IdMap;
pub use registry::{Completion, DuplicateToken, Pending, Registry};
