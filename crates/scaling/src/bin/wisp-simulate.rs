//! `wisp-simulate`: replays an invocation trace through keep-alive policies, or generates
//! a synthetic Azure-like trace. See `--help`.
#![forbid(unsafe_code)]

use std::io::{self, BufReader, Write};
use std::process::ExitCode;
use wisp_scaling::generate::{GenerateConfig, generate};
use wisp_scaling::sim::{compare, render_table, trace_stats};
use wisp_scaling::{FIXED_10_MIN, Policy, trace};

const USAGE: &str = "\
usage:
  wisp-simulate TRACE.csv [--policy POLICY]... [--json]
      Replays TRACE.csv (rows function,timestamp_ms,duration_ms; `-` for stdin) through
      each policy (default: adaptive and fixed:10m) and prints a comparison with the
      fixed 10-minute keep-alive (always simulated as the baseline).
      POLICY: adaptive | adaptive:FIELD=VALUE,... | fixed | fixed:DURATION (e.g. fixed:20m)
  wisp-simulate generate [--functions N] [--hours H] [--seed S] [--max-per-day R]
      Writes a synthetic Azure-like trace to stdout (defaults: 200 functions, 24 hours,
      seed 1, at most 10000 calls a day per function).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("generate") => run_generate(&args[1..]),
        Some(_) => run_simulate(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wisp-simulate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Takes the value of `--flag VALUE` (or `--flag=VALUE`) at `args[*i]`.
fn value<'a>(args: &'a [String], i: &mut usize) -> Result<&'a str, String> {
    let arg = &args[*i];
    if let Some((_, v)) = arg.split_once('=') {
        return Ok(v);
    }
    *i += 1;
    args.get(*i)
        .map(String::as_str)
        .ok_or_else(|| format!("{arg} needs a value\n\n{USAGE}"))
}

fn run_simulate(args: &[String]) -> Result<(), String> {
    let (mut path, mut policies, mut json) = (None, Vec::new(), false);
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].split('=').next().unwrap_or_default();
        match flag {
            "--json" => json = true,
            "--policy" => policies.push(value(args, &mut i)?.parse::<Policy>()?),
            f if f.starts_with("--") => return Err(format!("unknown option {f}\n\n{USAGE}")),
            _ if path.is_none() => path = Some(args[i].clone()),
            _ => return Err(format!("unexpected argument {:?}\n\n{USAGE}", args[i])),
        }
        i += 1;
    }
    let path = path.ok_or_else(|| format!("no trace given\n\n{USAGE}"))?;
    if policies.is_empty() {
        policies = vec![Policy::default(), FIXED_10_MIN];
    }
    let parsed = if path == "-" {
        trace::parse_csv(io::stdin().lock())
    } else {
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        trace::parse_csv(BufReader::with_capacity(1 << 20, file))
    };
    let trace = parsed.map_err(|e| format!("{path}: {e}"))?;
    let stats = trace_stats(&trace);
    let reports = compare(&trace, &policies);
    let out = if json {
        let v = serde_json::json!({ "trace": stats, "policies": reports });
        serde_json::to_string_pretty(&v).map_err(|e| e.to_string())? + "\n"
    } else {
        render_table(&stats, &reports)
    };
    io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| e.to_string())
}

fn run_generate(args: &[String]) -> Result<(), String> {
    let mut cfg = GenerateConfig::default();
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].split('=').next().unwrap_or_default();
        let bad =
            |v: &str| format!("{flag}: {v:?} is not a valid number (hours and rates must be > 0)");
        match flag {
            "--functions" => {
                let v = value(args, &mut i)?;
                cfg.functions = v.parse().map_err(|_| bad(v))?;
            }
            "--hours" => {
                let v = value(args, &mut i)?;
                cfg.hours = v
                    .parse()
                    .ok()
                    .filter(|h: &f64| *h > 0.0)
                    .ok_or_else(|| bad(v))?;
            }
            "--seed" => {
                let v = value(args, &mut i)?;
                cfg.seed = v.parse().map_err(|_| bad(v))?;
            }
            "--max-per-day" => {
                let v = value(args, &mut i)?;
                cfg.max_per_day = v
                    .parse()
                    .ok()
                    .filter(|r: &f64| *r > 0.0)
                    .ok_or_else(|| bad(v))?;
            }
            _ => return Err(format!("unknown argument {:?}\n\n{USAGE}", args[i])),
        }
        i += 1;
    }
    let s = generate(&cfg);
    eprintln!(
        "generated {} invocations of {} functions ({}) over {} h, seed {}",
        s.rows.len(),
        cfg.functions,
        s.kind_summary(),
        cfg.hours,
        cfg.seed
    );
    let out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
    s.write_csv(out).map_err(|e| e.to_string())
}
