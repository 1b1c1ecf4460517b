//! `security`: who may do what. `stale-pages`: no stale data in pages given to a daemon.
//!
//! `security` checks that the control and ring nodes are 0600 root; that ALLOC_TAP and
//! FREE_TAP need CAP_SYS_ADMIN (a child that opened the control device as root and then
//! became uid 65534, and a root child without CAP_SYS_ADMIN, get EPERM); that an
//! unprivileged process cannot open the nodes (EACCES); and that a process that does not own
//! the ring mapping (a forked child, or a process the fd was passed to with SCM_RIGHTS) can
//! neither use the ring ioctls (EACCES) nor map it (EBUSY), while a thread of the owner can.
//!
//! `stale-pages` serves I/O, lets the daemon exit, maps the ring again and checks that every
//! data page of the new mapping is zero, and that the data pages of read requests on a fresh
//! mapping hold nothing but zeros until the daemon itself wrote them.

use crate::daemon::Backend;
use crate::ktap::Ktap;
use crate::teardown::{io_on, setup};
use crate::util::{self, ChildEnd, BLOCK};
use crate::{Env, Taps};
use blktap::ring::{Op, Request, Ring};
use blktap::uapi::{self, RingResponse, SringHeader, MMAP_PAGES, MMAP_SIZE, PAGE_SIZE, RING_SIZE};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const NOBODY: u32 = 65534;
const CAP_SYS_ADMIN: u32 = 21;

fn ioctl(fd: RawFd, cmd: u32, arg: u64) -> i32 {
    // SAFETY: commands with value arguments, or pointers to buffers owned by the caller.
    let r = unsafe { libc::ioctl(fd, cmd as libc::c_ulong, arg as libc::c_ulong) };
    if r < 0 {
        util::last_errno()
    } else {
        0
    }
}

/// Drops to uid/gid `NOBODY` with no supplementary groups; false on failure.
fn become_nobody() -> bool {
    // SAFETY: plain credential system calls in a child process.
    unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(NOBODY) == 0
            && libc::setuid(NOBODY) == 0
    }
}

/// Removes CAP_SYS_ADMIN from the effective and permitted sets; false on failure.
fn drop_sys_admin() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget with a version-3 header and room for two data structs.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) } != 0 {
        return false;
    }
    d[0].effective &= !(1 << CAP_SYS_ADMIN);
    d[0].permitted &= !(1 << CAP_SYS_ADMIN);
    // SAFETY: capset with the structs just read and modified.
    unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) == 0 }
}

/// Runs `f` in a forked child that reports `(name, errno)` pairs through a pipe.
fn child_results(f: impl FnOnce(&mut Vec<(String, i32)>)) -> Result<Vec<(String, i32)>, String> {
    let mut fds = [0; 2];
    // SAFETY: a fresh pipe.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(format!("pipe: {}", blktap::Errno::last()));
    }
    // SAFETY: both descriptors were just created.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the caller has no other threads; the child runs system calls and small
    // allocations only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", blktap::Errno::last()));
    }
    if pid == 0 {
        drop(r);
        let mut out = Vec::new();
        f(&mut out);
        let text: String = out.iter().map(|(n, e)| format!("{n}\t{e}\n")).collect();
        let _ = std::fs::File::from(w).write_all(text.as_bytes());
        // SAFETY: leave the child.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    let mut text = String::new();
    let _ = std::fs::File::from(r).read_to_string(&mut text);
    let end = util::wait_child(pid)?;
    if end != ChildEnd::Exited(0) {
        return Err(format!("child ended {end:?}"));
    }
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, e)| (n.to_string(), e.parse().unwrap_or(-1)))
        .collect())
}

/// Checks every `(name, errno)` of a child against `want`.
fn check_results(
    t: &mut Ktap,
    prefix: &str,
    got: Result<Vec<(String, i32)>, String>,
    want: &[(&str, i32)],
) {
    let got = match got {
        Ok(g) => g,
        Err(e) => return t.fail(prefix, &e),
    };
    let map: HashMap<_, _> = got.into_iter().collect();
    for (name, errno) in want {
        let g = map.get(*name).copied();
        t.check(
            &format!("{prefix}: {name} is {}", util::errno_name(*errno)),
            g == Some(*errno),
            || format!("got {}", g.map_or("nothing".into(), util::errno_name)),
        );
    }
}

