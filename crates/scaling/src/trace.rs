//! Invocation traces: CSV rows `function,timestamp_ms,duration_ms`.
//!
//! A header line (`function,timestamp_ms,duration_ms`) may come first; blank lines are
//! skipped; rows need not be sorted. Errors name the line and what is wrong with it.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, Write};

/// The header line [`write_csv`] writes and [`parse_csv`] accepts first.
pub const HEADER: &str = "function,timestamp_ms,duration_ms";

/// One invocation: `function` indexes [`Trace::functions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Invocation {
    pub function: u32,
    pub start_ms: u64,
    pub duration_ms: u64,
}

impl Invocation {
    pub fn end_ms(&self) -> u64 {
        self.start_ms + self.duration_ms
    }
}

/// A parsed trace, invocations sorted by function, then start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    pub functions: Vec<String>,
    pub invocations: Vec<Invocation>,
}

impl Trace {
    /// Builds a trace from rows in any order.
    pub fn from_rows<S: AsRef<str>>(rows: impl IntoIterator<Item = (S, u64, u64)>) -> Self {
        let mut b = Builder::default();
        for (f, start, dur) in rows {
            b.push(f.as_ref(), start, dur);
        }
        b.finish()
    }

    /// The invocations of each function, in start order, with its name.
    pub fn per_function(&self) -> impl Iterator<Item = (&str, &[Invocation])> {
        self.invocations
            .chunk_by(|a, b| a.function == b.function)
            .map(|c| (self.functions[c[0].function as usize].as_str(), c))
    }

    /// The first start and the last end, or `(0, 0)` for an empty trace.
    pub fn span_ms(&self) -> (u64, u64) {
        let first = self.invocations.iter().map(|i| i.start_ms).min();
        let last = self.invocations.iter().map(Invocation::end_ms).max();
        (first.unwrap_or(0), last.unwrap_or(0))
    }
}

#[derive(Default)]
struct Builder {
    names: HashMap<String, u32>,
    functions: Vec<String>,
    invocations: Vec<Invocation>,
}

impl Builder {
    fn push(&mut self, name: &str, start_ms: u64, duration_ms: u64) {
        let function = match self.names.get(name) {
            Some(&i) => i,
            None => {
                let i = self.functions.len() as u32;
                self.names.insert(name.to_string(), i);
                self.functions.push(name.to_string());
                i
            }
        };
        self.invocations.push(Invocation {
            function,
            start_ms,
            duration_ms,
        });
    }

    fn finish(mut self) -> Trace {
        self.invocations.sort_unstable();
        Trace {
            functions: self.functions,
            invocations: self.invocations,
        }
    }
}

/// A trace line that cannot be read, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: u64,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Reads a whole CSV trace.
pub fn parse_csv(mut r: impl BufRead) -> Result<Trace, ParseError> {
    let mut b = Builder::default();
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        line += 1;
        let err = |message: String| ParseError { line, message };
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(err(format!("cannot read the trace: {e}"))),
        }
        let text = std::str::from_utf8(&buf).map_err(|_| err("is not UTF-8 text".into()))?;
        let text = text.trim();
        if text.is_empty() || (line == 1 && is_header(text)) {
            continue;
        }
        let (name, start, dur) = parse_row(text).map_err(err)?;
        b.push(name, start, dur);
    }
    Ok(b.finish())
}

fn is_header(line: &str) -> bool {
    let fields: Vec<String> = line.split(',').map(|f| f.trim().to_lowercase()).collect();
    fields == HEADER.split(',').collect::<Vec<_>>()
}

