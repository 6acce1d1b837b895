//! Starts and kills sandboxes: one native process tree (an AWS Lambda runtime such as python,
//! node or a `bootstrap` executable) in new Linux namespaces, with its own read-only root file
//! system, cgroup limits, no capabilities, `no_new_privs` and a seccomp filter. The caller gets
//! the process's stdout/stderr and a TCP listener bound inside the sandbox, on which it serves
//! the Lambda Runtime API.
//!
//! Not for: anything about Lambda itself (the Runtime API, invocations, scaling). The threat
//! model and the design are in this crate's README.md.
//!
//! The binary that creates sandboxes must call [`init_main`] first thing in `main()` when its
//! first argument is [`INIT_ARG`]: each sandbox's init process is that binary, re-executed.

mod cgroup;
mod init;
mod seccomp;
#[allow(unsafe_code)]
mod sys;

use std::ffi::CString;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

pub use init::init_main;

/// The first argument that makes a binary run [`init_main`].
pub const INIT_ARG: &str = "__wisp-sandbox-init";

/// The program's stdout or stderr: the read end of a pipe (implements `tokio::io::AsyncRead`).
pub type Pipe = tokio::net::unix::pipe::Receiver;

/// Inside the sandbox the program runs as this uid and gid (when user namespaces work).
pub const SANDBOX_UID: u32 = 1000;
/// The port of the Runtime API listener inside a sandbox with its own network namespace.
pub const LISTENER_PORT: u16 = 9001;
/// Outside, each sandbox gets two ids of its own from `OUTER_ID_BASE + 2 * slot` (its init,
/// uid 0 inside, and its program, uid 1000 inside); far above the usual subuid ranges.
const OUTER_ID_BASE: u32 = 1_000_000_000;
const OUTER_ID_SLOTS: u32 = 1_000_000;
/// Size of /dev/shm in every sandbox.
const SHM_BYTES: u64 = 16 << 20;
/// The init's configuration travels in one SOCK_SEQPACKET message.
const MAX_CONFIG_BYTES: usize = 128 << 10;

/// One mechanism the host can or cannot enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    pub name: &'static str,
    pub available: bool,
    /// How it is enforced, or what is missing and why.
    pub detail: String,
}

/// What to start in a sandbox.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Unique among running sandboxes, 1-64 characters of `[a-z0-9-]`: the cgroup directory
    /// name and the hostname.
    pub id: String,
    /// Absolute path *inside* the sandbox, e.g. /usr/bin/python3 or /var/task/bootstrap.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The complete environment; nothing is inherited from the node.
    pub env: Vec<(String, String)>,
    /// Host directory, mounted read-only at /var/task. Must be world-readable.
    pub code_dir: PathBuf,
    /// (host path, path inside): extra read-only bind mounts of files or directories.
    pub ro_mounts: Vec<(PathBuf, PathBuf)>,
    /// Working directory inside, usually /var/task.
    pub cwd: PathBuf,
    /// Size of the private writable tmpfs at /tmp (its contents count as the sandbox's memory).
    pub tmp_bytes: u64,
    /// Memory limit for the whole process tree (swap disabled where the kernel allows).
    pub memory_bytes: u64,
    /// Maximum number of processes and threads in the tree.
    pub pids_max: u32,
    /// Relative CPU share, 100 = default (cgroup v1 cpu.shares 1024, v2 cpu.weight 100).
    pub cpu_weight: u32,
    /// false: own network namespace with only loopback up.
    pub network: bool,
    /// Name of an env var set to "127.0.0.1:PORT" of the listener, e.g. AWS_LAMBDA_RUNTIME_API.
    pub listener_env: Option<String>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            id: String::new(),
            program: PathBuf::new(),
            args: Vec::new(),
            env: Vec::new(),
            code_dir: PathBuf::new(),
            ro_mounts: Vec::new(),
            cwd: PathBuf::from("/var/task"),
            tmp_bytes: 64 << 20,
            memory_bytes: 128 << 20,
            pids_max: 256,
            cpu_weight: 100,
            network: false,
            listener_env: None,
        }
    }
}

