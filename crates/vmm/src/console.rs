//! The host side of the serial console: where COM1's output goes and where
//! its input comes from (stdio, a file, a Unix socket, or nowhere).
//!
//! A socket console keeps the last [`SOCKET_REPLAY`] bytes of output and
//! sends them to each new client before the live output, so a client that
//! (re)connects sees what it missed, exactly once. It may also log: every
//! output byte is appended to a file ([`RotatingLog`]) whether or not a
//! client is connected, so the host daemon keeps the console's history
//! while it restarts.
//!
//! A `Console` lives for the whole process, across guest reboots; each boot
//! creates a new UART and [`Console::attach`]es it, so input threads always
//! feed the current one.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use devices::serial::Serial;

use crate::config::{SerialConfig, SERIAL_LOG_LIMIT};

/// Errors from setting up the console backend.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("Cannot open the serial output file {path}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Cannot listen on the serial socket {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} exists and is not a socket: refusing to replace it")]
    NotASocket(PathBuf),
    #[error("Cannot start the console thread")]
    Thread(#[source] io::Error),
}

type SerialSlot = Arc<Mutex<Option<Arc<Mutex<Serial>>>>>;
type Client = Arc<Mutex<SocketClient>>;

/// How much recent output a new socket client receives first.
pub const SOCKET_REPLAY: usize = 64 * 1024;

/// The socket console's client, and the recent output a new one gets.
#[derive(Default)]
struct SocketClient {
    stream: Option<UnixStream>,
    recent: std::collections::VecDeque<u8>,
}
type SharedLog = Arc<Mutex<RotatingLog>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Output {
    Stdout,
    File(File),
    Socket(Client, Option<SharedLog>),
    Off,
}

/// The serial console backend of one VMM process.
pub struct Console {
    output: Output,
    target: SerialSlot,
    raw_terminal: Option<RawTerminal>,
    socket_path: Option<PathBuf>,
}

impl Console {
    /// Opens the backend and starts its input thread, if it has input.
    pub fn open(config: &SerialConfig) -> Result<Self, ConsoleError> {
        let target: SerialSlot = Arc::new(Mutex::new(None));
        let mut console = Console {
            output: Output::Off,
            target: target.clone(),
            raw_terminal: None,
            socket_path: None,
        };
        match config {
            SerialConfig::Stdio => {
                console.output = Output::Stdout;
                console.raw_terminal = RawTerminal::enable();
                thread::Builder::new()
                    .name("serial-in".into())
                    .spawn(move || pump(io::stdin().lock(), &target))
                    .map_err(ConsoleError::Thread)?;
            }
            SerialConfig::File(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| ConsoleError::File {
                        path: path.clone(),
                        source,
                    })?;
                console.output = Output::File(file);
            }
            SerialConfig::Socket { path, log } => {
                let log = match log {
                    Some(p) => Some(Arc::new(Mutex::new(
                        RotatingLog::open(p, SERIAL_LOG_LIMIT).map_err(|source| {
                            ConsoleError::File {
                                path: p.clone(),
                                source,
                            }
                        })?,
                    ))),
                    None => None,
                };
                let listener = bind(path)?;
                console.socket_path = Some(path.clone());
                let client: Client = Arc::new(Mutex::new(SocketClient::default()));
                console.output = Output::Socket(client.clone(), log);
                thread::Builder::new()
                    .name("serial-sock".into())
                    .spawn(move || accept_clients(listener, client, target))
                    .map_err(ConsoleError::Thread)?;
            }
            SerialConfig::Off => {}
        }
        Ok(console)
    }

    /// A writer for a new UART's output.
    pub fn writer(&self) -> Box<dyn Write + Send> {
        match &self.output {
            Output::Stdout => Box::new(FlushingStdout),
            Output::File(f) => match f.try_clone() {
                Ok(f) => Box::new(f),
                Err(_) => Box::new(io::sink()),
            },
            Output::Socket(client, log) => Box::new(SocketWriter {
                client: client.clone(),
                log: log.clone(),
            }),
            Output::Off => Box::new(io::sink()),
        }
    }

    /// Makes `serial` the UART that receives console input.
    pub fn attach(&self, serial: Arc<Mutex<Serial>>) {
        *lock(&self.target) = Some(serial);
    }

    /// Stops feeding input (the VM is being torn down).
    pub fn detach(&self) {
        *lock(&self.target) = None;
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
        // RawTerminal restores the terminal in its own Drop.
        self.raw_terminal.take();
    }
}

