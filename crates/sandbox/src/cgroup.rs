//! cgroups v1 (one hierarchy per controller, as on hybrid hosts) and v2 (one unified
//! hierarchy). Each sandbox gets `<the node's own cgroup>/wisp/<id>` in every hierarchy used.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Protection, SpawnError, sys};

/// v1 controllers used, and their v2 names (cpuacct's accounting is part of v2's cpu).
/// (The v2 freezer is part of every cgroup: `cgroup.freeze`.)
const V1_WANTED: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "freezer"];
const V2_WANTED: [&str; 3] = ["memory", "pids", "cpu"];

#[derive(Debug, Clone)]
struct Hierarchy {
    v2: bool,
    /// `<mount><own cgroup>/wisp`
    base: PathBuf,
    controllers: Vec<&'static str>,
}

/// The hierarchies this node can create cgroups in.
#[derive(Debug, Default)]
pub(crate) struct Cgroups {
    hierarchies: Vec<Hierarchy>,
}

pub(crate) struct Limits {
    pub memory_bytes: u64,
    pub pids_max: u32,
    pub cpu_weight: u32,
}

/// One sandbox's cgroup directories. Dropping it removes them (they must be empty by then).
#[derive(Debug)]
pub(crate) struct Cgroup {
    dirs: Vec<(Hierarchy, PathBuf)>,
}

fn write(dir: &Path, file: &str, value: impl ToString) -> io::Result<()> {
    std::fs::write(dir.join(file), value.to_string()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {}: {e}", dir.join(file).display()),
        )
    })
}

