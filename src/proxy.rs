//! Proxies: copy-on-write arenas that read through to a source arena until they write.
//!
//! `a.proxy()` is the seed's `Proxy(obj)` at page granularity: a [`Proxy`] shows its source's
//! current bytes on every page it has not written, and its own bytes on the pages it has. The
//! unit is the page: once a proxy writes a page it no longer sees its source's later writes to
//! *that page* (other objects on it included). A page counts as written once it is lent for
//! writing (`write`, `bytes_mut`, `get_mut`, a view's element), whether or not a byte is then
//! stored to it: what a proxy shows never depends on which bytes of a `&mut` the caller
//! happened to store, and its snapshots freeze exactly what it shows.
//!
//! # The seed's examples
//!
//! ```text
//! a = Point(1, 2); b = Proxy(a)
//! b.x == 1;  a.x = 42;  b.x == 42        # b reads through to a until b writes
//! b.x = 420; a.x == 42; b.x == 420       # b's write is b's alone
//! ```
//!
//! ```
//! use cowarena::{Arena, ViewMut};
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
//! #[repr(C)]
//! struct Point { x: i32, y: i32 }
//!
//! let mut arena = Arena::with_capacity(1 << 20)?;
//! let a = arena.alloc(Point { x: 1, y: 2 })?;   // a = Point(1, 2)
//! let mut b = arena.proxy()?;                    // b = Proxy(a): the whole arena, proxied
//! assert_eq!(b.with(&arena)?.get(a).x, 1);       // b.x == 1
//! arena.get_mut(a).x = 42;                       // a.x = 42
//! assert_eq!(b.with(&arena)?.get(a).x, 42);      // b.x == 42
//! b.with_mut(&arena)?.get_mut(a).x = 420;        // b.x = 420
//! assert_eq!(arena.get(a).x, 42);                // a.x == 42
//! assert_eq!(b.with(&arena)?.get(a).x, 420);     // b.x == 420
//! # Ok::<(), cowarena::Error>(())
//! ```
//!
//! The nested case, `c = TwoPoints(a, b); d = Proxy(c)`. As in the Python original, `c` holds
//! *references* to `a` and `b` (here two `Ptr<Point>`), so writes to `a` and `b` are seen through
//! `c` and through `d`. (Were the points stored inline in `TwoPoints`, `c.a` would be a copy of
//! `a` and `a.x = 10` could not show as `d.a.x`.)
//!
//! ```
//! use cowarena::{Arena, Ptr, ViewMut};
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
//! #[repr(C)]
//! struct Point { x: i32, y: i32 }
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
//! #[repr(C)]
//! struct TwoPoints { a: Ptr<Point>, b: Ptr<Point> }
//!
//! let mut arena = Arena::with_capacity(1 << 20)?;
//! let a = arena.alloc(Point { x: 1, y: 2 })?;
//! let b = arena.alloc(Point { x: 3, y: 4 })?;
//! let c = arena.alloc(TwoPoints { a, b })?;
//! let mut d = arena.proxy()?;                    // d = Proxy(c)
//!
//! arena.get_mut(a).x = 10;                       // a.x = 10
//! let d_c = *d.with(&arena)?.get(c);
//! assert_eq!(d.with(&arena)?.get(d_c.a).x, 10);  // d.a.x == 10
//! arena.get_mut(b).y = 20;                       // b.y = 20
//! assert_eq!(d.with(&arena)?.get(d_c.b).y, 20);  // d.b.y == 20
//!
//! d.with_mut(&arena)?.get_mut(d_c.a).x = 100;    // d.a.x = 100
//! let view = d.with(&arena)?;
//! assert_eq!(view.get(d_c.a).x, 100);            // d.a.x == 100
//! assert_eq!(view.get(d_c.a).y, arena.get(a).y); // d.a.y == a.y
//! assert_eq!(arena.get(a).x, 10);                // a.x == 10
//! let c_a = arena.get(c).a;
//! assert_eq!(arena.get(c_a).x, 10);              // c.a.x == 10
//!
//! // The unit of copy-on-write is the page, not the object: `a` and `b` share a slab page, so
//! // once d has written `a` it no longer sees the source's later writes to `b` either.
//! assert_eq!(a.offset() / cowarena::page_size(), b.offset() / cowarena::page_size());
//! arena.get_mut(b).y = 30;
//! assert_eq!(d.with(&arena)?.get(d_c.b).y, 20);
//! # Ok::<(), cowarena::Error>(())
//! ```
//!
//! Small objects of one size class share pages; to keep an object on a page of its own, make it
//! larger than 1016 bytes. Allocating in a proxy and in its source is described in the
//! [`typed`](crate::typed#proxies) module.
//!
//! # How memory is laid out
//!
//! ```text
//!  source (Layout::Shared)          live file (memfd)            proxy (Layout::Proxy)
//!  +----------------------+        +----------------+        +----------------------+
//!  | MAP_SHARED, writable | <----> | every page of  | -----> | MAP_PRIVATE of the   |
//!  | writes go to the file|        | the source     |  read  | file; a written page |
//!  +----------------------+        +----------------+        | becomes a private    |
//!                                                             | copy (kernel COW)    |
//!                                                             +----------------------+
//! ```
//!
//! Making the first proxy moves the source's memory into a live file (one copy of its data
//! pages) and maps it shared; each proxy maps the file privately, so the kernel shows it the
//! source's writes until it writes a page itself. The source keeps working as an arena: its
//! snapshots copy written pages into the page store (nothing can be remapped under the proxies)
//! and its restores copy into the shared memory, where proxies see them. Once its last proxy is
//! dropped, the source returns to its usual layout at its next snapshot or restore.
//!
//! # Why it is sound
//!
//! The source's writes change bytes the proxy shows, at another address the compiler knows
//! nothing about. So a proxy never lends a byte of its memory unless the source is *borrowed*:
//! every access goes through [`Proxy::with`] (`&source`, giving a [`ProxyRef`]) or
//! [`Proxy::with_mut`] (`&source` too, giving a [`ProxyMut`]), and the references they lend live
//! no longer than that borrow. While any of them lives, the borrow checker rejects every write
//! to the source, on this thread or another, so no `&[u8]` or `&T` the crate lent ever sees its
//! bytes change, and no read races a write. This costs nothing at run time: the source's writes
//! are not checked, and the proxy's reads are plain loads. (A lock shared by source and proxies
//! would cost every source write an atomic operation; confining them to one thread with a
//! `RefCell`-like flag would still have to catch `&mut T` the source lent before the proxy read,
//! which a flag cannot see.)
//!
//! ```compile_fail,E0502
//! // Holding a proxy's bytes while the source is written does not compile.
//! let mut a = cowarena::Arena::with_capacity(1 << 16)?;
//! let b = a.proxy()?;
//! let view = b.with(&a)?;
//! let bytes = view.as_bytes();
//! a.write(0, &[1])?;              // error: `a` is borrowed by `view`
//! assert_eq!(bytes[0], 0);
//! # Ok::<(), cowarena::Error>(())
//! ```
//!
//! ```compile_fail,E0502
//! // Reading a proxy on one thread while the source is written on another does not compile.
//! let mut a = cowarena::Arena::with_capacity(1 << 16)?;
//! let b = a.proxy()?;
//! std::thread::scope(|s| {
//!     s.spawn(|| a.write(0, &[1]));                 // error: `a` is borrowed mutably here
//!     s.spawn(|| b.with(&a).map(|v| v.as_bytes()[0]));  // and shared here
//! });
//! # Ok::<(), cowarena::Error>(())
//! ```
//!
//! ```compile_fail,E0614
//! // A proxy's arena cannot be moved out of its handle (it would outlive the source's borrow).
//! let mut a = cowarena::Arena::with_capacity(1 << 16)?;
//! let mut b = a.proxy()?;
//! let mut other = cowarena::Arena::with_capacity(1 << 16)?;
//! let mut view = b.with_mut(&a)?;
//! std::mem::swap(&mut *view, &mut other);   // error: `ProxyMut` lends no `&mut Arena`
//! # Ok::<(), cowarena::Error>(())
//! ```
//!
//! Two threads can still share a source and its proxies the usual way: a `RwLock<Arena>`
//! whose readers take [`Proxy::with`] and whose writer writes the source.
//!
//! # What a proxy sees
//!
//! On the pages it has not written:
//! - when the source is written or restored: the new bytes;
//! - when the source takes a snapshot: nothing changes;
//! - when the source is dropped: its last bytes, for as long as the proxy lives. The proxy is
//!   then used without a source ([`Proxy::without_source`]).
//!
//! A proxy's [snapshot](ProxyMut::snapshot) freezes what it shows. It costs a copy of every page
//! the source holds data in (the proxy cannot know which of them the source changed), and it is
//! a snapshot of the source's page store: the source can restore it (taking the proxy's
//! changes), and [`Snapshot::to_arena`](crate::Snapshot::to_arena) makes it an ordinary arena.
//! A proxy of a proxy does not exist: take a snapshot's `to_arena` instead.
//!
//! # Processes
//!
//! The source's memory is shared with the file, so a `fork()` child would share it with the
//! parent. [`Arena::fork_run`](crate::Arena::fork_run) and its variants are refused while any
//! arena of the process is in the shared layout, and in a child of any other fork the source's
//! writes fail (its live file records the process that made it).

