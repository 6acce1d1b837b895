//! Schedule expressions: `rate(...)`, AWS `cron(...)` and standard five-field cron, evaluated
//! in an IANA time zone. Pure: no clock, no I/O.
//!
//! Forms accepted:
//! * `rate(1 minute)`, `rate(5 minutes)`, `rate(1 hour)`, `rate(2 days)`: AWS spelling, the
//!   singular for 1 and the plural otherwise. Ticks are whole multiples of the period since
//!   the Unix epoch (so `rate(5 minutes)` fires at :00, :05, ... whatever the start time,
//!   and a restart does not shift them). A day is 24 hours, as in AWS, and the time zone
//!   does not matter.
//! * `cron(min hour day-of-month month day-of-week year)`: AWS's six fields. Day-of-week is
//!   1-7 with 1 = SUN (or SUN-SAT); exactly one of day-of-month and day-of-week must be `?`.
//!   Wildcards `* , - /`, `L` (last day of the month; in day-of-week `L` is SAT and `5L` is
//!   the last Thursday), `W` (`15W` nearest weekday to the 15th, `LW` last weekday), `#`
//!   (`2#1` first Monday). Years 1970-2199.
//! * Standard cron, five fields (`*/5 * * * *`, `0 9 * * MON-FRI`): day-of-week 0-7 with 0
//!   and 7 = Sunday, names, ranges, steps, lists, `?` as `*`, and the `L`/`W`/`#` forms above.
//!   As in Vixie cron, when both day fields are restricted (neither starts with `*`), a day
//!   matching either fires. Also `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`.
//!
//! Daylight saving time (cron only), as in Amazon EventBridge Scheduler: a local time that
//! does not exist because clocks jump forward (02:30 on the spring-forward night in
//! Europe/Berlin) is skipped, and a local time that occurs twice because clocks go back
//! fires once, at its first occurrence.
use std::fmt;

use jiff::Timestamp;
use jiff::civil;
use jiff::tz::{AmbiguousOffset, TimeZone};

/// A parsed schedule expression with its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    expr: String,
    tz_name: String,
    tz: TimeZone,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    /// Period in seconds.
    Rate(i64),
    Cron(Box<Cron>),
}

/// Why an expression or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {expr:?}: {reason}")]
pub struct ScheduleError {
    pub expr: String,
    pub reason: String,
}

/// `next_after` for a one-off expression: the first tick strictly after `t`.
pub fn next_after(expr: &str, tz: &str, t: Timestamp) -> Result<Option<Timestamp>, ScheduleError> {
    Ok(Schedule::parse(expr, tz)?.next_after(t))
}

impl Schedule {
    /// Parses `expr` for the IANA time zone `tz` (`"UTC"`, `"Europe/Berlin"`, ...).
    pub fn parse(expr: &str, tz: &str) -> Result<Self, ScheduleError> {
        let err = |reason: String| ScheduleError {
            expr: expr.to_string(),
            reason,
        };
        let zone = TimeZone::get(tz).map_err(|e| err(format!("unknown time zone {tz:?}: {e}")))?;
        let s = expr.trim();
        let kind = if let Some(inner) = strip_call(s, "rate") {
            Kind::Rate(parse_rate(inner).map_err(err)?)
        } else if let Some(inner) = strip_call(s, "cron") {
            let fields: Vec<&str> = inner.split_whitespace().collect();
            if fields.len() != 6 {
                return Err(err(format!(
                    "cron() takes six fields (minutes hours day-of-month month day-of-week year), got {}",
                    fields.len()
                )));
            }
            Kind::Cron(Box::new(Cron::parse(&fields, Dialect::Aws).map_err(err)?))
        } else {
            let expanded = match s {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                other => other,
            };
            let fields: Vec<&str> = expanded.split_whitespace().collect();
            if fields.len() != 5 {
                return Err(err(format!(
                    "expected rate(...), cron(...) with six fields, or a five-field cron expression; got {} fields",
                    fields.len()
                )));
            }
            Kind::Cron(Box::new(Cron::parse(&fields, Dialect::Unix).map_err(err)?))
        };
        Ok(Self {
            expr: s.to_string(),
            tz_name: tz.to_string(),
            tz: zone,
            kind,
        })
    }

    pub fn expression(&self) -> &str {
        &self.expr
    }

    pub fn time_zone(&self) -> &str {
        &self.tz_name
    }

