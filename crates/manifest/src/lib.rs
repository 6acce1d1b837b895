//! Reads and validates an app's `wisp.yaml` into a resolved [`Manifest`].
//!
//! This crate is for turning the file a user writes into checked domain values
//! ([`wisp_core::FunctionName`], [`wisp_core::RouteSpec`], [`wisp_core::Limits`]) with
//! errors that name the file, line, column and field and say what to write instead. It
//! touches the file system only to read the manifest and to check that each function's
//! `source` exists. It is not for building sources, talking to the Wisp server or
//! deploying: `wisp deploy` does that with the manifest this crate returns.
//!
//! ```yaml
//! app: shop
//! functions:
//!   get-user:
//!     source: ./get-user        # a `.wasm` file, or a Rust crate directory
//!     routes:
//!       - GET /users/{id}
//!     env:
//!       GREETING: Hello
//!     limits:
//!       timeout: 10s
//!       memory: 128MiB
//!   report:
//!     source: ./report          # a native function: the directory of a Lambda handler
//!     runtime: python3.11       # python3.X, nodejs<major>.x or provided
//!     handler: app.handler
//!     network: true             # outbound network (off by default)
//! ```
#![forbid(unsafe_code)]

mod check;
mod suggest;
#[cfg(test)]
mod tests;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A parsed and validated `wisp.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The app's name (same rules as a function name).
    pub app: String,
    /// The manifest's path, as given to [`load`] or [`parse`].
    pub file: PathBuf,
    /// The manifest's directory, against which relative sources are resolved
    /// (`.` when the path has no directory part).
    pub dir: PathBuf,
    /// The functions, in the order the file lists them.
    pub functions: Vec<FunctionManifest>,
}

impl Manifest {
    /// The function called `name`, if the manifest has one.
    pub fn function(&self, name: &str) -> Option<&FunctionManifest> {
        self.functions.iter().find(|f| f.name.as_str() == name)
    }
}

/// One function of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionManifest {
    pub name: wisp_core::FunctionName,
    pub source: Source,
    /// `build:`: a command that makes the function's component, run in `source` (a
    /// directory) by `wisp deploy`; `None` to deploy `source` as it is (a `.wasm` file, or a
    /// Rust crate built with cargo).
    pub build: Option<BuildSpec>,
    /// Set for a native function (`runtime:`, `handler:`, `network:`); `None` for WebAssembly.
    pub native: Option<wisp_core::NativeSpec>,
    pub routes: Vec<wisp_core::RouteSpec>,
    pub env: BTreeMap<String, String>,
    /// The function's limits, with [`wisp_core::Limits::default`] for those not given.
    pub limits: wisp_core::Limits,
    /// Which scaling limits the manifest sets itself: those it leaves out keep what
    /// `wisp scale` set on the deployed function.
    pub scaling_set: ScalingSet,
    /// `instance_reuse: true`: an instance serves requests one after another instead of a
    /// fresh instance per request (the default).
    pub instance_reuse: bool,
    /// `webhook:`: the function's routes accept only signed requests.
    pub webhook: Option<wisp_core::WebhookSpec>,
    /// `schedule:`: when the function runs by itself.
    pub schedules: Vec<wisp_core::ScheduleSpec>,
    /// `s3:`: object-storage events that invoke the function.
    pub object_triggers: Vec<wisp_core::ObjectTrigger>,
    /// `async:`: retries, maximum event age and destinations of async invocations.
    pub async_config: Option<wisp_core::AsyncConfig>,
    /// `queue:`: a queue whose messages invoke the function in batches.
    pub queue: Option<wisp_core::QueueSubscription>,
    /// `outbound: [objects, self]`: node services a WebAssembly function may call.
    pub outbound: Vec<wisp_core::HostService>,
    /// `outbound: [{objects: [photos]}]`: the buckets the objects grant is limited to
    /// (empty: all).
    pub object_buckets: Vec<String>,
    /// 1-based line of the function's key in the manifest.
    pub line: usize,
}

/// A function's `build:` (as Spin's `[component.build]`): `command` runs with `sh -c` in the
/// function's `source` directory and writes the component at `output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// The shell command, as written.
    pub command: String,
    /// The `.wasm` the command writes: `build.output` joined onto the source directory.
    pub output: PathBuf,
}

/// Which of `max_concurrency`, `reserved_concurrency` and `provisioned_concurrency` a
/// function's `limits:` gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScalingSet {
    pub max_concurrency: bool,
    pub reserved_concurrency: bool,
    pub provisioned_concurrency: bool,
}

/// Where a function's code comes from. The path is absolute, or joined onto the manifest's
/// directory; it existed when the manifest was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A WebAssembly component, deployed as is.
    WasmFile(PathBuf),
    /// A Rust crate directory (it has a `Cargo.toml`), built for `wasm32-wasip2` on deploy.
    RustCrate(PathBuf),
    /// A native function's code directory, packaged as it is (with its dependencies
    /// installed, and a Rust crate of a `provided` function built for the host); or the
    /// directory a WebAssembly function's `build.command` runs in.
    Directory(PathBuf),
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::WasmFile(p) | Source::RustCrate(p) | Source::Directory(p) => p,
        }
    }
}

/// Why a manifest could not be read. Displays as `file:line:column: field: message`, leaving
/// out the parts that are not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ManifestError {
    /// The manifest's path, as given.
    pub file: PathBuf,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column (in characters).
    pub column: Option<usize>,
    /// Dotted path of the field at fault, e.g. `functions.get-user.limits.timeout`.
    pub field: Option<String>,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl ManifestError {
    fn render(&self) -> String {
        let mut s = self.file.display().to_string();
        if let Some(line) = self.line {
            s.push_str(&format!(":{line}"));
            if let Some(col) = self.column {
                s.push_str(&format!(":{col}"));
            }
        }
        if let Some(field) = &self.field {
            s.push_str(": ");
            s.push_str(field);
        }
        s.push_str(": ");
        s.push_str(&self.message);
        s
    }
}

/// Reads and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let error = |line: Option<usize>, message: String| ManifestError {
        file: path.to_path_buf(),
        line,
        column: None,
        field: None,
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_string(),
            std::io::ErrorKind::IsADirectory => "it is a directory, not a file".to_string(),
            _ => e.to_string(),
        };
        error(
            None,
            format!("cannot read the manifest: {why}; check the path, or create it"),
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|b| **b == b'\n').count();
        error(
            Some(line),
            "the manifest is not UTF-8 text: save it as UTF-8".to_string(),
        )
    })?;
    parse(&text, path)
}

/// Checks a function name as the manifest does (`wisp new NAME` uses it), with a suggestion
/// when the name is close to a valid one.
pub fn function_name(name: &str) -> Result<wisp_core::FunctionName, String> {
    wisp_core::FunctionName::new(name).map_err(|e| check::name_error("function", &e))
}

/// Parses and validates manifest text. `file` names the manifest in errors, and relative
/// sources are resolved against its directory (and must exist).
pub fn parse(text: &str, file: &Path) -> Result<Manifest, ManifestError> {
    check::Checker::new(text, file).manifest()
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::WasmFile(p) => write!(f, "{}", p.display()),
            Source::RustCrate(p) => write!(f, "{} (Rust crate)", p.display()),
            Source::Directory(p) => write!(f, "{}", p.display()),
        }
    }
}
