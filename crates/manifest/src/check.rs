//! Walks the YAML tree and turns it into a [`Manifest`], or the first error found.

use crate::suggest::{closest, env_name_like, name_like};
use crate::yaml::{self, Kind, Node, Pos};
use crate::{BuildSpec, FunctionManifest, Manifest, ManifestError, Source};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wisp_core::{
    AsyncConfig, ByteSize, FunctionName, Limits, LimitsError, NameError, NativeSpec, ObjectTrigger,
    QueueSubscription, RouteError, RouteSpec, RouteTable, Runtime, ScheduleSpec, WebhookProvider,
    WebhookSpec, parse_byte_size, parse_duration_ms,
};

type Result<T> = std::result::Result<T, ManifestError>;

const TOP_FIELDS: &[&str] = &["app", "functions"];
const TOP_ALIASES: &[(&str, &str)] = &[
    ("name", "app"),
    ("application", "app"),
    ("fns", "functions"),
];

const FUNCTION_FIELDS: &[&str] = &[
    "source",
    "runtime",
    "handler",
    "network",
    "routes",
    "env",
    "limits",
    "instance_reuse",
    "webhook",
    "schedule",
    "s3",
    "async",
    "queue",
    "outbound",
    "build",
];
const FUNCTION_ALIASES: &[(&str, &str)] = &[
    ("src", "source"),
    ("path", "source"),
    ("file", "source"),
    ("wasm", "source"),
    ("crate", "source"),
    ("dir", "source"),
    ("route", "routes"),
    ("paths", "routes"),
    ("http", "routes"),
    ("endpoints", "routes"),
    ("environment", "env"),
    ("language", "runtime"),
    ("lang", "runtime"),
    ("entrypoint", "handler"),
    ("entry", "handler"),
    ("allow_network", "network"),
    ("services", "outbound"),
    ("schedules", "schedule"),
    ("cron", "schedule"),
    ("rate", "schedule"),
    ("variables", "env"),
    ("vars", "env"),
];

const LIMIT_FIELDS: &[&str] = &[
    "timeout",
    "memory",
    "max_body",
    "max_concurrency",
    "reserved_concurrency",
    "provisioned_concurrency",
];
const LIMIT_ALIASES: &[(&str, &str)] = &[
    ("mem", "memory"),
    ("body", "max_body"),
    ("body_size", "max_body"),
    ("body_limit", "max_body"),
    ("concurrency_limit", "max_concurrency"),
    ("concurrency", "max_concurrency"),
    ("reserved", "reserved_concurrency"),
    ("provisioned", "provisioned_concurrency"),
    ("min_instances", "provisioned_concurrency"),
    ("warm_instances", "provisioned_concurrency"),
    ("time_limit", "timeout"),
];

const EXAMPLE_FUNCTIONS: &str = "`functions: {hello: {source: ./hello}}`";

pub(crate) struct Checker<'a> {
    src: &'a str,
    file: &'a Path,
    dir: PathBuf,
}

/// A map's known fields, each with its key node and value node.
struct Fields<'n> {
    found: Vec<(&'static str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<(&'n Node, &'n Node)> {
        self.found
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, k, v)| (*k, *v))
    }
}

/// A route seen so far, to report both places of a duplicate.
struct SeenRoute {
    route: RouteSpec,
    pos: Pos,
    field: String,
}

