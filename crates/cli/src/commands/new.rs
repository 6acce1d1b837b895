//! `wisp new NAME --template T`: a function directory that deploys as it is, from templates
//! embedded in the binary.

use crate::output::print_json;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Make a new function directory from a template: wisp.yaml, the code and how to build it.
#[derive(clap::Args)]
pub struct New {
    /// The function's name (lowercase letters, digits and `-`); also its directory, its app
    /// and its route `GET /NAME`.
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// The template: rust, python, node, js-wasm or python-wasm (`wisp new --list`).
    #[arg(short, long, required_unless_present = "list")]
    pub template: Option<String>,
    /// Where to create it (default: ./NAME). It must not exist, or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// List the templates.
    #[arg(long)]
    pub list: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

struct Template {
    name: &'static str,
    description: &'static str,
    /// What a machine needs to build or run it, shown by `--list`.
    needs: &'static str,
    /// (path in the new directory, contents with `{{name}}` and friends).
    files: &'static [(&'static str, &'static str)],
}

macro_rules! file {
    ($dest:literal, $src:literal) => {
        ($dest, include_str!(concat!("../../templates/", $src)))
    };
}

const WIT: [(&str, &str); 8] = [
    file!("wit/world.wit", "wit/world.wit"),
    file!("wit/deps/cli.wit", "wit/deps/cli.wit"),
    file!("wit/deps/clocks.wit", "wit/deps/clocks.wit"),
    file!("wit/deps/filesystem.wit", "wit/deps/filesystem.wit"),
    file!("wit/deps/http.wit", "wit/deps/http.wit"),
    file!("wit/deps/io.wit", "wit/deps/io.wit"),
    file!("wit/deps/random.wit", "wit/deps/random.wit"),
    file!("wit/deps/sockets.wit", "wit/deps/sockets.wit"),
];

const TEMPLATES: &[Template] = &[
    Template {
        name: "rust",
        description: "WebAssembly component in Rust (wasi:http), built by `wisp deploy` with cargo",
        needs: "Rust with `rustup target add wasm32-wasip2`",
        files: &[
            file!("wisp.yaml", "rust/wisp.yaml"),
            file!("Cargo.toml", "rust/Cargo.toml.tmpl"),
            file!("Cargo.lock", "rust/Cargo.lock.tmpl"),
            file!("src/lib.rs", "rust/src/lib.rs"),
            file!(".gitignore", "rust/gitignore.tmpl"),
        ],
    },
    Template {
        name: "python",
        description: "AWS Lambda handler in Python, run natively in a sandbox",
        needs: "Python 3 on the node",
        files: &[
            file!("wisp.yaml", "python/wisp.yaml"),
            file!("app.py", "python/app.py"),
            file!(".gitignore", "python/gitignore.tmpl"),
        ],
    },
    Template {
        name: "node",
        description: "AWS Lambda handler in Node.js, run natively in a sandbox",
        needs: "Node.js on the node",
        files: &[
            file!("wisp.yaml", "node/wisp.yaml"),
            file!("index.js", "node/index.js"),
            file!(".gitignore", "node/gitignore.tmpl"),
        ],
    },
    Template {
        name: "js-wasm",
        description: "WebAssembly component in JavaScript (wasi:http), built with componentize-js",
        needs: "Node.js and `npm install` (@bytecodealliance/componentize-js)",
        files: &[
            file!("wisp.yaml", "js-wasm/wisp.yaml"),
            file!("app.js", "js-wasm/app.js"),
            file!("package.json", "js-wasm/package.json"),
            file!(".gitignore", "js-wasm/gitignore.tmpl"),
        ],
    },
    Template {
        name: "python-wasm",
        description: "WebAssembly component in Python (wasi:http), built with componentize-py",
        needs: "`pip install componentize-py`",
        files: &[
            file!("wisp.yaml", "python-wasm/wisp.yaml"),
            file!("app.py", "python-wasm/app.py"),
            file!(".gitignore", "python-wasm/gitignore.tmpl"),
        ],
    },
];

impl Template {
    fn wit(&self) -> bool {
        self.name.ends_with("-wasm")
    }