/// How a sandbox ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The program exited with this code.
    Code(i32),
    /// The program (or the sandbox, through `kill`) was killed by this signal.
    Signal(i32),
    /// Killed by the kernel's OOM killer because the tree reached `memory_bytes`.
    OutOfMemory,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error(
        "program {} not found inside the sandbox: it must be in the code directory (mounted at /var/task), \
         in an ro_mount or under the host's /usr, and a script's #! interpreter must exist there too",
        .0.display()
    )]
    ProgramNotFound(PathBuf),
    #[error(
        "program {} cannot be executed: permission denied; make it executable and world-readable \
         (chmod 755), since the sandbox user does not own it",
        .0.display()
    )]
    PermissionDenied(PathBuf),
    #[error("sandbox id {0} is in use: a sandbox with this id is still running")]
    IdInUse(String),
    #[error("this host cannot run sandboxes: {0}")]
    Unsupported(String),
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SpawnError {
    let what = what.into();
    move |source| SpawnError::Io { what, source }
}

/// What the probe found, as flags.
#[derive(Debug, Clone, Copy, Default)]
struct Caps {
    userns: bool,
    mountns: bool,
    pidns: bool,
    ipcns: bool,
    utsns: bool,
    netns: bool,
    seccomp: bool,
    no_new_privs: bool,
    tmpfs: bool,
}

/// The node-wide sandbox factory. Cheap to share in an `Arc`.
pub struct Sandboxes {
    init_fd: OwnedFd,
    protections: Vec<Protection>,
    caps: Caps,
    cgroups: cgroup::Cgroups,
    next_slot: AtomicU32,
}

