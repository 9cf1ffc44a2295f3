//! Leases on a mapped image's data placement, for I/O that bypasses the image's own methods.
//!
//! A qcow2 image hands out where a request's bytes sit in its file ([`crate::DiskImage::map_direct`])
//! so that virtio-blk can move them with io_uring, while the request is in flight and the image
//! knows nothing of it. That placement must not change meanwhile: a discard frees clusters, and
//! a freed cluster can be handed out again, also for metadata, so an old write landing there
//! would corrupt the image. Every placement handed out therefore comes with a [`Lease`], and
//! whatever frees clusters first raises a [`Barrier`]: it refuses new leases (those requests
//! then take the image's own, synchronous path) and waits until the leases out are returned.
//!
//! The barrier must be raised before the image's metadata lock is taken: a worker that holds
//! leases may at that moment serve another request through that lock, and only after it does
//! can it return its leases.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// The lease state of one image.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    state: Mutex<State>,
    returned: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Leases out.
    active: usize,
    /// Barriers raised (waiting or holding).
    barriers: usize,
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A lease, unless a barrier is up.
    pub(crate) fn lease(self: &Arc<Self>) -> Option<Lease> {
        let mut s = self.lock();
        if s.barriers > 0 {
            return None;
        }
        s.active += 1;
        Some(Lease(Arc::clone(self)))
    }

    /// Refuses new leases and waits until every lease out is returned; leases are handed out
    /// again when the barrier is dropped.
    pub(crate) fn barrier(&self) -> Barrier<'_> {
        let mut s = self.lock();
        s.barriers += 1;
        while s.active > 0 {
            s = self
                .returned
                .wait(s)
                .unwrap_or_else(PoisonError::into_inner);
        }
        Barrier(self)
    }

    /// Leases out now.
    #[cfg(test)]
    pub(crate) fn active(&self) -> usize {
        self.lock().active
    }
}

/// A placement handed out by [`crate::DiskImage::map_direct`] stays valid while this lives: keep
/// it until the kernel is done with the I/O.
#[derive(Debug)]
pub struct Lease(Arc<Leases>);

impl Drop for Lease {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.active -= 1;
        if s.active == 0 {
            self.0.returned.notify_all();
        }
    }
}

/// While this lives no lease is out and none is handed out.
#[derive(Debug)]
pub(crate) struct Barrier<'a>(&'a Leases);

impl Drop for Barrier<'_> {
    fn drop(&mut self) {
        self.0.lock().barriers -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn leases_are_counted_and_returned_on_drop() {
        let l = Arc::new(Leases::default());
        let a = l.lease().unwrap();
        let b = l.lease().unwrap();
        assert_eq!(l.active(), 2);
        drop(a);
        drop(b);
        assert_eq!(l.active(), 0);
    }

    #[test]
    fn a_barrier_refuses_leases_until_dropped() {
        let l = Arc::new(Leases::default());
        let b = l.barrier();
        assert!(l.lease().is_none());
        drop(b);
        assert!(l.lease().is_some());
    }

    #[test]
    fn a_barrier_waits_for_the_leases_out() {
        let l = Arc::new(Leases::default());
        let lease = l.lease().unwrap();
        let (tx, rx) = mpsc::channel();
        let l2 = Arc::clone(&l);
        let waiter = thread::spawn(move || {
            let _b = l2.barrier();
            tx.send(()).unwrap();
        });
        // Not through while the lease is out.
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        drop(lease);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
        assert!(l.lease().is_some());
    }
}
