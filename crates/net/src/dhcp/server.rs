//! The DHCP server thread: a socket on the bridge, the core, the lease file.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::leases::{self, Lease, LeaseFileError};
use super::{ConfigError, DhcpConfig, DhcpCore};
use crate::mac::Mac;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Leases(#[from] LeaseFileError),
    #[error("Cannot open the DHCP socket on {0}: {1}")]
    Socket(String, std::io::Error),
    #[error("Cannot start the DHCP thread: {0}")]
    Thread(std::io::Error),
}

/// Called with (MAC, address) on every ACK.
pub type OnBind = Box<dyn Fn(Mac, Ipv4Addr) + Send + 'static>;

pub struct ServerOptions {
    /// The bridge to serve (SO_BINDTODEVICE).
    pub bridge: String,
    pub config: DhcpConfig,
    pub lease_file: PathBuf,
    pub on_bind: Option<OnBind>,
}

/// A running server; stopped by [`DhcpServer::stop`] or on drop.
pub struct DhcpServer {
    core: Arc<Mutex<DhcpCore>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    bridge: String,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock(core: &Mutex<DhcpCore>) -> MutexGuard<'_, DhcpCore> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

impl DhcpServer {
    /// Loads the leases, opens the socket (in the calling thread's network
    /// namespace) and starts serving.
    pub fn start(opts: ServerOptions) -> Result<DhcpServer, DhcpError> {
        opts.config.validate()?;
        let loaded = leases::load(&opts.lease_file)?;
        let core = Arc::new(Mutex::new(DhcpCore::new(opts.config, loaded)));
        let sock = crate::sys::udp_socket_on_device(&opts.bridge, SERVER_PORT)
            .map_err(|e| DhcpError::Socket(opts.bridge.clone(), e))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| DhcpError::Socket(opts.bridge.clone(), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, file, on_bind, br) = (
            core.clone(),
            stop.clone(),
            opts.lease_file,
            opts.on_bind,
            opts.bridge.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("dhcp-{}", opts.bridge))
            .spawn(move || serve(sock, c, s, file, on_bind, br))
            .map_err(DhcpError::Thread)?;
        Ok(DhcpServer {
            core,
            stop,
            thread: Some(thread),
            bridge: opts.bridge,
        })
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The bound leases (also expired ones still remembered).
    pub fn leases(&self) -> Vec<Lease> {
        lock(&self.core).leases()
    }

    /// The current lease of a MAC.
    pub fn lease_of(&self, mac: Mac) -> Option<Lease> {
        lock(&self.core).lease_of(mac, now_secs())
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(
    sock: UdpSocket,
    core: Arc<Mutex<DhcpCore>>,
    stop: Arc<AtomicBool>,
    file: PathBuf,
    on_bind: Option<OnBind>,
    bridge: String,
) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("keel dhcp on {bridge}: receive failed: {e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let (reply, out, snapshot) = {
            let mut c = lock(&core);
            let (reply, out) = c.handle_bytes(&buf[..n], now_secs());
            let snapshot = out.leases_changed.then(|| c.leases());
            (reply, out, snapshot)
        };
        if let Some(leases) = snapshot {
            if let Err(e) = leases::save(&file, &leases) {
                eprintln!("keel dhcp on {bridge}: {e}");
            }
        }
        if let Some((bytes, dest)) = reply {
            let to = SocketAddrV4::new(dest, CLIENT_PORT);
            if let Err(e) = sock.send_to(&bytes, to) {
                eprintln!("keel dhcp on {bridge}: send to {to} failed: {e}");
            }
        }
        if let (Some((mac, ip)), Some(cb)) = (out.bound, on_bind.as_ref()) {
            cb(mac, ip);
        }
    }
}
