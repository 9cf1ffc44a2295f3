//! One VM's serial console, shared: keeld holds ONE connection to
//! keel-vmm's console socket (keel-vmm serves one client at a time) and
//! fans its output out to any number of viewers over a broadcast channel;
//! input from any viewer goes to the VMM.
//!
//! ```text
//!  keel-vmm console.sock ──▶ console-out thread ──▶ ring (tail) + broadcast ──▶ viewers
//!                        ◀── console-in thread  ◀── mpsc ◀──────────────────── viewers
//! ```
//!
//! A viewer that does not keep up loses output (`RecvError::Lagged`); the
//! VMM never waits for it. A new viewer first gets the backlog: the last
//! [`BACKLOG`] bytes the hub received, kept under the same lock as the
//! broadcast, so that backlog and live output neither overlap nor leave a
//! gap. keel-vmm sends a new console client the last 64 KiB of output
//! first, so a hub (re)connected after a keeld restart starts with the
//! recent output too, exactly once. The whole history is in console.log
//! ([`read_tail`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tokio::sync::broadcast;

use super::lock;

/// How much recent output a new viewer gets.
pub const BACKLOG: usize = 64 * 1024;
/// Chunks the broadcast channel holds for a slow viewer before it lags.
const CHANNEL_CHUNKS: usize = 512;
/// How long a write to the VMM may block before the input is dropped.
const INPUT_TIMEOUT: Duration = Duration::from_secs(2);

/// A viewer of a VM's console.
#[derive(Debug)]
pub struct ConsoleHandle {
    /// Recent output, up to [`BACKLOG`] bytes, to show first.
    pub backlog: Vec<u8>,
    /// Output from now on. `Lagged` when this viewer fell behind (output
    /// was lost for it); `Closed` when the VMM's console went away.
    pub output: broadcast::Receiver<Arc<[u8]>>,
    /// Keystrokes for the guest.
    pub input: mpsc::Sender<Vec<u8>>,
}

struct Shared {
    /// The backlog ring and the sender, behind one lock (see the module doc).
    state: Mutex<HubState>,
    alive: AtomicBool,
}

struct HubState {
    ring: VecDeque<u8>,
    /// `None` once the connection ended: viewers see `Closed`.
    tx: Option<broadcast::Sender<Arc<[u8]>>>,
}

/// The shared console of one running VM.
pub struct ConsoleHub {
    shared: Arc<Shared>,
    input: mpsc::Sender<Vec<u8>>,
    stream: UnixStream,
}

impl ConsoleHub {
    /// Connects to keel-vmm's console socket.
    pub fn connect(socket: &Path) -> io::Result<ConsoleHub> {
        let stream = UnixStream::connect(socket)?;
        let (tx, _) = broadcast::channel(CHANNEL_CHUNKS);
        let shared = Arc::new(Shared {
            state: Mutex::new(HubState {
                ring: VecDeque::new(),
                tx: Some(tx),
            }),
            alive: AtomicBool::new(true),
        });
        let (input, input_rx) = mpsc::channel::<Vec<u8>>();
        let reader = stream.try_clone()?;
        let writer = stream.try_clone()?;
        writer.set_write_timeout(Some(INPUT_TIMEOUT))?;
        {
            let shared = shared.clone();
            thread::Builder::new()
                .name("console-out".into())
                .spawn(move || pump_output(reader, &shared))?;
        }
        {
            let shared = shared.clone();
            let spawned = thread::Builder::new()
                .name("console-in".into())
                .spawn(move || pump_input(writer, input_rx, &shared));
            if let Err(e) = spawned {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return Err(e);
            }
        }
        Ok(ConsoleHub {
            shared,
            input,
            stream,
        })
    }

    /// False once the connection to the VMM ended.
    pub fn alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// A new viewer: the backlog and a receiver that starts right after it.
    pub fn subscribe(&self) -> ConsoleHandle {
        let state = lock(&self.shared.state);
        let backlog: Vec<u8> = state.ring.iter().copied().collect();
        let output = match &state.tx {
            Some(tx) => tx.subscribe(),
            // Ended: a receiver that reports Closed at once.
            None => broadcast::channel(1).1,
        };
        ConsoleHandle {
            backlog,
            output,
            input: self.input.clone(),
        }
    }
}

impl Drop for ConsoleHub {
    fn drop(&mut self) {
        // Ends both threads: the reader sees EOF, the writer sees !alive.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn pump_output(mut from: UnixStream, shared: &Shared) {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        let mut state = lock(&shared.state);
        let ring = &mut state.ring;
        ring.extend(chunk);
        let excess = ring.len().saturating_sub(BACKLOG);
        ring.drain(..excess);
        if let Some(tx) = &state.tx {
            // No viewers is fine.
            let _ = tx.send(Arc::from(chunk));
        }
    }
    shared.alive.store(false, Ordering::SeqCst);
    // Dropping the sender lets viewers drain what is queued, then Closed.
    lock(&shared.state).tx = None;
}

