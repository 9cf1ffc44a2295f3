//! The generic device worker: one thread per active device, an epoll loop
//! over the queues' kick EventFds, a kill EventFd, a pause EventFd and any
//! backend fds the device adds, calling the device's [`QueueHandler`].
//!
//! ```text
//!            spawn()                   pause()
//!   ───────▶ Running ────────────────────────▶ Paused   (waits on kill/pause only)
//!             │   ▲ ◀──────────────────────────┘  (QueueHandler::pause first:
//!             │   │                                  no I/O left running)
//!             │   │         resume(): every queue is processed once
//!             │   └─ kick / backend fd: QueueHandler
//!             │ QueueError (broken ring): DEVICE_NEEDS_RESET
//!             ▼
//!           Broken   (waits on kill/pause only)
//!   stop() or drop of the handle, from any state: QueueHandler::stop, then
//!   the thread exits and hands back the handler and its queues.
//! ```

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::chain::{self, ChainError, ChainInfo};
use crate::device::{Activation, VirtioInterrupt};
use crate::queue::{Chain, QueueError, VirtQueue};

/// How long `pause`/`resume` wait for the worker to acknowledge.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Epoll tokens: handler tokens are below 2^56, ours above.
const TOKEN_KIND_SHIFT: u32 = 56;
const KIND_QUEUE: u64 = 1 << TOKEN_KIND_SHIFT;
const TOKEN_KILL: u64 = 2 << TOKEN_KIND_SHIFT;
const TOKEN_PAUSE: u64 = 3 << TOKEN_KIND_SHIFT;
/// The largest token a handler may pass to [`WorkerContext::watch`].
pub const MAX_HANDLER_TOKEN: u64 = KIND_QUEUE - 1;

