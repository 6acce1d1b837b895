//! The only module with `unsafe`: thin, safe wrappers around the Linux system calls the
//! sandbox needs. Each wrapper does one syscall (or one small fixed sequence) and turns its
//! result into `io::Result`.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::null;

use libc::{c_int, c_void};

fn cvt(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_long(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn cstr(p: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(p.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// An owned fd from a raw one just returned by the kernel.
fn owned(fd: c_int) -> OwnedFd {
    // SAFETY: callers pass a freshly created descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Opens `path` with O_PATH|O_CLOEXEC (for execveat).
pub(crate) fn open_path(path: &Path) -> io::Result<OwnedFd> {
    let path = cstr(path)?;
    // SAFETY: valid NUL-terminated path.
    Ok(owned(cvt(unsafe {
        libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC)
    })?))
}

/// A detached copy of the mount tree at `path` (`open_tree` with `OPEN_TREE_CLONE` and
/// `AT_RECURSIVE`), close-on-exec. Opened by the node, as the node's user, so that the
/// sandbox's init can attach it without being able to search the directories above `path`.
pub(crate) fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let path = cstr(path)?;
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: valid NUL-terminated path; the call returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    Ok(owned(cvt_long(fd)? as c_int))
}

/// Attaches a detached mount tree (from [`open_tree_clone`]) at `target`.
pub(crate) fn move_mount(tree: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let target = cstr(target)?;
    // SAFETY: `tree` is a live descriptor, the paths are NUL-terminated strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    cvt_long(r).map(drop)
}

/// A pipe, both ends close-on-exec: (read, write).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((owned(fds[0]), owned(fds[1])))
}

/// A connected pair of close-on-exec SOCK_SEQPACKET Unix sockets.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    Ok((owned(fds[0]), owned(fds[1])))
}

/// Registers `fd` with the tokio reactor for readability. Must be called within a runtime.
pub(crate) fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open and returns the same descriptor from as_raw_fd for as long
    // as the AsyncFd owns it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))
}

pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a valid descriptor.
    unsafe {
        let flags = cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
        cvt(libc::fcntl(
            fd.as_raw_fd(),
            libc::F_SETFL,
            flags | libc::O_NONBLOCK,
        ))?;
    }
    Ok(())
}

/// Takes ownership of descriptor `fd`, inherited from our parent, and makes it close-on-exec.
/// Fails if it is not open. Only for the init's fd 3, which nothing else in the process owns.
pub(crate) fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_SETFD on a descriptor number; fails with EBADF if it is not open.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(owned(fd))
}

/// Closes every descriptor >= `from`.
pub(crate) fn close_from(from: u32) {
    // SAFETY: only called by the single-threaded init before it opens anything it keeps.
    unsafe { libc::close_range(from, u32::MAX, 0) };
}

pub(crate) fn dup2(from: BorrowedFd<'_>, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 onto a descriptor number owned by the caller (0, 1 or 2 in the init).
    cvt(unsafe { libc::dup2(from.as_raw_fd(), to) }).map(drop)
}

/// Sends one message, optionally with one descriptor attached (SCM_RIGHTS).
pub(crate) fn send_msg(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut c_void,
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; 4]; // CMSG_SPACE(sizeof(int)) = 24 bytes, 8-byte aligned
    // SAFETY: msghdr is plain data; we fill in valid pointers below.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_* compute sizes and pointers inside `cbuf`, which is large enough and
        // aligned; we write exactly one int of payload.
        unsafe {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<c_int>() as u32) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<c_int>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), fd.as_raw_fd());
        }
    }
    loop {
        // SAFETY: `msg` points at live buffers for the duration of the call.
        let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        match cvt_long(r as libc::c_long) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map(drop),
        }
    }
}

