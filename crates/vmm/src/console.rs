//! The host side of the serial console: where COM1's output goes and where
//! its input comes from (stdio, a file, a Unix socket, or nowhere).
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

use crate::config::SerialConfig;

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
type Client = Arc<Mutex<Option<UnixStream>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Output {
    Stdout,
    File(File),
    Socket(Client),
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
            SerialConfig::Socket(path) => {
                let listener = bind(path)?;
                console.socket_path = Some(path.clone());
                let client: Client = Arc::new(Mutex::new(None));
                console.output = Output::Socket(client.clone());
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
            Output::Socket(client) => Box::new(SocketWriter(client.clone())),
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

/// Serves socket clients: the newest client gets the output and sends input;
/// an older client is disconnected.
fn accept_clients(listener: UnixListener, client: Client, target: SerialSlot) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (Ok(reader), Ok(writer)) = (stream.try_clone(), stream.try_clone()) else {
            continue;
        };
        // A stuck client must not stall the vCPU that writes the console.
        let _ = writer.set_write_timeout(Some(Duration::from_millis(200)));
        if let Some(old) = lock(&client).replace(writer) {
            let _ = old.shutdown(std::net::Shutdown::Both);
        }
        let target = target.clone();
        let _ = thread::Builder::new()
            .name("serial-client".into())
            .spawn(move || pump(reader, &target));
    }
}

struct SocketWriter(Client);

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut client = lock(&self.0);
        if let Some(stream) = client.as_mut() {
            if stream.write_all(buf).is_err() {
                // Gone or stuck: drop it; output continues to be discarded.
                let _ = stream.shutdown(std::net::Shutdown::Both);
                *client = None;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