/// The number after `key` in a "key value" per line file (memory.events, cpu.stat, ...).
fn keyed(dir: &Path, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn number(dir: &Path, file: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Cgroups {
    /// Finds the hierarchies (from /proc/self/mountinfo and /proc/self/cgroup) and checks that
    /// we can create cgroups under our own. Returns one `Protection` per controller.
    pub(crate) fn detect() -> (Self, Vec<Protection>) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        // (hierarchy's controller list, path) from lines like "4:memory:/a/b" or "0::/a/b"
        let own: Vec<(Vec<&str>, &str)> = own
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                Some((ctrls.split(',').filter(|c| !c.is_empty()).collect(), path))
            })
            .collect();
        let mut v1 = Vec::new(); // (mount point, mount root, controllers)
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (Some(root), Some(mnt), Some(fstype)) = (left.get(3), left.get(4), right.first())
            else {
                continue;
            };
            match *fstype {
                "cgroup" => {
                    let opts = right.get(2).copied().unwrap_or_default();
                    let ctrls: Vec<&'static str> = V1_WANTED
                        .iter()
                        .copied()
                        .filter(|w| opts.split(',').any(|o| o == *w))
                        .collect();
                    if !ctrls.is_empty() {
                        v1.push((mnt.to_string(), root.to_string(), ctrls));
                    }
                }
                "cgroup2" if v2.is_none() || *mnt == "/sys/fs/cgroup" => {
                    v2 = Some((mnt.to_string(), root.to_string()))
                }
                _ => {}
            }
        }

        let mut hierarchies = Vec::new();
        let mut missing: Vec<(&str, String)> = Vec::new();
        let under = |mnt: &str, root: &str, path: &str| {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(path)
                .trim_start_matches('/');
            Path::new(mnt).join(rel).join("wisp")
        };
        if !v1.is_empty() {
            for (mnt, root, ctrls) in v1 {
                let path = own
                    .iter()
                    .find(|(c, _)| c.contains(&ctrls[0]))
                    .map_or("/", |(_, p)| *p);
                let base = under(&mnt, &root, path);
                match probe_dir(&base) {
                    Ok(()) => hierarchies.push(Hierarchy {
                        v2: false,
                        base,
                        controllers: ctrls,
                    }),
                    Err(e) => {
                        for c in ctrls {
                            missing.push((
                                c,
                                format!("cgroup v1 {c} hierarchy at {mnt} is not writable: {e}"),
                            ));
                        }
                    }
                }
            }
        } else if let Some((mnt, root)) = v2 {
            let path = own
                .iter()
                .find(|(c, _)| c.is_empty())
                .map_or("/", |(_, p)| *p);
            let base = under(&mnt, &root, path);
            let parent = base.parent().expect("base ends in /wisp").to_path_buf();
            match probe_dir(&base) {
                Ok(()) => {
                    let mut ctrls = Vec::new();
                    for c in V2_WANTED {
                        // Controllers must be enabled in every ancestor's subtree_control; the
                        // parent may refuse (EBUSY) if it has processes of its own.
                        let _ = write(&parent, "cgroup.subtree_control", format!("+{c}"));
                        match write(&base, "cgroup.subtree_control", format!("+{c}")) {
                            Ok(()) => ctrls.push(c),
                            Err(e) => missing.push((
                                c,
                                format!(
                                    "cgroup v2 controller {c} cannot be enabled for {}: {e}; enable it in {}/cgroup.subtree_control \
                                     (a cgroup with processes cannot delegate: run the node in a leaf cgroup of a delegated subtree)",
                                    base.display(),
                                    parent.display()
                                ),
                            )),
                        }
                    }
                    hierarchies.push(Hierarchy {
                        v2: true,
                        base,
                        controllers: ctrls,
                    });
                }
                Err(e) => {
                    for c in V2_WANTED {
                        missing.push((c, format!("cgroup v2 at {mnt} is not writable: {e}")));
                    }
                }
            }
        }

        let cgroups = Cgroups { hierarchies };
        let mut out = Vec::new();
        for (name, ctrl, what) in [
            (
                "cgroup_memory",
                "memory",
                "memory limit for the whole tree, swap disabled, OOM kill reported",
            ),
            (
                "cgroup_pids",
                "pids",
                "pids_max processes and threads (fork bombs stop here)",
            ),
            ("cgroup_cpu", "cpu", "relative CPU share (cpu_weight)"),
            (
                "cgroup_freezer",
                "freezer",
                "an idle instance is frozen: processes a handler left running stop until its next invocation",
            ),
        ] {
            let found = cgroups.dir_of(ctrl);
            out.push(Protection {
                name,
                available: found.is_some(),
                detail: match found {
                    Some(h) => format!("{what}: cgroup {} at {}", if h.v2 { "v2" } else { "v1" }, h.base.display()),
                    None => missing.iter().find(|(c, _)| *c == ctrl).map(|(_, m)| m.clone()).unwrap_or_else(|| {
                        format!("no cgroup v1 or v2 {ctrl} controller is mounted (see /proc/self/mountinfo); without it: no {what}")
                    }),
                },
            });
        }
        (cgroups, out)
    }

    fn dir_of(&self, ctrl: &str) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.contains(&ctrl) || (h.v2 && ctrl == "freezer"))
    }

    /// Creates the sandbox's cgroups with their limits; `None` when no hierarchy is usable.
    pub(crate) fn create(&self, id: &str, limits: &Limits) -> Result<Option<Cgroup>, SpawnError> {
        if self.hierarchies.is_empty() {
            return Ok(None);
        }
        let mut cgroup = Cgroup { dirs: Vec::new() };
        for h in &self.hierarchies {
            let dir = h.base.join(id);
            if let Err(e) = std::fs::create_dir(&dir) {
                // A leftover from a node that died: reuse it if it is empty.
                if e.kind() != io::ErrorKind::AlreadyExists || std::fs::remove_dir(&dir).is_err() {
                    return Err(if e.kind() == io::ErrorKind::AlreadyExists {
                        SpawnError::IdInUse(id.to_string())
                    } else {
                        SpawnError::Io {
                            what: format!("creating cgroup {}", dir.display()),
                            source: e,
                        }
                    });
                }
                std::fs::create_dir(&dir).map_err(|source| SpawnError::Io {
                    what: format!("creating cgroup {}", dir.display()),
                    source,
                })?;
            }
            cgroup.dirs.push((h.clone(), dir));
        }
        cgroup.set_limits(limits).map_err(|source| SpawnError::Io {
            what: "setting cgroup limits".into(),
            source,
        })?;
        Ok(Some(cgroup))
    }
}

/// Creates `base` if needed and checks that a cgroup can be created and removed in it.
fn probe_dir(base: &Path) -> io::Result<()> {
    std::fs::create_dir_all(base)?;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = base.join(format!(".probe-{}-{n}", std::process::id()));
    std::fs::create_dir(&probe)?;
    std::fs::remove_dir(&probe)
}

impl Cgroup {
    fn dir(&self, ctrl: &str) -> Option<&(Hierarchy, PathBuf)> {
        self.dirs
            .iter()
            .find(|(h, _)| h.controllers.contains(&ctrl))
    }

