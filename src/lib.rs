#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod arena;
mod error;
mod page_set;
mod page_table;
mod snapshot;
mod store;
mod sys;

pub use arena::{Arena, ArenaBuilder, ArenaStats, MAX_REMAPPED_RUNS, REMAP_MIN_RUN};
pub use error::{Error, Result};
pub use snapshot::{Snapshot, MAX_VIEW_RUNS};
pub use store::StoreStats;
pub use sys::page_size;