impl Sandboxes {
    /// `init_exe`: an executable that calls [`init_main`] when its first argument is
    /// [`INIT_ARG`] (the node passes `std::env::current_exe()`). Probes the host once.
    pub fn new(init_exe: PathBuf) -> io::Result<Self> {
        let meta = std::fs::metadata(&init_exe).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("sandbox init executable {}: {e}", init_exe.display()),
            )
        })?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "sandbox init executable {} is not a file",
                    init_exe.display()
                ),
            ));
        }
        let init_fd = sys::open_path(&init_exe).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("sandbox init executable {}: {e}", init_exe.display()),
            )
        })?;
        let (caps, mut protections) = probe();
        let (cgroups, cg_protections) = cgroup::Cgroups::detect();
        protections.extend(cg_protections);
        let order = [
            "user_namespace",
            "mount_namespace",
            "pid_namespace",
            "ipc_namespace",
            "uts_namespace",
            "network_namespace",
            "cgroup_memory",
            "cgroup_pids",
            "cgroup_cpu",
            "cgroup_freezer",
            "seccomp",
            "no_new_privs",
            "tmpfs_tmp",
            "rlimits",
        ];
        protections.sort_by_key(|p| order.iter().position(|n| *n == p.name));
        let seed = std::process::id().wrapping_mul(7919);
        Ok(Sandboxes {
            init_fd,
            protections,
            caps,
            cgroups,
            next_slot: AtomicU32::new(seed),
        })
    }

    /// What the host can enforce: one entry per protection, with what is missing and why.
    pub fn protections(&self) -> &[Protection] {
        &self.protections
    }

    fn missing(&self, name: &str) -> String {
        self.protections
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.detail.clone())
            .unwrap_or_default()
    }

    /// Starts a sandboxed process. Returns once the program has been exec'd, or fails with
    /// what went wrong. Dropping the future before it resolves kills the half-started sandbox.
    pub async fn spawn(&self, spec: Spec) -> Result<Instance, SpawnError> {
        if !self.caps.mountns {
            return Err(SpawnError::Unsupported(format!(
                "no mount namespace, so no private root file system: {}",
                self.missing("mount_namespace")
            )));
        }
        let spec = validate(spec)?;
        let caps = self.caps;
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed) % OUTER_ID_SLOTS;
        let outer = OUTER_ID_BASE + 2 * slot;
        let netns = !spec.network && caps.netns;

        // The listener: in the sandbox's own network namespace the init binds it and sends it
        // back; otherwise it is bound here, in the host's namespace.
        let mut listener = None;
        let addr = if netns {
            format!("127.0.0.1:{LISTENER_PORT}")
        } else {
            let l = TcpListener::bind("127.0.0.1:0")
                .map_err(io_err("binding the Runtime API listener"))?;
            let a = l
                .local_addr()
                .map_err(io_err("binding the Runtime API listener"))?;
            listener = Some(l);
            a.to_string()
        };
        let mut env = spec.env;
        if let Some(name) = &spec.listener_env {
            env.retain(|(k, _)| k != name);
            env.push((name.clone(), addr));
        }
        let (uid, gid) = if caps.userns {
            (SANDBOX_UID, SANDBOX_UID)
        } else {
            (outer + 1, outer + 1)
        };
        // The code and the extra mounts, as detached mount trees opened here: the init runs
        // as an unprivileged host uid that may not be able to search the directories above
        // them (the data directory is private to the node's user).
        let mut trees = Vec::with_capacity(1 + spec.ro_mounts.len());
        for host in std::iter::once(&spec.code_dir).chain(spec.ro_mounts.iter().map(|(h, _)| h)) {
            trees.push(
                sys::open_tree_clone(host)
                    .map_err(io_err(format!("opening {} for mounting", host.display())))?,
            );
        }
        let config = init::Config {
            hostname: caps.utsns.then(|| spec.id.clone()),
            program: spec.program.clone(),
            args: spec.args,
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            code_dir: spec.code_dir,
            ro_mounts: spec.ro_mounts,
            cwd: spec.cwd,
            tmp_bytes: spec.tmp_bytes,
            shm_bytes: SHM_BYTES,
            pids_max: spec.pids_max,
            uid,
            gid,
            userns: caps.userns,
            pidns: caps.pidns,
            netns,
            seccomp: caps.seccomp,
            no_new_privs: caps.no_new_privs,
        };
        let config = serde_json::to_vec(&config).map_err(|e| SpawnError::Setup(e.to_string()))?;
        if config.len() > MAX_CONFIG_BYTES {
            return Err(SpawnError::InvalidSpec(format!(
                "args and env take {} bytes; at most {MAX_CONFIG_BYTES} are allowed",
                config.len()
            )));
        }

        let limits = cgroup::Limits {
            memory_bytes: spec.memory_bytes,
            pids_max: spec.pids_max,
            cpu_weight: spec.cpu_weight,
        };
        let cgroup = self.cgroups.create(&spec.id, &limits)?;

        let what = "creating the sandbox's pipes";
        let (ctrl, child_ctrl) = sys::seqpacket_pair().map_err(io_err(what))?;
        let (out_r, out_w) = sys::pipe().map_err(io_err(what))?;
        let (err_r, err_w) = sys::pipe().map_err(io_err(what))?;
        let devnull: OwnedFd = std::fs::File::open("/dev/null")
            .map_err(io_err("opening /dev/null"))?
            .into();
        let mut flags = libc::CLONE_NEWNS;
        for (on, flag) in [
            (caps.userns, libc::CLONE_NEWUSER),
            (caps.pidns, libc::CLONE_NEWPID),
            (caps.ipcns, libc::CLONE_NEWIPC),
            (caps.utsns, libc::CLONE_NEWUTS),
            (netns, libc::CLONE_NEWNET),
        ] {
            if on {
                flags |= flag;
            }
        }
        let clone = sys::CloneInit {
            flags: flags as u64,
            // argv[0] is what the sandbox sees in /proc/1/cmdline: not the node's host path.
            argv: vec![
                c"wisp-sandbox-init".into(),
                CString::new(INIT_ARG).expect("no NUL"),
            ],
            exe: self.init_fd.as_raw_fd(),
            fds: [devnull, out_w, err_w, child_ctrl],
            become_ns_root: caps.userns,
        };
        let (pid, pidfd) = spawner_clone(clone)
            .await
            .map_err(io_err("starting the sandbox init (clone3)"))?;

        // From here on, dropping `inner` kills the init and removes the cgroup.
        let mut inner = Inner {
            pid,
            pidfd: Some(sys::async_fd(pidfd).map_err(io_err("watching the sandbox init"))?),
            ctrl: None,
            cgroup,
            status: None,
            reported: None,
            pidns: caps.pidns,
        };
        sys::set_nonblocking(ctrl.as_fd()).map_err(io_err("control socket"))?;
        inner.ctrl = Some(sys::async_fd(ctrl).map_err(io_err("control socket"))?);
        if caps.userns {
            let map = format!("0 {outer} 1\n{SANDBOX_UID} {} 1\n", outer + 1);
            for file in ["uid_map", "gid_map"] {
                std::fs::write(format!("/proc/{pid}/{file}"), &map)
                    .map_err(io_err(format!("writing /proc/{pid}/{file}")))?;
            }
        }
        if let Some(cg) = &inner.cgroup {
            cg.add(pid)
                .map_err(io_err("moving the sandbox init into its cgroup"))?;
        }
        let ctrl = inner.ctrl.as_ref().expect("set above").get_ref().as_fd();
        sys::send_msg(ctrl, b"g", None).map_err(io_err("starting the sandbox init"))?;
        sys::send_msg(ctrl, &config, None).map_err(io_err("sending the sandbox configuration"))?;
        for tree in &trees {
            sys::send_msg(ctrl, b"t", Some(tree.as_fd()))
                .map_err(io_err("sending the sandbox's mounts"))?;
        }
        drop(trees);

        loop {
            match inner
                .recv()
                .await
                .map_err(io_err("reading from the sandbox init"))?
            {
                Some((init::ToNode::Listener, Some(fd))) => listener = Some(TcpListener::from(fd)),
                Some((init::ToNode::Started, _)) => break,
                Some((init::ToNode::Failed { kind, message }, _)) => {
                    // The init exits right after: reap it here, so that dropping `inner`
                    // removes the cgroups before this returns.
                    inner.reap().await;
                    return Err(match kind {
                        init::FailKind::NotFound => SpawnError::ProgramNotFound(spec.program),
                        init::FailKind::PermissionDenied => {
                            SpawnError::PermissionDenied(spec.program)
                        }
                        init::FailKind::Setup => SpawnError::Setup(message),
                    });
                }
                _ => {
                    // The init died without a word: before its exec (see sys::init_child) or
                    // by a signal.
                    let why = match inner.reap().await {
                        sys::Status::Exited(120 | 121) => {
                            "setting up its file descriptors failed".into()
                        }
                        sys::Status::Exited(123) => {
                            "becoming root of its user namespace failed".into()
                        }
                        sys::Status::Exited(127) => {
                            "executing the init executable failed (it must be executable by others)"
                                .into()
                        }
                        status => format!("it ended with {status:?}"),
                    };
                    return Err(SpawnError::Setup(format!(
                        "the sandbox init did not start the program: {why}"
                    )));
                }
            }
        }
        let listener = listener
            .ok_or_else(|| SpawnError::Setup("the sandbox init sent no listener".into()))?;
        // The program is the init's only child at this point.
        let program_pid = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
            .unwrap_or(pid);
        let stdout = Pipe::from_owned_fd(out_r).map_err(io_err("stdout pipe"))?;
        let stderr = Pipe::from_owned_fd(err_r).map_err(io_err("stderr pipe"))?;
        Ok(Instance {
            listener,
            stdout: Some(stdout),
            stderr: Some(stderr),
            id: spec.id,
            program_pid,
            exit: None,
            inner,
        })
    }
}

