//! Integration tests: real sandboxes started through the crate's own init binary.
//! Every test that needs a mechanism checks `protections()` first and says why it skips.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use wisp_sandbox::{Exit, Instance, Sandboxes, SpawnError, Spec};

fn sandboxes() -> &'static Sandboxes {
    static S: OnceLock<Sandboxes> = OnceLock::new();
    S.get_or_init(|| {
        let s = Sandboxes::new(PathBuf::from(env!("CARGO_BIN_EXE_wisp-sandbox-init"))).unwrap();
        for p in s.protections() {
            eprintln!("protection {:<18} {:<5} {}", p.name, p.available, p.detail);
        }
        s
    })
}

/// Skips (returns true) with a reason when the host lacks `name`.
fn lacks(name: &str) -> bool {
    let p = sandboxes()
        .protections()
        .iter()
        .find(|p| p.name == name)
        .expect("known protection");
    if !p.available {
        // CI's machine has every protection: there a missing one is a failure, not a skip.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and the sandbox protection {name} is unavailable: {}",
            p.detail
        );
        eprintln!("SKIP: {name} unavailable: {}", p.detail);
    }
    !p.available
}

/// A world-readable code directory with one file in it.
fn code_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from the code dir\n").unwrap();
    dir
}

fn id(name: &str) -> String {
    format!("t{}-{name}", std::process::id())
}

fn spec(name: &str, code: &Path, program: &str, args: &[&str]) -> Spec {
    Spec {
        id: id(name),
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        code_dir: code.to_path_buf(),
        ..Spec::default()
    }
}

fn sh(name: &str, code: &Path, script: &str) -> Spec {
    spec(name, code, "/bin/sh", &["-c", script])
}

struct Output {
    exit: Exit,
    stdout: String,
    stderr: String,
}

async fn finish(mut inst: Instance) -> Output {
    let (mut out, mut err) = (inst.stdout.take().unwrap(), inst.stderr.take().unwrap());
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let read = async {
        let (a, b) = tokio::join!(
            out.read_to_string(&mut stdout),
            err.read_to_string(&mut stderr)
        );
        a.unwrap();
        b.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("output closed within 60 s");
    let exit = tokio::time::timeout(Duration::from_secs(60), inst.wait())
        .await
        .expect("exit within 60 s");
    Output {
        exit,
        stdout,
        stderr,
    }
}

async fn run(spec: Spec) -> Output {
    let inst = sandboxes().spawn(spec).await.unwrap();
    finish(inst).await
}

/// The cgroup directories a sandbox named `id` gets, found as the library finds its
/// hierarchies: cgroup v1 controllers (memory, pids, cpu, freezer) where any is mounted,
/// else the cgroup v2 unified hierarchy.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    cgroup_dirs_in(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        &std::fs::read_to_string("/proc/self/cgroup").unwrap(),
        id,
    )
}

/// `cgroup_dirs` from the text of /proc/self/mountinfo and /proc/self/cgroup.
fn cgroup_dirs_in(mountinfo: &str, own: &str, id: &str) -> Vec<PathBuf> {
    const V1: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "freezer"];
    // Our own cgroup per hierarchy: "4:memory:/a/b" (v1), "0::/a/b" (v2).
    let own: Vec<(Vec<&str>, &str)> = own
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((ctrls.split(',').filter(|c| !c.is_empty()).collect(), path))
        })
        .collect();
    let under = |mnt: &str, root: &str, path: &str| {
        let rel = path.strip_prefix(root).unwrap_or(path);
        Path::new(mnt)
            .join(rel.trim_start_matches('/'))
            .join("wisp")
            .join(id)
    };
    let (mut v1, mut v2) = (Vec::new(), None);
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
                let Some(ctrl) = V1.iter().find(|c| opts.split(',').any(|o| o == **c)) else {
                    continue;
                };
                let path = own
                    .iter()
                    .find(|(c, _)| c.contains(ctrl))
                    .map_or("/", |(_, p)| *p);
                v1.push(under(mnt, root, path));
            }
            "cgroup2" if v2.is_none() || *mnt == "/sys/fs/cgroup" => {
                let path = own
                    .iter()
                    .find(|(c, _)| c.is_empty())
                    .map_or("/", |(_, p)| *p);
                v2 = Some(under(mnt, root, path));
            }
            _ => {}
        }
    }
    if v1.is_empty() {
        v2.into_iter().collect()
    } else {
        v1
    }
}

