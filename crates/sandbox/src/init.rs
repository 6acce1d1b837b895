//! The sandbox's init: PID 1 of the new PID namespace, uid 0 of the new user namespace (an
//! unprivileged uid outside). It builds the root file system, brings up loopback, binds the
//! listener, forks the program (which drops every privilege and execs), then stays as a tiny
//! reaper until the program exits. It talks to the node only over fd 3, a SOCK_SEQPACKET
//! socket; it never writes to the program's stdout or stderr.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::{LISTENER_PORT, seccomp, sys};

/// Where the host's root stays until it is detached (inside the new root).
pub(crate) const OLD_ROOT: &str = "/.wisp-old-root";
const CTRL_FD: i32 = 3;

/// What the node sends the init.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Config {
    pub hostname: Option<String>,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// "NAME=value"
    pub env: Vec<String>,
    pub code_dir: PathBuf,
    pub ro_mounts: Vec<(PathBuf, PathBuf)>,
    pub cwd: PathBuf,
    pub tmp_bytes: u64,
    pub shm_bytes: u64,
    pub pids_max: u32,
    pub uid: u32,
    pub gid: u32,
    pub userns: bool,
    pub pidns: bool,
    pub netns: bool,
    pub seccomp: bool,
    pub no_new_privs: bool,
}

/// What the init sends the node, in this order: `Listener` (with the fd, only with a network
/// namespace), then `Started` or `Failed`, then `Exited` when the program ends.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToNode {
    Listener,
    Started,
    Failed {
        kind: FailKind,
        message: String,
    },
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum FailKind {
    NotFound,
    PermissionDenied,
    Setup,
}

struct Failure(FailKind, String);

/// Adds what was being done to an error.
trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Failure>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Failure> {
        self.map_err(|e| {
            Failure(
                FailKind::Setup,
                format!("{}: {}", what(), sys::strerror(&e)),
            )
        })
    }
}

fn send(sock: BorrowedFd<'_>, msg: &ToNode, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    sys::send_msg(
        sock,
        &serde_json::to_vec(msg).map_err(io::Error::other)?,
        fd,
    )
}

/// The control socket (fd 3), for the panic hook too.
static CTRL: OnceLock<OwnedFd> = OnceLock::new();

/// Entry point of the sandbox's init process. The binary given to `Sandboxes::new` must call
/// it first thing in `main()` when its first argument is [`INIT_ARG`](crate::INIT_ARG), before
/// any thread or async runtime exists. Never returns.
pub fn init_main() -> ! {
    // Only the node's spawner starts us, with the control socket as fd 3.
    let Ok(sock) = sys::inherited_fd(CTRL_FD) else {
        eprintln!(
            "{} is internal to wisp: it runs the init of a sandbox",
            crate::INIT_ARG
        );
        sys::exit_now(2);
    };
    let sock = CTRL.get_or_init(|| sock).as_fd();
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    sys::close_from(CTRL_FD as u32 + 1);
    std::panic::set_hook(Box::new(|info| {
        let msg = ToNode::Failed {
            kind: FailKind::Setup,
            message: format!("sandbox init panicked: {info}"),
        };
        if let Some(sock) = CTRL.get() {
            let _ = send(sock.as_fd(), &msg, None);
        }
    }));
    match run(sock) {
        Ok(()) => sys::exit_now(0),
        Err(Failure(kind, message)) => {
            let _ = send(sock, &ToNode::Failed { kind, message }, None);
            sys::exit_now(1)
        }
    }
}