fn check_node(t: &mut Ktap, what: &str, path: &Path, want_char: bool) {
    match std::fs::metadata(path) {
        Ok(m) => {
            let ftype = m.mode() & libc::S_IFMT;
            let want_type = if want_char {
                libc::S_IFCHR
            } else {
                libc::S_IFBLK
            };
            t.check(
                &format!("security: {what} {} is 0600 root:root", path.display()),
                m.mode() & 0o7777 == 0o600 && m.uid() == 0 && m.gid() == 0 && ftype == want_type,
                || format!("mode {:o} uid {} gid {}", m.mode(), m.uid(), m.gid()),
            );
        }
        Err(e) => t.fail(&format!("security: stat {}", path.display()), &e),
    }
}

/// Runs `f` on a one-byte message with room for one `SCM_RIGHTS` fd, as both `send_fd` and
/// `recv_fd` need: the buffers it points to live until `f` returns.
fn with_fd_msg<R>(f: impl FnOnce(&mut libc::msghdr) -> R) -> R {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call of `f`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    f(&mut msg)
}

/// Sends `fd` over the socket `sock` (SCM_RIGHTS).
fn send_fd(sock: RawFd, fd: RawFd) -> bool {
    with_fd_msg(|msg| {
        // SAFETY: the control buffer has room for one header with one fd.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
            libc::sendmsg(sock, msg, 0) == 1
        }
    })
}

/// Receives one fd from `sock`.
fn recv_fd(sock: RawFd) -> Option<RawFd> {
    with_fd_msg(|msg| {
        // SAFETY: receiving into our buffers; the header is checked before use.
        unsafe {
            if libc::recvmsg(sock, msg, 0) != 1 {
                return None;
            }
            let c = libc::CMSG_FIRSTHDR(msg);
            if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
                return None;
            }
            Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>()))
        }
    })
}

/// ALLOC_TAP and FREE_TAP of `minor` on the control fd `cfd`, with their errnos.
fn control_probes(cfd: RawFd, minor: u32, out: &mut Vec<(String, i32)>) {
    let mut reply = [0u8; 12];
    out.push((
        "ALLOC_TAP".into(),
        ioctl(cfd, uapi::IOCTL_ALLOC_TAP, reply.as_mut_ptr() as u64),
    ));
    out.push((
        "FREE_TAP".into(),
        ioctl(cfd, uapi::IOCTL_FREE_TAP, u64::from(minor)),
    ));
}

fn ring_probes(fd: RawFd, out: &mut Vec<(String, i32)>) {
    out.push(("RESPOND".into(), ioctl(fd, uapi::IOCTL_RESPOND, 0)));
    out.push((
        "REMOVE_DEVICE".into(),
        ioctl(fd, uapi::IOCTL_REMOVE_DEVICE, 0),
    ));
    let info = blktap::DeviceInfo::new(2048, 512, false);
    out.push((
        "CREATE_DEVICE".into(),
        ioctl(fd, uapi::IOCTL_CREATE_DEVICE, &info as *const _ as u64),
    ));
    let e = match util::mmap_ring(fd) {
        Ok(p) => {
            // SAFETY: the mapping just made, unmapped again: only the attempt counts.
            unsafe { libc::munmap(p, MMAP_SIZE) };
            0
        }
        Err(e) => e,
    };
    out.push(("mmap".into(), e));
}