/// Errors of starting and controlling a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("Cannot set up the worker's event loop")]
    Setup(#[source] io::Error),
    #[error("Cannot start worker thread {0}")]
    Spawn(String, #[source] io::Error),
    #[error("Worker thread {0} did not answer in time")]
    Timeout(String),
    #[error("Worker thread {0} has exited")]
    Exited(String),
}

/// A device's request handling: everything device-specific about its worker.
pub trait QueueHandler: Send + 'static {
    /// Called on the worker thread before the loop starts (register backend
    /// fds with [`WorkerContext::watch`] here).
    fn start(&mut self, ctx: &mut WorkerContext) -> io::Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Handles what the driver made available on `ctx.queues[queue]` (a
    /// position in the activated queues, not the virtio queue index: see
    /// [`VirtQueue::index`]). Called on every kick, once at start and once
    /// on resume. An error means the ring is broken: the worker marks the
    /// device DEVICE_NEEDS_RESET and stops serving it.
    fn process_queue(&mut self, ctx: &mut WorkerContext, queue: usize) -> Result<(), QueueError>;

    /// Called on the worker thread when the worker pauses, before the pause
    /// is acknowledged (also when the ring is broken): finish whatever the
    /// handler still has in flight and complete it, so that a paused device
    /// moves no guest memory. An error marks the device DEVICE_NEEDS_RESET.
    fn pause(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        let _ = ctx;
        Ok(())
    }

    /// Called on the worker thread before it exits ([`WorkerHandle::stop`],
    /// drop of the handle): wait for or cancel whatever the handler still has
    /// in flight. Requests it abandons are not put on the used ring (the
    /// device is being reset or dropped; pause first to complete them).
    fn stop(&mut self, ctx: &mut WorkerContext) {
        let _ = ctx;
    }

    /// Handles readiness of a backend fd registered with `token`.
    fn handle_event(
        &mut self,
        ctx: &mut WorkerContext,
        token: u64,
        events: EventSet,
    ) -> Result<(), QueueError> {
        let _ = (ctx, token, events);
        Ok(())
    }
}

/// What a handler works with: guest memory, its queues, the interrupt.
pub struct WorkerContext {
    pub mem: GuestMemoryMmap,
    pub features: u64,
    pub queues: Vec<VirtQueue>,
    pub interrupt: Arc<dyn VirtioInterrupt>,
    epoll: Epoll,
}

impl WorkerContext {
    /// Adds a backend fd to the loop; `token` (at most
    /// [`MAX_HANDLER_TOKEN`]) comes back in [`QueueHandler::handle_event`].
    pub fn watch(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
        if token > MAX_HANDLER_TOKEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "worker token too large",
            ));
        }
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
    }

    /// Removes a backend fd from the loop.
    pub fn unwatch(&self, fd: RawFd) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }

    /// The usual synchronous request loop over one queue: pops every
    /// available chain, checks it ([`chain::validate`]), lets `handle`
    /// serve it and return how many bytes it wrote into the chain, puts it
    /// on the used ring, and interrupts the driver once if it wants it.
    ///
    /// `handle` gets the chain even when the check failed (with the error),
    /// so a device with a status byte can still report the failure there
    /// (e.g. in the last descriptor, if that one is writable and in guest
    /// memory: vm-memory bounds-checks every access); it leaves the other
    /// buffers of a failed chain alone and usually returns 0. At most two
    /// rounds of the ring are served per call; if more is waiting, the
    /// queue kicks itself so other queues and the kill event get a turn.
    pub fn process_chains<F>(&mut self, queue: usize, mut handle: F) -> Result<(), QueueError>
    where
        F: FnMut(&GuestMemoryMmap, Chain<'_>, Result<ChainInfo, ChainError>) -> u32,
    {
        let mem = &self.mem;
        let Some(q) = self.queues.get_mut(queue) else {
            return Ok(());
        };
        let size = q.size();
        let budget = usize::from(size) * 2;
        let mut served = 0usize;
        let mut more = false;
        'ring: loop {
            q.disable_notification(mem)?;
            while let Some(chain) = q.pop(mem)? {
                let head = chain.head_index();
                let checked = chain::validate(&chain, size);
                let len = handle(mem, chain, checked);
                q.add_used(mem, head, len)?;
                served += 1;
                if served >= budget {
                    more = true;
                    break 'ring;
                }
            }
            if !q.enable_notification(mem)? {
                break;
            }
        }
        if more {
            // Come back to this queue after the other ready events.
            let _ = q.kick().write(1);
        }
        if served > 0 && q.needs_notification(mem)? {
            self.interrupt.signal_queue(q.index());
        }
        Ok(())
    }

    /// Interrupts the driver for `ctx.queues[queue]` if it wants it (for
    /// devices that complete requests later, after `add_used`).
    pub fn signal_used(&mut self, queue: usize) -> Result<(), QueueError> {
        let Some(q) = self.queues.get_mut(queue) else {
            return Ok(());
        };
        if q.needs_notification(&self.mem)? {
            self.interrupt.signal_queue(q.index());
        }
        Ok(())
    }
}

/// The controlling side of a running worker, kept by the device.
/// Dropping it stops the thread.
pub struct WorkerHandle<H: QueueHandler> {
    name: String,
    kill: EventFd,
    pause: EventFd,
    pause_requested: Arc<AtomicBool>,
    acks: Receiver<bool>,
    thread: Option<JoinHandle<(H, WorkerContext)>>,
}

