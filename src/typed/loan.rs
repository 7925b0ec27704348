//! [`Loan`]: an arena with a set of handles checked once, which lends their views again and again
//! and takes snapshots and restores in between.
//!
//! A search keeps its state in the arena and loops: lend the state, snapshot, write, and restore
//! on a conflict. A view borrows the arena, so it cannot live across a snapshot or a restore;
//! the loan holds the arena instead, and [`views`](Loan::views) lends the views through a
//! borrow of the loan. The compiler ends each batch of views before the next
//! [`snapshot`](Loan::snapshot) or [`restore`](Loan::restore) (views hold no destructor, so a
//! view's last use ends its borrow), and the next `views()` lends them again at the cost of
//! making them: the handles are checked on the first call and again only after a restore (or
//! any other use of the arena through the loan), never in proportion to the collections' sizes.
//!
//! ```
//! use cowarena::{Arena, ArenaVec};
//! let mut a = Arena::with_capacity(1 << 20)?;
//! let values = ArenaVec::<i8>::with_len_zeroed(&mut a, 100)?;
//! let trail = ArenaVec::<u32>::with_capacity(&mut a, 100)?;
//! let mut loan = a.loan((values, trail));
//! let mut decisions = Vec::new();
//! for var in 0..10 {
//!     decisions.push(loan.snapshot()?);           // a decision: remember the state
//!     let (mut values, mut trail) = loan.views();  // checked on the first call only
//!     values[var] = 1;
//!     trail.push(var as u32)?;                     // within the capacity reserved
//!     if var % 3 == 2 {                            // a conflict: back before the decision
//!         loan.restore(&decisions.pop().unwrap())?;
//!     }
//! }
//! let (values, trail) = loan.views();
//! assert_eq!(trail.as_slice(), &[0, 1, 3, 4, 6, 7, 9]);
//! assert_eq!(values.iter().map(|&v| i32::from(v)).sum::<i32>(), 7);
//! # Ok::<(), cowarena::Error>(())
//! ```
//!
//! # What the compiler refuses
//!
//! A view does not survive a snapshot (whose pages it would write without marking them)...
//!
//! ```compile_fail,E0499
//! # let mut a = cowarena::Arena::with_capacity(1 << 20)?;
//! # let v = cowarena::ArenaVec::<u32>::with_len_zeroed(&mut a, 10)?;
//! let mut loan = a.loan(v);
//! let mut w = loan.views();
//! let s = loan.snapshot()?;
//! w[0] = 1; // error: `loan` is borrowed by `w`
//! # Ok::<(), cowarena::Error>(())
//! ```
//!
//! ...nor a restore (which may change every byte, the length and the buffer), and neither does a
//! reference into one:
//!
//! ```compile_fail,E0499
//! # let mut a = cowarena::Arena::with_capacity(1 << 20)?;
//! # let v = cowarena::ArenaVec::<u32>::with_len_zeroed(&mut a, 10)?;
//! # let s = a.snapshot()?;
//! let mut loan = a.loan(v);
//! let mut w = loan.views();
//! let x = &mut w[0];
//! loan.restore(&s)?;
//! *x = 1; // error: `loan` is borrowed through `x`
//! # Ok::<(), cowarena::Error>(())
//! ```
//!
//! Two batches of views of one loan are never alive together (they would alias):
//!
//! ```compile_fail,E0499
//! # let mut a = cowarena::Arena::with_capacity(1 << 20)?;
//! # let v = cowarena::ArenaVec::<u32>::with_len_zeroed(&mut a, 10)?;
//! let mut loan = a.loan(v);
//! let mut w = loan.views();
//! let mut again = loan.views();
//! w[0] = again[0];
//! # Ok::<(), cowarena::Error>(())
//! ```
//!
//! And the arena itself is out of reach while the loan borrows it:
//!
//! ```compile_fail,E0499
//! # let mut a = cowarena::Arena::with_capacity(1 << 20)?;
//! # let v = cowarena::ArenaVec::<u32>::with_len_zeroed(&mut a, 10)?;
//! # let s = a.snapshot()?;
//! let mut loan = a.loan(v);
//! let mut w = loan.views();
//! a.restore(&s)?; // error: `a` is borrowed by `loan`
//! w[0] = 1;
//! # Ok::<(), cowarena::Error>(())
//! ```
//!
//! # Why lending again without a check is sound
//!
//! A loan keeps what its check found ([`Lend::check`]): offsets, capacities and the tables'
//! headers, never addresses. They stay true while the arena's bytes change only through the
//! loan's views, which keep every collection's invariants (a vector's length within its
//! capacity, written through to its header). A snapshot changes no byte (it may move the arena
//! to another address, which is why the views take the address anew each time; it stays
//! page-aligned, so alignments hold). A restore may change every byte, and every other use of
//! the arena through the loan (it is a [`ViewMut`]) may allocate, free or write anything: both
//! drop what the loan found, and the next `views()` checks the handles again, their memory's
//! disjointness included. Memory a view reads but does not lend (the strings of a map's
//! [`ArenaString`](crate::ArenaString) keys) stays as checked too: the check refuses a loan
//! where any view could write it, and the map's view writes only values.

