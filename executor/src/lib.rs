#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod executor;
mod registry;
mod waker;

pub use executor::{Executor, Owner, TaskId};
pub use registry::{Completion, DuplicateToken, Pending, Registry};