use crate::arena::layout::Layout;
use crate::arena::shared::ProxyLayout;
use crate::arena::{Arena, ArenaStats};
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::typed::sealed::{Sealed, Token};
use crate::typed::{View, ViewMut};
use std::marker::PhantomData;
use std::ops::Deref;

impl Arena {
    /// A copy-on-write proxy of this arena: it reads through to this arena's current bytes until
    /// it writes a page; its writes are its own. Reading or writing it needs this arena borrowed
    /// ([`Proxy::with`], [`Proxy::with_mut`]), which is what makes it sound: see the
    /// [`proxy`](crate::proxy) module for the layout, what the proxy sees, and costs.
    ///
    /// The first proxy moves this arena's memory into a shared file (a copy of its data pages);
    /// later ones map that file.
    ///
    /// # Errors
    /// [`Error::Os`] if the file or a mapping cannot be made (out of memory, file descriptors or
    /// mappings); [`Error::Unsupported`] in a forked child whose parent made this arena's
    /// proxies. On `Err`, nothing changed: the arena keeps its memory and layout (the shared
    /// memory of a first proxy is built aside and taken only once the proxy is mapped too).
    ///
    /// ```
    /// use cowarena::ViewMut;
    /// let mut a = cowarena::Arena::with_capacity(4096 * 2)?;
    /// a.write(0, &[1])?;
    /// let mut b = a.proxy()?;
    /// assert_eq!(b.with(&a)?.as_bytes()[0], 1);
    /// a.write(0, &[42])?;
    /// assert_eq!(b.with(&a)?.as_bytes()[0], 42);
    /// b.with_mut(&a)?.write(0, &[7])?;
    /// assert_eq!((a.as_bytes()[0], b.with(&a)?.as_bytes()[0]), (42, 7));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn proxy(&mut self) -> Result<Proxy> {
        Ok(Proxy {
            arena: self.new_proxy_arena()?,
        })
    }
}

