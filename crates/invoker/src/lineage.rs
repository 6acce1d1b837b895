//! Recursive loop detection, as Lambda does it: every invocation's depth in its chain of
//! calls (a function calling a function, through the gateway, `http://self`, an async
//! event), found from its parent span. A chain that reaches [`MAX_DEPTH`] is stopped: a
//! function that calls itself (or a ring of functions calling each other) can then only
//! run so deep, instead of filling the event store and starving every other function.
//!
//! The depths live in memory, for spans started on this node in the last while (two
//! generations of at most [`GENERATION`] spans): a chain whose parent is older or
//! unknown starts again at depth 0, as Lambda's lineage does after it expires.

use std::collections::HashMap;
use std::sync::Mutex;

/// The deepest a chain may go: Lambda stops a loop after about 16 invocations.
pub const MAX_DEPTH: u32 = 16;
const GENERATION: usize = 100_000;

#[derive(Debug, Default)]
pub struct Lineage {
    inner: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<String, u32>,
    previous: HashMap<String, u32>,
}

impl Lineage {
    /// Records span `span` (child of `parent`, if any) and returns its depth: 0 for a
    /// chain's first invocation.
    pub fn enter(&self, span: &str, parent: Option<&str>) -> u32 {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let depth = parent
            .and_then(|p| g.current.get(p).or_else(|| g.previous.get(p)).copied())
            .map_or(0, |d| d.saturating_add(1));
        if g.current.len() >= GENERATION {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(span.to_string(), depth);
        depth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_follows_the_parent_span() {
        let l = Lineage::default();
        assert_eq!(l.enter("a", None), 0);
        assert_eq!(l.enter("b", Some("a")), 1);
        assert_eq!(l.enter("c", Some("b")), 2);
        // A fan-out: siblings share a depth.
        assert_eq!(l.enter("c2", Some("b")), 2);
        // An unknown parent (another node's, or a client's span) starts a chain.
        assert_eq!(l.enter("x", Some("client-span")), 0);
        let mut parent = "c".to_string();
        for i in 0..20 {
            let span = format!("s{i}");
            assert_eq!(l.enter(&span, Some(&parent)), 3 + i);
            parent = span;
        }
    }

    #[test]
    fn old_spans_are_forgotten_after_two_generations() {
        let l = Lineage::default();
        l.enter("root", None);
        for i in 0..GENERATION {
            l.enter(&format!("{i}"), None);
        }
        // Still in the previous generation.
        assert_eq!(l.enter("child", Some("root")), 1);
        for i in 0..GENERATION {
            l.enter(&format!("n{i}"), None);
        }
        assert_eq!(l.enter("late", Some("root")), 0);
    }
}
