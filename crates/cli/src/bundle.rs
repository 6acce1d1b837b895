//! Packages a native function's directory into a code bundle (a gzipped tar), the way
//! `sam build` would: dependencies from `requirements.txt` (pip) or `package.json` (npm)
//! installed into the package, Python compiled ahead of time, and for a `provided` function
//! whose directory is a Rust crate, the crate built for this host as `bootstrap`.
//!
//! The bundle is deterministic (sorted entries, no timestamps or owners), so an unchanged
//! function has the same digest and is not uploaded again.

use crate::output::progress;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use wisp_core::{NativeSpec, Runtime};

/// Directories never copied into a bundle.
const SKIP: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".wisp",
    ".venv",
    "target",
];

pub fn bundle_bytes(function: &str, dir: &Path, native: &NativeSpec) -> Result<Vec<u8>> {
    let staging = tempfile::Builder::new()
        .prefix("wisp-bundle-")
        .tempdir()
        .context("creating a staging directory")?;
    let root = staging.path();
    let rust_crate = native.runtime == Runtime::Provided && dir.join("Cargo.toml").is_file();
    if rust_crate {
        let exe = build_bootstrap(function, dir)?;
        std::fs::copy(&exe, root.join("bootstrap"))
            .with_context(|| format!("copying {}", exe.display()))?;
    } else {
        let reinstall_node = dir.join("package.json").is_file();
        copy_tree(dir, root, reinstall_node)?;
    }
    match native.runtime {
        Runtime::Python { minor } if dir.join("requirements.txt").is_file() => {
            pip_install(function, minor, root)?;
        }
        Runtime::Nodejs { .. } if dir.join("package.json").is_file() => {
            npm_install(function, root)?;
        }
        _ => {}
    }
    if let Runtime::Python { minor } = native.runtime {
        compile_python(minor, root);
    }
    if native.runtime == Runtime::Provided {
        let bootstrap = root.join("bootstrap");
        if !bootstrap.is_file() {
            bail!(
                "function `{function}`: {} has no `bootstrap`: a `provided` function needs an executable named `bootstrap` at the root of its directory, or a Rust crate (with `Cargo.toml`) that builds one",
                dir.display()
            );
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&bootstrap)?.permissions().mode();
        if mode & 0o111 == 0 {
            bail!(
                "function `{function}`: {} is not executable: run `chmod +x {}`",
                dir.join("bootstrap").display(),
                dir.join("bootstrap").display()
            );
        }
    }
    pack(root)
}

fn copy_tree(from: &Path, to: &Path, skip_node_modules: bool) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .with_context(|| format!("reading {}", from.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name_str = name.to_string_lossy();
        let ty = e.file_type()?;
        if ty.is_dir()
            && (SKIP.contains(&name_str.as_ref())
                || (skip_node_modules && name_str == "node_modules"))
        {
            continue;
        }
        let dest = to.join(&name);
        if ty.is_symlink() {
            let target = std::fs::read_link(e.path())?;
            std::os::unix::fs::symlink(target, &dest)?;
        } else if ty.is_dir() {
            std::fs::create_dir(&dest)?;
            copy_tree(&e.path(), &dest, false)?;
        } else if ty.is_file() {
            std::fs::copy(e.path(), &dest)
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Runs a command, showing its output as progress lines; on failure the error carries
/// the output's last lines (pip's and npm's own messages say what went wrong).
fn run_showing(function: &str, what: &str, cmd: &mut Command) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("function `{function}`: running {what}"))?;
    let stderr = child.stderr.take().expect("piped");
    let err_lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if !line.trim().is_empty() {
            progress(format!("{function}:   {line}"));
        }
    }
    let status = child.wait()?;
    let err_lines = err_lines.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let tail: Vec<&str> = err_lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let tail = &tail[tail.len().saturating_sub(12)..];
    bail!(
        "function `{function}`: {what} failed ({status}):\n{}",
        tail.join("\n")
    )
}

/// A Python of the runtime's version that has pip.
fn python_with_pip(minor: u32) -> Result<PathBuf> {
    let mut tried = Vec::new();
    for name in [format!("python3.{minor}"), "python3".to_string()] {
        let out = Command::new(&name)
            .args([
                "-c",
                "import sys, pip; print('%d.%d' % sys.version_info[:2])",
            ])
            .stderr(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if v == format!("3.{minor}") {
                    return Ok(PathBuf::from(name));
                }
                tried.push(format!("{name} is Python {v}"));
            }
            _ => tried.push(format!("{name} has no pip")),
        }
    }
    bail!(
        "installing requirements.txt needs pip for Python 3.{minor} ({}): install it, e.g. `apt-get install python3-pip`",
        tried.join(", ")
    )
}

fn pip_install(function: &str, minor: u32, root: &Path) -> Result<()> {
    let python = python_with_pip(minor).with_context(|| format!("function `{function}`"))?;
    progress(format!(
        "{function}: installing requirements.txt with pip (python3.{minor})"
    ));
    run_showing(
        function,
        "`pip install -r requirements.txt`",
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "--no-compile",
                "--target",
            ])
            .arg(root)
            .arg("-r")
            .arg(root.join("requirements.txt"))
            .env("PIP_NO_WARN_SCRIPT_LOCATION", "1"),
    )
}