use super::lend::{self, Lend, Lent};
use super::sealed::{Sealed, Token, TOKEN};
use super::{View, ViewMut};
use crate::arena::Arena;
use crate::error::Result;
use crate::ptr;
use crate::snapshot::Snapshot;
use std::fmt;

mod holder {
    /// Keeps [`Lender`](super::Lender) to `Arena` and `&mut Arena`.
    pub trait Sealed {}
    impl Sealed for crate::Arena {}
    impl Sealed for &mut crate::Arena {}
}

/// What a [`Loan`] holds its arena in: the [`Arena`] itself (the loan owns it, so it can be a
/// field of a longer-lived struct, and [`Loan::into_inner`] gives it back) or `&mut Arena`.
pub trait Lender: holder::Sealed {
    /// The arena (crate-internal).
    #[doc(hidden)]
    fn arena(&self, token: Token) -> &Arena;

    /// The arena, for writing (crate-internal).
    #[doc(hidden)]
    fn arena_mut(&mut self, token: Token) -> &mut Arena;
}

impl Lender for Arena {
    fn arena(&self, _: Token) -> &Arena {
        self
    }

    fn arena_mut(&mut self, _: Token) -> &mut Arena {
        self
    }
}

impl Lender for &mut Arena {
    fn arena(&self, _: Token) -> &Arena {
        self
    }

    fn arena_mut(&mut self, _: Token) -> &mut Arena {
        self
    }
}

/// An arena with handles lent from it: [`views`](Self::views) lends them mutably, as often as
/// needed, and [`snapshot`](Self::snapshot) and [`restore`](Self::restore) work in between (see
/// the [module docs](crate::typed::loan)). Made by [`Arena::loan`] or [`Loan::new`].
///
/// A loan is also a [`View`] and a [`ViewMut`], so every collection operation works through it
/// between batches of views (`trail.reserve(&mut loan, n)?` to make room for a vector whose view
/// cannot allocate); the handles are checked again before the next views.
pub struct Loan<A: Lender, L: Lend> {
    arena: A,
    handles: L,
    /// What the last check of `handles` found; `None` until the first check and after anything
    /// other than the views may have changed the arena.
    checked: Option<L::Checked>,
}

