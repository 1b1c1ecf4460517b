//! The daemon's event loop: serve until SIGTERM/SIGINT, then remove the disk.

use crate::oxt::Flow;
use crate::serve::Server;
use crate::AnyResult;
use blktap::ring::{BackRing, Ring, RingMemory};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// How often REMOVE_DEVICE is retried while the disk is still open during shutdown (the
/// kernel also wakes the poll when the last opener closes).
pub const REMOVE_RETRY: Duration = Duration::from_millis(200);

/// What the event loop needs from a ring device.
pub trait RingDevice {
    /// Descriptor to poll for `POLLIN`.
    fn poll_fd(&self) -> RawFd;
    /// The mapped ring.
    fn memory(&self) -> Option<RingMemory<'_>>;
    /// The `RESPOND` ioctl.
    fn respond(&self) -> blktap::Result<()>;
    /// The `REMOVE_DEVICE` ioctl.
    fn remove_device(&self) -> blktap::Result<()>;
}

impl RingDevice for Ring {
    fn poll_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
    fn memory(&self) -> Option<RingMemory<'_>> {
        Ring::memory(self)
    }
    fn respond(&self) -> blktap::Result<()> {
        Ring::respond(self)
    }
    fn remove_device(&self) -> blktap::Result<()> {
        Ring::remove_device(self)
    }
}

/// A pollable source of termination signals.
pub trait SignalSource {
    /// Descriptor that is readable while a signal is pending.
    fn fd(&self) -> RawFd;
    /// Takes one pending signal, if any (non-blocking).
    fn read(&self) -> io::Result<Option<i32>>;
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}

/// Polls the ring and the signal source; returns true if a signal is pending.
fn wait(ring_fd: RawFd, signal_fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let mut fds = [ring_fd, signal_fd].map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    // SAFETY: `fds` is a valid array of two pollfds.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(fds[1].revents & libc::POLLIN != 0)
}

/// Adaptive batching: whether to yield the CPU once before serving a small batch, so that a
/// submitter on the same CPU can queue more. A yield that brought nothing (an idle or
/// synchronous submitter, such as I/O at queue depth 1) makes the next ones wait for more and
/// more batches (up to [`Batching::MAX_SKIP`]), so they cost almost nothing where they do
/// not help.
#[derive(Debug, Default)]
pub struct Batching {
    skip: u32,
    backoff: u32,
}

impl Batching {
    /// Batches smaller than this are worth a yield.
    pub const SMALL: u32 = 8;
    /// Most batches served without trying after fruitless yields.
    pub const MAX_SKIP: u32 = 64;

