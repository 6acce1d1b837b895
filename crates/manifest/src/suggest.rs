//! "Did you mean ...?" helpers.

/// Edit distance between two strings (insertions, deletions, substitutions), by characters.
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate `word` most likely stands for, if any is close enough.
///
/// `aliases` maps other words people write (`environment`, `src`) to a candidate.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: &[&'a str],
    aliases: &[(&str, &'a str)],
) -> Option<&'a str> {
    let w = word.to_ascii_lowercase().replace(['-', ' '], "_");
    if let Some((_, to)) = aliases.iter().find(|(from, _)| *from == w) {
        return Some(to);
    }
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = levenshtein(&w, c);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    if let Some((d, c)) = best {
        let len = w.chars().count().max(c.len());
        if d <= (len / 3).max(1) {
            return Some(c);
        }
    }
    // `max_body_bytes` -> `max_body`, `concurrency` -> `max_concurrency`.
    candidates
        .iter()
        .find(|c| w.len() >= 3 && (w.starts_with(*c) || c.ends_with(w.as_str())))
        .copied()
}

/// A valid function/app name that `raw` was probably meant to be (`Get_User` -> `get-user`),
/// if it differs from `raw`.
pub(crate) fn name_like(raw: &str) -> Option<String> {
    let mut s = String::new();
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if matches!(c, '-' | '_' | ' ' | '.') && !s.is_empty() && !s.ends_with('-') {
            s.push('-');
        }
    }
    let mut s: String = s.chars().take(63).collect();
    while s.ends_with('-') {
        s.pop();
    }
    (s != raw && wisp_core::FunctionName::new(s.clone()).is_ok()).then_some(s)
}

/// A valid environment variable name that `raw` was probably meant to be (`my-var` -> `MY_VAR`).
pub(crate) fn env_name_like(raw: &str) -> Option<String> {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    (!s.is_empty() && s != raw && s.chars().any(|c| c.is_ascii_alphanumeric())).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("rutes", "routes"), 1);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("abc", ""), 3);
    }

    #[test]
    fn closest_words() {
        let fields = ["source", "routes", "env", "limits"];
        let aliases = [("environment", "env"), ("src", "source")];
        assert_eq!(closest("rutes", &fields, &aliases), Some("routes"));
        assert_eq!(closest("Routes", &fields, &aliases), Some("routes"));
        assert_eq!(closest("limit", &fields, &aliases), Some("limits"));
        assert_eq!(closest("environment", &fields, &aliases), Some("env"));
        assert_eq!(closest("src", &fields, &aliases), Some("source"));
        assert_eq!(closest("handler", &fields, &aliases), None);
        let limits = ["timeout", "memory", "max_body", "max_concurrency"];
        assert_eq!(closest("timeout_ms", &limits, &[]), Some("timeout"));
        assert_eq!(closest("max_body_bytes", &limits, &[]), Some("max_body"));
        assert_eq!(
            closest("concurrency", &limits, &[]),
            Some("max_concurrency")
        );
        assert_eq!(closest("max-body", &limits, &[]), Some("max_body"));
    }

    #[test]
    fn names() {
        assert_eq!(name_like("Get_User").as_deref(), Some("get-user"));
        assert_eq!(name_like("get-user"), None);
        assert_eq!(name_like("1st"), None);
        assert_eq!(name_like("My App").as_deref(), Some("my-app"));
        assert_eq!(name_like("---"), None);
        assert_eq!(env_name_like("my-var").as_deref(), Some("MY_VAR"));
        assert_eq!(env_name_like("1X").as_deref(), Some("_1X"));
        assert_eq!(env_name_like("OK"), None);
        assert_eq!(env_name_like("-"), None);
    }
}
