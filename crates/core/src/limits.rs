use serde::{Deserialize, Serialize};

/// Per-function limits. Every field has a default a user can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock time one invocation may take, in milliseconds. Past it the caller gets 504.
    pub timeout_ms: u64,
    /// Linear memory one instance may grow to, in bytes. Growing past it traps (500).
    pub memory_bytes: u64,
    /// Largest request body accepted, in bytes. Larger requests get 413.
    pub max_body_bytes: u64,
    /// Invocations of this function that may run at once. Beyond it callers wait in a
    /// bounded queue, then get 429.
    pub max_concurrency: u32,
    /// Concurrency set aside for this function on the node: other functions cannot take
    /// it, and it is also the function's maximum (as on Lambda). 0: none.
    #[serde(skip_serializing_if = "is_zero")]
    pub reserved_concurrency: u32,
    /// Instances kept initialised at all times, started before the first call and
    /// re-created when one dies. 0: none (instances start on demand).
    #[serde(skip_serializing_if = "is_zero")]
    pub provisioned_concurrency: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Limits {
    pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
    pub const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;
    pub const DEFAULT_MEMORY_BYTES: u64 = 128 * MIB;
    pub const MIN_MEMORY_BYTES: u64 = MIB;
    pub const MAX_MEMORY_BYTES: u64 = 4 * 1024 * MIB;
    pub const DEFAULT_MAX_BODY_BYTES: u64 = 6 * MIB;
    pub const MAX_MAX_BODY_BYTES: u64 = 128 * MIB;
    pub const DEFAULT_MAX_CONCURRENCY: u32 = 100;
    pub const MAX_MAX_CONCURRENCY: u32 = 10_000;

    /// Checks that every limit lies in the range Wisp supports.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.timeout_ms == 0 || self.timeout_ms > Self::MAX_TIMEOUT_MS {
            return Err(LimitsError::Timeout(self.timeout_ms));
        }
        if self.memory_bytes < Self::MIN_MEMORY_BYTES || self.memory_bytes > Self::MAX_MEMORY_BYTES
        {
            return Err(LimitsError::Memory(self.memory_bytes));
        }
        if self.max_body_bytes > Self::MAX_MAX_BODY_BYTES {
            return Err(LimitsError::Body(self.max_body_bytes));
        }
        if self.max_concurrency == 0 || self.max_concurrency > Self::MAX_MAX_CONCURRENCY {
            return Err(LimitsError::Concurrency(self.max_concurrency));
        }
        if self.reserved_concurrency > Self::MAX_MAX_CONCURRENCY {
            return Err(LimitsError::Reserved(self.reserved_concurrency));
        }
        if self.provisioned_concurrency > self.concurrency() {
            return Err(LimitsError::Provisioned {
                provisioned: self.provisioned_concurrency,
                max: self.concurrency(),
            });
        }
        Ok(())
    }

    /// How many invocations may run at once: the reservation if there is one, else
    /// `max_concurrency`.
    pub fn concurrency(&self) -> u32 {
        if self.reserved_concurrency > 0 {
            self.reserved_concurrency
        } else {
            self.max_concurrency
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            max_concurrency: Self::DEFAULT_MAX_CONCURRENCY,
            reserved_concurrency: 0,
            provisioned_concurrency: 0,
        }
    }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("timeout must be between 1ms and 15m, got {0}ms")]
    Timeout(u64),
    #[error("memory must be between 1MiB and 4GiB, got {0} bytes")]
    Memory(u64),
    #[error("max_body must be at most 128MiB, got {0} bytes")]
    Body(u64),
    #[error("max_concurrency must be between 1 and 10000, got {0}")]
    Concurrency(u32),
    #[error("reserved_concurrency must be at most 10000, got {0}")]
    Reserved(u32),
    #[error(
        "provisioned_concurrency {provisioned} is more than the function may run at once ({max}): lower it, or raise max_concurrency / reserved_concurrency"
    )]
    Provisioned { provisioned: u32, max: u32 },
    #[error("`{0}` is not a duration: write a number with a unit, e.g. `500ms`, `10s` or `2m`")]
    BadDuration(String),
    #[error("`{0}` is not a size: write a number with a unit, e.g. `512KiB`, `128MiB` or `1GiB`")]
    BadSize(String),
}

/// A size in bytes, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        if b >= GIB && b.is_multiple_of(GIB) {
            write!(f, "{}GiB", b / GIB)
        } else if b >= MIB && b.is_multiple_of(MIB) {
            write!(f, "{}MiB", b / MIB)
        } else if b >= KIB && b.is_multiple_of(KIB) {
            write!(f, "{}KiB", b / KIB)
        } else {
            write!(f, "{b}B")
        }
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h` (an integer and a unit) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, LimitsError> {
    let bad = || LimitsError::BadDuration(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Parses `512KiB`, `128MiB`, `1GiB` (also `KB`/`MB`/`GB`, taken as powers of 1024, and
/// plain byte counts) into bytes.
pub fn parse_byte_size(s: &str) -> Result<u64, LimitsError> {
    let bad = || LimitsError::BadSize(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("ten s").is_err());
        assert!(parse_duration_ms("1.5s").is_err());
        assert!(parse_duration_ms("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_byte_size("128MiB"), Ok(128 * MIB));
        assert_eq!(parse_byte_size("128MB"), Ok(128 * MIB));
        assert_eq!(parse_byte_size("1GiB"), Ok(GIB));
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert!(parse_byte_size("12 parsecs").is_err());
        assert_eq!(ByteSize(128 * MIB).to_string(), "128MiB");
    }

    #[test]
    fn reservations_cap_and_provisioning_fits() {
        let l = Limits {
            max_concurrency: 50,
            reserved_concurrency: 5,
            provisioned_concurrency: 5,
            ..Limits::default()
        };
        assert_eq!(l.concurrency(), 5);
        l.validate().unwrap();
        let too_many = Limits {
            provisioned_concurrency: 6,
            ..l
        };
        assert!(matches!(
            too_many.validate(),
            Err(LimitsError::Provisioned { max: 5, .. })
        ));
        // Old specs without the new fields read back the same, and write the same.
        let json = serde_json::to_string(&Limits::default()).unwrap();
        assert!(!json.contains("reserved"), "{json}");
        assert_eq!(
            serde_json::from_str::<Limits>(&json).unwrap(),
            Limits::default()
        );
    }

    #[test]
    fn defaults_are_valid() {
        Limits::default().validate().unwrap();
        let l = Limits {
            max_concurrency: 0,
            ..Limits::default()
        };
        assert!(l.validate().is_err());
    }

    proptest! {
        #[test]
        fn duration_parser_never_panics(s in ".{0,20}") {
            let _ = parse_duration_ms(&s);
        }
        #[test]
        fn size_parser_never_panics(s in ".{0,20}") {
            let _ = parse_byte_size(&s);
        }
        #[test]
        fn size_round_trips(n in 0u64..1_000_000) {
            prop_assert_eq!(parse_byte_size(&ByteSize(n * 1024).to_string()), Ok(n * 1024));
        }
    }
}