/// Where to point for an error about the value of `key: value`: the value, unless it is
/// empty (then the parser's position for it is not helpful).
fn at(key: &Node, value: &Node) -> Pos {
    if matches!(value.kind, Kind::Null) || !value.pos.is_known() {
        key.pos
    } else {
        value.pos
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn fmt_duration(ms: u64) -> String {
    if ms >= 60_000 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

pub(crate) fn name_error(what: &str, e: &NameError) -> String {
    match e {
        NameError::Empty => format!("{what} name cannot be empty: write e.g. `get-user`"),
        NameError::TooLong(s) => {
            format!("{what} name `{s}` is longer than 63 characters: use a shorter name")
        }
        NameError::Invalid(s) => {
            let mut m = format!(
                "{what} name `{s}` is not valid: use lowercase letters, digits and `-`, start with a letter and do not end with `-`"
            );
            match name_like(s) {
                Some(n) => m.push_str(&format!("; did you mean `{n}`?")),
                None => m.push_str(" (e.g. `get-user`)"),
            }
            m
        }
    }
}

/// What to do about a YAML syntax error, from the parser's message.
fn syntax_hint(msg: &str) -> &'static str {
    let m = msg.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&["tab"]) {
        "; indent with spaces, not tabs"
    } else if has(&["flow sequence", "flow mapping", "bracket", "brace"]) {
        "; close every `[` and `{`, and inside them quote values that contain `{`, `}`, `[`, `]` or `,`, e.g. `routes: [\"GET /users/{id}\"]`"
    } else if has(&["mapping values are not allowed"]) {
        "; quote a value that contains `: `, or put a nested map on its own indented lines"
    } else if has(&["quote"]) {
        "; close the quote, or escape quotes inside the value"
    } else if has(&["multiple", "document"]) {
        "; a manifest is one YAML document: remove the `---` line and what follows it"
    } else if has(&["anchor", "unknown value", "alias"]) {
        "; define `&name` before using `*name`"
    } else if has(&["indent", "block", "expected key"]) {
        "; check the indentation: a field must line up with the fields beside it and be indented more than the one it belongs to"
    } else {
        ""
    }
}

fn valid_queue_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 80
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn bad_queue_name(n: &str) -> String {
    format!("`{n}` is not a queue name: 1 to 80 letters, digits, `-` and `_`")
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl<'a> Checker<'a> {
    pub(crate) fn new(src: &'a str, file: &'a Path) -> Self {
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Checker { src, file, dir }
    }

    fn err(&self, pos: Pos, field: &str, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: self.file.to_path_buf(),
            line: (pos.line > 0).then_some(pos.line),
            column: (pos.line > 0 && pos.column > 0).then_some(pos.column),
            field: (!field.is_empty()).then(|| field.to_string()),
            message: message.into(),
        }
    }

    /// `wisp.yaml:8:9`, for messages that point at a second place.
    fn place(&self, pos: Pos) -> String {
        let mut s = self.file.display().to_string();
        if pos.line > 0 {
            s.push_str(&format!(":{}", pos.line));
            if pos.column > 0 {
                s.push_str(&format!(":{}", pos.column));
            }
        }
        s
    }

    pub(crate) fn manifest(&self) -> Result<Manifest> {
        let root = yaml::parse(self.src).map_err(|(msg, pos)| {
            self.err(pos, "", format!("invalid YAML: {msg}{}", syntax_hint(&msg)))
        })?;
        let entries = match &root.kind {
            Kind::Null => {
                return Err(self.err(
                    Pos { line: 1, column: 0 },
                    "",
                    format!(
                        "the manifest is empty: write `app: NAME` and a `functions` map, e.g. `app: shop` and {EXAMPLE_FUNCTIONS}"
                    ),
                ));
            }
            Kind::Map(entries) => entries,
            _ => {
                return Err(self.err(
                    root.pos,
                    "",
                    format!(
                        "the manifest must be a map with `app` and `functions`, not {}: e.g. `app: shop` and {EXAMPLE_FUNCTIONS}",
                        root.describe()
                    ),
                ));
            }
        };
        let fields = self.fields("", entries, TOP_FIELDS, TOP_ALIASES, |key, value| {
            let looks_like_function = matches!(&value.kind, Kind::Map(e)
                if e.iter().any(|(k, _)| matches!(&k.kind, Kind::Str(s) if s == "source")));
            looks_like_function
                .then(|| format!("; to declare function `{key}`, indent it under `functions:`"))
        })?;
        let app = match fields.get("app") {
            Some((k, v)) => self.app(k, v)?,
            None => {
                return Err(self.err(
                    root.pos,
                    "app",
                    "missing `app`: add e.g. `app: shop` (lowercase letters, digits and `-`)",
                ));
            }
        };
        let functions = match fields.get("functions") {
            Some((k, v)) => self.functions(k, v)?,
            None => {
                return Err(self.err(
                    root.pos,
                    "functions",
                    format!(
                        "missing `functions`: add a map of function name to settings, e.g. {EXAMPLE_FUNCTIONS}"
                    ),
                ));
            }
        };
        Ok(Manifest {
            app,
            file: self.file.to_path_buf(),
            dir: self.dir.clone(),
            functions,
        })
    }

    /// The text of a map key. Keys must be scalars.
    fn key_text(&self, path: &str, key: &Node) -> Result<String> {
        match &key.kind {
            Kind::Str(s) => Ok(s.clone()),
            Kind::Seq(_) | Kind::Map(_) => Err(self.err(
                key.pos,
                path,
                format!("a key must be a plain name, not {}", key.describe()),
            )),
            _ => Ok(key.display(self.src)),
        }
    }

    /// Checks a map with a fixed set of fields: every key is known and appears once.
    fn fields<'n>(
        &self,
        path: &str,
        entries: &'n [(Node, Node)],
        allowed: &'static [&'static str],
        aliases: &[(&str, &'static str)],
        hint: impl Fn(&str, &Node) -> Option<String>,
    ) -> Result<Fields<'n>> {
        let mut fields = Fields { found: Vec::new() };
        for (k, v) in entries {
            let key = self.key_text(path, k)?;
            let field = join(path, &key);
            let Some(name) = allowed.iter().find(|a| **a == key) else {
                let list = allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut msg = format!("unknown field `{key}`, expected one of {list}");
                if let Some(h) = hint(&key, v) {
                    msg.push_str(&h);
                } else if let Some(c) = closest(&key, allowed, aliases) {
                    msg.push_str(&format!("; did you mean `{c}`?"));
                }
                return Err(self.err(k.pos, &field, msg));
            };
            if let Some((first, _)) = fields.get(name) {
                return Err(self.err(
                    k.pos,
                    &field,
                    format!(
                        "`{key}` is set twice: here and at {}; keep only one",
                        self.place(first.pos)
                    ),
                ));
            }
            fields.found.push((name, k, v));
        }
        Ok(fields)
    }

    /// Checks a map whose keys are names the user chooses: keys are scalars and unique.
    /// Returns `(key text, key node, value node)` in file order.
    fn named<'n>(
        &self,
        path: &str,
        what: &str,
        entries: &'n [(Node, Node)],
    ) -> Result<Vec<(String, &'n Node, &'n Node)>> {
        let mut out: Vec<(String, &Node, &Node)> = Vec::new();
        for (k, v) in entries {
            let key = self.key_text(path, k)?;
            if let Some((_, first, _)) = out.iter().find(|(n, _, _)| *n == key) {
                return Err(self.err(
                    k.pos,
                    &join(path, &key),
                    format!(
                        "{what} `{key}` is defined twice: here and at {}; rename or remove one of them",
                        self.place(first.pos)
                    ),
                ));
            }
            out.push((key, k, v));
        }
        Ok(out)
    }

    fn app(&self, k: &Node, v: &Node) -> Result<String> {
        let name = match &v.kind {
            Kind::Null => {
                return Err(self.err(k.pos, "app", "`app` has no value: write e.g. `app: shop`"));
            }
            Kind::Seq(_) | Kind::Map(_) => {
                return Err(self.err(
                    v.pos,
                    "app",
                    format!(
                        "`app` must be a name, not {}: write e.g. `app: shop`",
                        v.describe()
                    ),
                ));
            }
            _ => v.display(self.src),
        };
        FunctionName::new(name.clone())
            .map_err(|e| self.err(v.pos, "app", name_error("app", &e)))?;
        Ok(name)
    }

    fn functions(&self, k: &Node, v: &Node) -> Result<Vec<FunctionManifest>> {
        let empty = || {
            self.err(
                at(k, v),
                "functions",
                format!(
                    "`functions` is empty: add at least one function, e.g. {EXAMPLE_FUNCTIONS}"
                ),
            )
        };
        let entries = match &v.kind {
            Kind::Null => return Err(empty()),
            Kind::Map(e) if e.is_empty() => return Err(empty()),
            Kind::Map(e) => e,
            _ => {
                return Err(self.err(
                    v.pos,
                    "functions",
                    format!(
                        "`functions` must be a map of function name to settings, not {}: e.g. {EXAMPLE_FUNCTIONS}",
                        v.describe()
                    ),
                ));
            }
        };
        let mut table = RouteTable::new();
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for (name, fk, fv) in self.named("functions", "function", entries)? {
            let path = join("functions", &name);
            let name = FunctionName::new(name)
                .map_err(|e| self.err(fk.pos, &path, name_error("function", &e)))?;
            out.push(self.function(&path, name, fk, fv, &mut table, &mut seen)?);
        }
        Ok(out)
    }

    fn function(
        &self,
        path: &str,
        name: FunctionName,
        k: &Node,
        v: &Node,
        table: &mut RouteTable<usize>,
        seen: &mut Vec<SeenRoute>,
    ) -> Result<FunctionManifest> {
        let entries = match &v.kind {
            Kind::Map(e) => e,
            Kind::Null => {
                return Err(self.err(
                    k.pos,
                    path,
                    format!(
                        "function `{name}` has no settings: add `source: ./{name}` (a `.wasm` file or a Rust crate directory) indented under it"
                    ),
                ));
            }
            Kind::Str(s) => {
                return Err(self.err(
                    v.pos,
                    path,
                    format!(
                        "function `{name}` must be a map of settings, not a string: write `{name}: {{source: {s}}}`, or `source: {s}` indented on the next line"
                    ),
                ));
            }
            _ => {
                return Err(self.err(
                    v.pos,
                    path,
                    format!(
                        "function `{name}` must be a map of settings, not {}: e.g. `{name}: {{source: ./{name}}}`",
                        v.describe()
                    ),
                ));
            }
        };
        let fields = self.fields(
            path,
            entries,
            FUNCTION_FIELDS,
            FUNCTION_ALIASES,
            |key, _| {
                if LIMIT_FIELDS.contains(&key) {
                    Some(format!("; `{key}` is a limit: indent it under `limits:`"))
                } else if key == "name" {
                    Some("; a function's name is its key under `functions:`".to_string())
                } else {
                    None
                }
            },
        )?;
        let native = self.native(path, &name, k, &fields)?;
        let build_node = fields.get("build");
        if let (Some((bk, _)), Some(n)) = (build_node, &native) {
            return Err(self.err(
                bk.pos,
                &join(path, "build"),
                format!(
                    "`build` is for WebAssembly functions: a native function ({}) is packaged from its `source` directory as it is (pip or npm install its dependencies); remove `build`, or `runtime` for a WebAssembly function",
                    n.runtime
                ),
            ));
        }
        let source = match fields.get("source") {
            Some((sk, sv)) => self.source(
                &join(path, "source"),
                sk,
                sv,
                native.is_some(),
                build_node.is_some(),
            )?,
            None => {
                return Err(self.err(
                    k.pos,
                    &join(path, "source"),
                    format!(
                        "function `{name}` has no `source`: add e.g. `source: ./{name}` (the path of a `.wasm` file or of a Rust crate directory)"
                    ),
                ));
            }
        };
        let routes = match fields.get("routes") {
            Some((rk, rv)) => self.routes(&join(path, "routes"), rk, rv, table, seen)?,
            None => Vec::new(),
        };
        let env = match fields.get("env") {
            Some((ek, ev)) => self.env(&join(path, "env"), ek, ev)?,
            None => BTreeMap::new(),
        };
        let limits = match fields.get("limits") {
            Some((lk, lv)) => self.limits(&join(path, "limits"), lk, lv)?,
            None => Limits::default(),
        };
        let scaling_set = match fields.get("limits") {
            Some((
                _,
                Node {
                    kind: Kind::Map(entries),
                    ..
                },
            )) => {
                let has = |n: &str| {
                    entries
                        .iter()
                        .any(|(k, _)| matches!(&k.kind, Kind::Str(s) if s == n))
                };
                crate::ScalingSet {
                    max_concurrency: has("max_concurrency"),
                    reserved_concurrency: has("reserved_concurrency"),
                    provisioned_concurrency: has("provisioned_concurrency"),
                }
            }
            _ => crate::ScalingSet::default(),
        };
        let instance_reuse = self.flag(path, "instance_reuse", &fields)?;
        if instance_reuse && native.is_some() {
            let (rk, _) = fields.get("instance_reuse").expect("flag was set");
            return Err(self.err(
                rk.pos,
                &join(path, "instance_reuse"),
                "`instance_reuse` is for WebAssembly functions: a native function's instance always serves one request after another (remove the line)",
            ));
        }
        let (outbound, object_buckets) = match fields.get("outbound") {
            Some((ok, ov)) => self.outbound(&join(path, "outbound"), ok, ov, native.is_some())?,
            None => (Vec::new(), Vec::new()),
        };
        let webhook = match fields.get("webhook") {
            Some((wk, wv)) => Some(self.webhook(&join(path, "webhook"), wk, wv, &env)?),
            None => None,
        };
        let schedules = match fields.get("schedule") {
            Some((sk, sv)) => self.schedules(&join(path, "schedule"), sk, sv)?,
            None => Vec::new(),
        };
        let object_triggers = match fields.get("s3") {
            Some((ok, ov)) => self.object_triggers(&join(path, "s3"), ok, ov)?,
            None => Vec::new(),
        };
        let queue = match fields.get("queue") {
            Some((qk, qv)) => Some(self.queue(&join(path, "queue"), qk, qv)?),
            None => None,
        };
        let async_config = match fields.get("async") {
            Some((ak, av)) => Some(self.async_config(&join(path, "async"), ak, av)?),
            None => None,
        };
        let build = match build_node {
            Some((bk, bv)) => Some(self.build(&join(path, "build"), bk, bv, source.path())?),
            None => None,
        };
        Ok(FunctionManifest {
            name,
            source,
            build,
            native,
            webhook,
            schedules,
            object_triggers,
            async_config,
            queue,
            routes,
            env,
            limits,
            scaling_set,
            instance_reuse,
            outbound,
            object_buckets,
            line: k.pos.line,
        })
    }

    /// `outbound: objects`, or a list of `objects` and `self`: the node services a
    /// WebAssembly function may call by outbound HTTP.
    fn outbound(
        &self,
        path: &str,
        k: &Node,
        v: &Node,
        native: bool,
    ) -> Result<(Vec<wisp_core::HostService>, Vec<String>)> {
        if native {
            return Err(self.err(
                k.pos,
                path,
                "`outbound` is for WebAssembly functions; a native function reaches the network (and the node's S3 API) with `network: true`",
            ));
        }
        let names = || {
            wisp_core::HostService::ALL
                .iter()
                .map(|s| format!("`{}`", s.name()))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        let items: Vec<&Node> = match &v.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ => vec![v],
        };
        let mut out = Vec::new();
        let mut buckets: Vec<String> = Vec::new();
        for item in items {
            // `{objects: [bucket, ...]}`: the objects grant, for these buckets only.
            if let Kind::Map(entries) = &item.kind
                && let [(mk, mv)] = entries.as_slice()
                && matches!(&mk.kind, Kind::Str(s) if s.trim() == "objects")
            {
                let names: Vec<&Node> = match &mv.kind {
                    Kind::Seq(v) => v.iter().collect(),
                    _ => vec![mv],
                };
                for n in names {
                    let Kind::Str(b) = &n.kind else {
                        return Err(self.err(
                            n.pos,
                            path,
                            format!(
                                "`objects:` lists bucket names, not {}: e.g. `outbound: [{{objects: [photos, thumbnails]}}]`",
                                n.describe()
                            ),
                        ));
                    };
                    let b = b.trim().to_string();
                    if b.is_empty()
                        || b.len() > 63
                        || !b.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                        })
                    {
                        return Err(self.err(
                            n.pos,
                            path,
                            format!("`{b}` is not a bucket name: use 3 to 63 lowercase letters, digits, `-` and `.`"),
                        ));
                    }
                    if !buckets.contains(&b) {
                        buckets.push(b);
                    }
                }
                if buckets.is_empty() {
                    return Err(self.err(
                        mv.pos,
                        path,
                        "`objects:` needs at least one bucket; write `objects` alone to grant every bucket",
                    ));
                }
                if !out.contains(&wisp_core::HostService::Objects) {
                    out.push(wisp_core::HostService::Objects);
                }
                continue;
            }
            let Kind::Str(s) = &item.kind else {
                return Err(self.err(
                    at(k, item),
                    path,
                    format!(
                        "`outbound` lists node services ({}), not {}: e.g. `outbound: [objects]`",
                        names(),
                        item.describe()
                    ),
                ));
            };
            let Some(service) = wisp_core::HostService::ALL
                .into_iter()
                .find(|x| x.name() == s.trim())
            else {
                return Err(self.err(
                    item.pos,
                    path,
                    format!(
                        "`{}` is not a node service: use {} (`objects`: the S3 API at http://objects.wisp, `self`: other functions' routes at http://self); other outbound HTTP is not allowed",
                        s.trim(),
                        names()
                    ),
                ));
            };
            if !out.contains(&service) {
                out.push(service);
            }
        }
        out.sort();
        buckets.sort();
        Ok((out, buckets))
    }

    /// `queue: NAME` or `queue: {name, batch_size: 1..100 (10), batch_window: 0s..5m}`.
    fn queue(&self, path: &str, k: &Node, v: &Node) -> Result<QueueSubscription> {
        let bad_name = |pos: Pos, n: &str| self.err(pos, path, bad_queue_name(n));
        match &v.kind {
            Kind::Str(n) => {
                let n = n.trim();
                if !valid_queue_name(n) {
                    return Err(bad_name(v.pos, n));
                }
                Ok(QueueSubscription {
                    name: n.to_string(),
                    batch_size: 10,
                    batch_window_ms: 0,
                })
            }
            Kind::Map(entries) => {
                let fields = self.fields(
                    path,
                    entries,
                    &["name", "batch_size", "batch_window"],
                    &[("batch", "batch_size")],
                    |_, _| None,
                )?;
                let Some((npos, name)) = self.string_field(path, &fields, "name")? else {
                    return Err(self.err(k.pos, &join(path, "name"), "a queue subscription needs `name:`, e.g. `queue: {name: orders, batch_size: 10}`"));
                };
                if !valid_queue_name(&name) {
                    return Err(bad_name(npos, &name));
                }
                let batch_size = match fields.get("batch_size") {
                    None => 10,
                    Some((
                        _,
                        Node {
                            kind: Kind::Int(n @ 1..=100),
                            ..
                        },
                    )) => *n as u32,
                    Some((bk, bv)) => {
                        return Err(self.err(
                            at(bk, bv),
                            &join(path, "batch_size"),
                            format!(
                                "batch_size must be a whole number from 1 to 100, not {}",
                                bv.display(self.src)
                            ),
                        ));
                    }
                };
                let batch_window_ms = match self.string_field(path, &fields, "batch_window")? {
                    None => 0,
                    Some((wpos, w)) => {
                        let ms = parse_duration_ms(&w).map_err(|e| {
                            self.err(wpos, &join(path, "batch_window"), e.to_string())
                        })?;
                        if ms > 300_000 {
                            return Err(self.err(
                                wpos,
                                &join(path, "batch_window"),
                                "batch_window is at most 5m",
                            ));
                        }
                        ms
                    }
                };
                Ok(QueueSubscription {
                    name,
                    batch_size,
                    batch_window_ms,
                })
            }
            _ => Err(self.err(
                at(k, v),
                path,
                format!(
                    "`queue` must be a queue name or a map, not {}",
                    v.describe()
                ),
            )),
        }
    }

    /// `async: {max_retries: 0..=2, max_event_age: 1h, on_success: DEST, on_failure: DEST}`.
    fn async_config(&self, path: &str, k: &Node, v: &Node) -> Result<AsyncConfig> {
        let Kind::Map(entries) = &v.kind else {
            return Err(self.err(at(k, v), path, format!("`async` must be a map, not {}: e.g. `async: {{max_retries: 0, on_failure: alert}}`", v.describe())));
        };
        let fields = self.fields(
            path,
            entries,
            &["max_retries", "max_event_age", "on_success", "on_failure"],
            &[("retries", "max_retries"), ("max_age", "max_event_age")],
            |_, _| None,
        )?;
        let mut cfg = AsyncConfig::default();
        if let Some((rk, rv)) = fields.get("max_retries") {
            cfg.max_retries = match &rv.kind {
                Kind::Int(n @ 0..=2) => *n as u32,
                _ => {
                    return Err(self.err(
                        at(rk, rv),
                        &join(path, "max_retries"),
                        format!(
                            "max_retries must be 0, 1 or 2, not {}",
                            rv.display(self.src)
                        ),
                    ));
                }
            };
        }
        if let Some((ak, av)) = fields.get("max_event_age") {
            let field = join(path, "max_event_age");
            let Kind::Str(text) = &av.kind else {
                return Err(self.err(
                    at(ak, av),
                    &field,
                    "max_event_age must be a duration, e.g. `1h`",
                ));
            };
            let ms =
                parse_duration_ms(text).map_err(|e| self.err(av.pos, &field, e.to_string()))?;
            if !(60_000..=6 * 3_600_000).contains(&ms) {
                return Err(self.err(
                    av.pos,
                    &field,
                    format!("max_event_age `{text}` is out of range: use 1m to 6h"),
                ));
            }
            cfg.max_event_age_s = ms / 1000;
        }
        for (name, slot) in [
            ("on_success", &mut cfg.on_success),
            ("on_failure", &mut cfg.on_failure),
        ] {
            if let Some((dk, dv)) = fields.get(name) {
                *slot = Some(self.destination(&join(path, name), dk, dv)?);
            }
        }
        Ok(cfg)
    }

    /// An async destination: `FUNCTION`, `function:FUNCTION`, `queue:QUEUE`, or the maps
    /// `{function: FUNCTION}` / `{queue: QUEUE}`; as stored, a function name or
    /// `queue:QUEUE` ([`AsyncConfig::destination_queue`]).
    fn destination(&self, field: &str, k: &Node, v: &Node) -> Result<String> {
        let example = "e.g. `on_failure: alert` (a function), `on_failure: queue:failures` or `on_failure: {queue: failures}`";
        let (kind, name, pos) = match &v.kind {
            Kind::Str(text) => {
                let text = text.trim();
                match text.split_once(':') {
                    Some((kind, name)) => (kind.trim(), name.trim().to_string(), v.pos),
                    None => ("function", text.to_string(), v.pos),
                }
            }
            Kind::Map(entries) => {
                let fields =
                    self.fields(field, entries, &["function", "queue"], &[], |_, _| None)?;
                let function = self.string_field(field, &fields, "function")?;
                let queue = self.string_field(field, &fields, "queue")?;
                match (function, queue) {
                    (Some((pos, f)), None) => ("function", f, pos),
                    (None, Some((pos, q))) => ("queue", q, pos),
                    (Some(_), Some(_)) => {
                        return Err(self.err(
                            v.pos,
                            field,
                            "a destination is either a `function` or a `queue`, not both",
                        ));
                    }
                    (None, None) => {
                        return Err(self.err(
                            at(k, v),
                            field,
                            format!("a destination map needs `function:` or `queue:`, {example}"),
                        ));
                    }
                }
            }
            _ => {
                return Err(self.err(
                    at(k, v),
                    field,
                    format!(
                        "a destination must be a function name, `queue:NAME` or a map, not {}: {example}",
                        v.describe()
                    ),
                ));
            }
        };
        match kind {
            "function" => {
                FunctionName::new(name.as_str())
                    .map_err(|e| self.err(pos, field, name_error("destination function", &e)))?;
                Ok(name)
            }
            "queue" => {
                if !valid_queue_name(&name) {
                    return Err(self.err(pos, field, bad_queue_name(&name)));
                }
                Ok(format!("{}{name}", AsyncConfig::QUEUE_PREFIX))
            }
            other => Err(self.err(
                pos,
                field,
                format!(
                    "unknown destination kind `{other}:`: write `queue:NAME` for a queue or a function's name, {example}"
                ),
            )),
        }
    }

    /// `s3: {bucket, prefix, suffix, events: [created, removed]}`, or a list of those.
    fn object_triggers(&self, path: &str, k: &Node, v: &Node) -> Result<Vec<ObjectTrigger>> {
        let items: Vec<&Node> = match &v.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ => vec![v],
        };
        let example = "e.g. `s3: {bucket: photos, prefix: uploads/, suffix: .jpg}`";
        let mut out = Vec::new();
        for item in items {
            let Kind::Map(entries) = &item.kind else {
                return Err(self.err(
                    at(k, item),
                    path,
                    format!("`s3` must be a map, not {}: {example}", item.describe()),
                ));
            };
            let fields = self.fields(
                path,
                entries,
                &["bucket", "prefix", "suffix", "events"],
                &[("event", "events")],
                |_, _| None,
            )?;
            let text = |name: &str| self.string_field(path, &fields, name);
            let Some((bpos, bucket)) = text("bucket")? else {
                return Err(self.err(
                    item.pos,
                    &join(path, "bucket"),
                    format!("an `s3` trigger needs `bucket:`, {example}"),
                ));
            };
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
                && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !valid_bucket {
                return Err(self.err(bpos, &join(path, "bucket"), format!("`{bucket}` is not a valid bucket name: 3 to 63 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit")));
            }
            let (mut created, mut removed) = (true, false);
            if let Some((ek, ev)) = fields.get("events") {
                let names: Vec<&Node> = match &ev.kind {
                    Kind::Seq(items) => items.iter().collect(),
                    _ => vec![ev],
                };
                created = false;
                for n in names {
                    match &n.kind {
                        Kind::Str(s) if s == "created" || s == "s3:ObjectCreated:*" => {
                            created = true
                        }
                        Kind::Str(s) if s == "removed" || s == "s3:ObjectRemoved:*" => {
                            removed = true
                        }
                        _ => {
                            return Err(self.err(
                                at(ek, n),
                                &join(path, "events"),
                                format!(
                                    "unknown event {}: use `created` and/or `removed`",
                                    n.display(self.src)
                                ),
                            ));
                        }
                    }
                }
            }
            out.push(ObjectTrigger {
                bucket,
                prefix: text("prefix")?.map(|(_, p)| p).unwrap_or_default(),
                suffix: text("suffix")?.map(|(_, p)| p).unwrap_or_default(),
                created,
                removed,
            });
        }
        Ok(out)
    }

    /// `schedule:` a string, a map `{expression, timezone, missed: run-once|skip}`, or a list
    /// of those. Expressions are parsed here, so a typo is reported at its line.
    fn schedules(&self, path: &str, k: &Node, v: &Node) -> Result<Vec<ScheduleSpec>> {
        let items: Vec<&Node> = match &v.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ => vec![v],
        };
        let example =
            "e.g. `schedule: rate(5 minutes)`, `cron(0 9 ? * MON-FRI *)` or `*/15 * * * *`";
        let mut out = Vec::new();
        for item in items {
            let (expression, epos, timezone, skip_missed) = match &item.kind {
                Kind::Str(s) => (s.trim().to_string(), item.pos, String::new(), false),
                Kind::Map(entries) => {
                    let fields = self.fields(
                        path,
                        entries,
                        &["expression", "timezone", "missed"],
                        &[
                            ("expr", "expression"),
                            ("tz", "timezone"),
                            ("time_zone", "timezone"),
                        ],
                        |_, _| None,
                    )?;
                    let text = |name: &str| match fields.get(name) {
                        Some((
                            _,
                            Node {
                                kind: Kind::Str(s),
                                pos,
                                ..
                            },
                        )) => Some((s.trim().to_string(), *pos)),
                        _ => None,
                    };
                    let Some((e, epos)) = text("expression") else {
                        return Err(self.err(
                            item.pos,
                            path,
                            format!("a schedule needs `expression:`, {example}"),
                        ));
                    };
                    let tz = text("timezone").map(|(t, _)| t).unwrap_or_default();
                    let skip = match text("missed") {
                        None => false,
                        Some((m, _)) if m == "run-once" || m == "run_once" => false,
                        Some((m, _)) if m == "skip" => true,
                        Some((m, mpos)) => {
                            return Err(self.err(
                                mpos,
                                &join(path, "missed"),
                                format!("`missed: {m}`: use `run-once` (default) or `skip`"),
                            ));
                        }
                    };
                    (e, epos, tz, skip)
                }
                _ => {
                    return Err(self.err(
                        at(k, item),
                        path,
                        format!(
                            "a schedule must be a string, not {}: {example}",
                            item.describe()
                        ),
                    ));
                }
            };
            let tz = if timezone.is_empty() {
                "UTC"
            } else {
                timezone.as_str()
            };
            wisp_events::schedule::Schedule::parse(&expression, tz)
                .map_err(|e| self.err(epos, path, format!("{e}; {example}")))?;
            out.push(ScheduleSpec {
                expression,
                timezone,
                skip_missed,
            });
        }
        Ok(out)
    }

    /// `webhook: {provider: github|stripe|hmac, secret_env: NAME, header, encoding,
    /// tolerance}`: the secret comes from one of the function's env vars.
    fn webhook(
        &self,
        path: &str,
        k: &Node,
        v: &Node,
        env: &BTreeMap<String, String>,
    ) -> Result<WebhookSpec> {
        const FIELDS: &[&str] = &["provider", "secret_env", "header", "encoding", "tolerance"];
        let Kind::Map(entries) = &v.kind else {
            return Err(self.err(
                at(k, v),
                path,
                format!(
                    "`webhook` must be a map, not {}: e.g. `webhook: {{provider: github, secret_env: GITHUB_SECRET}}`",
                    v.describe()
                ),
            ));
        };
        let fields = self.fields(
            path,
            entries,
            FIELDS,
            &[("secret", "secret_env"), ("type", "provider")],
            |_, _| None,
        )?;
        let text = |name: &str| self.string_field(path, &fields, name);
        let Some((ppos, provider_text)) = text("provider")? else {
            return Err(self.err(
                k.pos,
                &join(path, "provider"),
                "a webhook needs `provider: github`, `stripe` or `hmac`",
            ));
        };
        let provider = WebhookProvider::parse(&provider_text).ok_or_else(|| {
            self.err(
                ppos,
                &join(path, "provider"),
                format!(
                    "unknown webhook provider `{provider_text}`: use `github`, `stripe` or `hmac`"
                ),
            )
        })?;
        let Some((spos, secret_env)) = text("secret_env")? else {
            return Err(self.err(
                k.pos,
                &join(path, "secret_env"),
                "a webhook needs `secret_env: NAME`, the env var (under `env:`) that holds its secret",
            ));
        };
        if !env.contains_key(&secret_env) {
            return Err(self.err(
                spos,
                &join(path, "secret_env"),
                format!("`{secret_env}` is not one of the function's env vars: add it under `env:` with the shared secret"),
            ));
        }
        let header = text("header")?.map(|(_, h)| h);
        let encoding = text("encoding")?;
        if let Some((epos, e)) = &encoding
            && !matches!(e.as_str(), "prefixed-hex" | "hex" | "base64")
        {
            return Err(self.err(
                *epos,
                &join(path, "encoding"),
                format!(
                    "unknown encoding `{e}`: use `prefixed-hex` (sha256=<hex>), `hex` or `base64`"
                ),
            ));
        }
        if provider == WebhookProvider::Hmac && header.is_none() {
            return Err(self.err(
                k.pos,
                &join(path, "header"),
                "an `hmac` webhook needs `header:`, the header that carries the signature (e.g. `X-Signature`)",
            ));
        }
        let tolerance_s = match text("tolerance")? {
            None => None,
            Some((tpos, t)) => Some(
                parse_duration_ms(&t)
                    .map_err(|e| self.err(tpos, &join(path, "tolerance"), e.to_string()))?
                    / 1000,
            ),
        };
        Ok(WebhookSpec {
            provider,
            secret_env,
            header,
            encoding: encoding.map(|(_, e)| e),
            tolerance_s,
        })
    }

    /// A string field's position and trimmed text, `None` when absent, an error saying so
    /// when it is not a string.
    fn string_field(
        &self,
        path: &str,
        fields: &Fields<'_>,
        name: &str,
    ) -> Result<Option<(Pos, String)>> {
        match fields.get(name) {
            None => Ok(None),
            Some((
                _,
                Node {
                    kind: Kind::Str(s),
                    pos,
                    ..
                },
            )) => Ok(Some((*pos, s.trim().to_string()))),
            Some((fk, fv)) => Err(self.err(
                at(fk, fv),
                &join(path, name),
                format!("`{name}` must be a string, not {}", fv.describe()),
            )),
        }
    }

    /// A `true`/`false` field, false when absent.
    fn flag(&self, path: &str, field: &str, fields: &Fields<'_>) -> Result<bool> {
        match fields.get(field) {
            Some((
                _,
                Node {
                    kind: Kind::Bool(b),
                    ..
                },
            )) => Ok(*b),
            Some((rk, rv)) => Err(self.err(
                at(rk, rv),
                &join(path, field),
                format!("`{field}` must be `true` or `false`, not {}", rv.describe()),
            )),
            None => Ok(false),
        }
    }

    /// `runtime`, `handler` and `network`: set for a native (Lambda-style) function.
    fn native(
        &self,
        path: &str,
        name: &FunctionName,
        k: &Node,
        fields: &Fields<'_>,
    ) -> Result<Option<NativeSpec>> {
        let runtime = match fields.get("runtime") {
            None => {
                for other in ["handler", "network"] {
                    if let Some((ok, _)) = fields.get(other) {
                        return Err(self.err(
                            ok.pos,
                            &join(path, other),
                            format!(
                                "`{other}` is for native functions: add `runtime:` (e.g. `runtime: python3.11`), or remove `{other}` for a WebAssembly function"
                            ),
                        ));
                    }
                }
                return Ok(None);
            }
            Some((rk, rv)) => {
                let field = join(path, "runtime");
                let Kind::Str(raw) = &rv.kind else {
                    return Err(self.err(
                        at(rk, rv),
                        &field,
                        format!(
                            "`runtime` must be a runtime name such as `python3.11`, `nodejs20.x` or `provided`, not {}",
                            rv.describe()
                        ),
                    ));
                };
                Runtime::parse(raw.trim()).map_err(|e| self.err(rv.pos, &field, e.to_string()))?
            }
        };
        let handler = match fields.get("handler") {
            Some((hk, hv)) => {
                let field = join(path, "handler");
                let Kind::Str(raw) = &hv.kind else {
                    return Err(self.err(
                        at(hk, hv),
                        &field,
                        format!(
                            "`handler` must be a string such as `app.handler`, not {}",
                            hv.describe()
                        ),
                    ));
                };
                // A `provided` runtime gets its handler as `_HANDLER`, free-form.
                let raw = raw.trim().to_string();
                runtime
                    .check_handler(&raw)
                    .map_err(|e| self.err(hv.pos, &field, e.to_string()))?;
                raw
            }
            None if runtime.needs_handler() => {
                let example = match runtime {
                    Runtime::Python { .. } => "app.handler",
                    _ => "index.handler",
                };
                return Err(self.err(
                    k.pos,
                    &join(path, "handler"),
                    format!(
                        "function `{name}` has runtime `{runtime}` but no `handler`: add e.g. `handler: {example}`"
                    ),
                ));
            }
            None => String::new(),
        };
        let network = self.flag(path, "network", fields)?;
        Ok(Some(NativeSpec {
            runtime,
            handler,
            network,
        }))
    }

    fn source(&self, field: &str, k: &Node, v: &Node, native: bool, build: bool) -> Result<Source> {
        const WHAT: &str =
            "the path of a `.wasm` file or of a Rust crate directory, relative to the manifest";
        let raw = match &v.kind {
            Kind::Str(s) if !s.trim().is_empty() => s.as_str(),
            Kind::Null | Kind::Str(_) => {
                return Err(self.err(
                    at(k, v),
                    field,
                    format!("`source` is empty: write {WHAT}, e.g. `source: ./get-user`"),
                ));
            }
            _ => {
                return Err(self.err(
                    v.pos,
                    field,
                    format!(
                        "`source` must be a path, not {}: write {WHAT}, e.g. `source: ./get-user`",
                        v.describe()
                    ),
                ));
            }
        };
        // Collecting the components drops the `.` in `dir/./x`.
        let resolved: PathBuf = self.dir.join(raw).components().collect();
        let shown = std::path::absolute(&resolved).unwrap_or_else(|_| resolved.clone());
        let shown = shown.display();
        let Ok(meta) = std::fs::metadata(&resolved) else {
            return Err(self.err(
                v.pos,
                field,
                format!("source `{raw}` not found (resolved to {shown}): write {WHAT}"),
            ));
        };
        if build {
            if meta.is_dir() {
                return Ok(Source::Directory(resolved));
            }
            return Err(self.err(
                v.pos,
                field,
                format!(
                    "source `{raw}` is a file (resolved to {shown}): with `build:`, `source` is the directory the build command runs in (e.g. `source: .`) and `build.output` names the `.wasm` it writes"
                ),
            ));
        }
        if native {
            if meta.is_dir() {
                return Ok(Source::Directory(resolved));
            }
            return Err(self.err(
                v.pos,
                field,
                format!(
                    "source `{raw}` is a file (resolved to {shown}): a native function's `source` is the directory that holds its code"
                ),
            ));
        }
        if meta.is_dir() {
            if resolved.join("Cargo.toml").is_file() {
                return Ok(Source::RustCrate(resolved));
            }
            return Err(self.err(
                v.pos,
                field,
                format!(
                    "source `{raw}` is a directory without a `Cargo.toml` (resolved to {shown}): point `source` at a Rust crate directory or at a `.wasm` file"
                ),
            ));
        }
        if resolved.extension().is_some_and(|e| e == "wasm") {
            return Ok(Source::WasmFile(resolved));
        }
        if resolved.file_name().is_some_and(|n| n == "Cargo.toml") {
            let dir = Path::new(raw)
                .parent()
                .map(|p| p.display().to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| ".".to_string());
            return Err(self.err(
                v.pos,
                field,
                format!(
                    "source `{raw}` is a `Cargo.toml` file: point `source` at the crate's directory instead, e.g. `source: {dir}`"
                ),
            ));
        }
        Err(self.err(
            v.pos,
            field,
            format!(
                "source `{raw}` is not a `.wasm` file (resolved to {shown}): point `source` at a compiled `.wasm` component or at a Rust crate directory"
            ),
        ))
    }

    /// `build: {command: SHELL COMMAND, output: PATH.wasm}`: how `wisp deploy` makes the
    /// function's component (Spin's `[component.build]`): the command runs in `source`, and
    /// `output` (relative to `source`) is the `.wasm` it writes.
    fn build(&self, path: &str, k: &Node, v: &Node, dir: &Path) -> Result<BuildSpec> {
        const EXAMPLE: &str = "e.g. `build: {command: npm run build, output: app.wasm}`";
        let Kind::Map(entries) = &v.kind else {
            return Err(self.err(
                at(k, v),
                path,
                format!(
                    "`build` must be a map with `command` and `output`, not {}: {EXAMPLE}",
                    v.describe()
                ),
            ));
        };
        let fields = self.fields(
            path,
            entries,
            &["command", "output"],
            &[
                ("cmd", "command"),
                ("run", "command"),
                ("script", "command"),
                ("wasm", "output"),
                ("out", "output"),
                ("artifact", "output"),
                ("source", "output"),
                ("file", "output"),
            ],
            |_, _| None,
        )?;
        let command = match self.string_field(path, &fields, "command")? {
            Some((_, c)) if !c.is_empty() => c,
            Some((pos, _)) => {
                return Err(self.err(
                    pos,
                    &join(path, "command"),
                    format!("`command` is empty: write the shell command that builds the component, {EXAMPLE}"),
                ));
            }
            None => {
                return Err(self.err(
                    k.pos,
                    &join(path, "command"),
                    format!("`build` has no `command`: add the shell command that builds the component (run with `sh -c` in `source`), {EXAMPLE}"),
                ));
            }
        };
        let (opos, output) = match self.string_field(path, &fields, "output")? {
            Some((pos, o)) if !o.is_empty() => (pos, o),
            Some((pos, _)) => {
                return Err(self.err(
                    pos,
                    &join(path, "output"),
                    format!("`output` is empty: write the path of the `.wasm` the command writes, relative to `source`, {EXAMPLE}"),
                ));
            }
            None => {
                return Err(self.err(
                    k.pos,
                    &join(path, "output"),
                    format!("`build` has no `output`: add the path of the `.wasm` the command writes, relative to `source`, {EXAMPLE}"),
                ));
            }
        };
        if !output.ends_with(".wasm") {
            return Err(self.err(
                opos,
                &join(path, "output"),
                format!("output `{output}` is not a `.wasm` file: name the WebAssembly component the command writes, {EXAMPLE}"),
            ));
        }
        let output = dir.join(&output).components().collect();
        Ok(BuildSpec { command, output })
    }

    fn routes(
        &self,
        path: &str,
        k: &Node,
        v: &Node,
        table: &mut RouteTable<usize>,
        seen: &mut Vec<SeenRoute>,
    ) -> Result<Vec<RouteSpec>> {
        let items = match &v.kind {
            Kind::Null => return Ok(Vec::new()),
            Kind::Seq(items) => items,
            Kind::Str(s) => {
                return Err(self.err(
                    v.pos,
                    path,
                    format!(
                        "`routes` must be a list: write `routes: [\"{s}\"]`, or `- {s}` indented on the next line"
                    ),
                ));
            }
            _ => {
                return Err(self.err(
                    at(k, v),
                    path,
                    format!(
                        "`routes` must be a list of `METHOD /path` strings, not {}: e.g. `routes: [\"GET /users/{{id}}\"]`",
                        v.describe()
                    ),
                ));
            }
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("{path}[{i}]");
            let text = match &item.kind {
                Kind::Str(s) => s.clone(),
                Kind::Map(e) if e.len() == 1 && matches!(e[0].1.kind, Kind::Str(_)) => {
                    let m = e[0].0.display(self.src);
                    let p = e[0].1.display(self.src);
                    return Err(self.err(
                        item.pos,
                        &field,
                        format!(
                            "a route is one string `METHOD /path`, not a map: write `- {m} {p}` (without the `:`)"
                        ),
                    ));
                }
                Kind::Null => {
                    return Err(self.err(
                        item.pos,
                        &field,
                        "empty route: write `METHOD /path`, e.g. `- GET /users/{id}`, or remove the `-`",
                    ));
                }
                _ => {
                    return Err(self.err(
                        item.pos,
                        &field,
                        format!(
                            "a route must be a `METHOD /path` string, not {}: e.g. `- GET /users/{{id}}`",
                            item.describe()
                        ),
                    ));
                }
            };
            let route: RouteSpec = text
                .parse()
                .map_err(|e: RouteError| self.err(item.pos, &field, e.to_string()))?;
            if let Err(e) = table.insert(route.clone(), seen.len()) {
                return Err(self.route_clash(&route, item.pos, &field, e, seen));
            }
            seen.push(SeenRoute {
                route: route.clone(),
                pos: item.pos,
                field,
            });
            out.push(route);
        }
        Ok(out)
    }

    fn route_clash(
        &self,
        route: &RouteSpec,
        pos: Pos,
        field: &str,
        e: RouteError,
        seen: &[SeenRoute],
    ) -> ManifestError {
        let msg = match &e {
            RouteError::Duplicate(_) => seen.iter().find(|s| s.route == *route).map(|s| {
                format!(
                    "route {route} is defined twice: here and at {} ({}); remove one of them",
                    self.place(s.pos),
                    s.field
                )
            }),
            RouteError::Conflict(_, other) => {
                seen.iter().find(|s| s.route.to_string() == *other).map(|s| {
                    format!(
                        "route {route} conflicts with route {other} at {} ({}): they match the same requests; remove one or change its path",
                        self.place(s.pos),
                        s.field
                    )
                })
            }
            _ => None,
        };
        self.err(pos, field, msg.unwrap_or_else(|| e.to_string()))
    }

    fn env(&self, path: &str, k: &Node, v: &Node) -> Result<BTreeMap<String, String>> {
        let entries = match &v.kind {
            Kind::Null => return Ok(BTreeMap::new()),
            Kind::Map(e) => e,
            Kind::Seq(items) => {
                let mut msg =
                    "`env` must be a map of NAME: value, not a list: e.g. `env: {GREETING: Hello}`"
                        .to_string();
                if let Some(Kind::Str(s)) = items.first().map(|i| &i.kind)
                    && let Some((name, value)) = s.split_once('=')
                {
                    msg.push_str(&format!("; write `{name}: {value}` instead of `- {s}`"));
                }
                return Err(self.err(v.pos, path, msg));
            }
            _ => {
                return Err(self.err(
                    at(k, v),
                    path,
                    format!(
                        "`env` must be a map of NAME: value, not {}: e.g. `env: {{GREETING: Hello}}`",
                        v.describe()
                    ),
                ));
            }
        };
        let mut out = BTreeMap::new();
        for (name, ek, ev) in self.named(path, "env var", entries)? {
            let field = join(path, &name);
            if !is_env_name(&name) {
                let mut msg = format!(
                    "env var name `{name}` is not valid: use letters, digits and `_`, and do not start with a digit"
                );
                match env_name_like(&name) {
                    Some(n) => msg.push_str(&format!("; did you mean `{n}`?")),
                    None => msg.push_str(" (e.g. `API_URL`)"),
                }
                return Err(self.err(ek.pos, &field, msg));
            }
            let value = match &ev.kind {
                Kind::Str(s) => s.clone(),
                Kind::Null => {
                    return Err(self.err(
                        ek.pos,
                        &field,
                        format!(
                            "env var `{name}` has no value: write `{name}: \"\"` for an empty value, or remove it"
                        ),
                    ));
                }
                Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => {
                    let text = ev.display(self.src);
                    return Err(self.err(
                        ev.pos,
                        &field,
                        format!(
                            "env var `{name}` is {} in YAML, but env values are strings: quote it, `{name}: \"{text}\"`",
                            ev.describe()
                        ),
                    ));
                }
                Kind::Seq(_) | Kind::Map(_) => {
                    return Err(self.err(
                        ev.pos,
                        &field,
                        format!(
                            "env var `{name}` must be a string, not {}: e.g. `{name}: value`; to pass structured data, quote it as one string",
                            ev.describe()
                        ),
                    ));
                }
            };
            out.insert(name, value);
        }
        Ok(out)
    }

    fn limits(&self, path: &str, k: &Node, v: &Node) -> Result<Limits> {
        let entries = match &v.kind {
            Kind::Null => return Ok(Limits::default()),
            Kind::Map(e) => e,
            _ => {
                return Err(self.err(
                    v.pos,
                    path,
                    format!(
                        "`limits` must be a map, not {}: e.g. `limits: {{timeout: 10s, memory: 128MiB}}`",
                        v.describe()
                    ),
                ));
            }
        };
        let fields = self.fields(path, entries, LIMIT_FIELDS, LIMIT_ALIASES, |_, _| None)?;
        let mut limits = Limits::default();
        let defaults = Limits::default();

        // A scalar limit's text, or an error saying what to write.
        let scalar = |name: &str,
                      example: &str,
                      default: String|
         -> Result<Option<(Pos, String, &Node)>> {
            let Some((fk, fv)) = fields.get(name) else {
                return Ok(None);
            };
            let field = join(path, name);
            match &fv.kind {
                Kind::Null => Err(self.err(
                    fk.pos,
                    &field,
                    format!(
                        "`{name}` has no value: write e.g. `{name}: {example}`, or remove it to use the default ({default})"
                    ),
                )),
                Kind::Seq(_) | Kind::Map(_) => Err(self.err(
                    fv.pos,
                    &field,
                    format!("`{name}` must be a single value, not {}: e.g. `{name}: {example}`", fv.describe()),
                )),
                _ => Ok(Some((fv.pos, fv.display(self.src), fv))),
            }
        };
        let bad =
            |name: &str, pos: Pos, e: LimitsError| self.err(pos, &join(path, name), e.to_string());

        let timeout = scalar("timeout", "10s", fmt_duration(defaults.timeout_ms))?;
        if let Some((pos, text, _)) = &timeout {
            limits.timeout_ms = parse_duration_ms(text).map_err(|e| bad("timeout", *pos, e))?;
        }
        let memory = scalar(
            "memory",
            "128MiB",
            ByteSize(defaults.memory_bytes).to_string(),
        )?;
        if let Some((pos, text, _)) = &memory {
            limits.memory_bytes = parse_byte_size(text).map_err(|e| bad("memory", *pos, e))?;
        }
        let max_body = scalar(
            "max_body",
            "6MiB",
            ByteSize(defaults.max_body_bytes).to_string(),
        )?;
        if let Some((pos, text, _)) = &max_body {
            limits.max_body_bytes = parse_byte_size(text).map_err(|e| bad("max_body", *pos, e))?;
        }
        let concurrency = scalar(
            "max_concurrency",
            "100",
            defaults.max_concurrency.to_string(),
        )?;
        let range = format!("between 1 and {}", Limits::MAX_MAX_CONCURRENCY);
        // A whole-number limit, or an error that says how to write it.
        let whole = |name: &str, pos: Pos, text: &str, node: &Node| -> Result<u32> {
            let field = join(path, name);
            match &node.kind {
                Kind::Int(n) => u32::try_from(*n).map_err(|_| {
                    self.err(
                        pos,
                        &field,
                        format!("{name} `{text}` is out of range: use a whole number {range}"),
                    )
                }),
                Kind::Str(s) if s.trim().parse::<u64>().is_ok() => Err(self.err(
                    pos,
                    &field,
                    format!(
                        "{name} must be a number, not a string: write it without quotes, `{name}: {}`",
                        s.trim()
                    ),
                )),
                _ => Err(self.err(
                    pos,
                    &field,
                    format!(
                        "{name} `{text}` is not a whole number: write a number {range}, e.g. `{name}: 10`"
                    ),
                )),
            }
        };
        if let Some((pos, text, node)) = &concurrency {
            limits.max_concurrency = whole("max_concurrency", *pos, text, node)?;
        }
        let reserved = scalar("reserved_concurrency", "10", "none".into())?;
        if let Some((pos, text, node)) = &reserved {
            limits.reserved_concurrency = whole("reserved_concurrency", *pos, text, node)?;
        }
        let provisioned = scalar("provisioned_concurrency", "2", "none".into())?;
        if let Some((pos, text, node)) = &provisioned {
            limits.provisioned_concurrency = whole("provisioned_concurrency", *pos, text, node)?;
        }

        limits.validate().map_err(|e| {
            let (name, given, msg) = match &e {
                LimitsError::Timeout(_) => (
                    "timeout",
                    &timeout,
                    format!(
                        "use a duration between 1ms and {}",
                        fmt_duration(Limits::MAX_TIMEOUT_MS)
                    ),
                ),
                LimitsError::Memory(_) => (
                    "memory",
                    &memory,
                    format!(
                        "use a size between {} and {}",
                        ByteSize(Limits::MIN_MEMORY_BYTES),
                        ByteSize(Limits::MAX_MEMORY_BYTES)
                    ),
                ),
                LimitsError::Body(_) => (
                    "max_body",
                    &max_body,
                    format!("use at most {}", ByteSize(Limits::MAX_MAX_BODY_BYTES)),
                ),
                LimitsError::Concurrency(_) => (
                    "max_concurrency",
                    &concurrency,
                    format!("use a whole number {range}"),
                ),
                LimitsError::Reserved(_) => (
                    "reserved_concurrency",
                    &reserved,
                    format!("use a whole number up to {}", Limits::MAX_MAX_CONCURRENCY),
                ),
                LimitsError::Provisioned { max, .. } => (
                    "provisioned_concurrency",
                    &provisioned,
                    format!(
                        "it cannot be more than the function may run at once ({max}): lower it, or raise max_concurrency"
                    ),
                ),
                other => return self.err(at(k, v), path, other.to_string()),
            };
            match given {
                Some((pos, text, _)) => self.err(
                    *pos,
                    &join(path, name),
                    format!("{name} `{text}` is out of range: {msg}"),
                ),
                None => self.err(at(k, v), path, e.to_string()),
            }
        })?;
        Ok(limits)
    }
}