#[test]
fn cgroup_dirs_are_found_on_v1_and_v2_hosts() {
    let v1_mounts = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    let v1_own = "9:pids:/\n6:freezer:/\n4:memory:/job/7\n2:cpu,cpuacct:/\n0::/\n";
    assert_eq!(
        cgroup_dirs_in(v1_mounts, v1_own, "f-1-1-n9"),
        [
            "/sys/fs/cgroup/cpu,cpuacct/wisp/f-1-1-n9",
            "/sys/fs/cgroup/memory/job/7/wisp/f-1-1-n9",
            "/sys/fs/cgroup/pids/wisp/f-1-1-n9",
            "/sys/fs/cgroup/freezer/wisp/f-1-1-n9",
        ]
        .map(PathBuf::from)
    );
    // A v2-only host (systemd's default), the node in a delegated service cgroup; inside
    // a container the mount's root is the container's own cgroup.
    let v2_mounts = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    let v2_own = "0::/system.slice/wisp.service\n";
    assert_eq!(
        cgroup_dirs_in(v2_mounts, v2_own, "f-1-1-n9"),
        [PathBuf::from(
            "/sys/fs/cgroup/system.slice/wisp.service/wisp/f-1-1-n9"
        )]
    );
    let in_container = "30 23 0:27 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        cgroup_dirs_in(in_container, "0::/docker/abc/node\n", "x"),
        [PathBuf::from("/sys/fs/cgroup/node/wisp/x")]
    );
    // This host: whatever it has, the directories exist once a sandbox is made (the
    // other tests check that); here only that something is found when cgroups are used.
    if !lacks("cgroup_memory") {
        assert!(!cgroup_dirs("probe").is_empty());
    }
}

/// Host pids whose real uid is `uid`.
fn pids_of_uid(uid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok());
        if real == Some(uid) {
            pids.push(pid);
        }
    }
    pids
}

fn host_uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_program_and_reports_its_exit_code() {
    let code = code_dir();
    let out = run(sh(
        "exit",
        code.path(),
        "echo out; echo err >&2; cat /var/task/hello.txt; exit 7",
    ))
    .await;
    assert_eq!(out.exit, Exit::Code(7));
    assert_eq!(out.stdout, "out\nhello from the code dir\n");
    assert_eq!(out.stderr, "err\n");
}