    /// The first tick strictly after `t`, or `None` if there is none (a date that never
    /// occurs, a year range in the past, or more than 100 years away for five-field cron).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Rate(period) => {
                let next = (t.as_second().div_euclid(*period) + 1).checked_mul(*period)?;
                Timestamp::from_second(next).ok()
            }
            Kind::Cron(cron) => cron.next_after(&self.tz, t),
        }
    }

    /// The latest tick in `(after, until]`, if any. Cheap even when `after` is years ago:
    /// it looks back over growing windows instead of walking every tick since `after`.
    pub fn latest_between(&self, after: Timestamp, until: Timestamp) -> Option<Timestamp> {
        if until <= after {
            return None;
        }
        if let Kind::Rate(period) = &self.kind {
            let tick =
                Timestamp::from_second(until.as_second().div_euclid(*period) * period).ok()?;
            return (tick > after).then_some(tick);
        }
        const HOUR: i64 = 3600;
        for window in [
            HOUR,
            24 * HOUR,
            32 * 24 * HOUR,
            367 * 24 * HOUR,
            3660 * 24 * HOUR,
            i64::MAX,
        ] {
            let start = until
                .as_second()
                .checked_sub(window)
                .and_then(|s| Timestamp::from_second(s).ok())
                .map_or(after, |s| s.max(after));
            let mut found = None;
            let mut cur = start;
            while let Some(next) = self.next_after(cur).filter(|n| *n <= until) {
                found = Some(next);
                cur = next;
            }
            if found.is_some() || start == after {
                return found;
            }
        }
        None
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expr, self.tz_name)
    }
}

fn strip_call<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    s.strip_prefix(name)?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn parse_rate(inner: &str) -> Result<i64, String> {
    let parts: Vec<&str> = inner.split_whitespace().collect();
    let [value, unit] = parts[..] else {
        return Err("rate() takes a value and a unit, like rate(5 minutes)".into());
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "rate value {value:?} is not a positive whole number"
        ));
    }
    let n: i64 = value
        .parse()
        .map_err(|_| format!("rate value {value} is too large"))?;
    if n == 0 {
        return Err("rate value must be positive".into());
    }
    let (secs, singular) = match unit {
        "minute" => (60, true),
        "minutes" => (60, false),
        "hour" => (3600, true),
        "hours" => (3600, false),
        "day" => (86_400, true),
        "days" => (86_400, false),
        _ => {
            return Err(format!(
                "rate unit {unit:?} is not minute(s), hour(s) or day(s)"
            ));
        }
    };
    if singular != (n == 1) {
        let base = unit.trim_end_matches('s');
        return Err(format!(
            "write rate(1 {base}) for one and rate(N {base}s) otherwise, not rate({n} {unit})"
        ));
    }
    n.checked_mul(secs)
        .filter(|s| *s <= 100 * 366 * 86_400)
        .ok_or_else(|| "rate period is longer than 100 years".into())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dialect {
    /// `cron()` of AWS: six fields, day-of-week 1-7 = SUN-SAT, one day field must be `?`.
    Aws,
    /// Vixie cron: five fields, day-of-week 0-7 with 0 and 7 = Sunday.
    Unix,
}

/// A set of small integers (0..256), one bit each.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Bits([u64; 4]);

impl Bits {
    fn set(&mut self, i: u32) {
        self.0[(i / 64) as usize] |= 1 << (i % 64);
    }
    fn has(&self, i: u32) -> bool {
        i < 256 && self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    /// The smallest member `>= from`.
    fn next(&self, from: u32) -> Option<u32> {
        (from..256).find(|i| self.has(*i))
    }
}

impl fmt::Debug for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries((0..256).filter(|i| self.has(*i)))
            .finish()
    }
}

