//! Licence dates as users write them: a calendar date (`2026-12-31`) or an RFC 3339 instant.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A date as written in a Subscription: either a bare calendar date `YYYY-MM-DD` (UTC) or an
/// RFC 3339 time such as `2026-12-31T12:00:00+09:00`.
///
/// Kept as the user's text so that an object the API server accepted always deserializes; the
/// engine parses it and reports a condition when it can not (see [`LicenseDate::start_instant`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LicenseDate(pub String);

/// Why a [`LicenseDate`] could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 time (2026-12-31T00:00:00Z)")]
pub struct DateError {
    pub value: String,
}

/// The regular expression the CRD schema enforces; CEL rules then check the calendar.
pub const LICENSE_DATE_PATTERN: &str = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))?$";

impl LicenseDate {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parse(&self) -> Result<Parsed, DateError> {
        let text = self.0.trim();
        if text.len() == 10 {
            // The common case, read without chrono's format interpreter; anything else (or an
            // impossible calendar date) goes the general way below, with the same result.
            if let Some(date) = bare_date(text.as_bytes()) {
                return Ok(Parsed::Date(date));
            }
            if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                return Ok(Parsed::Date(date));
            }
        }
        DateTime::parse_from_rfc3339(text)
            .map(|t| Parsed::Instant(t.with_timezone(&Utc)))
            .map_err(|_| DateError {
                value: self.0.clone(),
            })
    }

    /// The instant a licence starting on this date begins: a bare date begins at 00:00:00 UTC.
    pub fn start_instant(&self) -> Result<DateTime<Utc>, DateError> {
        Ok(match self.parse()? {
            Parsed::Date(d) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
            Parsed::Instant(t) => t,
        })
    }

    /// The instant a licence ending on this date ends: a bare date ends at the end of that day,
    /// that is 00:00:00 UTC of the next day.
    pub fn end_instant(&self) -> Result<DateTime<Utc>, DateError> {
        Ok(match self.parse()? {
            Parsed::Date(d) => d.and_time(chrono::NaiveTime::MIN).and_utc() + TimeDelta::days(1),
            Parsed::Instant(t) => t,
        })
    }
}

/// `YYYY-MM-DD` with ASCII digits, as `NaiveDate::parse_from_str(_, "%Y-%m-%d")` reads it.
fn bare_date(b: &[u8]) -> Option<NaiveDate> {
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r)?.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = i32::try_from(digits(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, digits(5..7)?, digits(8..10)?)
}

enum Parsed {
    Date(NaiveDate),
    Instant(DateTime<Utc>),
}

impl From<&str> for LicenseDate {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl std::fmt::Display for LicenseDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for LicenseDate {
    fn schema_name() -> Cow<'static, str> {
        "LicenseDate".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 40,
            "pattern": LICENSE_DATE_PATTERN,
        })
    }
}

/// Schema of the instants the operator writes in status: RFC 3339 (`format: date-time`), so the
/// API server refuses anything else and every stored status reads back.
pub fn instant_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "date-time" })
}

/// Formats an instant as RFC 3339 in UTC (`Z`): whole seconds like `metav1.Time`, with the
/// fraction only when there is one, so that every status value reads back exactly as written
/// (otherwise the operator would see a difference, and write, on every reconcile).
pub fn format_instant(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // Whole seconds within years 0000..=9999 (what the engine writes): the same text as chrono's
    // `AutoSi`, without its format machinery.
    if t.nanosecond() == 0 && (0..=9999).contains(&t.year()) {
        let mut out = String::with_capacity(20);
        push_date(&mut out, t.date_naive());
        out.push('T');
        push_digits(&mut out, t.hour(), 2);
        out.push(':');
        push_digits(&mut out, t.minute(), 2);
        out.push(':');
        push_digits(&mut out, t.second(), 2);
        out.push('Z');
        return out;
    }
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Appends `YYYY-MM-DD` (a year within 0..=9999, as chrono's `%Y-%m-%d` writes it).
pub fn push_date(out: &mut String, date: NaiveDate) {
    use chrono::Datelike;
    push_digits(out, date.year().unsigned_abs(), 4);
    out.push('-');
    push_digits(out, date.month(), 2);
    out.push('-');
    push_digits(out, date.day(), 2);
}

/// Appends the last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for i in (0..width).rev() {
        let digit = (n / 10u32.pow(i)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Serde helpers for `DateTime<Utc>` fields written with [`format_instant`].
pub mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_instant(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    /// The same for `Option<DateTime<Utc>>`.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::super::format_instant(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(text) => DateTime::parse_from_rfc3339(&text)
                    .map(|t| Some(t.with_timezone(&Utc)))
                    .map_err(serde::de::Error::custom),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn bare_dates_cover_the_whole_utc_day() {
        let d = LicenseDate::from("2026-12-31");
        assert_eq!(d.start_instant().unwrap(), at("2026-12-31T00:00:00Z"));
        assert_eq!(d.end_instant().unwrap(), at("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn rfc3339_times_are_taken_as_is() {
        let d = LicenseDate::from("2026-12-31T12:00:00+09:00");
        assert_eq!(d.start_instant().unwrap(), at("2026-12-31T03:00:00Z"));
        assert_eq!(d.end_instant().unwrap(), at("2026-12-31T03:00:00Z"));
    }

    #[test]
    fn leap_days_and_bad_calendar_dates() {
        assert!(LicenseDate::from("2028-02-29").end_instant().is_ok());
        for bad in [
            "2027-02-29",
            "2026-13-01",
            "2026-1-1",
            "",
            "tomorrow",
            "2026-12-31T25:00:00Z",
        ] {
            let err = LicenseDate::from(bad).end_instant().unwrap_err();
            assert!(err.to_string().contains("YYYY-MM-DD"), "{bad}: {err}");
        }
    }
}

#[cfg(test)]
mod fast_format_tests {
    use super::*;

    #[test]
    fn fast_paths_write_what_chrono_writes() {
        // Every day boundary and some odd seconds over several centuries, and the year ends.
        let mut t = FIRST;
        while t < 253_402_300_799 {
            let at = DateTime::from_timestamp(t, 0).unwrap();
            assert_eq!(
                format_instant(at),
                at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            );
            let mut date = String::new();
            push_date(&mut date, at.date_naive());
            assert_eq!(date, at.format("%Y-%m-%d").to_string());
            let text = at.format("%Y-%m-%d").to_string();
            assert_eq!(
                bare_date(text.as_bytes()),
                NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok()
            );
            t += 86_400 * 37 + 3_607;
        }
        // Anything the fast path does not read goes to chrono (`parse`), so it may only ever
        // agree with chrono or decline.
        for text in [
            "2026-02-30",
            "2026-13-01",
            "20260-1-01",
            "2026-1-001",
            "+026-01-01",
        ] {
            let fast = bare_date(text.as_bytes());
            assert!(
                fast.is_none() || fast == NaiveDate::parse_from_str(text, "%Y-%m-%d").ok(),
                "{text}"
            );
        }
    }

    const FIRST: i64 = -62_167_219_200;
}