/// Receives one message (blocking unless `nonblock`) and the descriptor attached to it, if any.
/// Returns `Ok((0, None))` at end of stream.
pub(crate) fn recv_msg(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    nonblock: bool,
) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 4];
    // SAFETY: msghdr is plain data; we fill in valid pointers below.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 4]>();
    let flags = libc::MSG_CMSG_CLOEXEC | if nonblock { libc::MSG_DONTWAIT } else { 0 };
    let n = loop {
        // SAFETY: `msg` points at live, writable buffers for the duration of the call.
        let r = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
        match cvt_long(r as libc::c_long) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r? as usize,
        }
    };
    let mut fd = None;
    // SAFETY: the kernel filled `msg_control`; CMSG_FIRSTHDR/CMSG_NXTHDR walk it within
    // `msg_controllen`, and an SCM_RIGHTS payload holds ints that are new descriptors we own.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>());
                fd = Some(owned(raw));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control message truncated",
        ));
    }
    Ok((n, fd))
}

/// What `clone_init` needs; everything is prepared before the clone so that the child only
/// makes async-signal-safe system calls.
pub(crate) struct CloneInit {
    pub flags: u64,
    /// The init executable, opened with O_PATH: exec'd through the descriptor, so that its
    /// directories need not be searchable by the sandbox's unprivileged host uid.
    pub exe: RawFd,
    pub argv: Vec<CString>,
    /// Become stdin, stdout, stderr and fd 3 (the control socket) of the child.
    pub fds: [OwnedFd; 4],
    /// In a new user namespace: become uid/gid 0 of it (after the parent wrote the maps) so
    /// that the init keeps its capabilities across execve.
    pub become_ns_root: bool,
}

/// Starts the sandbox's init with clone3 (new namespaces per `flags`) and returns its pid and
/// a pidfd. The child waits for one byte on fd 3 (sent once the parent has written its uid/gid
/// maps and moved it into its cgroups), then execs `exe` with an empty environment.
///
/// Must be called from a thread that outlives the child: the child gets PR_SET_PDEATHSIG,
/// which fires when the *thread* that created it exits.
pub(crate) fn clone_init(c: &CloneInit) -> io::Result<(u32, OwnedFd)> {
    let mut argv: Vec<*const libc::c_char> = c.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(null());
    let envp: [*const libc::c_char; 1] = [null()];
    let raw = c.fds.each_ref().map(|f| f.as_raw_fd());
    let mut pidfd: c_int = -1;
    // SAFETY: clone_args is plain data.
    let mut args: libc::clone_args = unsafe { zeroed() };
    args.flags = c.flags | libc::CLONE_PIDFD as u64;
    args.pidfd = &mut pidfd as *mut c_int as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: clone3 without CLONE_VM behaves like fork. In the child (r == 0) we only call
    // async-signal-safe raw syscalls on memory prepared above, then execve or _exit, so the
    // state of other threads' locks copied from the parent does not matter.
    let r = unsafe { libc::syscall(libc::SYS_clone3, &mut args, size_of::<libc::clone_args>()) };
    if r == 0 {
        // SAFETY: see above; `init_child` never returns.
        unsafe { init_child(raw, c.exe, argv.as_ptr(), envp.as_ptr(), c.become_ns_root) }
    }
    let pid = cvt_long(r)? as u32;
    Ok((pid, owned(pidfd)))
}

/// The child side of `clone_init`. Raw syscalls only: glibc's setres*id wrappers would try to
/// synchronise with threads that exist only in the parent.
///
/// # Safety
/// Only in the child of a fork-like clone, with pointers to NUL-terminated, null-terminated
/// arrays that the parent built before the clone.
unsafe fn init_child(
    fds: [RawFd; 4],
    exe: RawFd,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    become_ns_root: bool,
) -> ! {
    // SAFETY: each call is an async-signal-safe syscall on values prepared by the parent.
    unsafe {
        let mut high = [0; 4];
        for (i, fd) in fds.iter().enumerate() {
            high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
            if high[i] < 0 {
                libc::_exit(120);
            }
        }
        let exe = libc::fcntl(exe, libc::F_DUPFD_CLOEXEC, 10);
        if exe < 0 {
            libc::_exit(120);
        }
        for (i, fd) in high.iter().enumerate() {
            if libc::dup2(*fd, i as c_int) < 0 {
                libc::_exit(121);
            }
        }
        let mut go = 0u8;
        if libc::read(3, (&mut go as *mut u8).cast(), 1) != 1 {
            libc::_exit(122);
        }
        if become_ns_root
            && (libc::syscall(libc::SYS_setgroups, 0, null::<libc::gid_t>()) < 0
                || libc::syscall(libc::SYS_setresgid, 0, 0, 0) < 0
                || libc::syscall(libc::SYS_setresuid, 0, 0, 0) < 0)
        {
            libc::_exit(123);
        }
        // After the uid change (which clears the parent-death signal).
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL,
            0,
            0,
            0,
        );
        let empty = c"".as_ptr();
        libc::syscall(
            libc::SYS_execveat,
            exe,
            empty,
            argv,
            envp,
            libc::AT_EMPTY_PATH,
        );
        libc::_exit(127)
    }
}