/// A copy-on-write proxy of an [`Arena`] (its *source*), made by [`Arena::proxy`]: it reads
/// through to the source until it writes a page. See the [`proxy`](crate::proxy) module.
///
/// Its bytes are reached through [`with`](Proxy::with) / [`with_mut`](Proxy::with_mut), which
/// borrow the source for as long as the access lives, or, once the source is dropped, through
/// [`without_source`](Proxy::without_source) / [`without_source_mut`](Proxy::without_source_mut).
///
/// The seed's example, `a = Point(1, 2); b = Proxy(a)`:
///
/// ```
/// use cowarena::ViewMut;
/// # #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// # #[repr(C)]
/// # struct Point { x: i32, y: i32 }
/// let mut arena = cowarena::Arena::with_capacity(1 << 20)?;
/// let a = arena.alloc(Point { x: 1, y: 2 })?;    // a = Point(1, 2)
/// let mut b = arena.proxy()?;                     // b = Proxy(a)
/// assert_eq!(b.with(&arena)?.get(a).x, 1);        // b.x == 1
/// arena.get_mut(a).x = 42;                        // a.x = 42
/// assert_eq!(b.with(&arena)?.get(a).x, 42);       // b.x == 42
/// b.with_mut(&arena)?.get_mut(a).x = 420;         // b.x = 420
/// assert_eq!(arena.get(a).x, 42);                 // a.x == 42
/// assert_eq!(b.with(&arena)?.get(a).x, 420);      // b.x == 420
/// # Ok::<(), cowarena::Error>(())
/// ```
#[derive(Debug)]
pub struct Proxy {
    /// Invariant: in [`Layout::Proxy`]; never lent out as `&mut Arena`, and lent as `&Arena`
    /// only while the source is borrowed or gone.
    arena: Arena,
}

