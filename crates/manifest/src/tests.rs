use super::*;
use proptest::prelude::*;
use std::fs;
use tempfile::TempDir;
use wisp_core::{Limits, Method};

/// A directory with `hello.wasm`, `other.wasm`, a crate `get-user/`, a directory `empty/`
/// without a Cargo.toml and a non-wasm file `notes.txt`.
fn project() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("hello.wasm"), b"\0asm").unwrap();
    fs::write(dir.path().join("other.wasm"), b"\0asm").unwrap();
    fs::write(dir.path().join("notes.txt"), "hi").unwrap();
    fs::create_dir(dir.path().join("get-user")).unwrap();
    fs::write(
        dir.path().join("get-user/Cargo.toml"),
        "[package]\nname = \"get-user\"\n",
    )
    .unwrap();
    fs::create_dir(dir.path().join("empty")).unwrap();
    dir
}

fn parse_in(dir: &TempDir, text: &str) -> Result<Manifest, ManifestError> {
    parse(text, &dir.path().join("wisp.yaml"))
}

/// Parses `text` (in a fresh project dir) and returns the error, which must be one.
fn error(text: &str) -> ManifestError {
    let dir = project();
    match parse_in(&dir, text) {
        Ok(m) => panic!("expected an error, got {m:?}"),
        Err(e) => e,
    }
}

/// A manifest with one function `a` whose body is `body` (indented 4 spaces).
fn with_function(body: &str) -> String {
    let mut s = "app: shop\nfunctions:\n  a:\n".to_string();
    for line in body.lines() {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

fn assert_at(e: &ManifestError, line: usize, column: usize, field: &str) {
    assert_eq!(
        (e.line, e.column, e.field.as_deref()),
        (Some(line), Some(column), Some(field)),
        "{e}"
    );
}

const FULL: &str = "\
app: shop
functions:
  get-user:
    source: ./get-user
    routes:
      - GET /users/{id}
      - DELETE /users/{id}
    env:
      GREETING: Hello
      EMPTY: \"\"
    limits:
      timeout: 10s
      memory: 64MiB
      max_body: 1MiB
      max_concurrency: 5
  hello:
    source: hello.wasm
";

#[test]
fn parses_a_full_manifest() {
    let dir = project();
    let m = parse_in(&dir, FULL).unwrap();
    assert_eq!(m.app, "shop");
    assert_eq!(m.file, dir.path().join("wisp.yaml"));
    assert_eq!(m.dir, dir.path());
    let names: Vec<&str> = m.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["get-user", "hello"], "file order");

    let f = &m.functions[0];
    assert_eq!(f.line, 3);
    assert_eq!(f.source, Source::RustCrate(dir.path().join("get-user")));
    assert_eq!(f.routes.len(), 2);
    assert_eq!(f.routes[0].method, Method::Get);
    assert_eq!(f.routes[1].to_string(), "DELETE /users/{id}");
    assert_eq!(f.env.get("GREETING").map(String::as_str), Some("Hello"));
    assert_eq!(f.env.get("EMPTY").map(String::as_str), Some(""));
    assert_eq!(
        f.limits,
        Limits {
            timeout_ms: 10_000,
            memory_bytes: 64 * 1024 * 1024,
            max_body_bytes: 1024 * 1024,
            max_concurrency: 5,
            ..Limits::default()
        }
    );

    let h = m.function("hello").unwrap();
    assert_eq!(h.line, 16);
    assert_eq!(h.source, Source::WasmFile(dir.path().join("hello.wasm")));
    assert_eq!(h.source.path(), dir.path().join("hello.wasm"));
    assert!(h.routes.is_empty());
    assert!(h.env.is_empty());
    assert_eq!(h.limits, Limits::default());
}

#[test]
fn load_reads_the_file() {
    let dir = project();
    let path = dir.path().join("wisp.yaml");
    fs::write(&path, FULL).unwrap();
    let m = load(&path).unwrap();
    assert_eq!(m, parse_in(&dir, FULL).unwrap());
}

#[test]
fn load_reports_a_missing_file() {
    let dir = project();
    let path = dir.path().join("nope.yaml");
    let e = load(&path).unwrap_err();
    assert_eq!(e.file, path);
    assert_eq!((e.line, e.column, e.field.as_deref()), (None, None, None));
    assert!(e.message.contains("file not found"), "{e}");
}

#[test]
fn load_reports_non_utf8_with_its_line() {
    let dir = project();
    let path = dir.path().join("wisp.yaml");
    fs::write(&path, b"app: shop\nfunctions: \xff\n").unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("UTF-8"), "{e}");
}