/// Whether the kernel lets this process create a child in new namespaces `flags`.
pub(crate) fn probe_clone(flags: u64) -> io::Result<()> {
    // SAFETY: clone_args is plain data.
    let mut args: libc::clone_args = unsafe { zeroed() };
    args.flags = flags;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: fork-like clone; the child only calls _exit.
    let r = unsafe { libc::syscall(libc::SYS_clone3, &mut args, size_of::<libc::clone_args>()) };
    if r == 0 {
        // SAFETY: async-signal-safe exit of the child.
        unsafe { libc::_exit(0) }
    }
    let pid = cvt_long(r)? as libc::pid_t;
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Exited(i32),
    Signaled(i32),
}

fn decode(status: c_int) -> Status {
    if libc::WIFSIGNALED(status) {
        Status::Signaled(libc::WTERMSIG(status))
    } else {
        Status::Exited(libc::WEXITSTATUS(status))
    }
}

/// Reaps the process behind `pidfd`; `Ok(None)` if it is still running and `nohang`.
pub(crate) fn wait_pidfd(pidfd: BorrowedFd<'_>, nohang: bool) -> io::Result<Option<Status>> {
    loop {
        // SAFETY: siginfo_t is plain data for the kernel to fill.
        let mut info: libc::siginfo_t = unsafe { zeroed() };
        let flags = libc::WEXITED | if nohang { libc::WNOHANG } else { 0 };
        // SAFETY: P_PIDFD waits on exactly the process behind the descriptor.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                flags,
            )
        };
        match cvt(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        // SAFETY: after a successful waitid these union fields are the ones the kernel set.
        let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(if code == libc::CLD_EXITED {
            Status::Exited(status)
        } else {
            Status::Signaled(status)
        }));
    }
}

pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open has no pointer arguments.
    let fd = cvt_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })?;
    Ok(owned(fd as c_int))
}

pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the pidfd pins the process, so the signal cannot reach a recycled pid.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            null::<c_void>(),
            0,
        )
    };
    cvt_long(r).map(drop)
}

pub(crate) fn geteuid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

// ---- used by the init (a single-threaded process) ----

/// fork(); `Ok(None)` in the child. Only for the init, which has a single thread.
pub(crate) fn fork() -> io::Result<Option<u32>> {
    // SAFETY: only called by the init, which is single-threaded, so the child is consistent.
    let pid = cvt(unsafe { libc::fork() })?;
    Ok(if pid == 0 { None } else { Some(pid as u32) })
}

/// Waits for any child; `Ok(None)` when there are none left.
pub(crate) fn wait_any() -> io::Result<Option<(u32, Status)>> {
    let mut status = 0;
    loop {
        // SAFETY: plain waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        match cvt(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return Ok(None),
            Err(e) => return Err(e),
            Ok(pid) => return Ok(Some((pid as u32, decode(status)))),
        }
    }
}

pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit skips atexit handlers, which is what a forked child wants.
    unsafe { libc::_exit(code) }
}

pub(crate) fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = src.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    let p = |c: &Option<CString>| c.as_ref().map_or(null(), |c| c.as_ptr());
    // SAFETY: all pointers are NUL-terminated strings or null, alive for the call.
    cvt(unsafe { libc::mount(p(&src), target.as_ptr(), p(&fstype), flags, p(&data).cast()) })
        .map(drop)
}

