//! Turns a function's `source` into component bytes: runs its `build.command` and reads
//! the `.wasm` it writes, reads a `.wasm` file, or builds a Rust crate for `wasm32-wasip2`
//! with cargo.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use wisp_manifest::{BuildSpec, Source};

pub fn component_bytes(
    function: &str,
    source: &Source,
    build: Option<&BuildSpec>,
) -> Result<Vec<u8>> {
    if let Some(build) = build {
        run_build_command(function, source.path(), build)?;
        return std::fs::read(&build.output).with_context(|| {
            format!(
                "function `{function}`: the build command `{}` succeeded but {} cannot be read: make the command write the component there, or fix `build.output` in wisp.yaml",
                build.command,
                build.output.display()
            )
        });
    }
    match source {
        Source::WasmFile(path) => std::fs::read(path)
            .with_context(|| format!("function `{function}`: reading {}", path.display())),
        Source::RustCrate(dir) => {
            let wasm = build_rust_crate(function, dir)?;
            std::fs::read(&wasm)
                .with_context(|| format!("function `{function}`: reading {}", wasm.display()))
        }
        Source::Directory(dir) => bail!(
            "function `{function}`: {} is a directory of native code: set `runtime:` in the manifest",
            dir.display()
        ),
    }
}

/// `sh -c COMMAND` in `dir`. Its output is streamed to stderr (stdout stays free for
/// `--json`); a failure names the function, the command and the exit status.
fn run_build_command(function: &str, dir: &Path, build: &BuildSpec) -> Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(&build.command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("function `{function}`: running `sh -c` for the build command"))?;
    if !status.success() {
        let why = match status.code() {
            Some(127) => {
                " (127: a program in it was not found on PATH; is the build tool installed?)"
                    .to_string()
            }
            Some(126) => " (126: a program in it is not executable)".to_string(),
            Some(code) => format!(" (exit status {code})"),
            None => format!(" ({status})"),
        };
        bail!(
            "function `{function}`: the build command `{}` failed in {}{why}; its output is above",
            build.command,
            dir.display()
        );
    }
    if !build.output.is_file() {
        bail!(
            "function `{function}`: the build command `{}` succeeded but wrote no {}: make it write the component there, or fix `build.output` in wisp.yaml",
            build.command,
            build.output.display()
        );
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// `cargo build --release --target wasm32-wasip2` in `dir`; returns the `.wasm` it made.
fn build_rust_crate(function: &str, dir: &Path) -> Result<PathBuf> {
    let output = Command::new(cargo())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| {
            format!("function `{function}`: running `cargo build` (is cargo on PATH?)")
        })?;
    if !output.status.success() {
        let target_missing = !Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"))
            .unwrap_or(true);
        if target_missing {
            bail!(
                "function `{function}`: building {} failed: the wasm32-wasip2 target is not installed; run `rustup target add wasm32-wasip2`",
                dir.display()
            );
        }
        bail!(
            "function `{function}`: `cargo build --release --target wasm32-wasip2` failed in {} (the compiler's messages are above)",
            dir.display()
        );
    }
    let manifest =
        std::fs::canonicalize(dir.join("Cargo.toml")).unwrap_or_else(|_| dir.join("Cargo.toml"));
    let mut found = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let same_crate = msg["manifest_path"]
            .as_str()
            .map(|p| Path::new(p) == manifest)
            .unwrap_or(false);
        if !same_crate {
            continue;
        }
        if let Some(files) = msg["filenames"].as_array() {
            for f in files.iter().filter_map(|f| f.as_str()) {
                if f.ends_with(".wasm") {
                    found = Some(PathBuf::from(f));
                }
            }
        }
    }
    found.with_context(|| {
        format!(
            "function `{function}`: cargo built {} but produced no .wasm: make the crate a `cdylib` (`[lib] crate-type = [\"cdylib\"]`) exporting wasi:http/incoming-handler",
            dir.display()
        )
    })
}
