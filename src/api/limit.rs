//! Per-organization request rate limiting (token bucket), answered with 429 and Retry-After.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimiter {
    /// Requests per second per organization; 0 turns limiting off.
    per_second: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        RateLimiter {
            per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `None` if the request may go ahead, else the seconds to wait.
    pub fn check(&self, org: &str) -> Option<u64> {
        if self.per_second == 0 {
            return None;
        }
        let rate = f64::from(self.per_second);
        // A burst of two seconds' worth is allowed.
        let capacity = rate * 2.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().ok()?;
        let (tokens, last) = buckets.entry(org.to_string()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            None
        } else {
            Some(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
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