/// Runs the permission checks.
pub fn run(env: &Env, t: &mut Ktap) {
    let ctl = match env.control() {
        Ok(c) => c,
        Err(e) => return t.skip("security", &e),
    };
    for p in ["/dev/blktap-control", "/dev/blktap/control"] {
        let p = Path::new(p);
        if p.exists() {
            check_node(t, "control node", p, true);
        } else {
            t.skip(&format!("security: {} mode", p.display()), &"no such node");
        }
    }
    let mut taps = Taps::new(&ctl);
    let info = match taps.alloc() {
        Ok(i) => i,
        Err(e) => return t.fail("security: ALLOC_TAP", &e),
    };
    let devtmpfs_ring: PathBuf = blktap::node::ring_path(&env.ring_dir, info.ring_minor);
    if util::wait_until(Duration::from_secs(3), || devtmpfs_ring.exists()) {
        check_node(t, "ring node", &devtmpfs_ring, true);
    } else {
        t.skip(
            "security: ring node mode",
            &format!("no {}", devtmpfs_ring.display()),
        );
    }
    let ring_path = match env.ring_node(&info) {
        Ok(p) => p,
        Err(e) => return t.fail("security: ring node", &e),
    };
    let minor = info.ring_minor;
    let cfd = std::os::fd::AsFd::as_fd(&ctl).as_raw_fd();

    // Unprivileged, with a control fd opened while still root.
    let rp = ring_path.clone();
    let got = child_results(|out| {
        if !become_nobody() {
            out.push(("setuid".into(), util::last_errno()));
            return;
        }
        control_probes(cfd, minor, out);
        out.push(("unknown ioctl".into(), ioctl(cfd, 12345, 0)));
        for (what, path) in [
            ("open control", ctl.path().to_path_buf()),
            ("open ring", rp.clone()),
        ] {
            out.push((
                what.into(),
                util::open_raw(&path, libc::O_RDONLY).err().unwrap_or(0),
            ));
        }
    });
    check_results(
        t,
        "security: uid 65534 with a control fd opened as root",
        got,
        &[
            ("ALLOC_TAP", libc::EPERM),
            ("FREE_TAP", libc::EPERM),
            ("unknown ioctl", libc::ENOTTY),
            ("open control", libc::EACCES),
            ("open ring", libc::EACCES),
        ],
    );
    t.check(
        "security: the tap survives the unprivileged FREE_TAP",
        env.allocated().unwrap_or_default().contains(&minor),
        || format!("tap {minor} is gone"),
    );

    // Root without CAP_SYS_ADMIN.
    let got = child_results(|out| {
        if !drop_sys_admin() {
            out.push(("capset".into(), util::last_errno()));
            return;
        }
        control_probes(cfd, minor, out);
    });
    check_results(
        t,
        "security: root without CAP_SYS_ADMIN",
        got,
        &[("ALLOC_TAP", libc::EPERM), ("FREE_TAP", libc::EPERM)],
    );

    // A process the ring fd is passed to over a socket, forked before the ring was opened.
    let mut sv = [0; 2];
    // SAFETY: a fresh socket pair.
    let have_unix = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } == 0;
    if !have_unix {
        // CONFIG_UNIX is not built into every test kernel.
        t.skip(
            "security: a process given the ring fd over a socket",
            &format!("socketpair: {}", blktap::Errno::last()),
        );
        return owner_checks(env, t, &mut taps, &ring_path, minor);
    }
    // SAFETY: the two sockets were just created.
    let (s0, s1) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    let s1raw = s1.as_raw_fd();
    let (pr, pw) = {
        let mut fds = [0; 2];
        // SAFETY: a fresh pipe.
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        // SAFETY: just created.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    };
    let pwraw = pw.as_raw_fd();
    // SAFETY: single-threaded; the child makes system calls only.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut out = Vec::new();
        match recv_fd(s1raw) {
            Some(fd) => {
                ring_probes(fd, &mut out);
                // Closing our copy must not disturb the owner.
                // SAFETY: our received descriptor.
                unsafe { libc::close(fd) };
            }
            None => out.push(("recvmsg".into(), util::last_errno())),
        }
        let text: String = out.iter().map(|(n, e)| format!("{n}\t{e}\n")).collect();
        // SAFETY: writing our report to the pipe and leaving.
        unsafe {
            libc::write(pwraw, text.as_ptr().cast(), text.len());
            libc::_exit(0)
        };
    }
    drop(s1);
    drop(pw);
    let mut ring = match Ring::open(&ring_path).and_then(|mut r| r.map().map(|()| r)) {
        Ok(r) => r,
        Err(e) => {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = util::wait_child(pid);
            return t.fail("security: open and map the ring", &e);
        }
    };
    let sent = send_fd(s0.as_raw_fd(), ring.as_fd_raw());
    let mut text = String::new();
    let _ = std::fs::File::from(pr).read_to_string(&mut text);
    let _ = util::wait_child(pid);
    let got: Vec<(String, i32)> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, e)| (n.to_string(), e.parse().unwrap_or(-1)))
        .collect();
    let ok: Result<_, String> = if sent {
        Ok(got)
    } else {
        Err("sendmsg failed".into())
    };
    check_results(
        t,
        "security: a process given the ring fd over a socket",
        ok,
        &OWNER_DENIED,
    );
    t.expect_ok(
        "security: the owner's ring still works after that",
        ring.respond(),
    );
    ring.unmap();
    drop(ring);
    owner_checks(env, t, &mut taps, &ring_path, minor);
}

/// What a process that does not own the mapping gets from the ring.
const OWNER_DENIED: [(&str, i32); 4] = [
    ("RESPOND", libc::EACCES),
    ("REMOVE_DEVICE", libc::EACCES),
    ("CREATE_DEVICE", libc::EACCES),
    ("mmap", libc::EBUSY),
];

