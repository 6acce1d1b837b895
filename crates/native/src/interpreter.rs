//! Finding the interpreter a runtime needs on this host, and what of the host file system
//! the sandbox must show for it to run.

use std::path::{Path, PathBuf};
use std::process::Command;
use wisp_core::Runtime;

/// Where the bootstraps are mounted inside every sandbox.
pub const RUNTIME_MOUNT: &str = "/opt/wisp/runtime";

/// How to start one runtime's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// Inside the sandbox.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Host directories to mount read-only at the same path (an interpreter installed
    /// outside `/usr`, e.g. under pyenv).
    pub mounts: Vec<PathBuf>,
    /// e.g. `Python 3.11.2`, `Node.js 20.20.2`, `provided`.
    pub version: String,
}

/// Paths every sandbox shows already.
fn in_base_system(p: &Path) -> bool {
    ["/usr", "/bin", "/lib", "/lib64", "/sbin"]
        .iter()
        .any(|root| p.starts_with(root))
}

fn candidates(name: &str) -> Vec<PathBuf> {
    let mut out = vec![
        PathBuf::from("/usr/bin").join(name),
        PathBuf::from("/usr/local/bin").join(name),
    ];
    if let Some(path) = std::env::var_os("PATH") {
        out.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| p.is_file() && seen.insert(p.clone()));
    out
}

fn run(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The directory to mount for an interpreter outside the base system: the prefix its
/// `bin/` lives in.
fn prefix_of(executable: &Path) -> Option<PathBuf> {
    let bin = executable.parent()?;
    if bin.file_name()? == "bin" {
        bin.parent().map(Path::to_path_buf)
    } else {
        Some(bin.to_path_buf())
    }
}

/// Resolves a runtime to an interpreter on this host, or says what is missing.
pub fn resolve(runtime: Runtime) -> Result<Interpreter, String> {
    match runtime {
        Runtime::Provided => Ok(Interpreter {
            program: PathBuf::from("/var/task/bootstrap"),
            args: Vec::new(),
            mounts: Vec::new(),
            version: "provided".into(),
        }),
        Runtime::Python { minor } => {
            let name = format!("python3.{minor}");
            let mut found = Vec::new();
            for c in candidates(&name).into_iter().chain(candidates("python3")) {
                // Ask the interpreter itself: a pyenv shim is a script, not the binary.
                let Some(out) = run(
                    &c,
                    &[
                        "-S",
                        "-c",
                        "import sys;print(sys.executable);print(sys.base_prefix);print('%d.%d.%d' % sys.version_info[:3])",
                    ],
                ) else {
                    continue;
                };
                let mut lines = out.lines();
                let (Some(exe), Some(prefix), Some(version)) =
                    (lines.next(), lines.next(), lines.next())
                else {
                    continue;
                };
                if version.split('.').nth(1) != Some(&minor.to_string()) {
                    found.push(format!("Python {version} at {}", c.display()));
                    continue;
                }
                let exe = PathBuf::from(exe);
                let mounts = if in_base_system(&exe) {
                    Vec::new()
                } else {
                    vec![PathBuf::from(prefix)]
                };
                return Ok(Interpreter {
                    program: exe,
                    args: vec!["-S".into(), format!("{RUNTIME_MOUNT}/python/bootstrap.py")],
                    mounts,
                    version: format!("Python {version}"),
                });
            }
            Err(missing(
                &runtime.to_string(),
                &format!("python3.{minor}"),
                &found,
            ))
        }
        Runtime::Nodejs { major } => {
            let mut found = Vec::new();
            for c in candidates("node") {
                let Some(out) = run(
                    &c,
                    &["-p", "process.execPath + '\\n' + process.versions.node"],
                ) else {
                    continue;
                };
                let mut lines = out.lines();
                let (Some(exe), Some(version)) = (lines.next(), lines.next()) else {
                    continue;
                };
                if version.split('.').next() != Some(&major.to_string()) {
                    found.push(format!("Node.js {version} at {}", c.display()));
                    continue;
                }
                let exe = PathBuf::from(exe);
                let mounts = if in_base_system(&exe) {
                    Vec::new()
                } else {
                    prefix_of(&exe).into_iter().collect()
                };
                return Ok(Interpreter {
                    program: exe,
                    args: vec![format!("{RUNTIME_MOUNT}/node/bootstrap.js")],
                    mounts,
                    version: format!("Node.js {version}"),
                });
            }
            Err(missing(
                &runtime.to_string(),
                &format!("Node.js {major}"),
                &found,
            ))
        }
    }
}

fn missing(runtime: &str, wanted: &str, found: &[String]) -> String {
    let mut m = format!("runtime `{runtime}` needs {wanted}, which this node does not have");
    if found.is_empty() {
        m.push_str(": install it on the node's host");
    } else {
        m.push_str(&format!(
            " (found {}): install it on the node's host or change `runtime` in the manifest",
            found.join(", ")
        ));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provided_runs_the_bundles_bootstrap() {
        let i = resolve(Runtime::Provided).unwrap();
        assert_eq!(i.program, Path::new("/var/task/bootstrap"));
    }

    #[test]
    fn a_missing_version_names_what_was_found() {
        let e = resolve(Runtime::Python { minor: 99 }).unwrap_err();
        assert!(e.contains("python3.99"), "{e}");
        let e = resolve(Runtime::Nodejs { major: 999 }).unwrap_err();
        assert!(e.contains("Node.js 999"), "{e}");
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            prefix_of(Path::new("/root/.pyenv/versions/3.11.7/bin/python3.11")).unwrap(),
            Path::new("/root/.pyenv/versions/3.11.7")
        );
        assert!(in_base_system(Path::new("/usr/bin/node")));
        assert!(!in_base_system(Path::new("/opt/node/bin/node")));
    }
}
