//! What encapsulation needs from a packet buffer: the frame, and room in
//! front of it.
//!
//! The datapath's buffers keep headroom in front of every received frame so
//! that an outer header is written there and the inner frame is never
//! copied. This crate does not depend on the datapath; it asks for this
//! trait instead, which a buffer type implements in a few lines, and ships
//! [`SliceBuf`] over any `&mut [u8]` for tests, benches and fuzzing.

/// A frame with headroom in front of it.
pub trait Headroom {
    /// The frame.
    fn frame(&self) -> &[u8];

    /// Grows the frame by `n` bytes at the front and returns them, or
    /// `None` when the headroom is smaller than `n`.
    fn push_front(&mut self, n: usize) -> Option<&mut [u8]>;

    /// Removes `n` bytes from the front, or returns `None` when the frame is
    /// shorter than that.
    fn pull_front(&mut self, n: usize) -> Option<()>;

    /// Shortens the frame to `len` bytes (no effect if it is shorter).
    fn truncate(&mut self, len: usize);
}

/// A frame at `storage[head..head + len]`, headroom before it.
#[derive(Debug)]
pub struct SliceBuf<'a> {
    storage: &'a mut [u8],
    head: usize,
    len: usize,
}

impl<'a> SliceBuf<'a> {
    /// The frame `storage[head..head + len]`, or `None` if that is out of
    /// bounds.
    #[must_use]
    pub fn new(storage: &'a mut [u8], head: usize, len: usize) -> Option<Self> {
        (head.checked_add(len)? <= storage.len()).then_some(Self { storage, head, len })
    }

    /// Copies `frame` to the end of `storage`, leaving the rest as headroom.
    #[must_use]
    pub fn with_frame(storage: &'a mut [u8], frame: &[u8]) -> Option<Self> {
        let head = storage.len().checked_sub(frame.len())?;
        storage[head..].copy_from_slice(frame);
        Self::new(storage, head, frame.len())
    }

    /// Where the frame starts in the storage.
    #[must_use]
    pub fn head(&self) -> usize {
        self.head
    }

    /// The frame, writable.
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.head..self.head + self.len]
    }

    /// Moves the frame's start back to `head` with length `len`, as a
    /// receive loop does to reuse the buffer; `None` if out of bounds.
    pub fn reset(&mut self, head: usize, len: usize) -> Option<()> {
        if head.checked_add(len)? > self.storage.len() {
            return None;
        }
        self.head = head;
        self.len = len;
        Some(())
    }
}

impl Headroom for SliceBuf<'_> {
    fn frame(&self) -> &[u8] {
        &self.storage[self.head..self.head + self.len]
    }

    fn push_front(&mut self, n: usize) -> Option<&mut [u8]> {
        let head = self.head.checked_sub(n)?;
        self.head = head;
        self.len += n;
        Some(&mut self.storage[head..head + n])
    }

    fn pull_front(&mut self, n: usize) -> Option<()> {
        if n > self.len {
            return None;
        }
        self.head += n;
        self.len -= n;
        Some(())
    }

    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_pull() {
        let mut storage = [0u8; 8];
        let mut b = SliceBuf::with_frame(&mut storage, &[1, 2, 3]).unwrap();
        assert_eq!(b.head(), 5);
        b.push_front(2).unwrap().copy_from_slice(&[8, 9]);
        assert_eq!(b.frame(), &[8, 9, 1, 2, 3]);
        assert!(b.push_front(4).is_none(), "only 3 bytes of headroom left");
        assert_eq!(b.frame().len(), 5, "a failed push leaves the frame alone");
        b.pull_front(2).unwrap();
        assert_eq!(b.frame(), &[1, 2, 3]);
        assert!(b.pull_front(4).is_none());
        assert!(SliceBuf::new(&mut [0u8; 4], 3, 2).is_none());
    }
}