/// Copies input into the attached UART, waiting while its FIFO is full or
/// while no UART is attached (between reboots).
fn pump(mut input: impl Read, target: &SerialSlot) {
    let mut buf = [0u8; 64];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let mut pending = &buf[..n];
        while !pending.is_empty() {
            let serial = lock(target).clone();
            if let Some(serial) = serial {
                let taken = lock(&serial).enqueue_input(pending);
                pending = &pending[taken..];
            }
            if !pending.is_empty() {
                thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn bind(path: &Path) -> Result<UnixListener, ConsoleError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ConsoleError::NotASocket(path.to_path_buf()));
        }
        // A socket left behind by a VMM that died.
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|source| ConsoleError::Socket {
        path: path.to_path_buf(),
        source,
    })
}

/// Serves socket clients: the newest client gets the recent output, then
/// the live output, and sends input; an older client is disconnected.
fn accept_clients(listener: UnixListener, client: Client, target: SerialSlot) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (Ok(reader), Ok(mut writer)) = (stream.try_clone(), stream.try_clone()) else {
            continue;
        };
        // A stuck client must not stall the vCPU that writes the console.
        let _ = writer.set_write_timeout(Some(Duration::from_millis(200)));
        {
            // Under the lock, so no output falls between replay and live.
            let mut state = lock(&client);
            let (a, b) = state.recent.as_slices();
            if writer
                .write_all(a)
                .and_then(|()| writer.write_all(b))
                .is_err()
            {
                let _ = writer.shutdown(std::net::Shutdown::Both);
                continue;
            }
            if let Some(old) = state.stream.replace(writer) {
                let _ = old.shutdown(std::net::Shutdown::Both);
            }
        }
        let target = target.clone();
        let _ = thread::Builder::new()
            .name("serial-client".into())
            .spawn(move || pump(reader, &target));
    }
}

