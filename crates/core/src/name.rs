use serde::{Deserialize, Serialize};
use std::fmt;

/// A function's name: 1 to 63 characters of lowercase letters, digits and `-`,
/// starting with a letter and not ending with `-` (usable in URLs, file names and DNS).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FunctionName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name cannot be empty")]
    Empty,
    #[error("name `{0}` is longer than 63 characters")]
    TooLong(String),
    #[error(
        "name `{0}` is not valid: use lowercase letters, digits and `-`, start with a letter and do not end with `-` (e.g. `get-user`)"
    )]
    Invalid(String),
}

impl FunctionName {
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > 63 {
            return Err(NameError::TooLong(s));
        }
        let bytes = s.as_bytes();
        let ok = bytes[0].is_ascii_lowercase()
            && bytes[bytes.len() - 1] != b'-'
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if !ok {
            return Err(NameError::Invalid(s));
        }
        Ok(FunctionName(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FunctionName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        FunctionName::new(s)
    }
}

impl From<FunctionName> for String {
    fn from(n: FunctionName) -> String {
        n.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for FunctionName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_names() {
        for n in ["hello", "get-user", "a1", "x"] {
            assert!(FunctionName::new(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for n in [
            "",
            "Hello",
            "1abc",
            "a_b",
            "a-",
            "-a",
            "a b",
            "../x",
            &"a".repeat(64),
        ] {
            assert!(FunctionName::new(n).is_err(), "{n}");
        }
    }
}