fn run(sock: BorrowedFd<'_>) -> Result<(), Failure> {
    let mut buf = vec![0u8; crate::MAX_CONFIG_BYTES + 1024];
    let (n, _) = sys::recv_msg(sock, &mut buf, false).ctx(|| "reading the configuration".into())?;
    if n == 0 {
        sys::exit_now(0); // the node went away before sending it
    }
    let cfg: Config = serde_json::from_slice(&buf[..n]).map_err(|e| {
        Failure(
            FailKind::Setup,
            format!("bad configuration from the node: {e}"),
        )
    })?;
    drop(buf);

    // The node has moved us into our cgroup: make it our cgroup namespace's root, so that
    // /proc/self/cgroup shows no host paths. Not an isolation boundary, so best effort.
    let _ = sys::unshare(libc::CLONE_NEWCGROUP);
    if let Some(name) = &cfg.hostname {
        sys::sethostname(name).ctx(|| "setting the hostname".into())?;
    }
    if !cfg.pidns {
        // Not PID 1: at least adopt orphans so that they are reaped.
        let _ = sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    }
    // The detached mount trees of the code and of `ro_mounts`, in that order.
    let mut trees = Vec::with_capacity(1 + cfg.ro_mounts.len());
    let mut small = [0u8; 16];
    for _ in 0..1 + cfg.ro_mounts.len() {
        let (_, fd) = sys::recv_msg(sock, &mut small, false).ctx(|| "reading the mounts".into())?;
        let fd = fd.ok_or_else(|| {
            Failure(
                FailKind::Setup,
                "the node sent a mount without its descriptor".into(),
            )
        })?;
        trees.push(fd);
    }
    build_root(&cfg, trees)?;
    if cfg.netns {
        sys::loopback_up().ctx(|| "bringing up the loopback interface".into())?;
        let listener = TcpListener::bind(("127.0.0.1", LISTENER_PORT))
            .ctx(|| format!("binding the listener on 127.0.0.1:{LISTENER_PORT}"))?;
        send(sock, &ToNode::Listener, Some(listener.as_fd()))
            .ctx(|| "sending the listener".into())?;
    }
    let filters =
        if cfg.seccomp {
            Some(seccomp::build().map_err(|e| {
                Failure(FailKind::Setup, format!("building the seccomp filter: {e}"))
            })?)
        } else {
            None
        };

    let (err_r, err_w) = sys::pipe().ctx(|| "creating a pipe".into())?;
    let child = sys::fork().ctx(|| "forking the program".into())?;
    let Some(child) = child else {
        drop(err_r);
        let Failure(kind, message) = exec_program(&cfg, filters.as_ref());
        let msg = serde_json::to_vec(&ToNode::Failed { kind, message }).unwrap_or_default();
        let _ = std::fs::File::from(err_w).write_all(&msg);
        sys::exit_now(127);
    };
    drop(err_w);
    let mut report = Vec::new();
    let _ = std::fs::File::from(err_r).read_to_end(&mut report); // EOF: exec succeeded
    if !report.is_empty() {
        let _ = sys::wait_any();
        let _ = sys::send_msg(sock, &report, None);
        sys::exit_now(1);
    }
    send(sock, &ToNode::Started, None).ctx(|| "reporting the start".into())?;

    // From now on the init only reaps. Let go of the program's stdio and of every privilege.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = sys::dup2(null.as_fd(), fd);
        }
    }
    let _ = sys::drop_capabilities();
    if cfg.no_new_privs {
        let _ = sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1);
    }
    if let Some(f) = &filters {
        let _ = seccomp::apply(f);
    }
    loop {
        match sys::wait_any() {
            Ok(Some((pid, status))) if pid == child => {
                let (code, signal) = match status {
                    sys::Status::Exited(c) => (Some(c), None),
                    sys::Status::Signaled(s) => (None, Some(s)),
                };
                let _ = send(sock, &ToNode::Exited { code, signal }, None);
                if !cfg.pidns {
                    // Not PID 1: reap what is left (the node kills it through the cgroup).
                    while let Ok(Some(_)) = sys::wait_any() {}
                }
                // As PID 1, exiting makes the kernel kill everything left in the namespace.
                return Ok(());
            }
            Ok(Some(_)) => {} // an orphan
            Ok(None) | Err(_) => return Ok(()),
        }
    }
}

