//! What the tests of values with invalid bit patterns share: a fieldless enum, where a value lies
//! in its arena, the error an invalid read must be, and the message of a read that must panic.

use bytemuck::{CheckedBitPattern, NoUninit};
use cowarena::{Arena, Error};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A fieldless enum whose valid tags have gaps (0, 3 to 6 and 8 up are invalid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, NoUninit, CheckedBitPattern)]
#[repr(u8)]
pub enum Op {
    Add = 1,
    Sub = 2,
    Jump = 7,
}

/// A 4 MiB arena.
pub fn arena() -> Arena {
    Arena::with_capacity(4 << 20).unwrap()
}

/// The offset in `a` of the value `r` refers to.
pub fn offset_in<T>(a: &Arena, r: &T) -> usize {
    r as *const T as usize - a.as_bytes().as_ptr() as usize
}

/// Whether `e` is the error for an invalid value at offset `at`.
pub fn is_invalid_value(e: &Error, at: usize) -> bool {
    matches!(e, Error::InvalidValue { offset, .. } if *offset == at)
}

/// The panic message of `f`, which must panic (formatted, or a plain `&str`).
pub fn panic_message(f: impl FnOnce()) -> String {
    let e = catch_unwind(AssertUnwindSafe(f)).expect_err("it must panic");
    match e.downcast_ref::<&str>() {
        Some(s) => s.to_string(),
        None => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    }
}