/// Starts a worker thread named `name` (e.g. `virtio-rng`, at most 15
/// characters show in `ps`) serving `activation`'s queues with `handler`.
pub fn spawn<H: QueueHandler>(
    name: &str,
    activation: Activation,
    handler: H,
) -> Result<WorkerHandle<H>, WorkerError> {
    let setup = |e| WorkerError::Setup(e);
    let epoll = Epoll::new().map_err(setup)?;
    let control = Epoll::new().map_err(setup)?;
    let kill = EventFd::new(EFD_NONBLOCK).map_err(setup)?;
    let pause = EventFd::new(EFD_NONBLOCK).map_err(setup)?;
    for ep in [&epoll, &control] {
        for (fd, token) in [
            (kill.as_raw_fd(), TOKEN_KILL),
            (pause.as_raw_fd(), TOKEN_PAUSE),
        ] {
            ep.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
            .map_err(setup)?;
        }
    }
    for (pos, q) in activation.queues.iter().enumerate() {
        let token = KIND_QUEUE | pos as u64;
        epoll
            .ctl(
                ControlOperation::Add,
                q.kick().as_raw_fd(),
                EpollEvent::new(EventSet::IN, token),
            )
            .map_err(setup)?;
    }
    let ctx = WorkerContext {
        mem: activation.mem,
        features: activation.features,
        queues: activation.queues,
        interrupt: activation.interrupt,
        epoll,
    };
    let pause_requested = Arc::new(AtomicBool::new(false));
    let (ack_tx, acks) = mpsc::channel();
    let loop_ = WorkerLoop {
        name: name.to_string(),
        pause: pause.try_clone().map_err(setup)?,
        pause_requested: pause_requested.clone(),
        acks: ack_tx,
        control,
    };
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || loop_.run(handler, ctx))
        .map_err(|e| WorkerError::Spawn(name.to_string(), e))?;
    Ok(WorkerHandle {
        name: name.to_string(),
        kill,
        pause,
        pause_requested,
        acks,
        thread: Some(thread),
    })
}

impl<H: QueueHandler> WorkerHandle<H> {
    /// Stops serving the queues; returns once the worker is idle.
    pub fn pause(&mut self) -> Result<(), WorkerError> {
        self.set_paused(true)
    }

    /// Serves the queues again, starting with whatever arrived meanwhile.
    pub fn resume(&mut self) -> Result<(), WorkerError> {
        self.set_paused(false)
    }

    fn set_paused(&mut self, paused: bool) -> Result<(), WorkerError> {
        self.pause_requested.store(paused, Ordering::SeqCst);
        self.pause
            .write(1)
            .map_err(|_| WorkerError::Exited(self.name.clone()))?;
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.acks.recv_timeout(left) {
                Ok(state) if state == paused => return Ok(()),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(WorkerError::Timeout(self.name.clone()))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(WorkerError::Exited(self.name.clone()))
                }
            }
        }
    }

    /// Stops the thread and hands back the handler and its context (the
    /// queues, for snapshots); `None` if the thread had died.
    pub fn stop(mut self) -> Option<(H, WorkerContext)> {
        self.join()
    }

    fn join(&mut self) -> Option<(H, WorkerContext)> {
        let thread = self.thread.take()?;
        let _ = self.kill.write(1);
        match thread.join() {
            Ok(parts) => Some(parts),
            Err(_) => {
                eprintln!("keel-vmm: {}: worker thread panicked", self.name);
                None
            }
        }
    }
}

impl<H: QueueHandler> Drop for WorkerHandle<H> {
    fn drop(&mut self) {
        self.join();
    }
}

/// The worker thread's side.
struct WorkerLoop {
    name: String,
    pause: EventFd,
    pause_requested: Arc<AtomicBool>,
    acks: Sender<bool>,
    /// Watches only kill and pause: waited on while paused or broken.
    control: Epoll,
}

