//! Peer crates from crates.io, each driven through its own public API.

use std::sync::Arc;

use imbl::Vector;

use crate::strategy::{fill, Res, Strategy};
use crate::sys;

fn read_u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// crumbles 0.4: SIGSEGV + mprotect dirty tracking, user-space copies of the clean pages.
///
/// Its snapshots are a stack: `snap` pushes, `revert` pops and restores, `apply` pops and keeps the
/// state. Restore-and-keep is `revert` followed by `snap`.
pub struct Crumbles {
    m: crumbles::Mmap,
}

impl Strategy for Crumbles {
    const NAME: &'static str = "crumbles";

    fn setup(bytes: usize) -> Res<Self> {
        let page = sys::page_size();
        let mut m = crumbles::Mmap::new(bytes.div_ceil(page), page)?;
        fill(&mut m[..], 0);
        Ok(Self { m })
    }
    fn capacity(&self) -> usize {
        self.m.len()
    }
    fn read_u8(&self, off: usize) -> u8 {
        self.m[off]
    }
    fn read_u64(&self, off: usize) -> u64 {
        read_u64_at(&self.m, off)
    }
    fn write_u8(&mut self, off: usize, v: u8) -> Res<()> {
        self.m[off] = v;
        Ok(())
    }
    fn write_u64(&mut self, off: usize, v: u64) -> Res<()> {
        self.m[off..off + 8].copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn snapshot(&mut self) -> Res<()> {
        self.m.snap()?;
        Ok(())
    }
    fn restore(&mut self) -> Res<()> {
        self.m.revert()?;
        self.m.snap()?;
        Ok(())
    }
    fn release(&mut self) -> Res<()> {
        self.m.apply()?;
        Ok(())
    }
    fn restore_and_release(&mut self) -> Res<()> {
        self.m.revert()?;
        Ok(())
    }
}

/// memsnap 0.1: a snapshot is a memfd, a view a MAP_PRIVATE mapping of it; `View::restore` remaps
/// the whole view. It has no dirty tracking: a snapshot of a written view is a full copy
/// (`take_snapshot`). Whether the view was written since its snapshot is tracked here, so a snapshot
/// of an unwritten view is the snapshot it already has.
pub struct Memsnap {
    root: Arc<memsnap::Snapshot>,
    view: memsnap::ArcView,
    stack: Vec<Arc<memsnap::Snapshot>>,
    written: bool,
}

impl Memsnap {
    fn touch_all(&self) {
        let page = sys::page_size();
        let mut s = 0u8;
        for p in (0..self.view.len()).step_by(page) {
            s ^= self.view[p];
        }
        std::hint::black_box(s);
    }
}

impl Strategy for Memsnap {
    const NAME: &'static str = "memsnap";
    const FULL_COPY: bool = true;

    fn setup(bytes: usize) -> Res<Self> {
        let mut snap = memsnap::Snapshot::zeroed(bytes)?;
        {
            let mut v = snap.view_mut()?;
            fill(v.as_mut_slice(), 0);
        }
        let root = Arc::new(snap);
        let view = root.view_arc()?;
        let s = Self {
            root,
            view,
            stack: Vec::new(),
            written: false,
        };
        s.touch_all();
        Ok(s)
    }
    fn capacity(&self) -> usize {
        self.view.len()
    }
    fn read_u8(&self, off: usize) -> u8 {
        self.view[off]
    }
    fn read_u64(&self, off: usize) -> u64 {
        read_u64_at(self.view.as_slice(), off)
    }
    fn write_u8(&mut self, off: usize, v: u8) -> Res<()> {
        self.written = true;
        self.view[off] = v;
        Ok(())
    }
    fn write_u64(&mut self, off: usize, v: u64) -> Res<()> {
        self.written = true;
        self.view[off..off + 8].copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn snapshot(&mut self) -> Res<()> {
        if self.written {
            let snap = Arc::new(self.view.take_snapshot()?);
            self.view = snap.view_arc()?;
            self.root = snap;
            self.written = false;
        }
        self.stack.push(self.root.clone());
        Ok(())
    }
    fn restore(&mut self) -> Res<()> {
        let top = self.stack.last().ok_or("no snapshot")?;
        if !Arc::ptr_eq(top, &self.root) {
            self.view = top.view_arc()?;
            self.root = top.clone();
        } else if self.written {
            self.view.restore()?;
        }
        self.written = false;
        Ok(())
    }
    fn release(&mut self) -> Res<()> {
        self.stack.pop().ok_or("no snapshot")?;
        Ok(())
    }
}

const IMBL_PAGE: usize = 4096;
type Page = Arc<[u8; IMBL_PAGE]>;

/// imbl: a persistent `Vector<Arc<[u8; 4096]>>` page table. A snapshot is an O(1) clone of the
/// vector; the first write to a page after it copies the page and the tree path (`Arc::make_mut`).
/// No faults, but no flat memory either: every read walks the tree.
pub struct Imbl {
    live: Vector<Page>,
    stack: Vec<Vector<Page>>,
}

impl Imbl {
    fn page_mut(&mut self, off: usize) -> &mut [u8; IMBL_PAGE] {
        Arc::make_mut(self.live.get_mut(off / IMBL_PAGE).expect("offset in range"))
    }
}

impl Strategy for Imbl {
    const NAME: &'static str = "imbl";

    fn setup(bytes: usize) -> Res<Self> {
        if sys::page_size() != IMBL_PAGE {
            return Err(format!("built for {IMBL_PAGE}-byte pages").into());
        }
        let live = (0..bytes.div_ceil(IMBL_PAGE))
            .map(|p| {
                let mut b = [0u8; IMBL_PAGE];
                fill(&mut b, p * IMBL_PAGE);
                Arc::new(b)
            })
            .collect();
        Ok(Self {
            live,
            stack: Vec::new(),
        })
    }
    fn capacity(&self) -> usize {
        self.live.len() * IMBL_PAGE
    }
    fn read_u8(&self, off: usize) -> u8 {
        self.live.get(off / IMBL_PAGE).expect("offset in range")[off % IMBL_PAGE]
    }
    fn read_u64(&self, off: usize) -> u64 {
        let page = self.live.get(off / IMBL_PAGE).expect("offset in range");
        read_u64_at(&page[..], off % IMBL_PAGE)
    }
    fn write_u8(&mut self, off: usize, v: u8) -> Res<()> {
        self.page_mut(off)[off % IMBL_PAGE] = v;
        Ok(())
    }
    fn write_u64(&mut self, off: usize, v: u64) -> Res<()> {
        let o = off % IMBL_PAGE;
        self.page_mut(off)[o..o + 8].copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn snapshot(&mut self) -> Res<()> {
        self.stack.push(self.live.clone());
        Ok(())
    }
    fn restore(&mut self) -> Res<()> {
        self.live = self.stack.last().ok_or("no snapshot")?.clone();
        Ok(())
    }
    fn release(&mut self) -> Res<()> {
        self.stack.pop().ok_or("no snapshot")?;
        Ok(())
    }
    fn restore_and_release(&mut self) -> Res<()> {
        self.live = self.stack.pop().ok_or("no snapshot")?;
        Ok(())
    }
}
