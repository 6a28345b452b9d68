//! The query planner: splits a time range into stored buckets, always the coarsest
//! tier that covers a part exactly and still holds it. A part that no tier can serve
//! exactly is refused, never approximated.

use jiff::Timestamp;

use super::time::{Bucket, Calendar, Tier, day_key, month_key};

/// Where each tier's retention begins: a bucket starting before its tier's bound is gone
/// (or about to be). Bounds fall on bucket starts of the organization's calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierBounds {
    pub hour: i64,
    pub day: i64,
}

impl TierBounds {
    pub const EVERYTHING: TierBounds = TierBounds {
        hour: i64::MIN,
        day: i64::MIN,
    };

    /// The oldest instant each tier (hour, day, month) still holds.
    pub fn as_cutoffs(&self) -> [i64; 3] {
        [self.hour, self.day, i64::MIN]
    }
}

/// Why a range could not be served exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unservable {
    /// The first instant no stored bucket covers exactly.
    pub at: i64,
}

/// The stored buckets that exactly make up `[start, end)`.
pub fn cover(
    cal: &Calendar,
    start: i64,
    end: i64,
    bounds: &TierBounds,
) -> Result<Vec<Bucket>, Unservable> {
    let mut out = Vec::new();
    let mut t = start;
    // After a whole day or month, `t` is a local midnight: no need to work it out again.
    let mut at_midnight = false;
    while t < end {
        let refuse = Unservable { at: t };
        let ts = Timestamp::from_second(t).map_err(|_| refuse.clone())?;
        let date = cal.zoned(ts).date();
        let day_start = at_midnight || cal.is_day_start(ts);
        at_midnight = false;
        if day_start
            && date.day() == 1
            && let Some(next) = cal
                .start_of_next_month(date)
                .map(|z| z.timestamp().as_second())
            && next <= end
        {
            out.push(Bucket {
                tier: Tier::Month,
                key: month_key(date),
            });
            t = next;
            at_midnight = true;
            continue;
        }
        if day_start
            && t >= bounds.day
            && let Some(next) = cal
                .start_of_next_day(date)
                .map(|z| z.timestamp().as_second())
            && next <= end
        {
            out.push(Bucket {
                tier: Tier::Day,
                key: day_key(date),
            });
            t = next;
            at_midnight = true;
            continue;
        }
        if t >= bounds.hour && t + 3600 <= end && cal.is_hour_start(ts) {
            out.push(Bucket {
                tier: Tier::Hour,
                key: t,
            });
            t += 3600;
            continue;
        }
        return Err(refuse);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::TimeZone;

    fn cal(name: &str) -> Calendar {
        Calendar::new(TimeZone::get(name).expect("zone"))
    }

    fn secs(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("ts").as_second()
    }

    #[test]
    fn whole_months_then_days_then_hours() {
        let c = cal("Asia/Kolkata");
        // 2024-01-01 00:00 IST to 2024-03-02 01:00 IST.
        let buckets = cover(
            &c,
            secs("2023-12-31T18:30:00Z"),
            secs("2024-03-01T19:30:00Z"),
            &TierBounds::EVERYTHING,
        )
        .expect("servable");
        let tiers: Vec<_> = buckets.iter().map(|b| (b.tier, b.key)).collect();
        assert_eq!(tiers[0], (Tier::Month, 202401));
        assert_eq!(tiers[1], (Tier::Month, 202402));
        assert_eq!(tiers[2], (Tier::Day, 20240301));
        assert_eq!(tiers[3], (Tier::Hour, secs("2024-03-01T18:30:00Z")));
        assert_eq!(tiers.len(), 4);
    }

    #[test]
    fn unaligned_start_is_refused() {
        let c = cal("Asia/Kathmandu");
        let err = cover(
            &c,
            secs("2024-01-01T00:00:00Z"),
            secs("2024-01-02T00:00:00Z"),
            &TierBounds::EVERYTHING,
        )
        .unwrap_err();
        assert_eq!(err.at, secs("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn expired_hours_are_refused_but_days_still_serve() {
        let c = cal("UTC");
        let bounds = TierBounds {
            hour: secs("2024-06-01T00:00:00Z"),
            day: i64::MIN,
        };
        assert!(
            cover(
                &c,
                secs("2024-05-02T00:00:00Z"),
                secs("2024-05-03T00:00:00Z"),
                &bounds
            )
            .is_ok()
        );
        let err = cover(
            &c,
            secs("2024-05-02T05:00:00Z"),
            secs("2024-05-03T00:00:00Z"),
            &bounds,
        )
        .unwrap_err();
        assert_eq!(err.at, secs("2024-05-02T05:00:00Z"));
    }

    #[test]
    fn dst_day_is_one_bucket_of_25_hours() {
        let c = cal("America/New_York");
        let start = secs("2024-11-03T04:00:00Z");
        let end = secs("2024-11-04T05:00:00Z");
        let b = cover(&c, start, end, &TierBounds::EVERYTHING).expect("servable");
        assert_eq!(
            b,
            vec![Bucket {
                tier: Tier::Day,
                key: 20241103
            }]
        );
        let bounds = TierBounds {
            hour: i64::MIN,
            day: i64::MAX,
        };
        assert_eq!(cover(&c, start, end, &bounds).expect("hours").len(), 25);
    }
}