#[test]
fn a_bare_file_name_resolves_against_the_current_directory() {
    let dir = project();
    let abs = dir.path().join("hello.wasm");
    let text = format!(
        "app: shop\nfunctions:\n  a:\n    source: {}\n",
        abs.display()
    );
    let m = parse(&text, Path::new("wisp.yaml")).unwrap();
    assert_eq!(m.dir, Path::new("."));
    assert_eq!(m.file, Path::new("wisp.yaml"));
    assert_eq!(m.functions[0].source, Source::WasmFile(abs));
}

#[test]
fn optional_fields_may_be_left_blank() {
    let dir = project();
    let m = parse_in(
        &dir,
        &with_function("source: hello.wasm\nroutes:\nenv:\nlimits:\n"),
    )
    .unwrap();
    let f = &m.functions[0];
    assert!(f.routes.is_empty() && f.env.is_empty());
    assert_eq!(f.limits, Limits::default());
}

#[test]
fn limits_default_field_by_field() {
    let dir = project();
    let m = parse_in(
        &dir,
        &with_function("source: hello.wasm\nlimits:\n  memory: 134217728\n"),
    )
    .unwrap();
    // A plain number is a byte count.
    assert_eq!(
        m.functions[0].limits,
        Limits {
            memory_bytes: 128 * 1024 * 1024,
            ..Limits::default()
        }
    );
}

#[test]
fn error_display_leaves_out_unknown_parts() {
    let mut e = ManifestError {
        file: PathBuf::from("wisp.yaml"),
        line: Some(12),
        column: Some(7),
        field: Some("functions.get-user.limits.timeout".into()),
        message: "`ten` is not a duration".into(),
    };
    assert_eq!(
        e.to_string(),
        "wisp.yaml:12:7: functions.get-user.limits.timeout: `ten` is not a duration"
    );
    e.column = None;
    assert_eq!(
        e.to_string(),
        "wisp.yaml:12: functions.get-user.limits.timeout: `ten` is not a duration"
    );
    e.field = None;
    assert_eq!(e.to_string(), "wisp.yaml:12: `ten` is not a duration");
    e.line = None;
    e.column = Some(3); // a column without a line is not shown
    assert_eq!(e.to_string(), "wisp.yaml: `ten` is not a duration");
}

#[test]
fn unknown_fields_name_the_field_its_place_and_the_allowed_ones() {
    let e = error(&with_function("source: hello.wasm\nrutes:\n  - GET /a\n"));
    assert_at(&e, 5, 5, "functions.a.rutes");
    assert_eq!(
        e.message,
        "unknown field `rutes`, expected one of `source`, `runtime`, `handler`, `network`, `routes`, `env`, `limits`, `instance_reuse`, `webhook`, `schedule`, `s3`, `async`, `queue`, `outbound`, `build`; did you mean `routes`?"
    );

    let e = error("app: shop\nfunctons:\n  a:\n    source: hello.wasm\n");
    assert_at(&e, 2, 1, "functons");
    assert!(
        e.message
            .contains("expected one of `app`, `functions`; did you mean `functions`?"),
        "{e}"
    );

    let e = error(&with_function(
        "source: hello.wasm\nlimits:\n  timeout_ms: 1000\n",
    ));
    assert_at(&e, 6, 7, "functions.a.limits.timeout_ms");
    assert!(e.message.contains("did you mean `timeout`?"), "{e}");

    // No suggestion when nothing is close.
    let e = error(&with_function("source: hello.wasm\nbananas: 3\n"));
    assert!(!e.message.contains("did you mean"), "{e}");
    assert!(e.message.contains("unknown field `bananas`"), "{e}");
}