/// One running sandbox. Dropping it kills every process in it and removes its cgroups.
pub struct Instance {
    /// Bound on 127.0.0.1 inside the sandbox's network namespace (port 9001), or on an
    /// ephemeral port of the host when `network` is true. Blocking mode; accept from the host.
    pub listener: TcpListener,
    pub stdout: Option<Pipe>,
    pub stderr: Option<Pipe>,
    id: String,
    program_pid: u32,
    exit: Option<Exit>,
    inner: Inner,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("pid", &self.program_pid)
            .finish()
    }
}

impl Instance {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Host pid of the program (the sandbox's PID 2; its PID 1 is the init, `init_pid`).
    pub fn pid(&self) -> u32 {
        self.program_pid
    }

    /// Host pid of the sandbox's init (PID 1 inside).
    pub fn init_pid(&self) -> u32 {
        self.inner.pid
    }

    /// SIGKILLs every process in the sandbox. Idempotent and non-blocking.
    pub fn kill(&self) {
        self.inner.kill();
    }

    /// Freezes every process in the sandbox (they use no CPU until [`Instance::thaw`]), as
    /// Lambda freezes an execution environment between invocations. `Ok(false)` when the
    /// host has no cgroup freezer.
    pub fn freeze(&self) -> std::io::Result<bool> {
        match &self.inner.cgroup {
            Some(cg) => cg.freeze(true),
            None => Ok(false),
        }
    }

    /// Whether the sandbox's init or program has a SIGKILL waiting: sent while the sandbox
    /// was frozen (cgroup v1 holds it until a thaw), by someone else than the node.
    pub fn kill_pending(&self) -> bool {
        [self.inner.pid, self.program_pid].iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|s| {
                    s.lines()
                        .filter(|l| l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
                        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
                        .any(|mask| mask & (1 << (libc::SIGKILL - 1)) != 0)
                })
                .unwrap_or(false)
        })
    }

    /// Lets a frozen sandbox run again.
    pub fn thaw(&self) -> std::io::Result<bool> {
        match &self.inner.cgroup {
            Some(cg) => cg.freeze(false),
            None => Ok(false),
        }
    }

    /// Resolves when all of the sandbox's processes are gone.
    pub async fn wait(&mut self) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        // Cancel-safe: every step can be repeated, and what was learnt is kept in `inner`.
        if !self.inner.pidns {
            // Without a PID namespace the init's death does not take the others with it. The
            // init reports the program's exit and then reaps the rest (it is their subreaper):
            // kill them meanwhile.
            while self.inner.reported.is_none() {
                match self.inner.recv().await {
                    Ok(Some((msg, _))) => self.inner.note(msg),
                    _ => break,
                }
            }
            if let Some(cg) = &self.inner.cgroup {
                for _ in 0..5000 {
                    if cg.kill_except(self.inner.pid) == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
        let status = self.inner.reap().await;
        while let Ok(Some((msg, _))) = self.inner.try_recv() {
            self.inner.note(msg);
        }
        let exit = match (self.inner.reported, status) {
            (Some((Some(code), _)), _) => Exit::Code(code),
            (Some((_, Some(sig))), _) => Exit::Signal(sig),
            (_, sys::Status::Signaled(sig)) => Exit::Signal(sig),
            (_, sys::Status::Exited(code)) => Exit::Code(code),
        };
        let exit = match exit {
            Exit::Signal(libc::SIGKILL) if self.oom_killed() => Exit::OutOfMemory,
            e => e,
        };
        self.exit = Some(exit);
        exit
    }

    /// The most memory the tree used (cgroup v1 memory.max_usage_in_bytes / v2 memory.peak).
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        self.inner.cgroup.as_ref()?.memory_peak()
    }

    /// CPU time used by the tree (cgroup v1 cpuacct.usage / v2 cpu.stat usage_usec).
    pub fn cpu_time(&self) -> Option<Duration> {
        self.inner.cgroup.as_ref()?.cpu_time()
    }

    /// Whether the cgroup's OOM killer fired in this sandbox.
    pub fn oom_killed(&self) -> bool {
        self.inner.cgroup.as_ref().is_some_and(|c| c.oom_killed())
    }
}