#[derive(Clone, Debug)]
struct Cron {
    minutes: Bits,
    hours: Bits,
    months: Bits,
    /// Offsets from 1970; `None` = any year (five-field cron).
    years: Option<Bits>,
    dom: Dom,
    dow: Dow,
    mode: DayMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DayMode {
    Any,
    DomOnly,
    DowOnly,
    /// Vixie: both day fields restricted, either one matching is enough.
    Either,
}

#[derive(Clone, Debug, Default)]
struct Dom {
    days: Bits,
    last: bool,
    last_weekday: bool,
    /// `15W`: the weekday nearest to each of these days, within the month.
    nearest_weekday: Bits,
}

#[derive(Clone, Debug, Default)]
struct Dow {
    /// 0 = Sunday.
    days: Bits,
    /// `5L`: the last such weekday of the month.
    last: Bits,
    /// `2#1`: (weekday, n).
    nth: Vec<(u32, u32)>,
}

struct FieldKind {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// Value of the first name (JAN = 1; SUN = 0 or 1 depending on the dialect).
    names_from: u32,
    /// Subtracted before a value is stored in [`Bits`] (years are stored from 1970).
    base: u32,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    fn parse(fields: &[&str], dialect: Dialect) -> Result<Self, String> {
        let aws = dialect == Dialect::Aws;
        let plain = |i: usize, kind: &FieldKind| -> Result<Bits, String> {
            let spec = parse_field(fields[i], kind, Special::None)?;
            if spec.question {
                return Err(format!(
                    "`?` is only allowed in the day-of-month and day-of-week fields, not in {}",
                    kind.name
                ));
            }
            Ok(spec.bits)
        };
        let minutes = plain(
            0,
            &FieldKind {
                name: "minutes",
                min: 0,
                max: 59,
                names: &[],
                names_from: 0,
                base: 0,
            },
        )?;
        let hours = plain(
            1,
            &FieldKind {
                name: "hours",
                min: 0,
                max: 23,
                names: &[],
                names_from: 0,
                base: 0,
            },
        )?;
        let months = plain(
            3,
            &FieldKind {
                name: "month",
                min: 1,
                max: 12,
                names: &MONTHS,
                names_from: 1,
                base: 0,
            },
        )?;
        let years = if aws {
            Some(plain(
                5,
                &FieldKind {
                    name: "year",
                    min: 1970,
                    max: 2199,
                    names: &[],
                    names_from: 0,
                    base: 1970,
                },
            )?)
        } else {
            None
        };
        let dom_spec = parse_field(
            fields[2],
            &FieldKind {
                name: "day-of-month",
                min: 1,
                max: 31,
                names: &[],
                names_from: 0,
                base: 0,
            },
            Special::Dom,
        )?;
        let dow_kind = if aws {
            FieldKind {
                name: "day-of-week",
                min: 1,
                max: 7,
                names: &DAYS,
                names_from: 1,
                base: 0,
            }
        } else {
            FieldKind {
                name: "day-of-week",
                min: 0,
                max: 7,
                names: &DAYS,
                names_from: 0,
                base: 0,
            }
        };
        let dow_spec = parse_field(fields[4], &dow_kind, Special::Dow)?;
        // Internal day-of-week numbering is 0 = Sunday.
        let to_internal = |v: u32| if aws { v - 1 } else { v % 7 };
        let mut dow = Dow::default();
        for v in 0..=7 {
            if dow_spec.bits.has(v) {
                dow.days.set(to_internal(v));
            }
            if dow_spec.last.has(v) {
                dow.last.set(to_internal(v));
            }
        }
        dow.nth = dow_spec
            .nth
            .iter()
            .map(|&(d, n)| (to_internal(d), n))
            .collect();
        if dow_spec.l_alone {
            // `L` alone in day-of-week: the last day of the week, Saturday (as in AWS).
            dow.days.set(6);
        }
        let dom = Dom {
            days: dom_spec.bits,
            last: dom_spec.l_alone,
            last_weekday: dom_spec.last_weekday,
            nearest_weekday: dom_spec.nearest,
        };
        let mode = if aws {
            match (dom_spec.question, dow_spec.question) {
                (true, false) => DayMode::DowOnly,
                (false, true) => DayMode::DomOnly,
                _ => {
                    return Err("AWS cron: exactly one of day-of-month and day-of-week must be `?` (use `?` for the one you don't restrict)".into());
                }
            }
        } else {
            let star = |f: &str| f.starts_with('*') || f == "?";
            match (star(fields[2]), star(fields[4])) {
                (true, true) => DayMode::Any,
                (true, false) => DayMode::DowOnly,
                (false, true) => DayMode::DomOnly,
                (false, false) => DayMode::Either,
            }
        };
        Ok(Self {
            minutes,
            hours,
            months,
            years,
            dom,
            dow,
            mode,
        })
    }