    /// Whether to yield before serving `waiting` requests.
    pub fn should_yield(&mut self, waiting: u32) -> bool {
        if !(1..Self::SMALL).contains(&waiting) {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// Records the effect of a yield: `before` requests were waiting, `after` are now.
    pub fn yielded(&mut self, before: u32, after: u32) {
        if after > before {
            self.backoff = 0;
        } else {
            self.backoff = (self.backoff * 2 + 1).min(Self::MAX_SKIP);
            self.skip = self.backoff;
        }
    }
}

/// Handler of the ring message byte (`--abi oxt`): called once per message seen, after every
/// published request was served.
pub type OnMessage<'a> = &'a mut dyn FnMut(u8, &mut Server) -> AnyResult<Flow>;

/// How long to wait before looking again at a message already handled that the kernel has
/// not cleared yet (the ring stays readable while the byte is set).
const MESSAGE_RECHECK: Duration = Duration::from_millis(10);

/// Serves `ring` until a signal arrives, then retries REMOVE_DEVICE until it succeeds,
/// polling with a short timeout and still serving I/O while the disk is open (so that its
/// last user can finish and close it). Returns when the disk is gone, or when `on_message`
/// says so.
pub fn run(
    ring: &impl RingDevice,
    signals: &impl SignalSource,
    server: &mut Server,
    disk: &str,
    mut on_message: Option<OnMessage<'_>>,
) -> AnyResult<()> {
    let mut back = BackRing::new();
    let mut batching = Batching::default();
    let mut stopping = false;
    let mut busy_logged = false;
    let mut handled = 0u8;
    // Low latency: requests found by watching the ring skip the poll, but the signals are still
    // read at least every SIGNAL_CHECK.
    let mut found_spinning = false;
    let mut signals_checked = Instant::now();
    loop {
        if stopping {
            match ring.remove_device() {
                Ok(()) => return Ok(()),
                Err(e) if e.is_errno(libc::EBUSY) => {
                    if !busy_logged {
                        log!("{disk} is still open; waiting for the last close");
                        busy_logged = true;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        let skip_wait = found_spinning && signals_checked.elapsed() < SIGNAL_CHECK;
        if !skip_wait
            && wait(
                ring.poll_fd(),
                signals.fd(),
                stopping.then_some(REMOVE_RETRY),
            )?
        {
            while let Some(sig) = signals.read()? {
                if stopping {
                    log!(
                        "{}: already shutting down, waiting for {disk} to be closed",
                        signal_name(sig)
                    );
                } else {
                    log!("{}: removing {disk}", signal_name(sig));
                    stopping = true;
                }
            }
        }
        if !skip_wait {
            signals_checked = Instant::now();
        }
        // Always drain: requests keep being served while the disk is open during shutdown.
        let mem = ring.memory().ok_or("ring is not mapped")?;
        let waiting = || mem.req_prod().wrapping_sub(back.req_cons());
        let before = waiting();
        if batching.should_yield(before) {
            // A small batch usually means our wake-up preempted the submitter in the middle
            // of a burst on this CPU. Yielding once lets it queue the rest, which a
            // non-blocking poll then sends: one poll/RESPOND pair serves many requests.
            std::thread::yield_now();
            wait(ring.poll_fd(), signals.fd(), Some(Duration::ZERO))?;
            batching.yielded(before, waiting());
        }
        server.serve_batch(&mut back, mem, || ring.respond())?;
        // Mark what was taken (`req_event = req_cons + 1`): a kernel that keeps the level
        // then reports the ring readable while anything lies beyond it, so a request published
        // during this pass makes the next poll return at once; the result is not needed.
        back.final_check_for_requests(mem);
        if let Some(handler) = on_message.as_mut() {
            let msg = mem.msg();
            if msg == 0 {
                handled = 0;
            } else if msg != handled {
                // Everything published was served above: nothing is in flight.
                handled = msg;
                if handler(msg, server)? == Flow::Exit {
                    return Ok(());
                }
            } else {
                std::thread::sleep(MESSAGE_RECHECK);
            }
        }
        // Low latency: the kernel publishes requests as they are submitted; watch `req_prod`
        // for a bounded time before sleeping in poll, so that the next request of a QD1
        // stream costs no wake-up and no poll. An idle daemon spins once, then sleeps.
        found_spinning = false;
        if let (Some(spin), false) = (server.spin(), stopping) {
            let start = Instant::now();
            while start.elapsed() < spin {
                if mem.req_prod() != back.req_cons() {
                    found_spinning = true;
                    server.count_spun();
                    break;
                }
                std::hint::spin_loop();
            }
        }
    }
}

/// With low latency, the longest the signals go unread while requests keep coming.
const SIGNAL_CHECK: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batching_backs_off_when_yields_bring_nothing() {
        let mut b = Batching::default();
        assert!(!b.should_yield(0));
        assert!(!b.should_yield(Batching::SMALL));
        assert!(b.should_yield(1));
        // Fruitless: skip 1, then 3, 7, ... batches, capped.
        b.yielded(1, 1);
        assert!(!b.should_yield(1));
        assert!(b.should_yield(1));
        b.yielded(1, 1);
        assert_eq!((0..3).filter(|_| b.should_yield(1)).count(), 0);
        assert!(b.should_yield(1));
        for _ in 0..10 {
            b.yielded(1, 1);
        }
        assert_eq!(b.skip, Batching::MAX_SKIP);
        // A yield that helps makes the next small batch yield again.
        b.skip = 0;
        assert!(b.should_yield(2));
        b.yielded(2, 20);
        assert!(b.should_yield(2));
    }
    use crate::backend::MemBackend;
    use blktap::ring::Mapping;
    use blktap::uapi::{RingRequest, MMAP_SIZE, OP_READ, OP_WRITE, RSP_OKAY};
    use blktap::{Errno, Error};
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::mpsc;
    use std::time::Instant;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert_eq!(ret, 0);
        // SAFETY: fresh descriptors owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn write_byte(fd: &OwnedFd, b: u8) {
        // SAFETY: writing one byte from a valid buffer.
        let n = unsafe { libc::write(fd.as_raw_fd(), (&b as *const u8).cast(), 1) };
        assert_eq!(n, 1);
    }

    fn read_byte(fd: &OwnedFd) -> Option<u8> {
        let mut b = 0u8;
        // SAFETY: reading one byte into a valid buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
        (n == 1).then_some(b)
    }

    /// A ring in memory: readable (a pipe) when the fake kernel kicks, RESPOND drains the
    /// kick and notifies the kernel, REMOVE_DEVICE is EBUSY until the fake disk is closed.
    struct FakeRing {
        mapping: Mapping,
        kick_r: OwnedFd,
        responded: mpsc::Sender<()>,
        disk_open: std::sync::atomic::AtomicBool,
        remove_calls: AtomicU32,
    }

    impl RingDevice for FakeRing {
        fn poll_fd(&self) -> RawFd {
            self.kick_r.as_raw_fd()
        }
        fn memory(&self) -> Option<RingMemory<'_>> {
            self.mapping.memory()
        }
        fn respond(&self) -> blktap::Result<()> {
            while read_byte(&self.kick_r).is_some() {}
            self.responded.send(()).unwrap();
            Ok(())
        }
        fn remove_device(&self) -> blktap::Result<()> {
            self.remove_calls.fetch_add(1, Ordering::SeqCst);
            if self.disk_open.load(Ordering::SeqCst) {
                Err(Error::Sys {
                    context: "REMOVE_DEVICE".into(),
                    errno: Errno(libc::EBUSY),
                })
            } else {
                Ok(())
            }
        }
    }

    struct PipeSignals(OwnedFd);

    impl SignalSource for PipeSignals {
        fn fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
        fn read(&self) -> io::Result<Option<i32>> {
            Ok(read_byte(&self.0).map(i32::from))
        }
    }

    #[test]
    fn serves_then_waits_for_close_then_removes() {
        let (kick_r, kick_w) = pipe();
        let (sig_r, sig_w) = pipe();
        let (rsp_tx, rsp_rx) = mpsc::channel();
        let ring = FakeRing {
            mapping: Mapping::anonymous(MMAP_SIZE).unwrap(),
            kick_r,
            responded: rsp_tx,
            disk_open: true.into(),
            remove_calls: AtomicU32::new(0),
        };
        let mem = ring.mapping.memory().unwrap();
        mem.init();
        let signals = PipeSignals(sig_r);
        let mut server = Server::new(Box::new(MemBackend::new(1 << 20).unwrap()), false);

        let stats = std::thread::scope(|s| {
            let daemon = s.spawn(|| {
                let r = run(&ring, &signals, &mut server, "tdtest", None);
                (r.map_err(|e| e.to_string()), server.stats())
            });
            let mut prod = 0u32;
            let mut submit = |raw: RingRequest| {
                mem.write_request(prod, &raw);
                prod += 1;
                mem.set_req_prod(prod);
                write_byte(&kick_w, 1);
                rsp_rx
                    .recv_timeout(Duration::from_secs(5))
                    .expect("no RESPOND");
                let rsp = mem.read_response(prod - 1);
                assert_eq!(mem.rsp_prod(), prod);
                rsp
            };

            // Normal service.
            mem.segment_buf(0, 0, &blktap::uapi::Segment::new(0, 7))
                .fill(0x11);
            assert_eq!(
                submit(RingRequest::new(OP_WRITE, 0, 8, &[(0, 7)])).status,
                RSP_OKAY
            );
            // After the pass the daemon marks what it took: req_event = req_cons + 1, so a
            // kernel that keeps the level sees nothing pending.
            let t0 = Instant::now();
            let want = mem.req_prod() + 1;
            while mem.req_event() != want {
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "req_event is {}, expected {want}",
                    mem.req_event()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(!mem.level_ready());

            // SIGTERM while the disk is open: REMOVE_DEVICE is retried, I/O is still served.
            write_byte(&sig_w, libc::SIGTERM as u8);
            let t0 = Instant::now();
            while ring.remove_calls.load(Ordering::SeqCst) < 2 {
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "REMOVE_DEVICE not retried"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            mem.segment_buf(1, 0, &blktap::uapi::Segment::new(0, 7))
                .fill(0);
            assert_eq!(
                submit(RingRequest::new(OP_READ, 1, 8, &[(0, 7)])).status,
                RSP_OKAY
            );
            assert!(mem
                .segment_buf(1, 0, &blktap::uapi::Segment::new(0, 7))
                .to_vec()
                .iter()
                .all(|&b| b == 0x11));

            // A second signal changes nothing; closing the disk lets the daemon finish.
            write_byte(&sig_w, libc::SIGINT as u8);
            ring.disk_open.store(false, Ordering::SeqCst);
            let (result, stats) = daemon.join().unwrap();
            assert_eq!(result, Ok(()));
            stats
        });
        assert_eq!((stats.reads, stats.writes, stats.batches), (1, 1, 2));
        assert!(ring.remove_calls.load(Ordering::SeqCst) >= 3);
    }

    #[test]
    fn remove_errors_other_than_ebusy_end_the_loop() {
        struct Broken(FakeRing);
        impl RingDevice for Broken {
            fn poll_fd(&self) -> RawFd {
                self.0.poll_fd()
            }
            fn memory(&self) -> Option<RingMemory<'_>> {
                self.0.memory()
            }
            fn respond(&self) -> blktap::Result<()> {
                self.0.respond()
            }
            fn remove_device(&self) -> blktap::Result<()> {
                Err(Error::Sys {
                    context: "REMOVE_DEVICE".into(),
                    errno: Errno(libc::EACCES),
                })
            }
        }
        let (kick_r, _kick_w) = pipe();
        let (sig_r, sig_w) = pipe();
        let (rsp_tx, _rsp_rx) = mpsc::channel();
        let ring = Broken(FakeRing {
            mapping: Mapping::anonymous(MMAP_SIZE).unwrap(),
            kick_r,
            responded: rsp_tx,
            disk_open: false.into(),
            remove_calls: AtomicU32::new(0),
        });
        ring.0.mapping.memory().unwrap().init();
        let mut server = Server::new(Box::new(MemBackend::new(4096).unwrap()), false);
        write_byte(&sig_w, libc::SIGTERM as u8);
        let err = run(&ring, &PipeSignals(sig_r), &mut server, "tdx", None).unwrap_err();
        assert!(err.to_string().contains("EACCES"), "{err}");
    }
}