/// The parts of an instance that need cleaning up.
struct Inner {
    pid: u32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    ctrl: Option<AsyncFd<OwnedFd>>,
    cgroup: Option<cgroup::Cgroup>,
    status: Option<sys::Status>,
    /// The program's exit as the init reported it: (code, signal).
    reported: Option<(Option<i32>, Option<i32>)>,
    pidns: bool,
}

impl Inner {
    fn note(&mut self, msg: init::ToNode) {
        if let init::ToNode::Exited { code, signal } = msg {
            self.reported = Some((code, signal));
        }
    }

    fn kill(&self) {
        if !self.pidns
            && let Some(cg) = &self.cgroup
        {
            // Spare the init: it reaps the others (it is their subreaper), then exits.
            cg.kill_except(self.pid);
            // A frozen process (cgroup v1) takes its SIGKILL only once thawed.
            let _ = cg.freeze(false);
            return;
        }
        if self.status.is_none()
            && let Some(fd) = &self.pidfd
        {
            let _ = sys::pidfd_kill(fd.get_ref().as_fd());
        }
        if let Some(cg) = &self.cgroup {
            cg.kill();
            let _ = cg.freeze(false);
        }
    }

    /// Waits for the init to exit and reaps it.
    async fn reap(&mut self) -> sys::Status {
        if let Some(s) = self.status {
            return s;
        }
        let pidfd = self.pidfd.as_ref().expect("pidfd is only taken on drop");
        let status = loop {
            match pidfd.readable().await {
                Ok(mut guard) => match sys::wait_pidfd(pidfd.get_ref().as_fd(), true) {
                    Ok(Some(s)) => break s,
                    Ok(None) => guard.clear_ready(),
                    // ECHILD: someone else reaped it; it is gone all the same.
                    Err(_) => break sys::Status::Signaled(libc::SIGKILL),
                },
                Err(_) => match sys::wait_pidfd(pidfd.get_ref().as_fd(), true) {
                    Ok(Some(s)) => break s,
                    Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
                    Err(_) => break sys::Status::Signaled(libc::SIGKILL),
                },
            }
        };
        self.status = Some(status);
        status
    }