fn pump_input(mut to: UnixStream, input: mpsc::Receiver<Vec<u8>>, shared: &Shared) {
    while shared.alive.load(Ordering::SeqCst) {
        match input.recv_timeout(Duration::from_millis(250)) {
            Ok(bytes) => {
                if to.write_all(&bytes).is_err() {
                    // Gone, or stuck for INPUT_TIMEOUT: the reader notices
                    // the end; stuck input is dropped.
                    if !shared.alive.load(Ordering::SeqCst) {
                        return;
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The last `max` bytes of `log`, reaching into `log.1` (the previous
/// generation) when `log` is shorter. Missing files are empty.
pub fn read_tail(log: &Path, max: usize) -> Vec<u8> {
    let mut old = log.as_os_str().to_owned();
    old.push(".1");
    let current = tail_of(log, max);
    if current.len() >= max {
        return current;
    }
    let mut out = tail_of(Path::new(&old), max - current.len());
    out.extend_from_slice(&current);
    out
}

fn tail_of(path: &Path, max: usize) -> Vec<u8> {
    let Ok(mut f) = File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity((len - start) as usize);
    let _ = f.take(max as u64).read_to_end(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("keel-hub-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_tail_reaches_into_the_previous_generation() {
        let dir = temp_dir("tail");
        let log = dir.join("console.log");
        assert!(read_tail(&log, 10).is_empty());
        std::fs::write(dir.join("console.log.1"), b"0123456789").unwrap();
        assert_eq!(read_tail(&log, 4), b"6789");
        std::fs::write(&log, b"abc").unwrap();
        assert_eq!(read_tail(&log, 5), b"89abc");
        assert_eq!(read_tail(&log, 3), b"abc");
        assert_eq!(read_tail(&log, 100), b"0123456789abc");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Reads `rx` (without a runtime: try_recv in a loop) until `want` has
    /// been seen, or fails after a few seconds.
    fn read_until(rx: &mut broadcast::Receiver<Arc<[u8]>>, want: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while !got.windows(want.len()).any(|w| w == want) {
            match rx.try_recv() {
                Ok(c) => got.extend_from_slice(&c),
                Err(broadcast::error::TryRecvError::Empty) => {
                    assert!(Instant::now() < deadline, "saw only {got:?}");
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e:?} after {got:?}"),
            }
        }
        got
    }

    #[test]
    fn output_fans_out_input_comes_back_and_the_end_closes_viewers() {
        let dir = temp_dir("fan");
        let sock = dir.join("c.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let hub = ConsoleHub::connect(&sock).unwrap();
        // A fake VMM, driven by hand.
        let (mut vmm, _) = listener.accept().unwrap();
        vmm.write_all(b"old output\n").unwrap();
        let mut first = hub.subscribe();
        read_until(&mut first.output, b"old output\n");
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        assert_eq!(a.backlog, b"old output\n");
        vmm.write_all(b"booted\n").unwrap();
        read_until(&mut a.output, b"booted\n");
        read_until(&mut b.output, b"booted\n");
        b.input.send(b"hi".to_vec()).unwrap();
        let mut got = [0u8; 2];
        vmm.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        // A late viewer sees what came before it in its backlog only.
        let mut c = hub.subscribe();
        assert_eq!(c.backlog, b"old output\nbooted\n");
        vmm.write_all(b"HI").unwrap();
        for rx in [&mut a.output, &mut b.output, &mut c.output] {
            assert_eq!(read_until(rx, b"HI"), b"HI");
        }
        drop(vmm);
        let deadline = Instant::now() + Duration::from_secs(10);
        while hub.alive() {
            assert!(Instant::now() < deadline);
            thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(
            a.output.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        let late = hub.subscribe();
        assert_eq!(late.backlog, b"old output\nbooted\nHI");
        let mut late_rx = late.output;
        assert!(matches!(
            late_rx.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_slow_viewer_lags_instead_of_stalling_the_vmm() {
        let dir = temp_dir("lag");
        let sock = dir.join("c.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let hub = ConsoleHub::connect(&sock).unwrap();
        let (mut vmm, _) = listener.accept().unwrap();
        let mut slow = hub.subscribe();
        let mut fast = hub.subscribe();
        // Far more chunks than the channel holds: the fast viewer reads each
        // line before the next is written, so every line is one chunk.
        let lines = CHANNEL_CHUNKS * 2;
        for i in 0..lines {
            let line = format!("line {i}\n");
            vmm.write_all(line.as_bytes()).unwrap();
            assert_eq!(
                read_until(&mut fast.output, line.as_bytes()),
                line.as_bytes()
            );
        }
        let last = format!("line {}\n", lines - 1);
        match slow.output.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                assert_eq!(n as usize, lines - CHANNEL_CHUNKS)
            }
            other => panic!("{other:?}"),
        }
        // After the loss, it reads on from the oldest chunk still held.
        assert_eq!(
            &*slow.output.try_recv().unwrap(),
            format!("line {}\n", lines - CHANNEL_CHUNKS).as_bytes()
        );
        assert!(hub.subscribe().backlog.ends_with(last.as_bytes()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
