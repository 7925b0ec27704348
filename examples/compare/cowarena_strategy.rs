//! cowarena through its public API.

use cowarena::{Arena, Snapshot};

use crate::strategy::{fill, Res, Strategy};

pub struct CowArena {
    a: Arena,
    stack: Vec<Snapshot>,
}

impl Strategy for CowArena {
    const NAME: &'static str = "cowarena";

    fn setup(bytes: usize) -> Res<Self> {
        let mut a = Arena::with_capacity(bytes)?;
        let cap = a.capacity();
        fill(a.bytes_mut(0..cap)?, 0);
        Ok(Self {
            a,
            stack: Vec::new(),
        })
    }
    fn capacity(&self) -> usize {
        self.a.capacity()
    }
    fn read_u8(&self, off: usize) -> u8 {
        self.a.as_bytes()[off]
    }
    fn read_u64(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.a.as_bytes()[off..off + 8].try_into().expect("8 bytes"))
    }
    fn write_u8(&mut self, off: usize, v: u8) -> Res<()> {
        self.a.write(off, &[v])?;
        Ok(())
    }
    fn write_u64(&mut self, off: usize, v: u64) -> Res<()> {
        self.a.write(off, &v.to_le_bytes())?;
        Ok(())
    }
    fn snapshot(&mut self) -> Res<()> {
        self.stack.push(self.a.snapshot()?);
        Ok(())
    }
    fn restore(&mut self) -> Res<()> {
        self.a.restore(self.stack.last().ok_or("no snapshot")?)?;
        Ok(())
    }
    fn release(&mut self) -> Res<()> {
        self.stack.pop().ok_or("no snapshot")?;
        Ok(())
    }
    fn restore_and_release(&mut self) -> Res<()> {
        let s = self.stack.pop().ok_or("no snapshot")?;
        self.a.restore(&s)?;
        drop(s);
        Ok(())
    }
}
