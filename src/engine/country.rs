//! The country of a WhatsApp id, from its calling code, by libphonenumber's metadata
//! (the `phonenumber` crate). A code of one country is answered from the metadata's table
//! of codes alone; calling codes that several countries share (+1, +7, +44, ...) need the
//! number's leading digits or its validity in each country to tell them apart, which only
//! that metadata knows.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use phonenumber::metadata::{DATABASE, Database, Descriptor, Metadata};
use regex::{Regex, RegexBuilder};

/// What a WhatsApp id whose country no calling code names counts under.
pub const UNKNOWN: &str = "unknown";

/// Numbers of shared calling codes looked up are remembered, up to this many: recipients
/// repeat, and such a lookup runs the metadata's regular expressions. Past the bound the
/// memory starts over.
const SHARED_LIMIT: usize = 100_000;

/// The country of a recipient as the events and Meta's webhook name it: the digits of an
/// E.164 number (at most 15, an optional leading `+`). `None` when it is not such a number.
pub fn of_recipient(wa_id: &str) -> Option<&'static str> {
    let digits = wa_id.strip_prefix('+').unwrap_or(wa_id);
    let is_number =
        !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit());
    is_number.then(|| of_wa_id(digits))
}

/// Digits a number needs after its calling code, as the crate's parse requires.
const MIN_NATIONAL_DIGITS: usize = 2;

/// The ISO 3166 alpha-2 code of the number's country, or `unknown`.
pub fn of_wa_id(digits: &str) -> &'static str {
    // No calling code starts with 0 (the crate refuses such a number).
    if digits.starts_with('0') {
        return UNKNOWN;
    }
    // Calling codes are one to three digits and prefix-free: the first prefix the metadata
    // knows is the number's code.
    for len in 1..=digits.len().min(3) {
        let Some(code) = digits.get(..len).and_then(|c| c.parse::<u16>().ok()) else {
            return UNKNOWN;
        };
        let Some(regions) = database().by_code(&code) else {
            continue;
        };
        if digits.len() < len + MIN_NATIONAL_DIGITS {
            return UNKNOWN;
        }
        return match regions.as_slice() {
            [only] if only.id() == NON_GEOGRAPHIC => UNKNOWN,
            [only] => only.id(),
            shared => of_shared_code(digits, len, shared),
        };
    }
    UNKNOWN
}

/// libphonenumber's metadata, as the crate loads it once.
fn database() -> &'static Database {
    &DATABASE
}

/// The metadata's region of non-geographic calling codes, which name no country.
const NON_GEOGRAPHIC: &str = "001";

/// The lazy DFA's cache of each expression, in bytes: libphonenumber's expressions for
/// shared codes are long alternations, and at the regex crate's default each grew to
/// megabytes (70 MB in all for +1 and +44 numbers); past this it falls back to slower
/// matching, microseconds a number, and numbers are remembered anyway.
const PATTERN_CACHE_BYTES: usize = 128 * 1024;

struct SharedCodes {
    /// Numbers already looked up.
    known: HashMap<String, &'static str>,
    /// The metadata's expressions, by their text, as compiled here.
    patterns: HashMap<&'static str, Option<Regex>>,
}

