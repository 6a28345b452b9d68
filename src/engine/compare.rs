//! Previous-period comparison: which window came before the asked one, and how much each
//! figure changed. The previous answer is computed exactly like the current one; where the
//! tiers cannot serve it, the comparison says so instead of approximating.

use jiff::{Span, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};

use super::EngineError;
use super::metrics::{Period, RangeError, Window};
use super::time::Calendar;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compare {
    #[default]
    None,
    Previous,
}

/// The window of equal length that ends where `w` starts: as many whole local days when
/// `w` is whole local days (so a DST change does not shift it off midnight), else as
/// many seconds.
pub(crate) fn previous_window(w: &Window) -> Option<Window> {
    let cal = &w.view;
    let start = Timestamp::from_second(w.start).ok()?;
    let end = Timestamp::from_second(w.end).ok()?;
    let prev_start = if cal.is_day_start(start) && cal.is_day_start(end) {
        let (first, after) = (cal.zoned(start).date(), cal.zoned(end).date());
        let days = first.until(after).ok()?.get_days();
        let prev_first = first.checked_sub(Span::new().days(days)).ok()?;
        cal.start_of(prev_first)?.timestamp().as_second()
    } else {
        w.start.checked_sub(w.end - w.start)?
    };
    Some(Window {
        start: prev_start,
        end: w.start,
        view: cal.clone(),
    })
}

/// For the dashboard: the same point in the period before `now`'s (yesterday at this
/// time, a week ago, a month ago clamped to the month's length, a year ago), and the end
/// of its hour, up to which the previous figures run.
pub(crate) fn previous_point(
    cal: &Calendar,
    now: Timestamp,
    period: Period,
) -> Option<(Timestamp, i64)> {
    let span = match period {
        Period::Today => Span::new().days(1),
        Period::Week => Span::new().weeks(1),
        Period::Month => Span::new().months(1),
        Period::Year => Span::new().years(1),
    };
    let then = cal.zoned(now).checked_sub(span).ok()?.timestamp();
    let hour_end = cal.hour_start(then.as_second()) + 3600;
    Some((then, hour_end))
}

pub(crate) fn no_previous() -> EngineError {
    EngineError::Range(RangeError::NotServable(
        "the previous period lies outside the calendar".into(),
    ))
}

type Outcome<T> = (Option<Box<T>>, Value, Option<String>);

/// Fills a comparison from the previous answer: the answer and the change of its summary,
/// or `null` with the reason when the tiers cannot serve it exactly.
pub(crate) fn outcome<T, S: Serialize>(
    previous: Result<T, EngineError>,
    current: &S,
    summary: impl Fn(&T) -> &S,
) -> Result<Outcome<T>, EngineError> {
    let current = serde_json::to_value(current).unwrap_or(Value::Null);
    outcome_of(previous, &current, |p| {
        serde_json::to_value(summary(p)).unwrap_or(Value::Null)
    })
}

/// As `outcome`, with the figures to compare given as JSON.
pub(crate) fn outcome_of<T>(
    previous: Result<T, EngineError>,
    current: &Value,
    figures: impl Fn(&T) -> Value,
) -> Result<Outcome<T>, EngineError> {
    match previous {
        Ok(p) => {
            let c = change(current, &figures(&p));
            Ok((Some(Box::new(p)), c, None))
        }
        // A refusal of the previous period leaves the asked answer standing.
        Err(EngineError::Range(
            why @ (RangeError::NotServable(_)
            | RangeError::TooManyBuckets { .. }
            | RangeError::NotOnTheHour(_)
            | RangeError::Empty),
        )) => Ok((
            None,
            Value::Null,
            Some(format!(
                "the previous period cannot be served exactly: {why}"
            )),
        )),
        Err(e) => Err(e),
    }
}

/// The change of every number of `current` against `previous`, in percent with one
/// decimal; `null` where the previous figure is 0. Objects are compared field by field.
pub fn change(current: &Value, previous: &Value) -> Value {
    match (current, previous) {
        (Value::Object(c), Value::Object(p)) => {
            let mut out = Map::new();
            for (k, cv) in c {
                if let Some(pv) = p.get(k) {
                    let ch = change(cv, pv);
                    if !ch.is_null() || cv.is_number() {
                        out.insert(k.clone(), ch);
                    }
                }
            }
            Value::Object(out)
        }
        (Value::Number(c), Value::Number(p)) => match (c.as_f64(), p.as_f64()) {
            (Some(c), Some(p)) if p != 0.0 => {
                let pct = ((c - p) * 100.0 / p.abs() * 10.0).round() / 10.0;
                serde_json::Number::from_f64(pct).map_or(Value::Null, Value::Number)
            }
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn change_is_percent_with_one_decimal_and_null_from_zero() {
        let c = change(
            &json!({"a": 150, "b": 5, "c": 2, "d": 1.0, "n": {"x": 1}, "s": "text"}),
            &json!({"a": 100, "b": 0, "c": 3, "d": 3.0, "n": {"x": 4}, "s": "text"}),
        );
        assert_eq!(
            c,
            json!({"a": 50.0, "b": null, "c": -33.3, "d": -66.7, "n": {"x": -75.0}})
        );
    }

    fn utc_window(a: &str, b: &str) -> Window {
        let s = |x: &str| x.parse::<Timestamp>().expect("ts").as_second();
        Window {
            start: s(a),
            end: s(b),
            view: Calendar::new(jiff::tz::TimeZone::UTC),
        }
    }

    #[test]
    fn the_previous_window_has_the_same_length_and_ends_at_the_start() {
        let w = utc_window("2024-03-11T00:00:00Z", "2024-03-18T00:00:00Z");
        let p = previous_window(&w).expect("previous");
        assert_eq!((p.start, p.end), (w.start - 7 * 86_400, w.start));
        let w = utc_window("2024-03-11T10:00:00Z", "2024-03-11T13:30:00Z");
        let p = previous_window(&w).expect("previous");
        assert_eq!((p.start, p.end), (w.start - 12_600, w.start));
    }

    #[test]
    fn whole_days_stay_whole_days_across_a_dst_change() {
        let tz = jiff::tz::TimeZone::get("America/New_York").expect("zone");
        let cal = Calendar::new(tz);
        let day = |d: &str| {
            cal.start_of(d.parse().expect("date"))
                .expect("start")
                .timestamp()
                .as_second()
        };
        // 2024-03-10 is 23 hours long in New York.
        let w = Window {
            start: day("2024-03-11"),
            end: day("2024-03-13"),
            view: cal.clone(),
        };
        let p = previous_window(&w).expect("previous");
        assert_eq!(p.start, day("2024-03-09"));
    }

    #[test]
    fn the_previous_dashboard_point_is_the_same_time_a_period_before() {
        let cal = Calendar::new(jiff::tz::TimeZone::UTC);
        let now: Timestamp = "2024-03-31T10:20:00Z".parse().expect("ts");
        let (then, end) = previous_point(&cal, now, Period::Month).expect("point");
        assert_eq!(then.to_string(), "2024-02-29T10:20:00Z");
        assert_eq!(
            end,
            "2024-02-29T11:00:00Z"
                .parse::<Timestamp>()
                .expect("ts")
                .as_second()
        );
        let (then, _) = previous_point(&cal, now, Period::Today).expect("point");
        assert_eq!(then.to_string(), "2024-03-30T10:20:00Z");
    }
}