    fn day_matches(&self, y: i16, m: i8, d: i8) -> bool {
        let Ok(date) = civil::Date::new(y, m, d) else {
            return false;
        };
        let dim = date.days_in_month();
        let dom = || {
            let day = d as u32;
            self.dom.days.has(day)
                || (self.dom.last && d == dim)
                || (self.dom.last_weekday && d == last_weekday(y, m))
                || (1..=31).any(|n| {
                    self.dom.nearest_weekday.has(n) && nearest_weekday(y, m, n as i8) == Some(d)
                })
        };
        let dow = || {
            let wd = date.weekday().to_sunday_zero_offset() as u32;
            self.dow.days.has(wd)
                || (self.dow.last.has(wd) && d + 7 > dim)
                || self
                    .dow
                    .nth
                    .iter()
                    .any(|&(w, n)| w == wd && ((d as u32) - 1) / 7 + 1 == n)
        };
        match self.mode {
            DayMode::Any => true,
            DayMode::DomOnly => dom(),
            DayMode::DowOnly => dow(),
            DayMode::Either => dom() || dow(),
        }
    }

    /// The first civil minute `>= start` whose fields all match, up to `max_year`.
    fn next_match(&self, start: Civil, max_year: i32) -> Option<Civil> {
        let Civil {
            mut y,
            mut mo,
            mut d,
            mut h,
            mut mi,
        } = start;
        loop {
            // Normalise overflow from the increments below.
            if mi > 59 {
                mi = 0;
                h += 1;
            }
            if h > 23 {
                h = 0;
                d += 1;
            }
            if mo <= 12 && d > days_in_month(y, mo) {
                d = 1;
                mo += 1;
            }
            if mo > 12 {
                mo = 1;
                y += 1;
            }
            if y > max_year {
                return None;
            }
            if let Some(years) = &self.years {
                let off = u32::try_from(y - 1970).ok()?;
                if !years.has(off) {
                    let next = years.next(off)?;
                    (y, mo, d, h, mi) = (1970 + next as i32, 1, 1, 0, 0);
                    continue;
                }
            }
            if !self.months.has(mo) {
                match self.months.next(mo) {
                    Some(m) if m <= 12 => (mo, d, h, mi) = (m, 1, 0, 0),
                    _ => (y, mo, d, h, mi) = (y + 1, 1, 1, 0, 0),
                }
                continue;
            }
            if !self.day_matches(y as i16, mo as i8, d as i8) {
                (d, h, mi) = (d + 1, 0, 0);
                continue;
            }
            if !self.hours.has(h) {
                match self.hours.next(h) {
                    Some(hh) if hh <= 23 => (h, mi) = (hh, 0),
                    _ => (d, h, mi) = (d + 1, 0, 0),
                }
                continue;
            }
            if !self.minutes.has(mi) {
                match self.minutes.next(mi) {
                    Some(m) if m <= 59 => mi = m,
                    _ => (h, mi) = (h + 1, 0),
                }
                continue;
            }
            return Some(Civil { y, mo, d, h, mi });
        }
    }