/// One data row, already trimmed.
fn parse_row(text: &str) -> Result<(&str, u64, u64), String> {
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    let [name, start, dur] = fields[..] else {
        return Err(format!(
            "expected 3 comma-separated fields ({HEADER}), found {}: {:?}",
            fields.len(),
            truncate(text)
        ));
    };
    if name.is_empty() {
        return Err("the function name is empty".into());
    }
    let number = |what: &str, v: &str| {
        v.parse::<u64>().map_err(|_| {
            format!(
                "{what} {:?} is not a whole, non-negative number of milliseconds",
                truncate(v)
            )
        })
    };
    let start = number("timestamp_ms", start)?;
    let dur = number("duration_ms", dur)?;
    if start.checked_add(dur).is_none() {
        return Err(format!(
            "timestamp_ms {start} + duration_ms {dur} overflows"
        ));
    }
    Ok((name, start, dur))
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Writes rows (with a header) in the format [`parse_csv`] reads.
pub fn write_csv<'a>(
    mut w: impl Write,
    rows: impl IntoIterator<Item = (&'a str, u64, u64)>,
) -> io::Result<()> {
    writeln!(w, "{HEADER}")?;
    for (f, start, dur) in rows {
        writeln!(w, "{f},{start},{dur}")?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<Trace, ParseError> {
        parse_csv(s.as_bytes())
    }

    #[test]
    fn header_blank_lines_crlf_and_unsorted_rows() {
        let t = parse("function,timestamp_ms,duration_ms\r\nb,500,1\r\n\n a , 100 , 20 \nb,0,5\n")
            .unwrap();
        assert_eq!(t.functions, ["b", "a"]);
        let rows: Vec<_> = t
            .per_function()
            .map(|(f, i)| (f, i.iter().map(|i| i.start_ms).collect::<Vec<_>>()))
            .collect();
        assert_eq!(rows, [("b", vec![0, 500]), ("a", vec![100])]);
        assert_eq!(t.span_ms(), (0, 501));
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases = [
            ("f,1,2\nf,1\n", 2, "expected 3 comma-separated fields"),
            ("f,1,2\n\nf,x,2\n", 3, "timestamp_ms \"x\" is not a whole"),
            ("f,1,-2\n", 1, "duration_ms \"-2\""),
            ("f,1,2.5\n", 1, "duration_ms \"2.5\""),
            (",1,2\n", 1, "function name is empty"),
            ("f,1,2,3\n", 1, "found 4"),
            ("f,18446744073709551615,1\n", 1, "overflows"),
            (
                "f,1,2\nfunction,timestamp_ms,duration_ms\n",
                2,
                "timestamp_ms \"timestamp_ms\"",
            ),
        ];
        for (input, line, msg) in cases {
            let e = parse(input).unwrap_err();
            assert_eq!(e.line, line, "{input:?}: {e}");
            assert!(e.to_string().contains(msg), "{input:?}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")));
        }
        let e = parse_csv(&b"f,1,2\nf\xff,1,2\n"[..]).unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (2, "is not UTF-8 text"));
    }

    #[test]
    fn write_then_parse_round_trips() {
        let rows = [("x", 5u64, 1u64), ("y", 0, 0), ("x", 1, 2)];
        let mut out = Vec::new();
        write_csv(&mut out, rows).unwrap();
        assert_eq!(
            parse(std::str::from_utf8(&out).unwrap()).unwrap(),
            Trace::from_rows(rows)
        );
    }

    proptest! {
        /// Any bytes: an error naming an existing line, or a trace; never a panic.
        #[test]
        fn arbitrary_input_never_panics(lines in proptest::collection::vec(
            prop_oneof![
                "[a-z]{1,3},[0-9]{1,5},[0-9]{1,5}",
                "[a-z,0-9 \\-.]{0,12}",
                any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ], 0..20)) {
            let input = lines.join("\n");
            let n = input.split('\n').count();
            match parse(&input) {
                Ok(t) => prop_assert!(t.invocations.len() <= n),
                Err(e) => prop_assert!(e.line >= 1 && e.line as usize <= n),
            }
        }

        #[test]
        fn valid_rows_parse_to_the_same_rows(rows in proptest::collection::vec(
            ("[a-z]{1,4}", 0u64..1u64 << 50, 0u64..1u64 << 30), 0..30)) {
            let mut out = Vec::new();
            write_csv(&mut out, rows.iter().map(|(f, s, d)| (f.as_str(), *s, *d))).unwrap();
            let t = parse(std::str::from_utf8(&out).unwrap()).unwrap();
            prop_assert_eq!(t, Trace::from_rows(rows.iter().map(|(f, s, d)| (f, *s, *d))));
        }
    }
}