impl<A: Lender, L: Lend> Loan<A, L> {
    /// A loan of `handles` from `arena` (an [`Arena`], or `&mut Arena`). Nothing is checked until
    /// the first [`views`](Self::views).
    ///
    /// ```
    /// use cowarena::{Arena, ArenaVec, Loan};
    /// /// A search state that owns its arena and lends it to itself.
    /// struct Search {
    ///     state: Loan<Arena, ArenaVec<u64>>,
    /// }
    /// let mut a = Arena::with_capacity(1 << 20)?;
    /// let v = ArenaVec::from_elem(&mut a, 0u64, 8)?;
    /// let mut s = Search { state: Loan::new(a, v) };
    /// s.state.views()[3] = 7;
    /// let a = s.state.into_inner();
    /// assert_eq!(v.as_slice(&a)[3], 7);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn new(arena: A, handles: L) -> Self {
        Loan {
            arena,
            handles,
            checked: None,
        }
    }

    /// The handles lent.
    pub fn handles(&self) -> L {
        self.handles
    }

    /// The handles' views, borrowing the loan until their last use.
    ///
    /// # Panics
    /// If a handle names nothing (now: after a restore, say, to a state before it was made), or
    /// two handles' memory overlaps (see [`try_views`](Self::try_views)).
    #[track_caller]
    pub fn views(&mut self) -> L::Out<'_> {
        match self.try_views() {
            Ok(views) => views,
            Err(e) => ptr::fail(e),
        }
    }

    /// The handles' views, or why they cannot be lent.
    ///
    /// # Errors
    /// As [`ViewMut::try_lend_mut`]: [`Error::InvalidPtr`](crate::Error::InvalidPtr) for a
    /// handle that names nothing, [`Error::Overlap`](crate::Error::Overlap) when two handles'
    /// memory overlaps.
    pub fn try_views(&mut self) -> Result<L::Out<'_>> {
        let arena = self.arena.arena_mut(TOKEN);
        let checked = match self.checked {
            Some(checked) => checked,
            None => {
                let checked = lend::check(arena, &self.handles)?;
                self.checked = Some(checked);
                checked
            }
        };
        arena.check_writable()?;
        let lent = Lent::new(arena, false);
        // SAFETY: `checked` came from checking the handles against this arena; since then its
        // bytes changed only through views of this loan (a restore or any other use of the arena
        // through the loan resets `checked`), and those views are gone: they borrowed `self`.
        Ok(unsafe { L::lend(checked, &lent, TOKEN) })
    }

    /// Takes a snapshot of the arena (see [`Arena::snapshot`]). The views lent next need no
    /// check.
    ///
    /// # Errors
    /// As [`Arena::snapshot`].
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.arena.arena_mut(TOKEN).snapshot()
    }

    /// Restores the arena to `snapshot` (see [`Arena::restore`]). The handles are checked again
    /// before the next views: they may name nothing in the state restored.
    ///
    /// # Errors
    /// As [`Arena::restore`].
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<()> {
        self.checked = None;
        self.arena.arena_mut(TOKEN).restore(snapshot)
    }

    /// The arena, for reading (its stats, say) between batches of views.
    pub fn arena(&self) -> &Arena {
        self.arena.arena(TOKEN)
    }

    /// Ends the loan: the arena (or its borrow) back.
    pub fn into_inner(self) -> A {
        self.arena
    }
}

/// Loans. See [`Loan`].
impl Arena {
    /// A [`Loan`] of `handles` from this arena, for a loop that lends them again and again with
    /// snapshots and restores in between (see the [module docs](crate::typed::loan)). Nothing is
    /// checked until its first [`views`](Loan::views).
    pub fn loan<L: Lend>(&mut self, handles: L) -> Loan<&mut Arena, L> {
        Loan::new(self, handles)
    }
}

impl<A: Lender, L: Lend> Sealed for Loan<A, L> {}

impl<A: Lender, L: Lend> View for Loan<A, L> {
    #[inline]
    fn try_bytes(&self) -> Result<&[u8]> {
        Ok(self.arena.arena(TOKEN).as_bytes())
    }
}

impl<A: Lender, L: Lend> ViewMut for Loan<A, L> {
    /// The arena, for any other operation: it may change what the handles name, so they are
    /// checked again before the next views.
    fn arena_mut(&mut self, token: Token) -> &mut Arena {
        self.checked = None;
        self.arena.arena_mut(token)
    }
}

impl<A: Lender, L: Lend> fmt::Debug for Loan<A, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loan")
            .field("checked", &self.checked.is_some())
            .finish_non_exhaustive()
    }
}