/// Runs checks of the form `name: command` in one sandbox; each must succeed.
async fn checks(name: &str, spec_fn: impl FnOnce(Spec) -> Spec, checks: &[(&str, &str)]) {
    let code = code_dir();
    let script: String = checks
        .iter()
        .map(|(n, c)| format!("if {c}; then echo '{n}: ok'; else echo '{n}: FAILED'; fi\n"))
        .collect();
    let out = run(spec_fn(sh(name, code.path(), &script))).await;
    assert_eq!(out.exit, Exit::Code(0), "stderr: {}", out.stderr);
    for (n, _) in checks {
        assert!(
            out.stdout.contains(&format!("{n}: ok\n")),
            "check {n:?} failed:\n{}\nstderr: {}",
            out.stdout,
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_system_is_minimal_and_read_only() {
    if lacks("mount_namespace") {
        return;
    }
    let extra = tempfile::tempdir().unwrap();
    std::fs::set_permissions(extra.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(extra.path().join("runtime.txt"), "runtime file\n").unwrap();
    let host_tmp = extra.path().display().to_string();
    let extra_path = extra.path().to_path_buf();
    checks(
        "fs",
        |s| Spec { ro_mounts: vec![(extra_path, "/opt/wisp".into())], ..s },
        &[
            ("no shadow", "! test -e /etc/shadow"),
            ("no /root", "! test -e /root"),
            ("no /home", "! test -e /home"),
            ("no /work", "! test -e /work"),
            ("no host tmp", &format!("! test -e {host_tmp}")),
            ("passwd is ours", "test \"$(cut -d: -f1 /etc/passwd | tr '\\n' ' ')\" = 'root sbx nobody '"),
            ("no ssl private keys", "! test -e /etc/ssl/private"),
            ("code readable", "grep -q 'hello from the code dir' /var/task/hello.txt"),
            ("code read-only", "! touch /var/task/new 2>/dev/null"),
            ("usr read-only", "! touch /usr/new 2>/dev/null"),
            ("etc read-only", "! touch /etc/new 2>/dev/null"),
            ("root read-only", "! mkdir /new 2>/dev/null"),
            ("ro_mount readable", "grep -q 'runtime file' /opt/wisp/runtime.txt"),
            ("ro_mount read-only", "! touch /opt/wisp/new 2>/dev/null"),
            ("tmp writable", "echo hi > /tmp/f && test \"$(cat /tmp/f)\" = hi"),
            ("shm writable", "echo hi > /dev/shm/f"),
            ("dev null", "echo x > /dev/null && test -c /dev/null && head -c 8 /dev/urandom | wc -c | grep -q 8"),
            ("cwd is /var/task", "test \"$(pwd)\" = /var/task"),
            ("ls works", "ls / > /dev/null"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmp_is_limited_to_tmp_bytes() {
    if lacks("tmpfs_tmp") {
        return;
    }
    checks(
        "tmp",
        |s| Spec {
            tmp_bytes: 8 << 20,
            ..s
        },
        &[
            (
                "owned by the sandbox user",
                "test \"$(stat -c %u /tmp)\" = \"$(id -u)\"",
            ),
            (
                "4 MiB fit",
                "dd if=/dev/zero of=/tmp/a bs=1M count=4 2>/dev/null",
            ),
            (
                "20 MiB do not",
                "! dd if=/dev/zero of=/tmp/b bs=1M count=20 2>/dev/null",
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_unprivileged() {
    // The checks read /proc, which a sandbox only has with its own PID namespace.
    if lacks("user_namespace") || lacks("pid_namespace") {
        return;
    }
    checks(
        "ids",
        |s| s,
        &[
            ("uid 1000", "test \"$(id -u)\" = 1000"),
            ("gid 1000", "test \"$(id -g)\" = 1000"),
            ("not root", "test \"$(id -u)\" != 0"),
            ("no groups", "test \"$(id -G)\" = 1000"),
            (
                "no capabilities",
                "grep -q '^CapEff:\t0000000000000000' /proc/self/status",
            ),
            (
                "empty bounding set",
                "grep -q '^CapBnd:\t0000000000000000' /proc/self/status",
            ),
            (
                "no_new_privs",
                "grep -q '^NoNewPrivs:\t1' /proc/self/status",
            ),
            ("seccomp filter", "grep -q '^Seccomp:\t2' /proc/self/status"),
            ("core limit 0", "test \"$(ulimit -c)\" = 0"),
            ("nofile 1024", "test \"$(ulimit -n)\" = 1024"),
        ],
    )
    .await;

    // Outside, the program is an unprivileged host uid.
    let code = code_dir();
    let mut inst = sandboxes()
        .spawn(sh("hostuid", code.path(), "exec sleep 30"))
        .await
        .unwrap();
    let uid = host_uid_of(inst.pid());
    assert!(uid >= 1_000_000_000, "host uid {uid}");
    assert_ne!(
        host_uid_of(inst.init_pid()),
        0,
        "the init must not be host root either"
    );
    inst.kill();
    assert_eq!(inst.wait().await, Exit::Signal(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_and_pid_namespace_are_the_sandboxs() {
    if lacks("uts_namespace") || lacks("pid_namespace") {
        return;
    }
    let name = id("uts");
    checks(
        "uts",
        |s| s,
        &[
            (
                "hostname",
                &format!("test \"$(cat /proc/sys/kernel/hostname)\" = {name}"),
            ),
            ("program is pid 2", "test $$ = 2"),
            (
                "pid 1 is the init",
                &format!(
                    "tr '\\0' ' ' < /proc/1/cmdline | grep -q -- {}",
                    wisp_sandbox::INIT_ARG
                ),
            ),
            (
                "few processes",
                "test \"$(ls /proc | grep -c '^[0-9]')\" -le 8",
            ),
            (
                "node invisible",
                "! cat /proc/[0-9]*/cmdline | tr '\\0' ' ' | grep -q 'deps/[s]andbox-'",
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_oom_killed() {
    if lacks("cgroup_memory") {
        return;
    }
    let code = code_dir();
    let spec = Spec {
        memory_bytes: 64 << 20,
        ..spec(
            "oom",
            code.path(),
            "/usr/bin/python3",
            &["-c", "x = b'a' * (200 << 20)\nprint('survived')"],
        )
    };
    let inst = sandboxes().spawn(spec).await.unwrap();
    let oom_before = inst.oom_killed();
    let mut inst = inst;
    let exit = tokio::time::timeout(Duration::from_secs(60), inst.wait())
        .await
        .unwrap();
    assert!(!oom_before);
    assert_eq!(exit, Exit::OutOfMemory);
    assert!(inst.oom_killed());
    let peak = inst.memory_peak_bytes().unwrap();
    assert!(peak > 32 << 20 && peak <= 64 << 20, "peak {peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_stops_at_pids_max_and_kill_removes_every_process() {
    if lacks("cgroup_pids") {
        return;
    }
    let code = code_dir();
    let script = "import os, time\nok = fail = 0\nfor i in range(100):\n    try:\n        \
                  if os.fork() == 0:\n            time.sleep(120)\n            os._exit(0)\n        ok += 1\n    \
                  except OSError:\n        fail += 1\nprint(ok, fail, flush=True)\ntime.sleep(120)\n";
    let spec = Spec {
        pids_max: 32,
        ..spec("forks", code.path(), "/usr/bin/python3", &["-c", script])
    };
    let mut inst = sandboxes().spawn(spec).await.unwrap();
    let uid = host_uid_of(inst.pid());
    let mut stdout = inst.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        let n = tokio::time::timeout(Duration::from_secs(60), stdout.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "stdout closed early: {}",
            String::from_utf8_lossy(&line)
        );
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let (ok, fail): (u32, u32) = {
        let mut it = line.split_whitespace().map(|n| n.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    assert!(fail > 0 && ok <= 30, "forked {ok}, failed {fail}");
    let live = pids_of_uid(uid);
    assert!(
        live.len() > 20 && live.len() <= 32,
        "{} processes",
        live.len()
    );
    // The host is unaffected.
    assert!(
        std::process::Command::new("/bin/true")
            .status()
            .unwrap()
            .success()
    );

    let dirs = cgroup_dirs(inst.id());
    assert!(dirs.iter().all(|d| d.exists()));
    inst.kill();
    inst.kill();
    assert_eq!(inst.wait().await, Exit::Signal(9));
    assert!(pids_of_uid(uid).is_empty(), "left: {:?}", pids_of_uid(uid));
    for d in &dirs {
        assert_eq!(
            std::fs::read_to_string(d.join("cgroup.procs")).unwrap(),
            "",
            "{}",
            d.display()
        );
    }
    drop(inst);
    assert!(dirs.iter().all(|d| !d.exists()), "cgroups left: {dirs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_off_cannot_reach_the_host_and_on_can() {
    if lacks("network_namespace") || lacks("pid_namespace") {
        return;
    }
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let code = code_dir();
    let script = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5).sendall(b'x')\n    \
         print('connected')\nexcept OSError as e:\n    print('refused', e)\n"
    );
    let python = |name: &str, network: bool| Spec {
        network,
        ..spec(name, code.path(), "/usr/bin/python3", &["-c", &script])
    };
    let out = run(python("net-off", false)).await;
    assert!(
        out.stdout.starts_with("refused"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    let devs = run(sh(
        "net-devs",
        code.path(),
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    ))
    .await;
    assert_eq!(devs.stdout, "lo\n");

    let out = run(python("net-on", true)).await;
    assert_eq!(out.stdout, "connected\n", "{}", out.stderr);
    host.set_nonblocking(true).unwrap();
    assert!(host.accept().is_ok(), "the host saw the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_accepts_what_the_sandbox_sends() {
    for network in [false, true] {
        let code = code_dir();
        let script = "import os, socket\nh, p = os.environ['AWS_LAMBDA_RUNTIME_API'].split(':')\n\
                      s = socket.create_connection((h, int(p)))\ns.sendall(b'hello runtime api')\ns.close()\n";
        let spec = Spec {
            network,
            listener_env: Some("AWS_LAMBDA_RUNTIME_API".into()),
            ..spec(
                &format!("listen-{network}"),
                code.path(),
                "/usr/bin/python3",
                &["-c", script],
            )
        };
        let mut inst = sandboxes().spawn(spec).await.unwrap();
        let listener = inst.listener.try_clone().unwrap();
        let got = tokio::task::spawn_blocking(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = String::new();
            std::io::Read::read_to_string(&mut conn, &mut got).unwrap();
            got
        });
        let got = tokio::time::timeout(Duration::from_secs(30), got)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, "hello runtime api");
        if !network && !lacks("network_namespace") {
            assert_eq!(inst.listener.local_addr().unwrap().port(), 9001);
        }
        assert_eq!(inst.wait().await, Exit::Code(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_unexecutable_program_is_reported() {
    let code = code_dir();
    let err = sandboxes()
        .spawn(spec("missing", code.path(), "/var/task/bootstrap", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SpawnError::ProgramNotFound(p) if p == Path::new("/var/task/bootstrap")),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("program /var/task/bootstrap not found"),
        "{err}"
    );
    let dirs = cgroup_dirs(&id("missing"));
    assert!(
        dirs.iter().all(|d| !d.exists()),
        "a failed spawn left {dirs:?}"
    );

    std::fs::write(code.path().join("bootstrap"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        code.path().join("bootstrap"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = sandboxes()
        .spawn(spec("noexec", code.path(), "/var/task/bootstrap", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, SpawnError::PermissionDenied(_)), "{err:?}");
    assert!(err.to_string().contains("permission denied"), "{err}");

    std::fs::set_permissions(
        code.path().join("bootstrap"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = run(spec("exec", code.path(), "/var/task/bootstrap", &[])).await;
    assert_eq!((out.exit, out.stdout.as_str()), (Exit::Code(0), "hi\n"));

    let err = sandboxes()
        .spawn(Spec {
            cwd: "/nonexistent".into(),
            ..sh("cwd", code.path(), "true")
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("working directory /nonexistent"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_makes_mount_and_namespaces_fail_with_eperm() {
    if lacks("seccomp") {
        return;
    }
    let code = code_dir();
    // Without the filter, unshare(CLONE_NEWUSER) would succeed for an unprivileged process;
    // mount would fail with EPERM anyway (no capabilities), so the filter is also checked
    // through /proc/self/status in runs_unprivileged.
    let script = "import ctypes, os, threading\n\
                  libc = ctypes.CDLL(None, use_errno=True)\n\
                  def errno(r):\n    return ctypes.get_errno() if r == -1 else 0\n\
                  print('mount', errno(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)))\n\
                  print('unshare', errno(libc.unshare(0x10000000)))\n\
                  print('clone-newns', errno(libc.syscall(56, 0x00020000 | 17, 0, 0, 0, 0)))\n\
                  print('vsock', errno(libc.socket(40, 1, 0)))\n\
                  print('unix', errno(libc.socket(1, 1, 0)))\n\
                  t = threading.Thread(target=lambda: print('thread ran'))\nt.start()\nt.join()\n\
                  pid = os.fork()\nif pid == 0:\n    os._exit(3)\nprint('fork', os.waitpid(pid, 0)[1] >> 8)\n";
    let out = run(spec(
        "seccomp",
        code.path(),
        "/usr/bin/python3",
        &["-c", script],
    ))
    .await;
    assert_eq!(out.exit, Exit::Code(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "mount 1\nunshare 1\nclone-newns 1\nvsock 1\nunix 0\nthread ran\nfork 3\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_kills_the_tree_and_removes_the_cgroups() {
    let code = code_dir();
    let inst = sandboxes()
        .spawn(sh("drop", code.path(), "sleep 60 & sleep 60 & sleep 60"))
        .await
        .unwrap();
    let uid = host_uid_of(inst.pid());
    let dirs = cgroup_dirs(inst.id());
    assert!(!dirs.is_empty() || lacks("cgroup_memory"));
    assert!(dirs.iter().all(|d| d.exists()));
    drop(inst);
    let start = Instant::now();
    while (!pids_of_uid(uid).is_empty() || dirs.iter().any(|d| d.exists()))
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        pids_of_uid(uid).is_empty(),
        "processes left: {:?}",
        pids_of_uid(uid)
    );
    assert!(dirs.iter().all(|d| !d.exists()), "cgroups left: {dirs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_must_be_unique_among_running_sandboxes() {
    if lacks("cgroup_memory") {
        return;
    }
    let code = code_dir();
    let mut first = sandboxes()
        .spawn(sh("dup", code.path(), "sleep 30"))
        .await
        .unwrap();
    let err = sandboxes()
        .spawn(sh("dup", code.path(), "true"))
        .await
        .unwrap_err();
    assert!(matches!(err, SpawnError::IdInUse(_)), "{err:?}");
    first.kill();
    first.wait().await;
    drop(first);
    let out = run(sh("dup", code.path(), "true")).await;
    assert_eq!(out.exit, Exit::Code(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_python_runtimes_work() {
    let code = code_dir();
    std::fs::write(
        code.path().join("handler.py"),
        "import json, ssl, threading\nprint(json.dumps({'ok': 1}))\n",
    )
    .unwrap();
    let out = run(spec(
        "python",
        code.path(),
        "/usr/bin/python3",
        &["handler.py"],
    ))
    .await;
    assert_eq!(
        (out.exit, out.stdout.as_str()),
        (Exit::Code(0), "{\"ok\": 1}\n"),
        "{}",
        out.stderr
    );
    if Path::new("/usr/bin/node").exists() {
        let js = "const os = require('os'); require('crypto').randomBytes(8); console.log(1 + 1, os.hostname().length > 0)";
        let out = run(spec("node", code.path(), "/usr/bin/node", &["-e", js])).await;
        assert_eq!(
            (out.exit, out.stdout.as_str()),
            (Exit::Code(0), "2 true\n"),
            "{}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_cpu_time_and_memory_peak() {
    if lacks("cgroup_cpu") || lacks("cgroup_memory") {
        return;
    }
    let code = code_dir();
    let script =
        "x = bytearray(b'a') * (20 << 20)\nn = 0\nfor i in range(2_000_000):\n    n += i\n";
    let mut inst = sandboxes()
        .spawn(spec(
            "usage",
            code.path(),
            "/usr/bin/python3",
            &["-c", script],
        ))
        .await
        .unwrap();
    assert_eq!(inst.wait().await, Exit::Code(0));
    let cpu = inst.cpu_time().unwrap();
    let peak = inst.memory_peak_bytes().unwrap();
    assert!(cpu > Duration::from_millis(20), "cpu {cpu:?}");
    assert!(peak > 20 << 20, "peak {peak}");
    assert!(!inst.oom_killed());
}

/// Not a benchmark, but the number the cold-start budget cares about: spawn() to exec'd, and
/// spawn() to exit, for /bin/true (with and without a network namespace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_latency() {
    let code = code_dir();
    for network in [false, true] {
        let (mut to_exec, mut to_exit) = (Vec::new(), Vec::new());
        for i in 0..20 {
            let spec = Spec {
                network,
                ..spec(&format!("lat-{network}-{i}"), code.path(), "/bin/true", &[])
            };
            let start = Instant::now();
            let mut inst = sandboxes().spawn(spec).await.unwrap();
            to_exec.push(start.elapsed());
            assert_eq!(inst.wait().await, Exit::Code(0));
            to_exit.push(start.elapsed());
        }
        to_exec.sort();
        to_exit.sort();
        eprintln!(
            "network={network}: spawn->exec min {:?} median {:?} max {:?}; spawn->exit median {:?}",
            to_exec[0], to_exec[10], to_exec[19], to_exit[10]
        );
        // A correctness bound only: how fast spawning is, bench/run and the eprintln say.
        assert!(to_exec[10] < Duration::from_secs(10));
    }
}

#[test]
fn protections_name_every_mechanism() {
    let names: Vec<_> = sandboxes().protections().iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
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
            "rlimits"
        ]
    );
    assert!(
        sandboxes()
            .protections()
            .iter()
            .all(|p| !p.detail.is_empty())
    );
    let err = Sandboxes::new("/nonexistent/init".into()).err().unwrap();
    assert!(err.to_string().contains("/nonexistent/init"), "{err}");
}

/// Run by `sandboxes_die_with_the_node` in a child process: starts a sandbox, prints the
/// program's host pid and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper of sandboxes_die_with_the_node"]
async fn helper_spawn_and_hang() {
    let Ok(name) = std::env::var("WISP_SANDBOX_TEST_HELPER") else {
        return;
    };
    let code = code_dir();
    let inst = sandboxes()
        .spawn(sh(&name, code.path(), "sleep 60 & exec sleep 60"))
        .await
        .unwrap();
    println!("PID {} {}", inst.pid(), host_uid_of(inst.pid()));
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[test]
fn sandboxes_die_with_the_node() {
    use std::io::BufRead;
    // Without a PID namespace only the program itself gets the parent-death signal.
    if lacks("pid_namespace") {
        return;
    }
    let mut node = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_spawn_and_hang",
            "--ignored",
            "--nocapture",
        ])
        .env("WISP_SANDBOX_TEST_HELPER", "orphan")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(node.stdout.take().unwrap()).lines();
    let line = lines
        .find_map(|l| l.unwrap().strip_prefix("PID ").map(str::to_string))
        .expect("helper started a sandbox");
    let mut it = line.split_whitespace().map(|n| n.parse::<u32>().unwrap());
    let (pid, uid) = (it.next().unwrap(), it.next().unwrap());
    let dirs = cgroup_dirs(&format!("t{}-orphan", node.id()));
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    node.kill().unwrap(); // SIGKILL: no destructor runs in the node
    node.wait().unwrap();
    let start = Instant::now();
    while !pids_of_uid(uid).is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        pids_of_uid(uid).is_empty(),
        "sandbox processes outlived the node: {:?}",
        pids_of_uid(uid)
    );
    // Nobody was left to remove the (now empty) cgroups.
    for d in dirs {
        std::fs::remove_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
}

/// The sandbox's host uid cannot search /root-like directories: the init is exec'd through a
/// descriptor opened by the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_executable_in_a_private_directory() {
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let exe = private.path().join("node-binary");
    std::fs::copy(env!("CARGO_BIN_EXE_wisp-sandbox-init"), &exe).unwrap();
    let sandboxes = Sandboxes::new(exe).unwrap();
    let code = code_dir();
    let mut inst = sandboxes
        .spawn(sh("private-init", code.path(), "exit 3"))
        .await
        .unwrap();
    assert_eq!(inst.wait().await, Exit::Code(3));
}
