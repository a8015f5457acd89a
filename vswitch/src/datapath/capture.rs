//! Capture points: a copy of what a port sends and receives, for
//! `vsctl capture`.
//!
//! A worker holds the [`Tap`]s of the captures in progress. With none,
//! the per-frame cost is one test of an empty list. With some, each frame
//! received on or sent to a tapped port is copied into a bounded queue
//! ([`QUEUE`] frames) with `try_send`: a reader that does not keep up loses
//! frames, counted in the tap's `dropped`, and never slows the datapath.
//! A tap whose reader has gone is removed by the worker at its next frame.
//! The filter (BPF) runs on the reader's side, off the datapath.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::ids::PortId;
use crate::switch::DropReason;

/// Frames a capture may have queued before further ones are dropped.
pub const QUEUE: usize = 4096;

/// One copied frame.
#[derive(Clone, Debug)]
pub struct Captured {
    /// When the worker saw it.
    pub time: SystemTime,
    /// `true` for a frame sent to the port, `false` for one received.
    pub outbound: bool,
    /// For a received frame the switch dropped, why.
    pub drop: Option<DropReason>,
    /// The frame.
    pub frame: Vec<u8>,
}

/// The worker's end of one capture.
#[derive(Clone, Debug)]
pub struct Tap {
    port: PortId,
    tx: Sender<Captured>,
    dropped: Arc<AtomicU64>,
}

/// The reader's end of one capture.
#[derive(Debug)]
pub struct Capture {
    /// The frames.
    pub frames: Receiver<Captured>,
    /// Frames lost because the queue was full.
    pub dropped: Arc<AtomicU64>,
}

/// A capture of `port`: the tap for the workers, the reader's end.
#[must_use]
pub fn capture(port: PortId) -> (Tap, Capture) {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Tap {
            port,
            tx,
            dropped: Arc::clone(&dropped),
        },
        Capture {
            frames: rx,
            dropped,
        },
    )
}

/// The taps a worker holds.
#[derive(Debug, Default)]
pub struct Taps {
    list: Vec<Tap>,
}

impl Taps {
    /// Adds a capture.
    pub fn add(&mut self, tap: Tap) {
        self.list.push(tap);
    }

    /// Whether no capture is in progress: the per-frame test.
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether `port` is captured.
    #[must_use]
    pub fn watches(&self, port: PortId) -> bool {
        self.list.iter().any(|t| t.port == port)
    }

    /// Copies `frame` to every capture of `port`.
    pub fn offer(&mut self, port: PortId, outbound: bool, drop: Option<DropReason>, frame: &[u8]) {
        let time = SystemTime::now();
        self.list.retain(|tap| {
            if tap.port != port {
                return true;
            }
            let copy = Captured {
                time,
                outbound,
                drop,
                frame: frame.to_vec(),
            };
            match tap.tx.try_send(copy) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tap.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reach_only_their_port_and_overflow_is_counted() {
        let mut taps = Taps::default();
        assert!(taps.is_empty());
        let (tap, cap) = capture(PortId(3));
        taps.add(tap);
        taps.offer(PortId(4), false, None, b"other");
        taps.offer(PortId(3), true, None, b"mine");
        taps.offer(PortId(3), false, Some(DropReason::IccDisabled), b"dropped");
        let a = cap.frames.try_recv().unwrap();
        assert_eq!((a.frame.as_slice(), a.outbound), (&b"mine"[..], true));
        let b = cap.frames.try_recv().unwrap();
        assert_eq!(b.drop, Some(DropReason::IccDisabled));
        assert!(cap.frames.try_recv().is_err());
        for _ in 0..QUEUE + 5 {
            taps.offer(PortId(3), true, None, b"x");
        }
        assert_eq!(cap.dropped.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_tap_whose_reader_left_is_removed() {
        let mut taps = Taps::default();
        let (tap, cap) = capture(PortId(1));
        taps.add(tap);
        drop(cap);
        taps.offer(PortId(1), true, None, b"x");
        assert!(taps.is_empty());
    }
}