impl WorkerLoop {
    fn run<H: QueueHandler>(self, mut handler: H, mut ctx: WorkerContext) -> (H, WorkerContext) {
        let mut paused = false;
        let mut broken = false;
        if let Err(e) = handler.start(&mut ctx) {
            eprintln!("keel-vmm: {}: cannot start the backend: {e}", self.name);
            ctx.interrupt.set_needs_reset();
            broken = true;
        }
        if !broken {
            broken = !self.process_all(&mut handler, &mut ctx);
        }
        let mut events = vec![EpollEvent::default(); 32];
        loop {
            let epoll = if paused || broken {
                &self.control
            } else {
                &ctx.epoll
            };
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("keel-vmm: {}: event loop failed: {e}", self.name);
                    handler.stop(&mut ctx);
                    return (handler, ctx);
                }
            };
            for ev in &events[..n] {
                let token = ev.data();
                match token {
                    TOKEN_KILL => {
                        handler.stop(&mut ctx);
                        return (handler, ctx);
                    }
                    TOKEN_PAUSE => {
                        let _ = self.pause.read();
                        let want = self.pause_requested.load(Ordering::SeqCst);
                        let resumed = paused && !want;
                        if want && !paused {
                            let r = handler.pause(&mut ctx);
                            broken = !self.check(r, &ctx) || broken;
                        }
                        paused = want;
                        if resumed && !broken {
                            broken = !self.process_all(&mut handler, &mut ctx);
                        }
                        let _ = self.acks.send(paused);
                    }
                    _ if paused || broken => {}
                    t if t & !MAX_HANDLER_TOKEN == KIND_QUEUE => {
                        let pos = (t & MAX_HANDLER_TOKEN) as usize;
                        if let Some(q) = ctx.queues.get(pos) {
                            let _ = q.kick().read();
                        }
                        let r = handler.process_queue(&mut ctx, pos);
                        broken = !self.check(r, &ctx);
                    }
                    t if t <= MAX_HANDLER_TOKEN => {
                        let r = handler.handle_event(&mut ctx, t, ev.event_set());
                        broken = !self.check(r, &ctx);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Processes every queue once; false if a ring is broken.
    fn process_all<H: QueueHandler>(&self, handler: &mut H, ctx: &mut WorkerContext) -> bool {
        for pos in 0..ctx.queues.len() {
            let r = handler.process_queue(ctx, pos);
            if !self.check(r, ctx) {
                return false;
            }
        }
        true
    }

    /// Turns a queue error into DEVICE_NEEDS_RESET; false if there was one.
    fn check(&self, r: Result<(), QueueError>, ctx: &WorkerContext) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "keel-vmm: {}: {}; the device needs a reset",
                    self.name,
                    crate::error_chain(&e)
                );
                ctx.interrupt.set_needs_reset();
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::GuestAddress;

    use super::*;
    use crate::testing::{DescSpec, TestQueueLayout, TEST_MEM_SIZE};

    #[derive(Default)]
    struct Counting {
        signals: AtomicUsize,
        needs_reset: AtomicBool,
    }

    impl VirtioInterrupt for Counting {
        fn signal_queue(&self, _index: u16) {
            self.signals.fetch_add(1, Ordering::SeqCst);
        }
        fn signal_config(&self) {}
        fn set_needs_reset(&self) {
            self.needs_reset.store(true, Ordering::SeqCst);
        }
    }

    /// Serves every chain with 0 bytes; with `endless`, offers each chain
    /// again as soon as it is popped (a driver that never stops).
    struct Handler {
        calls: Arc<AtomicUsize>,
        endless: Option<TestQueueLayout>,
        /// Stop hook calls.
        stops: usize,
    }

    impl QueueHandler for Handler {
        fn process_queue(
            &mut self,
            ctx: &mut WorkerContext,
            queue: usize,
        ) -> Result<(), QueueError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let endless = self.endless;
            ctx.process_chains(queue, |mem, chain, _| {
                if let Some(l) = endless {
                    l.publish(mem, chain.head_index());
                }
                0
            })
        }

        fn pause(&mut self, _ctx: &mut WorkerContext) -> Result<(), QueueError> {
            // Slow on purpose: pause() must not return before this did.
            std::thread::sleep(Duration::from_millis(20));
            self.calls.fetch_add(PAUSED, Ordering::SeqCst);
            Ok(())
        }

        fn stop(&mut self, _ctx: &mut WorkerContext) {
            self.stops += 1;
        }
    }

    fn setup(
        endless: bool,
    ) -> (
        WorkerHandle<Handler>,
        GuestMemoryMmap,
        TestQueueLayout,
        Arc<Counting>,
        Arc<AtomicUsize>,
        EventFd,
    ) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), TEST_MEM_SIZE)]).unwrap();
        let layout = TestQueueLayout::new(GuestAddress(0x1000), 4);
        layout.init(&mem);
        let mut q = Queue::new(4).unwrap();
        layout.configure(&mut q);
        let kick = EventFd::new(EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(Counting::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let activation = Activation {
            mem: mem.clone(),
            features: 0,
            queues: vec![VirtQueue::new(0, q, kick.try_clone().unwrap())],
            interrupt: interrupt.clone(),
        };
        let handler = Handler {
            calls: calls.clone(),
            endless: endless.then_some(layout),
            stops: 0,
        };
        let w = spawn("virtio-test", activation, handler).unwrap();
        (w, mem, layout, interrupt, calls, kick)
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn kicks_are_served_and_stop_hands_back_the_queues() {
        let (w, mem, layout, interrupt, calls, kick) = setup(false);
        // Processed once at start, with nothing to do.
        wait_for("the first pass", || calls.load(Ordering::SeqCst) == 1);
        layout.write_desc(
            &mem,
            0,
            DescSpec::new(0x10000, 8, VRING_DESC_F_WRITE as u16, 0),
        );
        layout.publish(&mem, 0);
        kick.write(1).unwrap();
        wait_for("the used ring", || layout.used_idx(&mem) == 1);
        assert_eq!(interrupt.signals.load(Ordering::SeqCst), 1);
        let (_, ctx) = w.stop().unwrap();
        assert_eq!(ctx.queues[0].state().next_avail, 1);
        assert_eq!(ctx.queues[0].state().next_used, 1);
    }

    #[test]
    fn an_endless_driver_cannot_starve_the_kill_event() {
        let (w, mem, layout, interrupt, calls, kick) = setup(true);
        layout.write_desc(&mem, 0, DescSpec::new(0x10000, 8, 0, 0));
        layout.publish(&mem, 0);
        kick.write(1).unwrap();
        // The worker gives the ring up after 2 rounds and kicks itself.
        wait_for("several passes", || calls.load(Ordering::SeqCst) > 5);
        assert!(interrupt.signals.load(Ordering::SeqCst) > 0);
        let start = Instant::now();
        assert!(w.stop().is_some());
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(!interrupt.needs_reset.load(Ordering::SeqCst));
    }

    #[test]
    fn paused_worker_ignores_kicks_until_resumed() {
        let (mut w, mem, layout, _, _, kick) = setup(false);
        w.pause().unwrap();
        layout.write_desc(&mem, 0, DescSpec::new(0x10000, 8, 0, 0));
        layout.publish(&mem, 0);
        kick.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(layout.used_idx(&mem), 0);
        w.pause().unwrap();
        w.resume().unwrap();
        wait_for("the used ring", || layout.used_idx(&mem) == 1);
    }

    /// What the test handler's pause hook adds to its call count.
    const PAUSED: usize = 1000;

    #[test]
    fn pause_and_stop_call_the_handler_first() {
        let (mut w, _, _, _, calls, _) = setup(false);
        w.pause().unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst) / PAUSED,
            1,
            "pause acked early"
        );
        // Pausing twice calls the hook once; pausing after a resume again.
        w.pause().unwrap();
        w.resume().unwrap();
        w.pause().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst) / PAUSED, 2);
        let (h, _) = w.stop().unwrap();
        assert_eq!(h.stops, 1);
    }

    #[test]
    fn broken_ring_sets_needs_reset() {
        let (w, mem, layout, interrupt, calls, kick) = setup(false);
        wait_for("the first pass", || calls.load(Ordering::SeqCst) == 1);
        layout.set_avail_idx(&mem, 9);
        kick.write(1).unwrap();
        wait_for("needs reset", || {
            interrupt.needs_reset.load(Ordering::SeqCst)
        });
        // Further kicks do not reach the handler.
        kick.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(w.stop().is_some());
    }
}
