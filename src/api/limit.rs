//! Per-organization request rate limiting, answered with 429 and Retry-After: `N` requests
//! a second per organization key, in bursts of up to `2N`.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

pub struct RateLimiter {
    /// `None` turns limiting off (a rate of 0).
    keyed: Option<(DefaultKeyedRateLimiter<String>, DefaultClock)>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        let keyed = NonZeroU32::new(per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            let quota = Quota::per_second(rate).allow_burst(burst);
            (governor::RateLimiter::keyed(quota), DefaultClock::default())
        });
        RateLimiter { keyed }
    }

    /// `None` if the request may go ahead, else the whole seconds to wait (at least 1).
    pub fn check(&self, org: &str) -> Option<u64> {
        let (limiter, clock) = self.keyed.as_ref()?;
        let key = org.to_string();
        match limiter.check_key(&key) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(clock.now());
                Some(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refuses() {
        let l = RateLimiter::new(2);
        assert!((0..4).all(|_| l.check("o").is_none()));
        assert_eq!(l.check("o"), Some(1));
        assert!(l.check("other").is_none());
        assert!(RateLimiter::new(0).check("o").is_none());
    }
}