/// Forked children (privileged or not) cannot use the owner's ring; a thread can. Frees the
/// tap at the end.
fn owner_checks(_env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, ring_path: &Path, minor: u32) {
    let mut ring = match Ring::open(ring_path).and_then(|mut r| r.map().map(|()| r)) {
        Ok(r) => r,
        Err(e) => return t.fail("security: open and map the ring", &e),
    };
    // A forked child (inherits the fd, not the mapping), also unprivileged.
    let rfd = ring.as_fd_raw();
    let got = child_results(|out| ring_probes(rfd, out));
    check_results(
        t,
        "security: a forked child of the owner",
        got,
        &OWNER_DENIED,
    );
    let got = child_results(|out| {
        if become_nobody() {
            ring_probes(rfd, out);
        }
    });
    check_results(
        t,
        "security: an unprivileged forked child",
        got,
        &OWNER_DENIED,
    );
    t.expect_ok(
        "security: the owner's ring still works after the children",
        ring.respond(),
    );

    // A thread of the owner may use the ring (tapdisk is multi-threaded).
    let r = std::thread::scope(|s| s.spawn(|| ring.respond()).join().expect("thread"));
    t.expect_ok("security: a thread of the owner may RESPOND", r);
    ring.unmap();
    drop(ring);
    t.expect_ok("security: FREE_TAP", taps.free(minor));
}

trait RawOf {
    fn as_fd_raw(&self) -> RawFd;
}

impl RawOf for Ring {
    fn as_fd_raw(&self) -> RawFd {
        use std::os::fd::AsFd;
        self.as_fd().as_raw_fd()
    }
}

/// True if every byte of page `page` of `ring`'s mapping is zero.
fn page_zero(ring: &Ring, page: usize) -> bool {
    let mem = ring.memory().expect("mapped");
    let p = mem.page_ptr(page).cast::<u64>();
    // SAFETY: reading a whole page of the live mapping, word by word, by value.
    (0..PAGE_SIZE / 8).all(|w| unsafe { std::ptr::read_volatile(p.add(w)) } == 0)
}

/// Serves like [`Backend::serve`], first checking that the buffers of read requests hold
/// zeros in pages nobody has written since the mapping was made.
fn serve_checking(
    ring: &Ring,
    b: &mut Backend,
    touched: &mut [bool],
    stale: &mut Vec<String>,
) -> Result<(), String> {
    let mem = ring.memory().ok_or("not mapped")?;
    let prod = mem.req_prod();
    let n = prod.wrapping_sub(b.req_cons);
    if n > RING_SIZE {
        return Err(format!("req_prod {prod} overruns req_cons {}", b.req_cons));
    }
    for _ in 0..n {
        let raw = mem.read_request(b.req_cons);
        b.req_cons = b.req_cons.wrapping_add(1);
        let status = match Request::parse(&raw) {
            Ok(req) => {
                for (s, seg) in req.segments().iter().enumerate() {
                    let page = uapi::data_page(req.id, s as u32);
                    if req.op == Op::Read && !touched[page] {
                        let buf = mem.segment_buf(req.id, s as u32, seg).to_vec();
                        if buf.iter().any(|&x| x != 0) && stale.len() < 5 {
                            stale.push(format!(
                                "read id {} segment {s} (page {page}) is not zero",
                                req.id
                            ));
                        }
                    }
                    touched[page] = true;
                }
                b.handle(mem, &req)
            }
            Err(_) => uapi::RSP_ERROR,
        };
        mem.write_response(
            b.rsp_prod_pvt,
            &RingResponse::new(raw.id, raw.operation, status),
        );
        b.rsp_prod_pvt = b.rsp_prod_pvt.wrapping_add(1);
    }
    if n > 0 {
        mem.set_rsp_prod(b.rsp_prod_pvt);
        ring.respond().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// I/O through the disk while serving it with [`serve_checking`].
fn serve_io(t: &mut Ktap, what: &str, ring: &Ring, b: &mut Backend, disk: &Path, fill: u8) {
    let stop = AtomicBool::new(false);
    let mut touched = vec![false; MMAP_PAGES];
    let mut stale = Vec::new();
    let mut err = None;
    let io = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let fd = util::open_disk(disk).map_err(util::errno_name)?;
            for i in 0..48u64 {
                // Reads of fresh blocks first, then writes, then reads of what was written.
                let blk = i % 16;
                let r = match i / 16 {
                    1 => io_on(&fd, blk, Some(fill)),
                    _ => io_on(&fd, blk + if i < 16 { 100 } else { 0 }, None),
                };
                r.map_err(util::errno_name)?;
            }
            Ok::<(), String>(())
        });
        while !h.is_finished() {
            let _ = ring.poll(Some(Duration::from_millis(10)));
            if let Err(e) = serve_checking(ring, b, &mut touched, &mut stale) {
                err = Some(e);
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        h.join().expect("io thread")
    });
    t.check(
        &format!("stale-pages: {what}: I/O served"),
        io.is_ok() && err.is_none(),
        || format!("{io:?} {err:?}"),
    );
    t.check(
        &format!("stale-pages: {what}: read buffers on a fresh mapping are zero"),
        stale.is_empty(),
        || stale.join("; "),
    );
}