impl Proxy {
    fn layout(&self) -> &ProxyLayout {
        match &self.arena.layout {
            Layout::Proxy(proxy) => proxy,
            _ => unreachable!("a proxy's arena stays in the proxy layout"),
        }
    }

    fn check_source(&self, source: &Arena) -> Result<()> {
        if self.is_proxy_of(source) {
            Ok(())
        } else {
            Err(Error::NotTheSource)
        }
    }

    /// Whether `arena` is this proxy's source.
    pub fn is_proxy_of(&self, arena: &Arena) -> bool {
        matches!(&arena.layout, Layout::Shared(shared) if shared.is_source_of(self.layout()))
    }

    /// Whether the source is gone (dropped), so that the proxy is used without it.
    pub fn source_dropped(&self) -> bool {
        self.layout().source_dropped()
    }

    /// The proxy's bytes and values, read through to `source`, which stays borrowed (and so
    /// unwritten) while the returned view lives.
    ///
    /// # Errors
    /// [`Error::NotTheSource`] if `source` is not the arena this proxy was made from; nothing
    /// changed (no system call is made).
    pub fn with<'a>(&'a self, source: &'a Arena) -> Result<ProxyRef<'a>> {
        self.check_source(source)?;
        Ok(ProxyRef {
            arena: &self.arena,
            _source: PhantomData,
        })
    }

    /// Write access to the proxy, with `source` borrowed while it lives. The first write to a
    /// page, or the first time it is lent for writing, copies it (the kernel's copy-on-write);
    /// from then on the proxy no longer sees the source's writes to that page.
    ///
    /// # Errors
    /// [`Error::NotTheSource`] if `source` is not the arena this proxy was made from; nothing
    /// changed (no system call is made).
    pub fn with_mut<'a>(&'a mut self, source: &'a Arena) -> Result<ProxyMut<'a>> {
        self.check_source(source)?;
        Ok(ProxyMut {
            arena: &mut self.arena,
            _source: PhantomData,
        })
    }

    /// Read access once the source is dropped: the pages the proxy has not written keep the
    /// source's last bytes.
    ///
    /// # Errors
    /// [`Error::SourceAlive`] while the source lives (use [`with`](Proxy::with)).
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 16)?;
    /// a.write(0, b"last words")?;
    /// let b = a.proxy()?;
    /// assert!(b.without_source().is_err());
    /// drop(a);
    /// assert_eq!(&b.without_source()?.as_bytes()[..10], b"last words");
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn without_source(&self) -> Result<ProxyRef<'_>> {
        if !self.source_dropped() {
            return Err(Error::SourceAlive);
        }
        Ok(ProxyRef {
            arena: &self.arena,
            _source: PhantomData,
        })
    }

    /// Write access once the source is dropped.
    ///
    /// # Errors
    /// [`Error::SourceAlive`] while the source lives (use [`with_mut`](Proxy::with_mut)).
    pub fn without_source_mut(&mut self) -> Result<ProxyMut<'_>> {
        if !self.source_dropped() {
            return Err(Error::SourceAlive);
        }
        Ok(ProxyMut {
            arena: &mut self.arena,
            _source: PhantomData,
        })
    }

    /// Capacity in bytes (the source's).
    pub fn capacity(&self) -> usize {
        self.arena.capacity()
    }

    /// Counters describing the proxy (`is_proxy` is set) and the page store it shares with its
    /// source.
    pub fn stats(&self) -> ArenaStats {
        self.arena.stats()
    }
}