/// In the forked child: drop privileges, apply limits and seccomp, exec. Returns only on
/// failure.
fn exec_program(cfg: &Config, filters: Option<&seccomp::Filters>) -> Failure {
    let run = || -> Result<(), Failure> {
        sys::setsid();
        let fsize = cfg.tmp_bytes.max(cfg.shm_bytes) + (1 << 20);
        for (res, value, name) in [
            (libc::RLIMIT_CORE, 0, "RLIMIT_CORE"),
            (libc::RLIMIT_NOFILE, 1024, "RLIMIT_NOFILE"),
            (libc::RLIMIT_NPROC, u64::from(cfg.pids_max), "RLIMIT_NPROC"),
            (libc::RLIMIT_FSIZE, fsize, "RLIMIT_FSIZE"),
        ] {
            sys::set_rlimit(res, value).ctx(|| format!("setting {name}"))?;
        }
        // The bounding set first (dropping it needs CAP_SETPCAP), then the ids, then the rest.
        sys::drop_bounding_set().ctx(|| "dropping the capability bounding set".into())?;
        sys::set_ids(cfg.uid, cfg.gid, true)
            .ctx(|| format!("switching to uid {} gid {}", cfg.uid, cfg.gid))?;
        sys::clear_capabilities().ctx(|| "dropping capabilities".into())?;
        std::env::set_current_dir(&cfg.cwd).map_err(|e| {
            Failure(
                FailKind::Setup,
                format!(
                    "working directory {} inside the sandbox: {}",
                    cfg.cwd.display(),
                    sys::strerror(&e)
                ),
            )
        })?;
        if cfg.no_new_privs {
            sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).ctx(|| "setting no_new_privs".into())?;
        }
        // After the uid change, which clears it.
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
            .ctx(|| "setting the parent-death signal".into())?;
        if let Some(f) = filters {
            seccomp::apply(f).map_err(|e| {
                Failure(FailKind::Setup, format!("applying the seccomp filter: {e}"))
            })?;
        }
        Ok(())
    };
    if let Err(f) = run() {
        return f;
    }
    let cstrings = |v: &mut dyn Iterator<Item = &[u8]>| -> Vec<CString> {
        v.map(|s| CString::new(s).unwrap_or_default()).collect()
    };
    let args = cstrings(
        &mut std::iter::once(cfg.program.as_os_str().as_bytes())
            .chain(cfg.args.iter().map(|a| a.as_bytes())),
    );
    let env = cstrings(&mut cfg.env.iter().map(|e| e.as_bytes()));
    let e = sys::execve(&cfg.program, &args, &env);
    let kind = match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => FailKind::NotFound,
        Some(libc::EACCES) | Some(libc::EPERM) => FailKind::PermissionDenied,
        _ => FailKind::Setup,
    };
    let hint = if e.raw_os_error() == Some(libc::ENOEXEC) {
        " (not an ELF executable and no #! line)"
    } else {
        ""
    };
    Failure(
        kind,
        format!(
            "executing {}: {}{hint}",
            cfg.program.display(),
            sys::strerror(&e)
        ),
    )
}

/// Files copied from the host's /etc (read before pivot_root, so symlinks resolve on the host).
const ETC_COPIES: [&str; 4] = ["resolv.conf", "ld.so.cache", "services", "protocols"];
/// Host /etc entries bound read-only (never /etc/ssl/private and the like).
const ETC_BINDS: [&str; 6] = [
    "ssl/certs",
    "ssl/openssl.cnf",
    "pki/tls/certs",
    "pki/ca-trust/extracted",
    "alternatives",
    "crypto-policies",
];
/// Host directories bound read-only at the same place (or recreated as the same symlink).
const SYSTEM_DIRS: [&str; 6] = ["usr", "bin", "sbin", "lib", "lib32", "lib64"];
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

enum HostEntry {
    Link(PathBuf),
    Path(PathBuf), // canonical
}

fn host_entry(p: &Path) -> Option<HostEntry> {
    let meta = std::fs::symlink_metadata(p).ok()?;
    if meta.file_type().is_symlink() {
        return std::fs::read_link(p).ok().map(HostEntry::Link);
    }
    std::fs::canonicalize(p).ok().map(HostEntry::Path)
}

