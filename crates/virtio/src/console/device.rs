//! The virtio-console device: identity, configuration, lifecycle.

use std::collections::HashSet;
use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;

use super::port::{self, Port, PortSpec};
use super::worker::{ConsoleHandler, F_MULTIPORT};
use crate::device::{read_config_bytes, ActivateError, Activation, VirtioDevice};
use crate::unix::{SocketError, SocketListener};
use crate::worker::{self, WorkerHandle};

/// The most named ports one device carries (port 0 is the console's).
pub const MAX_PORTS: usize = 31;
/// Size of each port's queues.
pub const PORT_QUEUE_SIZE: u16 = 128;
/// Size of the control queues.
pub const CONTROL_QUEUE_SIZE: u16 = 64;

/// Errors of [`Console::new`]: all are about what the user asked for.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("A virtio-console device needs at least one port")]
    NoPorts,
    #[error("Too many console ports ({0}): at most {MAX_PORTS}")]
    TooManyPorts(usize),
    #[error("Invalid console port name '{0}': expected 1 to 255 of A-Z a-z 0-9 . _ -")]
    BadName(String),
    #[error("Two console ports are named '{0}'")]
    DuplicateName(String),
    #[error("Two console ports use the socket {0}")]
    DuplicateSocket(String),
    #[error("Only one console port can have console=on")]
    TwoConsoles,
    #[error("Console port '{name}'")]
    Socket {
        name: String,
        #[source]
        source: SocketError,
    },
}

/// A virtio-console device with named ports (MULTIPORT), each backed by a
/// Unix socket the VMM listens on.
pub struct Console {
    /// The ports, while no worker holds them.
    ports: Option<Vec<Port>>,
    worker: Option<WorkerHandle<ConsoleHandler>>,
    queue_sizes: Vec<u16>,
    config: [u8; 12],
    summary: String,
}

/// The host side of a console's ports, checked and bound once per VMM
/// process: the sockets stay across guest reboots (their clients do not).
#[derive(Debug)]
pub struct ConsoleSockets {
    ports: Vec<(PortSpec, u32, Arc<SocketListener>)>,
    max_nr_ports: u32,
}

impl ConsoleSockets {
    /// Checks `specs` and binds every port's socket. A port with
    /// `console: true` is port 0; the others are ports 1, 2, … in order.
    pub fn bind(specs: &[PortSpec]) -> Result<Self, ConsoleError> {
        if specs.is_empty() {
            return Err(ConsoleError::NoPorts);
        }
        let named = specs.iter().filter(|s| !s.console).count();
        if specs.len() - named > 1 {
            return Err(ConsoleError::TwoConsoles);
        }
        if named > MAX_PORTS {
            return Err(ConsoleError::TooManyPorts(specs.len()));
        }
        let mut names = HashSet::new();
        let mut sockets = HashSet::new();
        for s in specs {
            if !port::check_port_name(&s.name) {
                return Err(ConsoleError::BadName(s.name.clone()));
            }
            if !names.insert(s.name.as_str()) {
                return Err(ConsoleError::DuplicateName(s.name.clone()));
            }
            if !sockets.insert(s.socket.as_path()) {
                return Err(ConsoleError::DuplicateSocket(
                    s.socket.display().to_string(),
                ));
            }
        }
        let mut ports = Vec::with_capacity(specs.len());
        let mut next_id = 1u32;
        for s in specs {
            let id = if s.console {
                0
            } else {
                next_id += 1;
                next_id - 1
            };
            let listener =
                SocketListener::bind(&s.socket).map_err(|source| ConsoleError::Socket {
                    name: s.name.clone(),
                    source,
                })?;
            ports.push((s.clone(), id, Arc::new(listener)));
        }
        Ok(Self {
            ports,
            // Port 0 always exists in the queue layout, used or not.
            max_nr_ports: named as u32 + 1,
        })
    }
}

impl Console {
    /// A console over `sockets` (bound by [`ConsoleSockets::bind`]).
    pub fn new(sockets: &ConsoleSockets) -> Self {
        let ports: Vec<Port> = sockets
            .ports
            .iter()
            .map(|(spec, id, listener)| Port::new(*id, spec, listener.clone()))
            .collect();
        let max_nr_ports = sockets.max_nr_ports;
        let mut queue_sizes = vec![PORT_QUEUE_SIZE, PORT_QUEUE_SIZE];
        queue_sizes.extend([CONTROL_QUEUE_SIZE, CONTROL_QUEUE_SIZE]);
        for _ in 1..max_nr_ports {
            queue_sizes.extend([PORT_QUEUE_SIZE, PORT_QUEUE_SIZE]);
        }
        let mut config = [0u8; 12];
        config[4..8].copy_from_slice(&max_nr_ports.to_le_bytes());
        let summary = ports
            .iter()
            .map(|p| {
                format!(
                    "{}{} ({})",
                    p.name,
                    if p.console { " [console]" } else { "" },
                    p.listener.path().display()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            ports: Some(ports),
            worker: None,
            queue_sizes,
            config,
            summary,
        }
    }

    /// Binds `specs`' sockets and makes a console of them (the sockets go
    /// with the device).
    pub fn bind(specs: &[PortSpec]) -> Result<Self, ConsoleError> {
        Ok(Self::new(&ConsoleSockets::bind(specs)?))
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        F_MULTIPORT
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let multiport = activation.features & F_MULTIPORT != 0;
        let needed: &[u16] = if multiport { &[2, 3] } else { &[0, 1] };
        for &q in needed {
            if activation.queues.iter().all(|aq| aq.index() != q) {
                return Err(ActivateError::MissingQueue(q));
            }
        }
        let Some(ports) = self.ports.take() else {
            return Err(ActivateError::Backend(std::io::Error::other(
                "the port sockets were lost with a failed worker",
            )));
        };
        let handler = ConsoleHandler::new(ports, activation.features);
        match worker::spawn("virtio-console", activation, handler) {
            Ok(handle) => {
                self.worker = Some(handle);
                Ok(())
            }
            Err(e) => Err(ActivateError::Worker(e)),
        }
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            match w.stop() {
                Some((handler, _ctx)) => self.ports = Some(handler.into_ports()),
                None => eprintln!("keel-vmm: virtio-console: the port sockets were lost"),
            }
        }
    }

    fn pause(&mut self) -> Result<(), ActivateError> {
        match &mut self.worker {
            Some(w) => w.pause().map_err(ActivateError::Worker),
            None => Ok(()),
        }
    }

    fn resume(&mut self) -> Result<(), ActivateError> {
        match &mut self.worker {
            Some(w) => w.resume().map_err(ActivateError::Worker),
            None => Ok(()),
        }
    }

    fn describe(&self) -> String {
        format!("virtio-console: ports {}", self.summary)
    }
}