    fn set_limits(&self, l: &Limits) -> io::Result<()> {
        if let Some((h, d)) = self.dir("memory") {
            if h.v2 {
                write(d, "memory.max", l.memory_bytes)?;
                let _ = write(d, "memory.swap.max", 0);
                let _ = write(d, "memory.oom.group", 1);
            } else {
                write(d, "memory.limit_in_bytes", l.memory_bytes)?;
                // memory+swap = memory: no swap. Absent when the kernel has swapaccount=0.
                if write(d, "memory.memsw.limit_in_bytes", l.memory_bytes).is_err() {
                    let _ = write(d, "memory.swappiness", 0);
                }
            }
        }
        if let Some((_, d)) = self.dir("pids") {
            write(d, "pids.max", l.pids_max)?;
        }
        if let Some((h, d)) = self.dir("cpu") {
            if h.v2 {
                write(d, "cpu.weight", l.cpu_weight.clamp(1, 10_000))?;
            } else {
                write(
                    d,
                    "cpu.shares",
                    (u64::from(l.cpu_weight) * 1024 / 100).max(2),
                )?;
            }
        }
        Ok(())
    }

    /// Freezes (or thaws) every process in the cgroup: a frozen process uses no CPU until
    /// it is thawed (v2 `cgroup.freeze`, v1 `freezer.state`). Does not wait for the freeze
    /// to complete. `Ok(false)`: no freezer is available.
    pub(crate) fn freeze(&self, frozen: bool) -> io::Result<bool> {
        if let Some((_, d)) = self.dirs.iter().find(|(h, _)| h.v2) {
            write(d, "cgroup.freeze", u8::from(frozen))?;
            return Ok(true);
        }
        if let Some((_, d)) = self.dir("freezer") {
            write(d, "freezer.state", if frozen { "FROZEN" } else { "THAWED" })?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Moves process `pid` (all its threads) into every one of the sandbox's cgroups.
    pub(crate) fn add(&self, pid: u32) -> io::Result<()> {
        for (_, d) in &self.dirs {
            write(d, "cgroup.procs", pid)?;
        }
        Ok(())
    }

    /// The processes in the cgroup (host pids).
    pub(crate) fn procs(&self) -> Vec<u32> {
        let Some((_, d)) = self.dirs.first() else {
            return Vec::new();
        };
        let text = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// SIGKILLs every process in the cgroup once (v2: cgroup.kill). Does not wait.
    pub(crate) fn kill(&self) {
        if let Some((_, d)) = self.dirs.iter().find(|(h, _)| h.v2)
            && write(d, "cgroup.kill", 1).is_ok()
        {
            return;
        }
        self.kill_except(0);
    }

    /// SIGKILLs every process in the cgroup but `spare`, once; returns how many there were.
    pub(crate) fn kill_except(&self, spare: u32) -> usize {
        // Open a pidfd for each listed pid, then keep only those still listed: a pid cannot
        // be recycled while it is listed, so each kept pidfd is a process of this cgroup.
        let listed = self.procs();
        let pidfds: Vec<_> = listed
            .iter()
            .filter(|p| **p != spare)
            .filter_map(|p| Some((*p, sys::pidfd_open(*p).ok()?)))
            .collect();
        if pidfds.is_empty() {
            return 0;
        }
        let still = self.procs();
        for (pid, fd) in &pidfds {
            if still.contains(pid) {
                let _ = sys::pidfd_kill(fd.as_fd());
            }
        }
        pidfds.len()
    }

    /// Kills until no process is left (processes may fork while being killed), up to `limit`.
    pub(crate) fn kill_until_empty(&self, limit: Duration) {
        let start = Instant::now();
        while !self.procs().is_empty() && start.elapsed() < limit {
            self.kill();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(crate) fn memory_peak(&self) -> Option<u64> {
        let (h, d) = self.dir("memory")?;
        if h.v2 {
            number(d, "memory.peak")
        } else {
            number(d, "memory.max_usage_in_bytes")
        }
    }

    pub(crate) fn cpu_time(&self) -> Option<Duration> {
        if let Some((h, d)) = self.dir("cpuacct")
            && !h.v2
        {
            return number(d, "cpuacct.usage").map(Duration::from_nanos);
        }
        let (_, d) = self.dirs.iter().find(|(h, _)| h.v2)?;
        keyed(d, "cpu.stat", "usage_usec").map(Duration::from_micros)
    }

    pub(crate) fn oom_killed(&self) -> bool {
        let Some((h, d)) = self.dir("memory") else {
            return false;
        };
        let file = if h.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        keyed(d, file, "oom_kill").is_some_and(|n| n > 0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for (_, d) in &self.dirs {
            // EBUSY while the last exiting tasks are being released.
            for _ in 0..200 {
                match std::fs::remove_dir(d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => break,
                }
            }
        }
    }
}