/// Builds the sandbox's root file system and pivots into it.
fn build_root(cfg: &Config, trees: Vec<OwnedFd>) -> Result<(), Failure> {
    // Read what comes from the host while its root is still our root.
    let system: Vec<(&str, Option<HostEntry>)> = SYSTEM_DIRS
        .iter()
        .map(|d| (*d, host_entry(&Path::new("/").join(d))))
        .collect();
    let etc_copies: Vec<(&str, Vec<u8>)> = ETC_COPIES
        .iter()
        .filter_map(|f| Some((*f, std::fs::read(Path::new("/etc").join(f)).ok()?)))
        .collect();
    let etc_binds: Vec<(&str, PathBuf)> = ETC_BINDS
        .iter()
        .filter_map(|f| Some((*f, std::fs::canonicalize(Path::new("/etc").join(f)).ok()?)))
        .collect();
    let localtime = host_entry(Path::new("/etc/localtime"));
    let devices: Vec<(&str, PathBuf)> = DEVICES
        .iter()
        .filter_map(|d| Some((*d, std::fs::canonicalize(Path::new("/dev").join(d)).ok()?)))
        .collect();

    let none = None::<&Path>;
    let p = Path::new;
    sys::mount(none, p("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)
        .ctx(|| "making the mount tree private".into())?;
    // The new root: a small tmpfs, mounted over /tmp only until pivot_root moves it to /
    // (after which /tmp of the old root is visible again under OLD_ROOT).
    sys::mount(
        Some(p("tmpfs")),
        p("/tmp"),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("size=8m,mode=0755"),
    )
    .ctx(|| "mounting the root tmpfs".into())?;
    let put_old = Path::new("/tmp").join(OLD_ROOT.trim_start_matches('/'));
    std::fs::create_dir(&put_old).ctx(|| "creating the old root mount point".into())?;
    sys::pivot_root(p("/tmp"), &put_old).ctx(|| "pivot_root".into())?;
    std::env::set_current_dir("/").ctx(|| "chdir /".into())?;

    for (dir, entry) in &system {
        match entry {
            Some(HostEntry::Link(target)) => {
                symlink(target, p("/").join(dir)).ctx(|| format!("symlink /{dir}"))?
            }
            Some(HostEntry::Path(host)) => bind_ro(host, &p("/").join(dir))?,
            None => {}
        }
    }

    mkdir(p("/etc"), 0o755)?;
    let write = |name: &str, data: &[u8]| {
        std::fs::write(p("/etc").join(name), data).ctx(|| format!("writing /etc/{name}"))
    };
    let (uid, gid) = (cfg.uid, cfg.gid);
    write(
        "passwd",
        format!(
            "root:x:0:0:root:/:/usr/sbin/nologin\nsbx:x:{uid}:{gid}:wisp sandbox:/tmp:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
        .as_bytes(),
    )?;
    write(
        "group",
        format!("root:x:0:\nsbx:x:{gid}:\nnogroup:x:65534:\n").as_bytes(),
    )?;
    let host = cfg.hostname.as_deref().unwrap_or("wisp");
    write("hostname", format!("{host}\n").as_bytes())?;
    write(
        "hosts",
        format!("127.0.0.1\tlocalhost {host}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
            .as_bytes(),
    )?;
    write(
        "nsswitch.conf",
        b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
    )?;
    for (name, data) in &etc_copies {
        write(name, data)?;
    }
    match localtime {
        Some(HostEntry::Link(target)) => {
            symlink(target, "/etc/localtime").ctx(|| "symlink /etc/localtime".into())?
        }
        Some(HostEntry::Path(host)) => bind_ro(&host, p("/etc/localtime"))?,
        None => {}
    }
    for (name, host) in &etc_binds {
        bind_ro(host, &p("/etc").join(name))?;
    }

    mkdir(p("/dev"), 0o755)?;
    for (name, host) in &devices {
        let target = p("/dev").join(name);
        std::fs::File::create(&target).ctx(|| format!("creating {}", target.display()))?;
        sys::mount(Some(&old(host)), &target, None, libc::MS_BIND, None)
            .ctx(|| format!("binding {}", target.display()))?;
        sys::mount_setattr(
            &target,
            false,
            libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC,
        )
        .ctx(|| format!("restricting {}", target.display()))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, p("/dev").join(link)).ctx(|| format!("symlink /dev/{link}"))?;
    }
    mkdir(p("/dev/shm"), 0o755)?;
    tmpfs(p("/dev/shm"), cfg.shm_bytes, cfg, libc::MS_NOEXEC)?;

    if cfg.pidns {
        // A proc of our own PID namespace; must happen while the host's /proc is still
        // visible (the kernel refuses a new proc in a namespace that cannot see a full one).
        mkdir(p("/proc"), 0o555)?;
        sys::mount(
            Some(p("proc")),
            p("/proc"),
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )
        .ctx(|| "mounting /proc".into())?;
    }

    let mut trees = trees.into_iter();
    let targets = std::iter::once((&cfg.code_dir, p("/var/task")))
        .chain(cfg.ro_mounts.iter().map(|(h, i)| (h, i.as_path())));
    for ((host, inside), tree) in targets.zip(trees.by_ref()) {
        attach_ro(tree, host, inside)?;
    }
    mkdir(p("/tmp"), 0o755)?;
    tmpfs(p("/tmp"), cfg.tmp_bytes, cfg, 0)?;

    sys::umount_detach(p(OLD_ROOT)).ctx(|| "detaching the host's root".into())?;
    std::fs::remove_dir(OLD_ROOT).ctx(|| "removing the old root mount point".into())?;
    sys::mount_setattr(p("/"), false, libc::MOUNT_ATTR_RDONLY)
        .ctx(|| "making / read-only".into())?;
    Ok(())
}

fn old(host: &Path) -> PathBuf {
    Path::new(OLD_ROOT).join(host.strip_prefix("/").unwrap_or(host))
}

fn mkdir(path: &Path, mode: u32) -> Result<(), Failure> {
    std::fs::create_dir_all(path).ctx(|| format!("creating {}", path.display()))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    Ok(())
}

/// A tmpfs of `bytes`, writable by the sandbox user only.
fn tmpfs(path: &Path, bytes: u64, cfg: &Config, extra: libc::c_ulong) -> Result<(), Failure> {
    let opts = format!("size={bytes},mode=1777,uid={},gid={}", cfg.uid, cfg.gid);
    sys::mount(
        Some(Path::new("tmpfs")),
        path,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | extra,
        Some(&opts),
    )
    .ctx(|| format!("mounting a tmpfs at {}", path.display()))
}

/// Attaches a mount tree the node opened (of host path `host`) read-only, nosuid and nodev
/// at `inside`.
fn attach_ro(tree: OwnedFd, host: &Path, inside: &Path) -> Result<(), Failure> {
    let tree = std::fs::File::from(tree);
    let is_dir = tree
        .metadata()
        .map(|m| m.is_dir())
        .ctx(|| format!("{}", host.display()))?;
    if is_dir {
        std::fs::create_dir_all(inside)
    } else {
        inside
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(inside).map(drop))
    }
    .ctx(|| format!("creating mount point {}", inside.display()))?;
    sys::move_mount(tree.as_fd(), inside)
        .ctx(|| format!("mounting {} at {}", host.display(), inside.display()))?;
    let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    sys::mount_setattr(inside, true, attrs).ctx(|| format!("making {} read-only", inside.display()))
}

/// Binds host path `host` (canonical) read-only, nosuid and nodev at `inside`, recursively.
fn bind_ro(host: &Path, inside: &Path) -> Result<(), Failure> {
    let src = old(host);
    let is_dir = std::fs::metadata(&src)
        .map(|m| m.is_dir())
        .ctx(|| format!("{}", host.display()))?;
    if is_dir {
        std::fs::create_dir_all(inside)
    } else {
        inside
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(inside).map(drop))
    }
    .ctx(|| {
        format!(
            "creating mount point {} (a mount inside a read-only one needs an existing target)",
            inside.display()
        )
    })?;
    sys::mount(Some(&src), inside, None, libc::MS_BIND | libc::MS_REC, None)
        .ctx(|| format!("binding {} at {}", host.display(), inside.display()))?;
    let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    sys::mount_setattr(inside, true, attrs).ctx(|| format!("making {} read-only", inside.display()))
}
