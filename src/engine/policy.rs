//! The operator's licensing policy: period lengths and the product catalogue.

use chrono::TimeDelta;

/// Catalogue default: the base service.
pub const DEFAULT_BASE_PRODUCT: &str = crate::api::DEFAULT_CATALOGUE[0];
/// Catalogue default: the add-ons.
pub const DEFAULT_ADD_ONS: [&str; 2] = [
    crate::api::DEFAULT_CATALOGUE[1],
    crate::api::DEFAULT_CATALOGUE[2],
];

/// Periods longer than this are refused, so date arithmetic can never overflow.
const MAX_PERIOD: TimeDelta = TimeDelta::days(36_500);

/// How the lifecycle is timed and which product is the base service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long before the end of coverage the tenant is warned (default 30 days).
    pub warning_period: TimeDelta,
    /// How long the tenant stays read-only after the end of coverage (default 30 days).
    pub grace_period: TimeDelta,
    /// A milestone announced more than this after it was due is marked late.
    pub late_after: TimeDelta,
    pub catalogue: Catalogue,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            warning_period: TimeDelta::days(30),
            grace_period: TimeDelta::days(30),
            late_after: TimeDelta::hours(1),
            catalogue: Catalogue::default(),
        }
    }
}

/// The products the service sells. The base product decides the whole tenant; an add-on that
/// lapses only freezes or suspends itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalogue {
    pub base: String,
    pub add_ons: Vec<String>,
}

impl Default for Catalogue {
    fn default() -> Self {
        Self {
            base: DEFAULT_BASE_PRODUCT.to_string(),
            add_ons: DEFAULT_ADD_ONS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Catalogue {
    pub fn is_base(&self, product: &str) -> bool {
        self.base == product
    }

    pub fn knows(&self, product: &str) -> bool {
        self.is_base(product) || self.add_ons.iter().any(|p| p == product)
    }
}

/// Why a period setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("{value:?} is not a period: write a number and a unit, e.g. 30d, 12h, 90s or 1d12h")]
    Syntax { value: String },
    #[error("{value:?} is longer than 100 years")]
    TooLong { value: String },
}

/// Parses a period such as `30d`, `12h`, `90s` or `1d 12h`.
pub fn parse_period(value: &str) -> Result<TimeDelta, PeriodError> {
    let std = humantime::parse_duration(value.trim()).map_err(|_| PeriodError::Syntax {
        value: value.to_string(),
    })?;
    let delta = TimeDelta::from_std(std).map_err(|_| PeriodError::TooLong {
        value: value.to_string(),
    })?;
    if delta > MAX_PERIOD {
        return Err(PeriodError::TooLong {
            value: value.to_string(),
        });
    }
    Ok(delta)
}

/// Formats a period the way `parse_period` reads it, in the largest exact unit (`30d`, `36h`, `90s`).
pub fn format_period(d: TimeDelta) -> String {
    let secs = d.num_seconds();
    match secs {
        s if s != 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s != 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s != 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_in_the_units_people_write() {
        let cases = [
            ("30d", TimeDelta::days(30)),
            ("12h", TimeDelta::hours(12)),
            ("90s", TimeDelta::seconds(90)),
            ("3s", TimeDelta::seconds(3)),
            ("1d 12h", TimeDelta::hours(36)),
            ("0s", TimeDelta::zero()),
        ];
        for (text, want) in cases {
            assert_eq!(parse_period(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_periods_say_what_to_write() {
        for bad in ["", "30", "thirty days", "-5d"] {
            let err = parse_period(bad).unwrap_err();
            assert!(err.to_string().contains("e.g. 30d"), "{bad}: {err}");
        }
        assert!(matches!(
            parse_period("40000d"),
            Err(PeriodError::TooLong { .. })
        ));
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["30d", "12h", "90s", "5m", "0s"] {
            assert_eq!(format_period(parse_period(text).unwrap()), text);
        }
    }

    #[test]
    fn catalogue_defaults() {
        let c = Catalogue::default();
        assert!(c.is_base("email-safeguard"));
        assert!(c.knows("email-threat-isolation"));
        assert!(!c.knows("email-antivirus"));
    }
}
