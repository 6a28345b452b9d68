//! Local-time bucketing: every rollup bucket is an hour, day or month of the
//! organization's own calendar, so days in +05:30, +05:45 and DST zones are exact.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

pub use crate::store::Tier;

/// A bucket of one tier. Hours are keyed by the Unix second at which the local hour
/// starts (unique even in the repeated hour of a DST fall-back); days by `yyyymmdd`
/// and months by `yyyymm` of the local calendar, which sort in time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket {
    pub tier: Tier,
    pub key: i64,
}

pub fn day_key(date: Date) -> i64 {
    i64::from(date.year()) * 10_000 + i64::from(date.month()) * 100 + i64::from(date.day())
}

pub fn month_key(date: Date) -> i64 {
    i64::from(date.year()) * 100 + i64::from(date.month())
}

/// The first local day of the month a `yyyymm` key names.
pub fn month_key_date(key: i64) -> Option<Date> {
    let year = i16::try_from(key / 100).ok()?;
    let month = i8::try_from(key % 100).ok()?;
    Date::new(year, month, 1).ok()
}

/// The local day a `yyyymmdd` key names.
pub fn day_key_date(key: i64) -> Option<Date> {
    let year = i16::try_from(key / 10_000).ok()?;
    let month = i8::try_from((key / 100) % 100).ok()?;
    let day = i8::try_from(key % 100).ok()?;
    Date::new(year, month, day).ok()
}

/// An organization's calendar: turns instants into local buckets and back.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: TimeZone,
}

impl Calendar {
    pub fn new(tz: TimeZone) -> Self {
        Calendar { tz }
    }

    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    pub fn zoned(&self, ts: Timestamp) -> Zoned {
        ts.to_zoned(self.tz.clone())
    }

    /// The Unix second at which the local hour holding `at` starts.
    pub fn hour_start(&self, at: i64) -> i64 {
        let offset =
            Timestamp::from_second(at).map_or(0, |t| i64::from(self.tz.to_offset(t).seconds()));
        at - (at + offset).rem_euclid(3600)
    }

    /// The three buckets (hour, day, month) an instant falls in.
    pub fn buckets(&self, at: Timestamp) -> [Bucket; 3] {
        let offset = i64::from(self.tz.to_offset(at).seconds());
        let secs = at.as_second();
        let hour_start = secs - (secs + offset).rem_euclid(3600);
        let date = self.zoned(at).date();
        [
            Bucket {
                tier: Tier::Hour,
                key: hour_start,
            },
            Bucket {
                tier: Tier::Day,
                key: day_key(date),
            },
            Bucket {
                tier: Tier::Month,
                key: month_key(date),
            },
        ]
    }

    /// Local midnight starting `date` (the first instant of the day where midnight is skipped).
    pub fn start_of(&self, date: Date) -> Option<Zoned> {
        date.to_zoned(self.tz.clone()).ok()?.start_of_day().ok()
    }

    pub fn start_of_next_day(&self, date: Date) -> Option<Zoned> {
        self.start_of(date.tomorrow().ok()?)
    }

    pub fn start_of_next_month(&self, date: Date) -> Option<Zoned> {
        self.start_of(date.first_of_month().checked_add(1.month()).ok()?)
    }

    pub fn is_hour_start(&self, at: Timestamp) -> bool {
        let z = self.zoned(at);
        z.minute() == 0 && z.second() == 0 && z.subsec_nanosecond() == 0
    }

    pub fn is_day_start(&self, at: Timestamp) -> bool {
        self.start_of(self.zoned(at).date())
            .is_some_and(|s| s.timestamp() == at)
    }

    pub fn is_month_start(&self, at: Timestamp) -> bool {
        let date = self.zoned(at).date();
        date.day() == 1 && self.is_day_start(at)
    }
}

/// Formats an instant as local RFC 3339 with its offset, e.g. `2024-03-10T03:00:00-04:00`.
pub fn local_rfc3339(z: &Zoned) -> String {
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(name: &str) -> Calendar {
        Calendar::new(TimeZone::get(name).expect("known zone"))
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("valid timestamp")
    }

    #[test]
    fn kolkata_day_edges_fall_on_local_midnight() {
        let c = cal("Asia/Kolkata");
        // 23:50 and 00:10 local are ten minutes apart in two different local days.
        let before = c.buckets(ts("2024-01-01T18:20:00Z"));
        let after = c.buckets(ts("2024-01-01T18:40:00Z"));
        assert_eq!(before[1].key, 20240101);
        assert_eq!(after[1].key, 20240102);
        // The local hour 23:00 IST starts at 17:30 UTC.
        assert_eq!(before[0].key, ts("2024-01-01T17:30:00Z").as_second());
        assert_eq!(after[0].key, ts("2024-01-01T18:30:00Z").as_second());
    }

    #[test]
    fn kathmandu_hours_start_at_quarter_past_utc() {
        let c = cal("Asia/Kathmandu");
        let b = c.buckets(ts("2024-06-30T18:14:59Z"));
        assert_eq!(b[0].key, ts("2024-06-30T17:15:00Z").as_second());
        assert_eq!(b[1].key, 20240630);
        let b = c.buckets(ts("2024-06-30T18:15:00Z"));
        assert_eq!(b[1].key, 20240701);
        assert_eq!(b[2].key, 202407);
        assert!(c.is_day_start(ts("2024-06-30T18:15:00Z")));
        assert!(!c.is_hour_start(ts("2024-06-30T18:00:00Z")));
    }

    #[test]
    fn new_york_dst_days_have_23_and_25_hours() {
        let c = cal("America/New_York");
        let spring = jiff::civil::date(2024, 3, 10);
        let start = c.start_of(spring).expect("midnight");
        let end = c.start_of_next_day(spring).expect("next midnight");
        assert_eq!(
            end.timestamp().as_second() - start.timestamp().as_second(),
            23 * 3600
        );
        let fall = jiff::civil::date(2024, 11, 3);
        let start = c.start_of(fall).expect("midnight");
        let end = c.start_of_next_day(fall).expect("next midnight");
        assert_eq!(
            end.timestamp().as_second() - start.timestamp().as_second(),
            25 * 3600
        );
        // The repeated 01:00 hour gives two distinct hour buckets on the same day.
        let first = c.buckets(ts("2024-11-03T05:30:00Z"));
        let second = c.buckets(ts("2024-11-03T06:30:00Z"));
        assert_ne!(first[0].key, second[0].key);
        assert_eq!(first[1].key, second[1].key);
        assert!(c.is_hour_start(ts("2024-11-03T06:00:00Z")));
    }

    #[test]
    fn month_boundary_and_keys_round_trip() {
        let c = cal("Asia/Kolkata");
        let b = c.buckets(ts("2024-01-31T18:29:59Z"));
        assert_eq!(b[2].key, 202401);
        let b = c.buckets(ts("2024-01-31T18:30:00Z"));
        assert_eq!(b[2].key, 202402);
        assert!(c.is_month_start(ts("2024-01-31T18:30:00Z")));
        assert_eq!(month_key_date(202402), Some(jiff::civil::date(2024, 2, 1)));
        assert_eq!(day_key_date(20240229), Some(jiff::civil::date(2024, 2, 29)));
        assert_eq!(day_key_date(20230229), None);
    }

    #[test]
    fn local_rfc3339_shows_the_offset() {
        let c = cal("Asia/Kathmandu");
        let z = c.zoned(ts("2024-06-30T18:15:00Z"));
        assert_eq!(local_rfc3339(&z), "2024-07-01T00:00:00+05:45");
    }
}