/// Read access to a [`Proxy`] while its source is borrowed (or gone): everything an `&Arena`
/// offers, through `Deref`, and [`View`] for the typed collections.
#[derive(Debug)]
pub struct ProxyRef<'a> {
    arena: &'a Arena,
    /// The source's borrow, which must outlive every reference lent from here.
    _source: PhantomData<&'a Arena>,
}

impl Deref for ProxyRef<'_> {
    type Target = Arena;

    fn deref(&self) -> &Arena {
        self.arena
    }
}

/// Write access to a [`Proxy`] while its source is borrowed (or gone): reads through
/// [`View`], writes through [`ViewMut`] (so the collections work on
/// it), and [`snapshot`](ProxyMut::snapshot). It lends no `&mut Arena`: the proxy's memory must
/// never be moved away from the source's borrow.
#[derive(Debug)]
pub struct ProxyMut<'a> {
    arena: &'a mut Arena,
    _source: PhantomData<&'a Arena>,
}

impl ProxyMut<'_> {
    pub(crate) fn arena(&self) -> &Arena {
        self.arena
    }

    /// The proxy's bytes (see [`Arena::as_bytes`]).
    pub fn as_bytes(&self) -> &[u8] {
        self.arena.as_bytes()
    }

    /// Copies `buf.len()` bytes at `offset` of the proxy into `buf` (see [`Arena::read`]).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] past the capacity.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.arena.read(offset, buf)
    }

    /// Freezes what the proxy shows into a [`Snapshot`] of its source's page store: the source
    /// can [restore](Arena::restore) it, and [`Snapshot::to_arena`] makes it an ordinary arena.
    /// Costs a copy of every page the source holds data in.
    ///
    /// # Errors
    /// [`Error::Os`] as for [`Arena::snapshot`], or if the source's live file cannot be
    /// scanned for its data. On `Err`, no snapshot was taken and the proxy shows what it
    /// showed; a later call freezes everything again.
    ///
    /// ```
    /// use cowarena::ViewMut;
    /// let mut a = cowarena::Arena::with_capacity(1 << 16)?;
    /// let mut b = a.proxy()?;
    /// b.with_mut(&a)?.write(0, b"proposal")?;
    /// let s = b.with_mut(&a)?.snapshot()?;
    /// a.restore(&s)?;                      // the source takes the proxy's changes
    /// assert_eq!(&a.as_bytes()[..8], b"proposal");
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.arena.snapshot()
    }
}

impl Sealed for ProxyRef<'_> {}
impl Sealed for ProxyMut<'_> {}

/// A proxy read while its source is borrowed (or gone): see the [module docs](self).
impl View for ProxyRef<'_> {
    #[inline]
    fn try_bytes(&self) -> Result<&[u8]> {
        Ok(self.as_bytes())
    }
}

/// A proxy written while its source is borrowed (or gone): see the [module docs](self).
impl View for ProxyMut<'_> {
    #[inline]
    fn try_bytes(&self) -> Result<&[u8]> {
        Ok(self.arena().as_bytes())
    }
}

/// Writes to a proxy: the first write to a page copies it (the kernel's copy-on-write), and the
/// proxy stops seeing its source's writes to that page.
impl ViewMut for ProxyMut<'_> {
    fn arena_mut(&mut self, _: Token) -> &mut Arena {
        self.arena
    }
}