    fn next_after(&self, tz: &TimeZone, t: Timestamp) -> Option<Timestamp> {
        let dt = t.to_zoned_datetime(tz.clone()).datetime();
        // Never look further than the year field allows (2199) or, without one, 100 years:
        // a five-field expression that has not matched in 100 years never will.
        let max_year = if self.years.is_some() {
            2199
        } else {
            i32::from(dt.year()) + 100
        };
        let mut from = Civil {
            y: i32::from(dt.year()),
            mo: dt.month() as u32,
            d: dt.day() as u32,
            h: dt.hour() as u32,
            mi: dt.minute() as u32 + 1,
        };
        loop {
            let c = self.next_match(from, max_year.min(9998))?;
            from = Civil { mi: c.mi + 1, ..c };
            let dt = civil::DateTime::new(
                c.y as i16, c.mo as i8, c.d as i8, c.h as i8, c.mi as i8, 0, 0,
            )
            .ok()?;
            let instant = match tz.to_ambiguous_timestamp(dt).offset() {
                AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok()?,
                // Clocks jumped over this local time: it does not happen that day.
                AmbiguousOffset::Gap { .. } => continue,
                // This local time happens twice: fire at the first occurrence only.
                AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok()?,
            };
            // A repeated local time's first occurrence can lie before `t`; it already fired.
            if instant > t {
                return Some(instant);
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Civil {
    y: i32,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
}

fn days_in_month(y: i32, m: u32) -> u32 {
    civil::Date::new(y as i16, m as i8, 1).map_or(31, |d| d.days_in_month() as u32)
}

fn is_weekday(y: i16, m: i8, d: i8) -> bool {
    civil::Date::new(y, m, d)
        .is_ok_and(|date| (1..=5).contains(&date.weekday().to_sunday_zero_offset()))
}

fn last_weekday(y: i16, m: i8) -> i8 {
    let dim = days_in_month(i32::from(y), m as u32) as i8;
    (dim - 2..=dim)
        .rev()
        .find(|d| is_weekday(y, m, *d))
        .unwrap_or(dim)
}

/// Quartz/AWS `nW`: the weekday nearest to day `n`, never leaving the month.
fn nearest_weekday(y: i16, m: i8, n: i8) -> Option<i8> {
    let dim = days_in_month(i32::from(y), m as u32) as i8;
    if n > dim {
        return None;
    }
    if is_weekday(y, m, n) {
        return Some(n);
    }
    let wd = civil::Date::new(y, m, n)
        .ok()?
        .weekday()
        .to_sunday_zero_offset();
    Some(match wd {
        // Saturday: Friday before, unless that is in the previous month.
        6 => {
            if n > 1 {
                n - 1
            } else {
                n + 2
            }
        }
        // Sunday: Monday after, unless that is in the next month.
        _ => {
            if n < dim {
                n + 1
            } else {
                n - 2
            }
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Special {
    None,
    Dom,
    Dow,
}

#[derive(Default)]
struct FieldSpec {
    bits: Bits,
    question: bool,
    /// `L` alone.
    l_alone: bool,
    last_weekday: bool,
    nearest: Bits,
    /// Day-of-week `nL`, in the field's numbering.
    last: Bits,
    nth: Vec<(u32, u32)>,
}

fn parse_field(text: &str, kind: &FieldKind, special: Special) -> Result<FieldSpec, String> {
    let name = kind.name;
    let mut spec = FieldSpec::default();
    if text == "?" {
        if special == Special::None {
            return Err(format!(
                "`?` is only allowed in the day-of-month and day-of-week fields, not in {name}"
            ));
        }
        spec.question = true;
        return Ok(spec);
    }
    for item in text.split(',') {
        let upper = item.to_ascii_uppercase();
        let item = upper.as_str();
        match special {
            Special::Dom if item == "L" => {
                spec.l_alone = true;
                continue;
            }
            Special::Dom if item == "LW" => {
                spec.last_weekday = true;
                continue;
            }
            Special::Dom if item.len() > 1 && item.ends_with('W') => {
                let n = value(&item[..item.len() - 1], kind)?;
                spec.nearest.set(n);
                continue;
            }
            Special::Dow if item == "L" => {
                spec.l_alone = true;
                continue;
            }
            Special::Dow if item.len() > 1 && item.ends_with('L') => {
                let d = value(&item[..item.len() - 1], kind)?;
                spec.last.set(d);
                continue;
            }
            Special::Dow if item.contains('#') => {
                let (d, n) = item.split_once('#').unwrap_or_default();
                let d = value(d, kind)?;
                let n: u32 = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=5).contains(n))
                    .ok_or_else(|| {
                        format!("in {name}: `#` needs an occurrence 1-5, got {item:?}")
                    })?;
                spec.nth.push((d, n));
                continue;
            }
            _ => {}
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s >= 1 && *s <= kind.max)
                    .ok_or_else(|| {
                        format!(
                            "in {name}: step {s:?} is not a number from 1 to {}",
                            kind.max
                        )
                    })?;
                (r, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (kind.min, kind.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a, kind)?, value(b, kind)?);
            if a > b {
                return Err(format!("in {name}: range {range:?} goes backwards"));
            }
            (a, b)
        } else {
            let a = value(range, kind)?;
            // `5/15` means from 5 to the end, every 15.
            (a, if step.is_some() { kind.max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            spec.bits.set(v - kind.base);
            v += step;
        }
    }
    Ok(spec)
}

fn value(s: &str, kind: &FieldKind) -> Result<u32, String> {
    if let Some(i) = kind.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(kind.names_from + i as u32);
    }
    s.parse::<u32>()
        .ok()
        .filter(|v| (kind.min..=kind.max).contains(v))
        .ok_or_else(|| {
            let names = if kind.names.is_empty() {
                String::new()
            } else {
                format!(" or {}-{}", kind.names[0], kind.names[kind.names.len() - 1])
            };
            format!(
                "in {}: {s:?} is not {}-{}{names}",
                kind.name, kind.min, kind.max
            )
        })
}