    fn try_recv(&self) -> io::Result<Option<(init::ToNode, Option<OwnedFd>)>> {
        let Some(ctrl) = &self.ctrl else {
            return Ok(None);
        };
        let mut buf = vec![0; 64 << 10];
        let (n, fd) = sys::recv_msg(ctrl.get_ref().as_fd(), &mut buf, true)?;
        if n == 0 {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some((msg, fd)))
    }

    /// The next message from the init; `None` once it has closed its end.
    async fn recv(&self) -> io::Result<Option<(init::ToNode, Option<OwnedFd>)>> {
        let ctrl = self.ctrl.as_ref().expect("set before use");
        loop {
            let mut guard = ctrl.readable().await?;
            match self.try_recv() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                r => return r,
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.kill();
        let cleanup = Cleanup {
            pid: self.pid,
            pidfd: self.pidfd.take().map(|a| a.into_inner()),
            reaped: self.status.is_some(),
            cgroup: self.cgroup.take(),
        };
        if cleanup.reaped {
            drop(cleanup); // nothing to wait for: removing the cgroup dirs is quick
        } else {
            // Waiting for the kernel to tear the tree down can take a moment: not on this
            // thread. If no thread can be started, the closure (and so the cleanup) is dropped
            // right here instead.
            let _ = std::thread::Builder::new()
                .name("wisp-sandbox-reap".into())
                .spawn(move || drop(cleanup));
        }
    }
}

/// Reaps the init and removes the cgroups, when dropped.
struct Cleanup {
    pid: u32,
    pidfd: Option<OwnedFd>,
    reaped: bool,
    cgroup: Option<cgroup::Cgroup>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(cg) = &self.cgroup {
            // The init (if still there) reaps the others.
            let start = std::time::Instant::now();
            while cg.kill_except(self.pid) > 0 && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if !self.reaped
            && let Some(fd) = &self.pidfd
        {
            let _ = sys::pidfd_kill(fd.as_fd());
            let _ = sys::wait_pidfd(fd.as_fd(), false);
        }
        if let Some(cg) = &self.cgroup {
            cg.kill_until_empty(Duration::from_secs(10));
        }
        // Dropping the cgroup removes its directories.
    }
}

/// Starts the init from one long-lived thread: the init's parent-death signal fires when the
/// thread that cloned it exits, so that thread must live as long as the node.
async fn spawner_clone(clone: sys::CloneInit) -> io::Result<(u32, OwnedFd)> {
    type Reply = tokio::sync::oneshot::Sender<io::Result<(u32, OwnedFd)>>;
    static SPAWNER: Mutex<Option<mpsc::Sender<(sys::CloneInit, Reply)>>> = Mutex::new(None);
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let mut spawner = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
        if spawner.is_none() {
            let (jobs, queue) = mpsc::channel::<(sys::CloneInit, Reply)>();
            std::thread::Builder::new()
                .name("wisp-sandbox-spawner".into())
                .spawn(move || {
                    for (clone, reply) in queue {
                        let result = sys::clone_init(&clone);
                        drop(clone); // closes the child's ends of the pipes here
                        if let Err(Ok((_, pidfd))) = reply.send(result) {
                            // The caller went away: do not leave a half-started init behind.
                            let _ = sys::pidfd_kill(pidfd.as_fd());
                            let _ = sys::wait_pidfd(pidfd.as_fd(), false);
                        }
                    }
                })?;
            *spawner = Some(jobs);
        }
        let spawner = spawner.as_ref().expect("set above");
        spawner
            .send((clone, tx))
            .map_err(|_| io::Error::other("the sandbox spawner thread is gone"))?;
    }
    rx.await
        .map_err(|_| io::Error::other("the sandbox spawner thread is gone"))?
}