#[test]
fn a_limit_outside_limits_says_where_it_goes() {
    let e = error(&with_function("source: hello.wasm\nmemory: 64MiB\n"));
    assert_at(&e, 5, 5, "functions.a.memory");
    assert!(e.message.contains("indent it under `limits:`"), "{e}");
}

#[test]
fn yaml_syntax_errors_carry_line_and_column() {
    let e = error("app: shop\nfunctions:\n  a: [unclosed\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.column.is_some(), "{e}");
    assert!(e.field.is_none());
    assert!(e.message.starts_with("invalid YAML: "), "{e}");

    let e = error("app: shop\nfunctions:\n\ta:\n    source: hello.wasm\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("spaces, not tabs"), "{e}");
}

#[test]
fn the_same_route_in_two_functions_names_both_places() {
    let e = error(
        "app: shop
functions:
  a:
    source: hello.wasm
    routes:
      - GET /users/{id}
  b:
    source: other.wasm
    routes:
      - POST /users
      - GET /users/{id}
",
    );
    assert_at(&e, 11, 9, "functions.b.routes[1]");
    let first = format!("{}:6:9", e.file.display());
    assert_eq!(
        e.message,
        format!(
            "route GET /users/{{id}} is defined twice: here and at {first} (functions.a.routes[0]); remove one of them"
        )
    );
}

#[test]
fn the_same_route_twice_in_one_function_is_an_error() {
    let e = error(&with_function(
        "source: hello.wasm\nroutes: [\"GET /a\", \"GET /b\", \"GET /a\"]\n",
    ));
    assert_at(&e, 5, 34, "functions.a.routes[2]");
    assert!(e.message.contains("defined twice"), "{e}");
    assert!(e.message.contains(":5:14 (functions.a.routes[0])"), "{e}");
}

#[test]
fn routes_with_the_same_shape_conflict() {
    let e = error(
        "app: shop
functions:
  a:
    source: hello.wasm
    routes: [\"GET /users/{id}\"]
  b:
    source: hello.wasm
    routes: [\"GET /users/{name}\"]
",
    );
    assert_at(&e, 8, 14, "functions.b.routes[0]");
    assert!(
        e.message
            .starts_with("route GET /users/{name} conflicts with route GET /users/{id} at "),
        "{e}"
    );
    assert!(e.message.contains(":5:14 (functions.a.routes[0])"), "{e}");
}

#[test]
fn the_same_path_with_another_method_is_fine() {
    let dir = project();
    let m = parse_in(
        &dir,
        &with_function("source: hello.wasm\nroutes: [\"GET /a\", \"POST /a\", \"ANY /b\"]\n"),
    )
    .unwrap();
    assert_eq!(m.functions[0].routes.len(), 3);
}

#[test]
fn invalid_routes_are_errors() {
    for (route, needle) in [
        ("GET users", "must start with `/`"),
        ("FETCH /a", "unknown method `FETCH`"),
        ("GET", "must be `METHOD /path`"),
        ("GET /a//b", "empty segment"),
        ("GET /{id}/{id}", "appears twice"),
    ] {
        let e = error(&with_function(&format!(
            "source: hello.wasm\nroutes:\n  - {route}\n"
        )));
        assert_at(&e, 6, 9, "functions.a.routes[0]");
        assert!(e.message.contains(needle), "{route}: {e}");
    }
    let e = error(&with_function("source: hello.wasm\nroutes: GET /a\n"));
    assert_at(&e, 5, 13, "functions.a.routes");
    assert!(e.message.contains("must be a list"), "{e}");
    let e = error(&with_function("source: hello.wasm\nroutes:\n  - 42\n"));
    assert!(e.message.contains("not a number"), "{e}");
}

#[test]
fn duplicate_keys_name_both_lines() {
    let e = error(
        "app: shop\nfunctions:\n  a:\n    source: hello.wasm\n  a:\n    source: other.wasm\n",
    );
    assert_at(&e, 5, 3, "functions.a");
    assert!(
        e.message
            .starts_with("function `a` is defined twice: here and at "),
        "{e}"
    );
    assert!(e.message.contains("wisp.yaml:3:3"), "{e}");

    let e = error(&with_function("source: hello.wasm\nsource: other.wasm\n"));
    assert_at(&e, 5, 5, "functions.a.source");
    assert!(e.message.contains("set twice"), "{e}");
    assert!(e.message.contains("wisp.yaml:4:5"), "{e}");

    let e = error(&with_function("source: hello.wasm\nenv: {A: x, A: y}\n"));
    assert_at(&e, 5, 17, "functions.a.env.A");
    assert!(e.message.contains("wisp.yaml:5:11"), "{e}");
}

#[test]
fn names_are_validated() {
    let e = error("app: shop\nfunctions:\n  Get_User:\n    source: hello.wasm\n");
    assert_at(&e, 3, 3, "functions.Get_User");
    assert!(e.message.contains("did you mean `get-user`?"), "{e}");

    let e = error("app: My Shop\nfunctions:\n  a:\n    source: hello.wasm\n");
    assert_at(&e, 1, 6, "app");
    assert!(e.message.contains("app name `My Shop` is not valid"), "{e}");

    let long = "a".repeat(64);
    let e = error(&format!(
        "app: shop\nfunctions:\n  {long}:\n    source: hello.wasm\n"
    ));
    assert!(e.message.contains("longer than 63"), "{e}");
}

#[test]
fn required_fields_must_be_there() {
    let e = error("functions:\n  a:\n    source: hello.wasm\n");
    assert_eq!(e.field.as_deref(), Some("app"));
    assert!(e.message.starts_with("missing `app`"), "{e}");

    let e = error("app: shop\n");
    assert_eq!(e.field.as_deref(), Some("functions"));
    assert!(e.message.starts_with("missing `functions`"), "{e}");

    let e = error(&with_function("routes: [\"GET /a\"]\n"));
    assert_at(&e, 3, 3, "functions.a.source");
    assert!(e.message.contains("has no `source`"), "{e}");

    let e = error("app: shop\nfunctions:\n  a:\n");
    assert_at(&e, 3, 3, "functions.a");
    assert!(e.message.contains("has no settings"), "{e}");
}

#[test]
fn empty_functions_and_empty_files_are_errors() {
    for text in ["app: shop\nfunctions: {}\n", "app: shop\nfunctions:\n"] {
        let e = error(text);
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("`functions` is empty"), "{e}");
    }
    for text in ["", "\n\n", "# just a comment\n", "---\n"] {
        let e = error(text);
        assert_eq!(e.line, Some(1), "{text:?}: {e}");
        assert!(e.message.starts_with("the manifest is empty"), "{e}");
    }
    let e = error("- a\n- b\n");
    assert!(e.message.contains("must be a map"), "{e}");
}

#[test]
fn sources_must_exist_and_be_wasm_or_a_crate() {
    let dir = project();
    let e = parse_in(&dir, &with_function("source: ./missing.wasm")).unwrap_err();
    assert_at(&e, 4, 13, "functions.a.source");
    let abs = std::path::absolute(dir.path().join("missing.wasm")).unwrap();
    assert!(
        e.message.starts_with(&format!(
            "source `./missing.wasm` not found (resolved to {})",
            abs.display()
        )),
        "{e}"
    );

    let e = error(&with_function("source: ./empty"));
    assert!(
        e.message.contains("is a directory without a `Cargo.toml`"),
        "{e}"
    );

    let e = error(&with_function("source: notes.txt"));
    assert!(e.message.contains("is not a `.wasm` file"), "{e}");

    let e = error(&with_function("source: get-user/Cargo.toml"));
    assert!(
        e.message
            .contains("point `source` at the crate's directory instead, e.g. `source: get-user`"),
        "{e}"
    );

    for blank in ["source:", "source: ''"] {
        let e = error(&with_function(blank));
        assert_eq!(e.field.as_deref(), Some("functions.a.source"));
        assert!(e.message.contains("`source` is empty"), "{e}");
    }
    let e = error(&with_function("source: [a.wasm]"));
    assert!(e.message.contains("must be a path, not a list"), "{e}");
}

#[test]
fn env_values_must_be_strings_and_names_valid() {
    let dir = project();
    let m = parse_in(
        &dir,
        &with_function("source: hello.wasm\nenv:\n  PORT: \"8080\"\n  _X1: 'yes'\n"),
    )
    .unwrap();
    assert_eq!(m.functions[0].env["PORT"], "8080");
    assert_eq!(m.functions[0].env["_X1"], "yes");

    // Unquoted numbers and booleans are errors that show the value as written, quoted.
    for (value, kind) in [
        ("8080", "a number"),
        ("1.10", "a number"),
        ("010", "a number"),
        ("true", "a boolean"),
        ("yes", "a boolean"),
    ] {
        let e = error(&with_function(&format!(
            "source: hello.wasm\nenv:\n  V: {value}\n"
        )));
        assert_at(&e, 6, 10, "functions.a.env.V");
        assert_eq!(
            e.message,
            format!(
                "env var `V` is {kind} in YAML, but env values are strings: quote it, `V: \"{value}\"`"
            )
        );
    }

    let e = error(&with_function("source: hello.wasm\nenv:\n  V:\n"));
    assert!(e.message.contains("has no value"), "{e}");
    let e = error(&with_function("source: hello.wasm\nenv:\n  V: [1]\n"));
    assert!(e.message.contains("must be a string, not a list"), "{e}");

    for bad in ["1X", "my-var", "A.B"] {
        let e = error(&with_function(&format!(
            "source: hello.wasm\nenv:\n  {bad}: x\n"
        )));
        assert_at(&e, 6, 7, &format!("functions.a.env.{bad}"));
        assert!(e.message.contains("is not valid"), "{e}");
    }

    let e = error(&with_function("source: hello.wasm\nenv:\n  - A=1\n"));
    assert!(e.message.contains("write `A: 1` instead of `- A=1`"), "{e}");
}

#[test]
fn limits_are_parsed_and_validated() {
    let cases = [
        ("timeout: ten", "timeout", "`ten` is not a duration"),
        ("timeout: 10", "timeout", "`10` is not a duration"),
        ("timeout: 0s", "timeout", "out of range"),
        ("timeout: 16m", "timeout", "between 1ms and 15m"),
        ("memory: lots", "memory", "`lots` is not a size"),
        ("memory: 512KiB", "memory", "between 1MiB and 4GiB"),
        ("max_body: 1GiB", "max_body", "at most 128MiB"),
        (
            "max_concurrency: 0",
            "max_concurrency",
            "between 1 and 10000",
        ),
        ("max_concurrency: -1", "max_concurrency", "out of range"),
        (
            "max_concurrency: 2.5",
            "max_concurrency",
            "not a whole number",
        ),
        ("max_concurrency: '5'", "max_concurrency", "without quotes"),
        ("timeout:", "timeout", "remove it to use the default (30s)"),
        ("timeout: [1s]", "timeout", "must be a single value"),
    ];
    for (line, field, needle) in cases {
        let e = error(&with_function(&format!(
            "source: hello.wasm\nlimits:\n  {line}\n"
        )));
        assert_eq!(e.line, Some(6), "{line}: {e}");
        assert_eq!(
            e.field.as_deref(),
            Some(format!("functions.a.limits.{field}").as_str()),
            "{e}"
        );
        assert!(e.message.contains(needle), "{line}: {e}");
    }
    let e = error(&with_function(
        "source: hello.wasm\nlimits:\n  timeout: ten\n",
    ));
    assert_eq!(e.column, Some(16), "points at the value: {e}");
    assert_eq!(
        e.message,
        "`ten` is not a duration: write a number with a unit, e.g. `500ms`, `10s` or `2m`"
    );
    let e = error(&with_function("source: hello.wasm\nlimits: 10s\n"));
    assert!(e.message.contains("`limits` must be a map"), "{e}");
}

#[test]
fn anchors_aliases_and_merge_keys_work() {
    let dir = project();
    let m = parse_in(
        &dir,
        "app: shop
functions:
  a: &base
    source: hello.wasm
    env: &env {A: x}
  b:
    <<: *base
    env: *env
    routes: [\"GET /b\"]
",
    )
    .unwrap();
    assert_eq!(m.functions[1].source, m.functions[0].source);
    assert_eq!(m.functions[1].env["A"], "x");
    assert_eq!(m.functions[1].routes.len(), 1);

    let e = error("app: shop\nfunctions:\n  a:\n    source: *nope\n");
    assert_eq!(e.line, Some(4));
    assert!(e.message.starts_with("invalid YAML"), "{e}");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!("app: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let e = error(&deep);
    assert!(e.message.starts_with("invalid YAML"), "{e}");
    let deep = format!("app: {}1{}\n", "{a: ".repeat(500), "}".repeat(500));
    let _ = error(&deep);
}

#[test]
fn multiple_documents_are_an_error() {
    let e = error("app: shop\n---\napp: other\n");
    assert!(e.message.contains("one YAML document"), "{e}");
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = parse(&text, Path::new("wisp.yaml"));
    }

    #[test]
    fn parse_never_panics_on_yaml_like_text(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("app: shop\n"), Just("functions:\n"), Just("  a:\n"), Just("    source: x.wasm\n"),
                Just("    routes:\n"), Just("      - GET /a/{id}\n"), Just("    env:\n"), Just("      A: 1\n"),
                Just("    limits:\n"), Just("      timeout: 5s\n"), Just("      memory: 0\n"),
                Just("- "), Just(": "), Just("\n"), Just("  "), Just("\t"), Just("["), Just("]"), Just("{"),
                Just("}"), Just(","), Just("\""), Just("'"), Just("&a "), Just("*a"), Just("<<: "), Just("? "),
                Just("---\n"), Just("#"), Just("!!str "), Just("|\n"), Just("~"), Just("é"),
            ],
            0..40,
        )
    ) {
        let text: String = parts.concat();
        let _ = parse(&text, Path::new("wisp.yaml"));
    }
}

#[test]
fn instance_reuse_is_a_boolean() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("f.wasm");
    std::fs::write(&wasm, b"\0asm").unwrap();
    let file = dir.path().join("wisp.yaml");
    let yaml = |v: &str| {
        format!("app: a\nfunctions:\n  f:\n    source: ./f.wasm\n    instance_reuse: {v}\n")
    };
    let m = crate::parse(&yaml("true"), &file).unwrap();
    assert!(m.functions[0].instance_reuse);
    let m = crate::parse(&yaml("false"), &file).unwrap();
    assert!(!m.functions[0].instance_reuse);
    let err = crate::parse(&yaml("sometimes"), &file).unwrap_err();
    assert_eq!(err.line, Some(5));
    assert!(err.message.contains("must be `true` or `false`"), "{err}");
}