impl SharedCodes {
    /// libphonenumber's rule (as the crate's `source_for`): the first region, main one
    /// first, whose leading digits the number starts with, or, for a region without them,
    /// for which the number is of any known type.
    fn region_of(&mut self, national: &str, regions: &[&'static Metadata]) -> &'static str {
        let found = regions.iter().find(|meta| match meta.leading_digits() {
            Some(leading) => self.starts(leading.as_str(), national),
            None => self.is_number_of(meta, national),
        });
        match found.map(|meta| meta.id()) {
            Some(id) if id != NON_GEOGRAPHIC => id,
            _ => UNKNOWN,
        }
    }

    /// The crate's `number_type(..) != Unknown`: the general description and one of the
    /// types' matches.
    fn is_number_of(&mut self, meta: &'static Metadata, national: &str) -> bool {
        let d = meta.descriptors();
        let types = [
            d.premium_rate(),
            d.toll_free(),
            d.shared_cost(),
            d.voip(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
            d.fixed_line(),
            d.mobile(),
        ];
        self.describes(d.general(), national)
            && types
                .into_iter()
                .flatten()
                .any(|t| self.describes(t, national))
    }

    fn describes(&mut self, d: &'static Descriptor, national: &str) -> bool {
        let lengths = d.possible_length();
        let fits =
            lengths.is_empty() || u16::try_from(national.len()).is_ok_and(|n| lengths.contains(&n));
        fits && self.starts(d.national_number().as_str(), national)
    }

    /// Whether the expression matches at the start of the number, as the crate matches.
    fn starts(&mut self, pattern: &'static str, national: &str) -> bool {
        let compiled = self.patterns.entry(pattern).or_insert_with(|| {
            // The metadata lays its expressions out over lines, as the crate reads them.
            RegexBuilder::new(&format!("^(?:{pattern})"))
                .ignore_whitespace(true)
                .dfa_size_limit(PATTERN_CACHE_BYTES)
                .build()
                .ok()
        });
        compiled.as_ref().is_some_and(|r| r.is_match(national))
    }
}

/// A number whose calling code several countries share. One lookup at a time, so that
/// each expression keeps few matching caches (the regex crate makes one for each thread
/// that runs it while another thread does).
fn of_shared_code(digits: &str, code_len: usize, regions: &[&'static Metadata]) -> &'static str {
    static SHARED: OnceLock<Mutex<SharedCodes>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        Mutex::new(SharedCodes {
            known: HashMap::new(),
            patterns: HashMap::new(),
        })
    });
    // Nothing under the lock panics on input; should anything, the memo is still sound.
    let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = shared.known.get(digits) {
        return found;
    }
    // The digits after the code as given: Italy's numbers keep their leading 0, as in
    // libphonenumber (the crate strips it here, and then finds Italian landlines nowhere).
    let national = digits.get(code_len..).unwrap_or("");
    let found = shared.region_of(national, regions);
    if shared.known.len() >= SHARED_LIMIT {
        shared.known.clear();
    }
    shared.known.insert(digits.to_string(), found);
    found
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

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
        // Non-geographic codes name no country.
        assert_eq!(of_wa_id("80012345678"), UNKNOWN);
        // Codes of their own: no parse needed, the code alone answers.
        assert_eq!(of_wa_id("34612345678"), "ES");
        assert_eq!(of_wa_id("6281234567890"), "ID");
        // No calling code starts with 0; a code alone is no number.
        assert_eq!(of_recipient("0712345678"), Some(UNKNOWN));
        assert_eq!(of_wa_id("061412345678"), UNKNOWN);
        assert_eq!(of_wa_id("49"), UNKNOWN);
        assert_eq!(of_wa_id("491"), UNKNOWN);
        assert_eq!(of_wa_id("4915"), "DE");
        // Italy's landlines keep their 0; the Vatican's share Rome's prefix.
        assert_eq!(of_wa_id("390612345678"), "IT");
        assert_eq!(of_wa_id("393123456789"), "IT");
        assert_eq!(of_wa_id("390669812345"), "VA");
        // Shared codes told apart: +7 Russia and Kazakhstan, +44 the Isle of Man.
        assert_eq!(of_wa_id("79123456789"), "RU");
        assert_eq!(of_wa_id("77012345678"), "KZ");
        assert_eq!(of_wa_id("447624123456"), "IM");
        assert_eq!(of_recipient("+4915123456789"), Some("DE"));
        assert_eq!(of_recipient("+49 151"), None);
        assert_eq!(of_recipient("1234567890123456"), None);
        // Remembered: the same answer the second time.
        assert_eq!(of_wa_id("16135550123"), "CA");
    }

    /// The crate's own parse and, if it finds the number valid, that number's country.
    fn by_full_parse(digits: &str) -> (&'static str, bool) {
        let Ok(number) = phonenumber::parse(None, format!("+{digits}")) else {
            return (UNKNOWN, false);
        };
        let id = number.country().id();
        let id: Option<&str> = id.as_ref().map(|i| i.as_ref());
        let country = id
            .and_then(|id| database().by_id(id))
            .map_or(UNKNOWN, |m| m.id());
        (country, phonenumber::is_valid(&number))
    }

    /// The same country as the crate's full parse: always for codes of one country, and
    /// for valid numbers of shared codes. (For an invalid number of a shared code the parse
    /// strips a national trunk prefix that an E.164 number never carries, and may then
    /// find no country where the lookup here reads the digits as given.)
    #[test]
    fn answers_as_the_crate_s_full_parse() {
        let mut rng = StdRng::seed_from_u64(0x2545_f491_4f6c_dd1d);
        let mut shared = 0;
        for code in 1..1000u16 {
            let Some(regions) = database().region(&code) else {
                continue;
            };
            for _ in 0..if regions.len() > 1 { 2_000 } else { 20 } {
                let national: String = (0..rng.random_range(6..=12))
                    .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                    .collect();
                let digits = format!("{code}{national}");
                let (expected, valid) = by_full_parse(&digits);
                // The crate strips a national number's leading zeros before it looks
                // for the country (see Italy above): such numbers are left out.
                let zero_after_shared = regions.len() > 1 && national.starts_with('0');
                if regions.len() == 1 || (valid && !zero_after_shared) {
                    assert_eq!(of_wa_id(&digits), expected, "+{digits}");
                    shared += usize::from(regions.len() > 1);
                }
            }
        }
        assert!(shared > 1_000, "{shared} valid numbers of shared codes");
    }
}
