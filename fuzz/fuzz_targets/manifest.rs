//! The manifest parser (`wisp_manifest::parse`): any bytes give a manifest or an error,
//! never a panic. Sources resolve against a directory made once, holding what the
//! examples' manifests name (`.` and `./get-user` etc. as Rust crates, `./hello-py` etc.
//! as native code directories, `app.wasm`). A manifest that parses has unique function
//! names and routes; an error names a line and column inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn app_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wisp-fuzz-manifest-{}", std::process::id()));
        let crates = ["hello", "get-user", "list-users", "create-order", "fn"];
        let natives = ["hello-py", "hello-node", "thumbnailer", "report"];
        for d in crates.iter().chain(&natives) {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        for d in crates.iter().chain(&["."]) {
            std::fs::write(dir.join(d).join("Cargo.toml"), "[package]\n").unwrap();
        }
        std::fs::write(dir.join("app.wasm"), b"\0asm").unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = app_dir().join("wisp.yaml");
    match wisp_manifest::parse(text, &file) {
        Ok(m) => {
            let mut names: Vec<&str> = m.functions.iter().map(|f| f.name.as_str()).collect();
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), n, "duplicate function names");
            let mut routes: Vec<String> = m
                .functions
                .iter()
                .flat_map(|f| f.routes.iter().map(|r| r.to_string()))
                .collect();
            let n = routes.len();
            routes.sort_unstable();
            routes.dedup();
            assert_eq!(routes.len(), n, "a route routed twice");
            for f in &m.functions {
                assert!(m.function(f.name.as_str()).is_some());
                assert!(f.line >= 1 && f.line <= text.split(['\n', '\r']).count());
            }
        }
        Err(e) => {
            assert!(!e.message.is_empty());
            // YAML breaks lines at LF, CRLF and a bare CR.
            let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
            if let Some(line) = e.line {
                assert!(
                    line >= 1 && line <= lines + 1,
                    "line {line} of {lines}: {e}"
                );
            }
            if let Some(col) = e.column {
                assert!(col >= 1, "column {col}: {e}");
                assert!(e.line.is_some(), "a column without a line: {e}");
            }
            let _ = e.to_string();
        }
    }
});
