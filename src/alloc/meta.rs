//! The allocator's view of its metadata for one call: made once from the arena at the start of
//! `alloc`, `free` or `set_root`, with the geometry checked from the header. [`Meta`] reads the
//! header, the page map, slab headers and free runs; [`MetaMut`] is also the only way the
//! allocator writes them, and it marks every page it writes as written in the arena.
//!
//! Reads of list links and page numbers taken from the arena are checked here ([`Meta::slab`],
//! [`Meta::free_run`]), so that the slab and page code never follows one unchecked.

use super::geometry::Geo;
use super::header::{self, corrupt, read_at, read_u64, ClassLists, FreeRun, Header, SlabHeader};
use super::header::{State, HEADER_SIZE};
use super::kinds::{self, PAGE_MAP};
use crate::arena::Arena;
use crate::error::Result;
use bytemuck::Pod;
use std::mem::offset_of;
use std::ops::Range;

/// The metadata of an initialized allocator, read-only, in an arena's or a snapshot's bytes.
#[derive(Clone, Copy)]
pub(super) struct Meta<'a> {
    bytes: &'a [u8],
    g: Geo,
}

impl<'a> Meta<'a> {
    /// The metadata in `bytes`, or `None` if the allocator was never used there.
    pub(super) fn new(bytes: &'a [u8]) -> Result<Option<Meta<'a>>> {
        Ok(header::geometry(bytes)?.map(|g| Meta { bytes, g }))
    }

    #[inline(always)]
    pub(super) fn geo(&self) -> Geo {
        self.g
    }

    #[inline(always)]
    pub(super) fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub(super) fn header(&self) -> &'a Header {
        header::header(self.bytes)
    }

    /// The current slab of class `c` (0: none), read on its own for the fast path.
    #[inline(always)]
    pub(super) fn current_slab(&self, c: usize) -> Option<usize> {
        let at = offset_of!(Header, classes) + c * size_of::<ClassLists>();
        let b = self.bytes.get(at..at + 4)?;
        Some(u32::from_ne_bytes(b.try_into().ok()?) as usize)
    }

    #[inline(always)]
    pub(super) fn kind(&self, p: usize) -> u8 {
        kinds::at(self.bytes, p)
    }

    /// The `T` at offset `at`, without a bounds check: for the fast paths.
    ///
    /// # Safety
    /// `at + size_of::<T>()` is at most the arena's capacity.
    #[inline(always)]
    pub(super) unsafe fn read<T: Pod>(&self, at: usize) -> T {
        // SAFETY: in bounds (forwarded to the caller).
        unsafe { read_at(self.bytes, at) }
    }

    pub(super) fn read_u64(&self, at: usize) -> Option<u64> {
        read_u64(self.bytes, at)
    }

    /// The header of page `p`, read as a slab's (`p` must be below `pages`).
    pub(super) fn slab_header(&self, p: usize) -> SlabHeader {
        let at = self.g.page_at(p);
        bytemuck::pod_read_unaligned(&self.bytes[at..at + size_of::<SlabHeader>()])
    }

    /// The header of slab `s` after checking that `s` (a list link or a page read from the
    /// arena) is a slab of class `c`.
    pub(super) fn slab(&self, s: usize, c: usize) -> Result<SlabHeader> {
        if !self.g.in_use(s) || self.kind(s) != kinds::slab(c) {
            return Err(corrupt());
        }
        let h = self.slab_header(s);
        if h.class as usize != c {
            return Err(corrupt());
        }
        Ok(h)
    }

    /// The links of the free run at `s`, after checking that `s` heads a run that ends by `top`.
    pub(super) fn free_run(&self, s: usize) -> Result<FreeRun> {
        if !self.g.in_use(s) || self.kind(s) != kinds::FREE_HEAD {
            return Err(corrupt());
        }
        let at = self.g.page_at(s);
        let run: FreeRun = bytemuck::pod_read_unaligned(&self.bytes[at..at + size_of::<FreeRun>()]);
        let pages = usize::try_from(run.pages).unwrap_or(usize::MAX);
        if pages == 0 || pages > self.g.top - s {
            return Err(corrupt());
        }
        Ok(run)
    }
}

/// The metadata of an initialized allocator in an arena, for reading and writing.
pub(super) struct MetaMut<'a> {
    arena: &'a mut Arena,
    g: Geo,
}