/// Compiles the package's Python ahead of time with hash-checked-free `.pyc` files, so
/// imports in the read-only sandbox skip compiling and the bundle stays deterministic.
/// Best effort: without it, Python compiles in memory at each cold start.
fn compile_python(minor: u32, root: &Path) {
    let _ = Command::new(format!("python3.{minor}"))
        .args([
            "-m",
            "compileall",
            "-q",
            "-f",
            "--invalidation-mode",
            "unchecked-hash",
            // The path compiled into the code objects: where the code runs, not the
            // staging folder (which differs each time and would change the digest).
            "-d",
            "/var/task",
        ])
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn npm_install(function: &str, root: &Path) -> Result<()> {
    let locked = root.join("package-lock.json").is_file();
    let sub = if locked { "ci" } else { "install" };
    progress(format!(
        "{function}: installing package.json with `npm {sub}`"
    ));
    run_showing(
        function,
        &format!("`npm {sub}`"),
        Command::new("npm")
            .args([
                sub,
                "--omit=dev",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(root),
    )?;
    // npm leaves a cache marker that changes on every install.
    let _ = std::fs::remove_file(root.join("node_modules/.package-lock.json"));
    Ok(())
}

/// `cargo build --release` for this host; returns the binary (the one named `bootstrap`,
/// or the crate's only binary).
fn build_bootstrap(function: &str, dir: &Path) -> Result<PathBuf> {
    progress(format!(
        "{function}: building {} for this host (cargo build --release)",
        dir.display()
    ));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("function `{function}`: running `cargo build`"))?;
    if !output.status.success() {
        bail!(
            "function `{function}`: `cargo build --release` failed in {} (the compiler's messages are above)",
            dir.display()
        );
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_bin = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bin"));
        if msg["reason"] == "compiler-artifact"
            && is_bin
            && let (Some(name), Some(exe)) =
                (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            bins.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    if let Some((_, exe)) = bins.iter().find(|(n, _)| n == "bootstrap") {
        return Ok(exe.clone());
    }
    match bins.as_slice() {
        [(_, exe)] => Ok(exe.clone()),
        [] => bail!(
            "function `{function}`: {} builds no binary: a `provided` function's crate needs a `[[bin]]` (e.g. src/main.rs using the lambda_runtime crate)",
            dir.display()
        ),
        _ => bail!(
            "function `{function}`: {} builds several binaries ({}): name the one to run `bootstrap`",
            dir.display(),
            bins.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A gzipped tar of `root`, entries sorted, with no times, owners or permissions beyond
/// "executable or not".
fn pack(root: &Path) -> Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    add_dir(&mut tar, root, Path::new(""))?;
    let gz = tar.into_inner().context("finishing the bundle")?;
    Ok(gz.finish()?)
}

fn add_dir(
    tar: &mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>,
    dir: &Path,
    rel: &Path,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = rel.join(e.file_name());
        let ty = e.file_type()?;
        if ty.is_dir() {
            tar.append_dir(&path, e.path())?;
            add_dir(tar, &e.path(), &path)?;
        } else {
            tar.append_path_with_name(e.path(), &path)
                .with_context(|| format!("adding {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_deterministic_and_skip_caches() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(
            src.path().join("index.js"),
            "exports.handler = async () => 1;",
        )
        .unwrap();
        std::fs::create_dir(src.path().join(".git")).unwrap();
        std::fs::write(src.path().join(".git/HEAD"), "x").unwrap();
        std::fs::create_dir(src.path().join("lib")).unwrap();
        std::fs::write(src.path().join("lib/a.js"), "1").unwrap();
        let spec = NativeSpec {
            runtime: Runtime::Nodejs { major: 20 },
            handler: "index.handler".into(),
            network: false,
        };
        let a = bundle_bytes("f", src.path(), &spec).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Touch a file: same content, new mtime, same bundle.
        std::fs::write(src.path().join("lib/a.js"), "1").unwrap();
        let b = bundle_bytes("f", src.path(), &spec).unwrap();
        assert_eq!(a, b);
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&a[..]));
        for e in archive.entries().unwrap() {
            names.push(e.unwrap().path().unwrap().display().to_string());
        }
        assert_eq!(names, ["index.js", "lib", "lib/a.js"]);
    }

    #[test]
    fn python_bundles_carry_compiled_code_and_stay_deterministic() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(
            src.path().join("app.py"),
            "def handler(e, c):\n    return e\n",
        )
        .unwrap();
        let spec = NativeSpec {
            runtime: Runtime::Python { minor: 11 },
            handler: "app.handler".into(),
            network: false,
        };
        let a = bundle_bytes("f", src.path(), &spec).unwrap();
        let b = bundle_bytes("f", src.path(), &spec).unwrap();
        assert_eq!(a, b, "two packagings of the same code differ");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&a[..]));
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        if which("python3.11") {
            assert!(
                names.iter().any(|n| n.starts_with("__pycache__/app.")),
                "{names:?}"
            );
        }
    }

    fn which(program: &str) -> bool {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn provided_without_bootstrap_says_what_to_add() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("main.sh"), "echo").unwrap();
        let spec = NativeSpec {
            runtime: Runtime::Provided,
            handler: String::new(),
            network: false,
        };
        let e = bundle_bytes("f", src.path(), &spec)
            .unwrap_err()
            .to_string();
        assert!(e.contains("executable named `bootstrap`"), "{e}");
    }
}