/// Sets mount attributes (MOUNT_ATTR_*) on the mount at `path`, and on all mounts below it
/// when `recursive`.
pub(crate) fn mount_setattr(path: &Path, recursive: bool, attr_set: u64) -> io::Result<()> {
    let path = cstr(path)?;
    // SAFETY: mount_attr is plain data.
    let mut attr: libc::mount_attr = unsafe { zeroed() };
    attr.attr_set = attr_set;
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: valid path string and attr struct of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags as libc::c_uint,
            &mut attr,
            size_of::<libc::mount_attr>(),
        )
    };
    cvt_long(r).map(drop)
}

pub(crate) fn umount_detach(path: &Path) -> io::Result<()> {
    let path = cstr(path)?;
    // SAFETY: valid NUL-terminated path.
    cvt(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

pub(crate) fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let (a, b) = (cstr(new_root)?, cstr(put_old)?);
    // SAFETY: valid NUL-terminated paths.
    cvt_long(unsafe { libc::syscall(libc::SYS_pivot_root, a.as_ptr(), b.as_ptr()) }).map(drop)
}

pub(crate) fn unshare(flags: c_int) -> io::Result<()> {
    // SAFETY: no pointer arguments.
    cvt(unsafe { libc::unshare(flags) }).map(drop)
}

pub(crate) fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length of a live byte string.
    cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

pub(crate) fn setsid() {
    // SAFETY: no arguments; failure (already a group leader) is harmless.
    unsafe { libc::setsid() };
}

pub(crate) fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: valid rlimit struct.
    cvt(unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

pub(crate) fn prctl(option: c_int, arg: libc::c_ulong) -> io::Result<c_int> {
    // SAFETY: the options used here take integer arguments only.
    cvt(unsafe {
        libc::prctl(
            option,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
}

/// Drops every capability: bounding set, ambient set, then effective/permitted/inheritable.
pub(crate) fn drop_capabilities() -> io::Result<()> {
    drop_bounding_set()?;
    clear_capabilities()
}

/// Empties the bounding and ambient sets, so that no later execve can grant a capability.
pub(crate) fn drop_bounding_set() -> io::Result<()> {
    for cap in 0..64 {
        match prctl(libc::PR_CAPBSET_DROP, cap) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break, // past CAP_LAST_CAP
            r => r.map(drop)?,
        }
    }
    // SAFETY: integer-only prctl.
    cvt(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    })
    .map(drop)
}

/// Clears the effective, permitted and inheritable sets.
pub(crate) fn clear_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: c_int,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    }; // _LINUX_CAPABILITY_VERSION_3
    let data = [
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: version 3 takes a header and two data structs, both valid for the call.
    cvt_long(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }).map(drop)
}

/// setgroups([]), setresgid(gid), setresuid(uid).
pub(crate) fn set_ids(uid: u32, gid: u32, clear_groups: bool) -> io::Result<()> {
    // SAFETY: plain id syscalls (the init is single-threaded, so glibc's wrappers are fine).
    unsafe {
        if clear_groups {
            cvt(libc::setgroups(0, null()))?;
        }
        cvt(libc::setresgid(gid, gid, gid))?;
        cvt(libc::setresuid(uid, uid, uid))?;
    }
    Ok(())
}

/// execve; returns only on failure.
pub(crate) fn execve(program: &Path, args: &[CString], env: &[CString]) -> io::Error {
    let program = match cstr(program) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(null());
    // SAFETY: NUL-terminated strings in null-terminated arrays, alive for the call.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// Brings the loopback interface up (SIOCSIFFLAGS) in the current network namespace.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket only used for the interface ioctls below.
    let sock = owned(cvt(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })?);
    // SAFETY: ifreq is plain data.
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, a valid ifreq naming "lo".
    unsafe {
        cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
    }
    Ok(())
}

/// The reason for an errno, e.g. "No such file or directory".
pub(crate) fn strerror(e: &io::Error) -> String {
    let Some(n) = e.raw_os_error() else {
        return e.to_string();
    };
    // SAFETY: strerror returns a pointer to a static (or thread-local) NUL-terminated string.
    unsafe { CStr::from_ptr(libc::strerror(n)) }
        .to_string_lossy()
        .into_owned()
}