impl<'a> MetaMut<'a> {
    /// The view for the fast paths: `None` unless the header is valid and its page size is the
    /// arena's (initialization and errors are the slow paths' business). The page size is the
    /// one the validity check reads, a constant on x86-64, so that there every position in a
    /// slab is a constant too.
    #[inline(always)]
    pub(super) fn ready(arena: &'a mut Arena) -> Option<MetaMut<'a>> {
        let shift = header::page_shift(arena.as_bytes());
        if shift != arena.page_shift() {
            return None;
        }
        let g = header::ready(arena.as_bytes(), shift)?;
        Some(MetaMut { arena, g })
    }

    /// The view, or `None` if the allocator was never used in `arena`.
    pub(super) fn open(arena: &'a mut Arena) -> Result<Option<MetaMut<'a>>> {
        let g = header::geometry(arena.as_bytes())?;
        Ok(g.map(|g| MetaMut { arena, g }))
    }

    /// The view, initializing the allocator on first use.
    pub(super) fn ensure(arena: &'a mut Arena) -> Result<MetaMut<'a>> {
        let g = match header::state(arena.as_bytes()) {
            State::Ready(g) => g,
            State::Uninit => Self::init(arena)?,
            State::Corrupt => return Err(corrupt()),
        };
        Ok(MetaMut { arena, g })
    }

    #[cold]
    fn init(arena: &mut Arena) -> Result<Geo> {
        let meta_pages = header::metadata_len(arena.capacity(), arena.page_shift())
            .div_ceil(1 << arena.page_shift());
        let nonzero = arena.maybe_nonzero(0..meta_pages);
        let (g, fields) = header::init(arena.as_bytes(), arena.page_shift(), &nonzero)?;
        let fields = bytemuck::bytes_of(&fields);
        arena.bytes_mut(0..fields.len())?.copy_from_slice(fields);
        Ok(g)
    }

    #[inline(always)]
    pub(super) fn read(&self) -> Meta<'_> {
        Meta {
            bytes: self.arena.as_bytes(),
            g: self.g,
        }
    }

    #[inline(always)]
    pub(super) fn geo(&self) -> Geo {
        self.g
    }

    pub(super) fn capacity(&self) -> usize {
        self.arena.capacity()
    }

    pub(super) fn header_mut(&mut self) -> Result<&mut Header> {
        Ok(bytemuck::from_bytes_mut(
            self.arena.bytes_mut(0..HEADER_SIZE)?,
        ))
    }

    /// Moves `top`, in the header and in this view's geometry.
    pub(super) fn set_top(&mut self, top: usize) -> Result<()> {
        self.header_mut()?.top = top as u64;
        self.g.top = top;
        Ok(())
    }

    pub(super) fn set_kinds(&mut self, pages: Range<usize>, k: u8) -> Result<()> {
        self.arena
            .bytes_mut(PAGE_MAP + pages.start..PAGE_MAP + pages.end)?
            .fill(k);
        Ok(())
    }

    /// Page `p` for writing, or `None` past the arena's end: for the fast paths, which then
    /// fall back to their slow path (and its error), so that they build no `Result`. Its length
    /// is the arena's page size, which [`ready`](MetaMut::ready) checked is the header's.
    #[inline(always)]
    pub(super) fn fast_page_mut(&mut self, p: usize) -> Option<&mut [u8]> {
        let page = self.arena.page_mut(p)?;
        debug_assert_eq!(page.len(), self.g.page());
        Some(page)
    }

    /// Page `p` for writing.
    pub(super) fn page_mut(&mut self, p: usize) -> Result<&mut [u8]> {
        let at = self.g.page_at(p);
        self.arena.bytes_mut(at..at + self.g.page())
    }

    /// The header of slab `s`, for writing, after the checks of [`Meta::slab`].
    pub(super) fn slab_mut(&mut self, s: usize, c: usize) -> Result<&mut SlabHeader> {
        self.read().slab(s, c)?;
        let at = self.g.page_at(s);
        Ok(bytemuck::from_bytes_mut(
            self.arena.bytes_mut(at..at + size_of::<SlabHeader>())?,
        ))
    }

    /// The links of the free run at `s`, for writing, after the checks of [`Meta::free_run`].
    pub(super) fn free_run_mut(&mut self, s: usize) -> Result<&mut FreeRun> {
        self.read().free_run(s)?;
        let at = self.g.page_at(s);
        Ok(bytemuck::from_bytes_mut(
            self.arena.bytes_mut(at..at + size_of::<FreeRun>())?,
        ))
    }

    /// Copies `bytes` to offset `at`.
    pub(super) fn write(&mut self, at: usize, bytes: &[u8]) -> Result<()> {
        if !bytes.is_empty() {
            self.arena
                .bytes_mut(at..at.saturating_add(bytes.len()))?
                .copy_from_slice(bytes);
        }
        Ok(())
    }
}
