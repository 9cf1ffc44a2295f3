//! SIGTERM and SIGINT become control-loop events: they are blocked in every
//! thread and a `signals` thread collects them with `sigwait`, so nothing
//! runs in signal context.

use std::io;
use std::sync::mpsc::Sender;
use std::thread;

use crate::Event;

const HANDLED: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

fn handled_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in HANDLED {
            libc::sigaddset(&mut set, sig);
        }
    }
    set
}

/// Blocks the handled signals in the calling thread (and so in every thread
/// it starts afterwards) and starts the thread that reports them.
pub fn start(events: Sender<Event>) -> io::Result<()> {
    let set = handled_set();
    // SAFETY: `set` is a valid, initialised signal set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is valid and `sig` is a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            if events.send(Event::Signal(sig)).is_err() {
                return;
            }
        })?;
    Ok(())
}
