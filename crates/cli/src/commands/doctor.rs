use crate::output::{print_json, table};
use anyhow::{Context, Result};
use serde::Serialize;
use std::process::ExitCode;
use wisp_core::Runtime;

/// Check what this host gives native functions: which runtimes are installed and which
/// sandbox protections (namespaces, cgroups, seccomp) are available. Exits 1 when a
/// protection is missing, so scripts can insist on all of them.
#[derive(clap::Args)]
pub struct Doctor {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Check {
    kind: &'static str,
    name: String,
    ok: bool,
    detail: String,
}

impl Doctor {
    pub async fn execute(self) -> Result<ExitCode> {
        let exe = std::env::current_exe().context("finding the wisp executable")?;
        let sandboxes = wisp_sandbox::Sandboxes::new(exe).context("probing sandboxes")?;
        let mut checks: Vec<Check> = sandboxes
            .protections()
            .iter()
            .map(|p| Check {
                kind: "sandbox",
                name: p.name.to_string(),
                ok: p.available,
                detail: p.detail.clone(),
            })
            .collect();
        let runtimes = [
            Runtime::Python { minor: 11 },
            Runtime::Python { minor: 12 },
            Runtime::Python { minor: 13 },
            Runtime::Nodejs { major: 18 },
            Runtime::Nodejs { major: 20 },
            Runtime::Nodejs { major: 22 },
        ];
        for r in runtimes {
            let (ok, detail) = match wisp_native::resolve(r) {
                Ok(i) => (true, format!("{} at {}", i.version, i.program.display())),
                Err(e) => (false, e),
            };
            checks.push(Check {
                kind: "runtime",
                name: r.to_string(),
                ok,
                detail,
            });
        }
        let missing = checks.iter().any(|c| c.kind == "sandbox" && !c.ok);
        if self.json {
            print_json(&checks)?;
        } else {
            let rows: Vec<Vec<String>> = checks
                .iter()
                .map(|c| {
                    vec![
                        c.kind.to_string(),
                        c.name.clone(),
                        if c.ok { "ok" } else { "MISSING" }.to_string(),
                        c.detail.clone(),
                    ]
                })
                .collect();
            table(&["KIND", "NAME", "STATUS", "DETAIL"], &rows);
            if missing {
                eprintln!(
                    "wisp: some sandbox protections are missing: native functions on this host run without them"
                );
            }
        }
        Ok(if missing {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}