/// Output to the replay buffer, the log (if any) and the socket's client
/// (if any), all under the client's lock.
struct SocketWriter {
    client: Client,
    log: Option<SharedLog>,
}

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut client = lock(&self.client);
        let recent = &mut client.recent;
        recent.extend(buf);
        let excess = recent.len().saturating_sub(SOCKET_REPLAY);
        recent.drain(..excess);
        if let Some(log) = &self.log {
            lock(log).append(buf);
        }
        if let Some(stream) = client.stream.as_mut() {
            if stream.write_all(buf).is_err() {
                // Gone or stuck: drop it; output continues to be discarded.
                let _ = stream.shutdown(std::net::Shutdown::Both);
                client.stream = None;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An append-only log file that moves itself to `FILE.1` (replacing the
/// older generation) when it would grow past its limit. Write errors (a
/// full disk) never reach the guest: the first one is reported on stderr,
/// and writing is tried again at the next rotation.
pub struct RotatingLog {
    path: PathBuf,
    old: PathBuf,
    file: Option<File>,
    size: u64,
    limit: u64,
    reported: bool,
}

impl RotatingLog {
    /// Opens (creates, or appends to) `path`.
    pub fn open(path: &Path, limit: u64) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        Ok(RotatingLog {
            path: path.to_path_buf(),
            old: PathBuf::from(old),
            file: Some(file),
            size,
            limit,
            reported: false,
        })
    }

    /// Appends `buf`, rotating first when it would not fit.
    pub fn append(&mut self, buf: &[u8]) {
        if self.size > 0 && self.size.saturating_add(buf.len() as u64) > self.limit {
            self.rotate();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.write_all(buf) {
            Ok(()) => self.size = self.size.saturating_add(buf.len() as u64),
            Err(e) => self.failed("write", &e),
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        self.size = 0;
        if let Err(e) = std::fs::rename(&self.path, &self.old) {
            if e.kind() != io::ErrorKind::NotFound {
                self.failed("rotate", &e);
            }
        }
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(f) => {
                self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(f);
            }
            Err(e) => self.failed("reopen", &e),
        }
    }

    fn failed(&mut self, what: &str, e: &io::Error) {
        if !self.reported {
            self.reported = true;
            eprintln!(
                "keel-vmm: cannot {what} the console log {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Stdout, flushed after every write so prompts appear at once.
struct FlushingStdout;

impl Write for FlushingStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

/// Puts stdin's terminal in raw mode (so keys go to the guest as typed) and
/// restores it on drop.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enable() -> Option<Self> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
            return None;
        }
        // SAFETY: termios is plain old data; tcgetattr fills it and we check
        // its result before using it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to write into.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output post-processing so our own messages still start at
        // column 0.
        raw.c_oflag |= libc::OPOST | libc::ONLCR;
        // SAFETY: `raw` is a valid termios derived from the current one.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enable`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("keel-console-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_log_rotates_at_its_limit_keeping_one_old_generation() {
        let dir = temp_dir("rotate");
        let path = dir.join("console.log");
        std::fs::write(&path, b"earlier\n").unwrap();
        let mut log = RotatingLog::open(&path, 16).unwrap();
        log.append(b"0123456"); // 8 + 7 = 15: fits
        assert_eq!(std::fs::read(&path).unwrap(), b"earlier\n0123456");
        log.append(b"ab"); // 17 > 16: rotate first
        assert_eq!(
            std::fs::read(dir.join("console.log.1")).unwrap(),
            b"earlier\n0123456"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"ab");
        log.append(&[b'x'; 20]); // larger than the limit: alone in its file
        assert_eq!(std::fs::read(dir.join("console.log.1")).unwrap(), b"ab");
        assert_eq!(std::fs::read(&path).unwrap(), [b'x'; 20]);
        log.append(b"y");
        assert_eq!(
            std::fs::read(dir.join("console.log.1")).unwrap(),
            [b'x'; 20]
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"y");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_log_survives_its_file_being_removed() {
        let dir = temp_dir("removed");
        let path = dir.join("console.log");
        let mut log = RotatingLog::open(&path, 4).unwrap();
        log.append(b"abcd");
        std::fs::remove_file(&path).unwrap();
        log.append(b"ef"); // rotation finds nothing to move and reopens
        assert_eq!(std::fs::read(&path).unwrap(), b"ef");
        assert!(!dir.join("console.log.1").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Reads from `client` until `want` bytes came.
    fn read_n(client: &mut UnixStream, want: usize) -> Vec<u8> {
        let mut got = vec![0u8; want];
        client.read_exact(&mut got).unwrap();
        got
    }

    #[test]
    fn socket_clients_get_the_recent_output_then_live_and_the_log_gets_all() {
        let dir = temp_dir("socket");
        let (sock, path) = (dir.join("c.sock"), dir.join("console.log"));
        let console = Console::open(&SerialConfig::Socket {
            path: sock.clone(),
            log: Some(path.clone()),
        })
        .unwrap();
        let mut w = console.writer();
        w.write_all(b"before ").unwrap();
        let mut client = UnixStream::connect(&sock).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Whenever the accept thread installs the client, it gets each
        // byte once: replayed or live.
        for b in b"0123456789" {
            w.write_all(&[*b]).unwrap();
            thread::sleep(Duration::from_micros(200));
        }
        assert_eq!(read_n(&mut client, 17), b"before 0123456789");
        // A second client replaces the first and gets the replay too.
        let mut second = UnixStream::connect(&sock).unwrap();
        second
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(read_n(&mut second, 17), b"before 0123456789");
        w.write_all(b"!").unwrap();
        assert_eq!(read_n(&mut second, 1), b"!");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "the old client was disconnected: {rest:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"before 0123456789!");
        // The replay holds the last SOCKET_REPLAY bytes only.
        w.write_all(&vec![b'z'; SOCKET_REPLAY]).unwrap();
        drop(second);
        let mut third = UnixStream::connect(&sock).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(read_n(&mut third, SOCKET_REPLAY), vec![b'z'; SOCKET_REPLAY]);
        drop(console);
        assert!(!sock.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unopenable_log_is_an_error_naming_it() {
        let dir = temp_dir("badlog");
        let bad = dir.join("missing-dir").join("console.log");
        let err = Console::open(&SerialConfig::Socket {
            path: dir.join("c.sock"),
            log: Some(bad.clone()),
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("console.log"), "{err}");
        assert!(!dir.join("c.sock").exists(), "no socket left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
