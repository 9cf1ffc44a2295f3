//! virtio-rng request handling.

use std::io::{self, Write};

use vm_memory::GuestMemoryMmap;

use crate::chain::{ChainError, ChainInfo};
use crate::queue::{Chain, QueueError};
use crate::worker::{QueueHandler, WorkerContext};

/// The most bytes one request gets, however large its buffers: the worker
/// never allocates on the guest's say-so, and a request never holds the
/// queue for long. The driver asks again for more.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

pub(crate) struct RngHandler {
    buf: Vec<u8>,
}

impl RngHandler {
    pub(crate) fn new() -> Self {
        Self {
            buf: vec![0; MAX_REQUEST_BYTES],
        }
    }
}

impl QueueHandler for RngHandler {
    fn process_queue(&mut self, ctx: &mut WorkerContext, queue: usize) -> Result<(), QueueError> {
        let buf = &mut self.buf;
        ctx.process_chains(queue, |mem, chain, checked| {
            fill_request(mem, chain, checked, buf, getrandom)
        })
    }
}

/// Serves one request: fills up to [`MAX_REQUEST_BYTES`] (and at most
/// `scratch.len()`) of the chain's device-writable buffers with bytes from
/// `source` and returns how many were written. A chain that failed its
/// check, or has no writable buffer, gets 0 and is left untouched.
pub fn fill_request(
    mem: &GuestMemoryMmap,
    chain: Chain<'_>,
    checked: Result<ChainInfo, ChainError>,
    scratch: &mut [u8],
    mut source: impl FnMut(&mut [u8]) -> io::Result<()>,
) -> u32 {
    let Ok(info) = checked else {
        return 0;
    };
    let len = (info.writable as usize)
        .min(MAX_REQUEST_BYTES)
        .min(scratch.len());
    if len == 0 {
        return 0;
    }
    let Ok(mut writer) = chain.writer(mem) else {
        return 0;
    };
    let bytes = &mut scratch[..len];
    if source(bytes).is_err() {
        return 0;
    }
    match writer.write(bytes) {
        Ok(n) => n as u32,
        Err(_) => 0,
    }
}

/// Fills `buf` from the kernel's CSPRNG.
fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, memory we borrow
        // mutably for the duration of the call; the kernel writes at most
        // `rest.len()` bytes there.
        let r = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += r as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrandom_fills_the_buffer() {
        let mut a = [0u8; 4096];
        let mut b = [0u8; 4096];
        getrandom(&mut a).unwrap();
        getrandom(&mut b).unwrap();
        assert_ne!(a, b);
        assert!(a.iter().filter(|&&x| x == 0).count() < 100);
    }
}
