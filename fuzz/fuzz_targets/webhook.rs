//! `POST /webhooks/whatsapp`: Meta's payload read and translated into events, as the
//! route does once the signature checks. Beyond not panicking:
//! - the numbers a payload names are distinct and non-empty, and a number it does not
//!   name translates to nothing;
//! - every event is of the account it was translated for, valid as the event model
//!   requires, and reads back as itself from the SPEC's JSON; each sender is one contact;
//! - the same payload written another way (escapes undone, spacing removed) translates
//!   the same.

#![no_main]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use libfuzzer_sys::fuzz_target;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use whatstat::engine::event::{EventBody, FUTURE_TOLERANCE_SECS};
use whatstat::engine::webhook::{Payload, Translation, phone_number_ids, translate};

const ACCOUNT: &str = "acc";

fuzz_target!(|data: &[u8]| {
    let Some(found) = translations(data) else {
        return;
    };
    for (phone, t) in &found {
        check(phone, t);
    }
    // Written again by serde_json: escapes resolved, no spacing. Duplicate keys are left
    // out (a value of serde_json keeps the last, the payload's reader refuses them).
    if unique_keys(data)
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(data)
    {
        let again = value.to_string();
        let other = translations(again.as_bytes()).expect("rewritten JSON reads");
        assert_eq!(
            found, other,
            "the payload rewritten as {again} translates otherwise"
        );
    }
});

/// Every number of the payload with its translation, plus one number it does not name.
fn translations(data: &[u8]) -> Option<BTreeMap<String, Translation>> {
    let payload = Payload::parse(data).ok()?;
    let phones = phone_number_ids(&payload);
    let unique: HashSet<&String> = phones.iter().collect();
    assert_eq!(
        unique.len(),
        phones.len(),
        "phone_number_ids repeats: {phones:?}"
    );
    let mut out = BTreeMap::new();
    for phone in &phones {
        assert!(!phone.is_empty());
        out.insert(
            phone.clone(),
            translate(&payload, phone, ACCOUNT, common::NOW),
        );
    }
    let stranger = "not-a-number-of-this-payload";
    if !phones.iter().any(|p| p == stranger) {
        let t = translate(&payload, stranger, ACCOUNT, common::NOW);
        assert_eq!(
            t,
            Translation::default(),
            "a number the payload does not name"
        );
    }
    Some(out)
}

fn check(phone: &str, t: &Translation) {
    let mut contacts = HashSet::new();
    let mut senders_first: BTreeMap<&str, i64> = BTreeMap::new();
    for e in &t.events {
        assert_eq!(e.account_id, ACCOUNT);
        assert!(e.at <= common::NOW + FUTURE_TOLERANCE_SECS);
        // Meta retries for up to 7 days: the webhook ingests with backfill.
        common::assert_valid_event(e, true);
        match &e.body {
            EventBody::Contact { id } => {
                assert!(
                    contacts.insert(id.clone()),
                    "contact {id} twice for {phone}"
                );
                senders_first.insert(id, e.at);
            }
            EventBody::Message { .. } | EventBody::MessageStatus { .. } => {}
            other => panic!("the webhook made {other:?}"),
        }
    }
    // A contact is dated at the earliest message of its sender here.
    for at in senders_first.values() {
        assert!(
            t.events
                .iter()
                .any(|e| e.at == *at && matches!(e.body, EventBody::Message { .. })),
            "a contact at {at} with no message of that time"
        );
    }
    for s in &t.skipped {
        assert!(!s.is_empty());
    }
}

/// Whether no JSON object in `data` names a key twice (and `data` is JSON).
fn unique_keys(data: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(data);
    de.deserialize_any(UniqueKeys).is_ok() && de.end().is_ok()
}

struct UniqueKeys;

impl<'de> de::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeys)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut keys = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if !keys.insert(k) {
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E: de::Error>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
}
