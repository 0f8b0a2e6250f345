//! CEL snippets shared by the CRD validation rules, so every date field is read the same way
//! the engine reads it (see [`super::date::LicenseDate`]).

/// True when the date text `x` is a real calendar date or RFC 3339 time.
pub fn valid_date(x: &str) -> String {
    format!(
        "(size({x}) == 10 ? !format.date().validate({x}).hasValue() : !format.datetime().validate({x}).hasValue())"
    )
}

/// The instant a licence starting on `x` begins (a bare date: 00:00 UTC).
pub fn start_instant(x: &str) -> String {
    format!("(size({x}) == 10 ? timestamp({x} + 'T00:00:00Z') : timestamp({x}))")
}

/// The instant a licence ending on `x` ends (a bare date: end of that day, UTC).
pub fn end_instant(x: &str) -> String {
    format!("(size({x}) == 10 ? timestamp({x} + 'T00:00:00Z') + duration('24h') : timestamp({x}))")
}

/// Rule: the date field `self` is a real date.
pub fn date_field_is_valid() -> String {
    valid_date("self")
}

/// Rule: `later` (read as an end) is after `earlier` (read as a start or an end). Only evaluated
/// when both dates are valid, so a malformed date reports its own error and nothing else.
pub fn ends_after(later: &str, earlier: &str, earlier_is_end: bool) -> String {
    let earlier_instant = if earlier_is_end {
        end_instant(earlier)
    } else {
        start_instant(earlier)
    };
    format!(
        "!({} && {}) || {} > {}",
        valid_date(later),
        valid_date(earlier),
        end_instant(later),
        earlier_instant
    )
}