/// Runs the stale-data check.
pub fn stale_pages(env: &Env, t: &mut Ktap) {
    let ctl = match env.control() {
        Ok(c) => c,
        Err(e) => return t.skip("stale-pages", &e),
    };
    let mut taps = Taps::new(&ctl);
    let mut s = match setup(env, &mut taps) {
        Ok(s) => s,
        Err(e) => return t.fail("stale-pages: set up a tap with a disk", &e),
    };
    let minor = s.info.ring_minor;
    serve_io(t, "first daemon", &s.ring, &mut s.backend, &s.disk, 0xa5);
    // The daemon scribbles every data page before it goes.
    {
        let mem = s.ring.memory().expect("mapped");
        for page in 1..MMAP_PAGES {
            // SAFETY: a whole data page of the live mapping.
            unsafe { std::ptr::write_bytes(mem.page_ptr(page), 0xc3, PAGE_SIZE) };
        }
    }
    t.expect_ok("stale-pages: REMOVE_DEVICE", s.ring.remove_device());
    s.ring.unmap();
    drop(s.ring);
    // The next daemon on the same tap.
    let mut ring = match env.open_ring(&s.info).and_then(|mut r| r.map().map(|()| r)) {
        Ok(r) => r,
        Err(e) => return t.fail("stale-pages: second daemon maps the ring", &e),
    };
    let dirty: Vec<usize> = (1..MMAP_PAGES).filter(|&p| !page_zero(&ring, p)).collect();
    t.check(
        "stale-pages: every data page of the next daemon's mapping is zero",
        dirty.is_empty(),
        || {
            format!(
                "{} non-zero pages, first {:?}",
                dirty.len(),
                &dirty[..dirty.len().min(8)]
            )
        },
    );
    let hdr = ring.memory().expect("mapped").header();
    t.check(
        "stale-pages: the ring header is fresh",
        hdr == SringHeader::INITIAL,
        || format!("{hdr:?}"),
    );
    t.check(
        "stale-pages: the ring entries are zero",
        {
            let mem = ring.memory().expect("mapped");
            // SAFETY: reading within the ring page, by value.
            (uapi::SRING_HEADER_SIZE..PAGE_SIZE)
                .all(|i| unsafe { std::ptr::read_volatile(mem.base().add(i)) } == 0)
        },
        || "non-zero bytes".to_string(),
    );
    // Serve again on the fresh mapping: read buffers must still start out zero.
    match ring.create_device_info(&blktap::DeviceInfo::new(8 << 11, 512, false)) {
        Ok(()) => {
            let disk = match env.disk_node(&s.info) {
                Ok(d) => d,
                Err(e) => return t.fail("stale-pages: disk node", &e),
            };
            let mut b = Backend::new(8 << 20);
            serve_io(t, "second daemon", &ring, &mut b, &disk, 0x3c);
            t.expect_ok("stale-pages: REMOVE_DEVICE", ring.remove_device());
        }
        Err(e) => t.fail("stale-pages: CREATE_DEVICE for the second daemon", &e),
    }
    ring.unmap();
    drop(ring);
    // A brand new tap's mapping, too.
    match taps
        .alloc()
        .and_then(|i| env.open_ring(&i).and_then(|mut r| r.map().map(|()| (i, r))))
    {
        Ok((i, r)) => {
            let dirty = (1..MMAP_PAGES).filter(|&p| !page_zero(&r, p)).count();
            t.check(
                "stale-pages: a new tap's data pages are zero",
                dirty == 0,
                || format!("{dirty} non-zero pages"),
            );
            drop(r);
            t.expect_ok("stale-pages: FREE_TAP", taps.free(i.ring_minor));
        }
        Err(e) => t.fail("stale-pages: a new tap", &e),
    }
    t.expect_ok("stale-pages: FREE_TAP", taps.free(minor));
    let _ = BLOCK;
}