    fn all_files(&self) -> Vec<(&'static str, &'static str)> {
        let mut files = self.files.to_vec();
        if self.wit() {
            files.extend(WIT);
        }
        files
    }
}

#[derive(Serialize)]
struct Listed {
    name: &'static str,
    description: &'static str,
    needs: &'static str,
}

#[derive(Serialize)]
struct Created {
    name: String,
    template: &'static str,
    dir: PathBuf,
    files: Vec<&'static str>,
    route: String,
}

impl New {
    pub async fn execute(self) -> Result<ExitCode> {
        if self.list {
            return list(self.json);
        }
        let (Some(name), Some(template)) = (self.name, self.template) else {
            bail!("give a name and a template: `wisp new NAME --template TEMPLATE`")
        };
        let name = wisp_manifest::function_name(&name).map_err(anyhow::Error::msg)?;
        let Some(template) = TEMPLATES.iter().find(|t| t.name == template) else {
            let names: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
            bail!(
                "unknown template `{template}`: use one of {} (`wisp new --list` describes them)",
                names.join(", ")
            );
        };
        let dir = self.dir.unwrap_or_else(|| PathBuf::from(name.as_str()));
        let files = create(&dir, name.as_str(), template)?;
        let created = Created {
            name: name.to_string(),
            template: template.name,
            dir: dir.clone(),
            files,
            route: format!("GET /{name}"),
        };
        if self.json {
            print_json(&created)?;
        } else {
            let shown = dir.display();
            println!(
                "created {shown}/ from the `{}` template: {}",
                template.name,
                created.files.join(", ")
            );
            println!("It needs {}.", template.needs);
            println!("Next, with a node running (`wisp up`):");
            if template.name == "js-wasm" {
                println!("  (cd {shown} && npm install)   # once: the build tool");
            }
            println!("  wisp deploy {shown}");
            println!("  curl http://127.0.0.1:8080/{name}");
            println!(
                "or `wisp dev {shown}`: deploys, then redeploys on every save and shows the logs."
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn list(json: bool) -> Result<ExitCode> {
    if json {
        let listed: Vec<Listed> = TEMPLATES
            .iter()
            .map(|t| Listed {
                name: t.name,
                description: t.description,
                needs: t.needs,
            })
            .collect();
        print_json(&listed)?;
    } else {
        for t in TEMPLATES {
            println!("{:<12} {} (needs {})", t.name, t.description, t.needs);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the template's files into `dir`, which must not exist or be empty.
fn create(dir: &Path, name: &str, template: &Template) -> Result<Vec<&'static str>> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} already exists and is not empty: choose another name, or another directory with --dir (wisp new does not overwrite files)",
                    dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => bail!(
            "{} exists and is a file: choose another name, or a directory with --dir",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    let (python, node) = host_runtimes();
    let mut written = Vec::new();
    for (path, text) in template.all_files() {
        let text = text
            .replace("{{name}}", name)
            .replace("{{python_runtime}}", &python)
            .replace("{{node_runtime}}", &node);
        let dest = dir.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
        if !path.starts_with("wit/deps/") {
            written.push(path);
        }
    }
    if template.wit() {
        written.push("wit/deps/*.wit");
    }
    Ok(written)
}

/// The runtimes the native templates name: this machine's Python 3 and Node.js, as a
/// node on it runs them (a node runs a function only with the exact minor/major version it
/// names), else python3.12 / nodejs22.x.
fn host_runtimes() -> (String, String) {
    let out = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    };
    let python = out("python3", &["-c", "import sys; print(sys.version_info[1])"])
        .map(|minor| format!("python3.{minor}"))
        .unwrap_or_else(|| "python3.12".to_string());
    let node = out("node", &["-p", "process.versions.node.split('.')[0]"])
        .map(|major| format!("nodejs{major}.x"))
        .unwrap_or_else(|| "nodejs22.x".to_string());
    (python, node)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every template's wisp.yaml is a valid manifest once written out.
    #[test]
    fn every_template_makes_a_valid_manifest() {
        for t in TEMPLATES {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("greet");
            create(&dir, "greet", t).unwrap();
            let m = wisp_manifest::load(&dir.join("wisp.yaml"))
                .unwrap_or_else(|e| panic!("template {}: {e}", t.name));
            assert_eq!(m.app, "greet");
            let f = m.function("greet").expect("the function");
            assert_eq!(f.routes.len(), 1, "{}", t.name);
            assert_eq!(f.routes[0].to_string(), "GET /greet", "{}", t.name);
            assert_eq!(f.build.is_some(), t.wit(), "{}", t.name);
            for (path, _) in t.all_files() {
                let text = std::fs::read_to_string(dir.join(path)).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{}: a placeholder is left in {path}",
                    t.name
                );
            }
        }
    }

    #[test]
    fn a_non_empty_directory_is_not_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
        let e = create(tmp.path(), "greet", &TEMPLATES[0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists and is not empty"), "{e}");
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "nothing was written"
        );
    }
}
