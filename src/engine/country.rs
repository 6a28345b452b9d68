//! The country of a WhatsApp id, from its calling code, by libphonenumber's metadata
//! (the `phonenumber` crate): calling codes that several countries share (+1, +7, +44,
//! ...) need the number's national prefix to tell them apart, which only that metadata
//! knows.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// What a WhatsApp id whose country no calling code names counts under.
pub const UNKNOWN: &str = "unknown";

/// Numbers looked up are remembered, up to this many: recipients repeat, and a lookup in
/// the metadata costs microseconds. Past the bound the cache starts over.
const CACHE_LIMIT: usize = 100_000;

fn cache() -> &'static Mutex<HashMap<String, &'static str>> {
    static CACHE: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The country of a recipient as the events and Meta's webhook name it: the digits of an
/// E.164 number (at most 15, an optional leading `+`). `None` when it is not such a number.
pub fn of_recipient(wa_id: &str) -> Option<&'static str> {
    let digits = wa_id.strip_prefix('+').unwrap_or(wa_id);
    let is_number =
        !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit());
    is_number.then(|| of_wa_id(digits))
}

/// The ISO 3166 alpha-2 code of the number's country, or `unknown`.
pub fn of_wa_id(digits: &str) -> &'static str {
    if let Ok(c) = cache().lock()
        && let Some(found) = c.get(digits)
    {
        return found;
    }
    let found = lookup(digits);
    if let Ok(mut c) = cache().lock() {
        if c.len() >= CACHE_LIMIT {
            c.clear();
        }
        c.insert(digits.to_string(), found);
    }
    found
}

fn lookup(digits: &str) -> &'static str {
    let Ok(number) = phonenumber::parse(None, format!("+{digits}")) else {
        return UNKNOWN;
    };
    match number.country().id() {
        // The ids are a closed set of the crate's own: leak-free as &'static str.
        Some(id) => static_name(id.as_ref()),
        None => UNKNOWN,
    }
}

/// Region codes are two ASCII letters: keep one interned copy of each.
fn static_name(code: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| Mutex::new(HashMap::new()));
    let Ok(mut n) = names.lock() else {
        return UNKNOWN;
    };
    if let Some(s) = n.get(code) {
        return s;
    }
    // At most the ~250 regions of the metadata are ever leaked, once each.
    let s: &'static str = Box::leak(code.to_string().into_boxed_str());
    n.insert(code.to_string(), s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_calling_codes_are_told_apart_by_the_number() {
        assert_eq!(of_wa_id("14155550123"), "US");
        assert_eq!(of_wa_id("16135550123"), "CA");
        assert_eq!(of_wa_id("4915123456789"), "DE");
        assert_eq!(of_wa_id("919876543210"), "IN");
        assert_eq!(of_wa_id("447400123456"), "GB");
        assert_eq!(of_wa_id("5511987654321"), "BR");
        assert_eq!(of_wa_id("999123"), UNKNOWN);
        assert_eq!(of_recipient("+4915123456789"), Some("DE"));
        assert_eq!(of_recipient("+49 151"), None);
        assert_eq!(of_recipient("1234567890123456"), None);
        // Remembered: the same answer the second time.
        assert_eq!(of_wa_id("16135550123"), "CA");
    }
}