/// Checks a spec and resolves its host paths.
fn validate(mut spec: Spec) -> Result<Spec, SpawnError> {
    let bad = |m: String| Err(SpawnError::InvalidSpec(m));
    let id_ok = (1..=64).contains(&spec.id.len())
        && !spec.id.starts_with('-')
        && spec
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return bad(format!(
            "id {:?} must be 1-64 characters of a-z, 0-9 and '-'",
            spec.id
        ));
    }
    for (what, p) in [("program", &spec.program), ("cwd", &spec.cwd)] {
        if !p.is_absolute() {
            return bad(format!(
                "{what} {} must be an absolute path inside the sandbox",
                p.display()
            ));
        }
    }
    let has_nul = |s: &[u8]| s.contains(&0);
    if spec.args.iter().any(|a| has_nul(a.as_bytes()))
        || spec.env.iter().any(|(k, v)| {
            k.is_empty() || k.contains('=') || has_nul(k.as_bytes()) || has_nul(v.as_bytes())
        })
        || has_nul(spec.program.as_os_str().as_bytes())
    {
        return bad(
            "args and env must not contain NUL bytes; env names must be non-empty and without '='"
                .into(),
        );
    }
    if spec
        .listener_env
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.contains('=') || n.contains('\0'))
    {
        return bad("listener_env must be a valid variable name".into());
    }
    if spec.tmp_bytes < 4096 || spec.memory_bytes < (4 << 20) || spec.pids_max < 2 {
        return bad("tmp_bytes must be >= 4096, memory_bytes >= 4 MiB and pids_max >= 2".into());
    }
    if !(1..=10_000).contains(&spec.cpu_weight) {
        return bad(format!(
            "cpu_weight {} must be within 1..=10000 (100 is the default share)",
            spec.cpu_weight
        ));
    }
    spec.code_dir = std::fs::canonicalize(&spec.code_dir).map_err(|e| {
        SpawnError::InvalidSpec(format!("code_dir {}: {e}", spec.code_dir.display()))
    })?;
    if !spec.code_dir.is_dir() {
        return bad(format!(
            "code_dir {} is not a directory",
            spec.code_dir.display()
        ));
    }
    for (host, inside) in &mut spec.ro_mounts {
        *host = std::fs::canonicalize(&*host)
            .map_err(|e| SpawnError::InvalidSpec(format!("ro_mount {}: {e}", host.display())))?;
        let normal = inside.is_absolute()
            && inside
                .components()
                .skip(1)
                .all(|c| matches!(c, Component::Normal(_)))
            && inside.components().count() > 1;
        let reserved = ["/proc", "/dev", "/tmp", init::OLD_ROOT]
            .iter()
            .any(|r| inside.starts_with(r));
        if !normal || reserved {
            return bad(format!(
                "ro_mount target {} must be an absolute path without '..', not / and not under /proc, /dev or /tmp",
                inside.display()
            ));
        }
    }
    // Parents before children, so that nested mounts stack the right way round.
    spec.ro_mounts
        .sort_by_key(|(_, inside)| inside.components().count());
    Ok(spec)
}

