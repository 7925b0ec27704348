#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs, missing_debug_implementations)]

mod alloc;
mod arena;
pub mod collections;
mod error;
pub mod fork;
mod page_set;
mod page_table;
mod ptr;
mod snapshot;
mod store;
mod sys;
pub mod typed;

pub use alloc::AllocStats;
pub use arena::{Arena, ArenaBuilder, ArenaStats, MAX_REMAPPED_RUNS, REMAP_MIN_RUN};
pub use collections::{ArenaBytes, ArenaMap, ArenaVec};
pub use error::{Error, InvalidPtrReason, Result};
pub use fork::{Branch, ForkError, ForkOptions};
pub use ptr::Ptr;
pub use snapshot::{Snapshot, MAX_VIEW_MAPPINGS, MAX_VIEW_RUNS};
pub use store::StoreStats;
pub use sys::page_size;
pub use typed::{View, ViewMut};