/// Probes namespaces, seccomp, no_new_privs and tmpfs.
fn probe() -> (Caps, Vec<Protection>) {
    let mut caps = Caps::default();
    let mut out = Vec::new();
    let root = sys::geteuid() == 0;
    let userns = if root {
        sys::probe_clone(libc::CLONE_NEWUSER as u64).map_err(|e| {
            format!("creating a user namespace failed: {e} (check /proc/sys/user/max_user_namespaces and kernel.unprivileged_userns_clone / AppArmor restrictions)")
        })
    } else {
        Err("the node is not running as root: giving each sandbox its own unprivileged uid needs CAP_SETUID; run the node as root".to_string())
    };
    caps.userns = userns.is_ok();
    out.push(Protection {
        name: "user_namespace",
        available: caps.userns,
        detail: match &userns {
            Ok(()) => format!(
                "uid/gid {SANDBOX_UID} inside, mapped to an unprivileged host id from {OUTER_ID_BASE} up; no capabilities"
            ),
            Err(e) if root => format!("{e}; namespaces are created as root instead and the program runs as an unprivileged host uid"),
            Err(e) => e.clone(),
        },
    });
    for (name, flag, what) in [
        (
            "mount_namespace",
            libc::CLONE_NEWNS,
            "private read-only root file system (pivot_root)",
        ),
        (
            "pid_namespace",
            libc::CLONE_NEWPID,
            "own process ids; the tree dies with its PID 1",
        ),
        (
            "ipc_namespace",
            libc::CLONE_NEWIPC,
            "own System V IPC and POSIX message queues",
        ),
        (
            "uts_namespace",
            libc::CLONE_NEWUTS,
            "own hostname (the sandbox id)",
        ),
        (
            "network_namespace",
            libc::CLONE_NEWNET,
            "without `network`: only loopback, no route out",
        ),
    ] {
        let result = if caps.userns {
            sys::probe_clone((libc::CLONE_NEWUSER | flag) as u64)
        } else if root {
            sys::probe_clone(flag as u64)
        } else {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        };
        let ok = result.is_ok();
        match name {
            "mount_namespace" => caps.mountns = ok,
            "pid_namespace" => caps.pidns = ok,
            "ipc_namespace" => caps.ipcns = ok,
            "uts_namespace" => caps.utsns = ok,
            _ => caps.netns = ok,
        }
        out.push(Protection {
            name,
            available: ok,
            detail: match result {
                Ok(()) => what.to_string(),
                Err(e) => format!("creating it failed: {e}; without it: not {what}"),
            },
        });
    }
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail");
    caps.seccomp = actions
        .as_ref()
        .is_ok_and(|a| a.split_whitespace().any(|w| w == "errno"));
    out.push(Protection {
        name: "seccomp",
        available: caps.seccomp,
        detail: if caps.seccomp {
            format!("{} dangerous system calls fail with EPERM (mount, ptrace, bpf, unshare, ...)", seccomp::DENIED.len())
        } else {
            format!(
                "the kernel has no seccomp filter mode with SECCOMP_RET_ERRNO (/proc/sys/kernel/seccomp/actions_avail: {})",
                actions.map(|a| a.trim().to_string()).unwrap_or_else(|e| e.to_string())
            )
        },
    });
    caps.no_new_privs = sys::prctl(libc::PR_GET_NO_NEW_PRIVS, 0).is_ok();
    out.push(Protection {
        name: "no_new_privs",
        available: caps.no_new_privs,
        detail: if caps.no_new_privs {
            "set-user-id binaries and file capabilities cannot raise privileges".into()
        } else {
            "prctl(PR_GET_NO_NEW_PRIVS) failed: kernel older than 3.5".into()
        },
    });
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    caps.tmpfs = fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("tmpfs"));
    out.push(Protection {
        name: "tmpfs_tmp",
        available: caps.tmpfs && caps.mountns,
        detail: if caps.tmpfs && caps.mountns {
            "private /tmp of tmp_bytes and /dev/shm, the only writable places".into()
        } else {
            "tmpfs is not in /proc/filesystems or there is no mount namespace".into()
        },
    });
    out.push(Protection {
        name: "rlimits",
        available: true,
        detail:
            "RLIMIT_CORE 0, RLIMIT_NOFILE 1024, RLIMIT_NPROC pids_max, RLIMIT_FSIZE bounded by /tmp"
                .into(),
    });
    (caps, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec() -> Spec {
        Spec {
            id: "ok-1".into(),
            program: "/bin/true".into(),
            code_dir: "/".into(),
            ..Spec::default()
        }
    }

    #[test]
    fn validate_rejects_bad_specs() {
        assert!(validate(spec()).is_ok());
        for bad in [
            Spec {
                id: "Bad_Id".into(),
                ..spec()
            },
            Spec {
                id: String::new(),
                ..spec()
            },
            Spec {
                program: "python3".into(),
                ..spec()
            },
            Spec {
                code_dir: "/nonexistent/code".into(),
                ..spec()
            },
            Spec {
                ro_mounts: vec![("/usr".into(), "/proc/x".into())],
                ..spec()
            },
            Spec {
                ro_mounts: vec![("/usr".into(), "/opt/../etc".into())],
                ..spec()
            },
            Spec {
                env: vec![("A=B".into(), "c".into())],
                ..spec()
            },
            Spec {
                cpu_weight: 0,
                ..spec()
            },
        ] {
            let id = bad.id.clone();
            assert!(
                matches!(validate(bad), Err(SpawnError::InvalidSpec(_))),
                "{id}"
            );
        }
    }

    #[test]
    fn shareable_across_tasks() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Sandboxes>();
        send_sync::<Instance>();
    }

    #[test]
    fn ro_mounts_sorted_parents_first() {
        let s = validate(Spec {
            ro_mounts: vec![
                ("/usr".into(), "/opt/a/b".into()),
                ("/usr".into(), "/opt".into()),
            ],
            ..spec()
        })
        .unwrap();
        assert_eq!(s.ro_mounts[0].1, Path::new("/opt"));
    }
}
