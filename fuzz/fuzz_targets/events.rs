//! `POST /api/events`: a body parsed as the route parses it, as JSON and as NDJSON, with
//! and without `?backfill=true`. Beyond not panicking:
//! - an accepted body accounts for every event (counted or ignored, each index once), and
//!   each counted event is valid and reads back as itself from the SPEC's JSON;
//! - what is accepted without backfill is accepted with it, the same events counted;
//! - NDJSON lines and the JSON array of the same lines give the same answer.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use whatstat::engine::event::{Event, EventBody};
use whatstat::engine::ingest::IngestReport;
use whatstat::engine::{EngineError, EventsBody};
use whatstat::fuzzing::parse_events;

type Outcome = Result<(Vec<(usize, Event)>, IngestReport), EngineError>;

fuzz_target!(|data: &[u8]| {
    let json_plain = parse_events(EventsBody::Json(data), &common::admission(false));
    let json_back = parse_events(EventsBody::Json(data), &common::admission(true));
    check(&json_plain, json_items(data), false);
    check(&json_back, json_items(data), true);
    check_backfill(&json_plain, &json_back);

    let nd_plain = parse_events(EventsBody::Ndjson(data), &common::admission(false));
    let nd_back = parse_events(EventsBody::Ndjson(data), &common::admission(true));
    let lines = ndjson_lines(data);
    check(&nd_plain, Some(lines.len()), false);
    check(&nd_back, Some(lines.len()), true);
    check_backfill(&nd_plain, &nd_back);

    // The same lines as one JSON array.
    let values: Option<Vec<&RawValue>> = lines
        .iter()
        .map(|l| serde_json::from_slice::<&RawValue>(l).ok())
        .collect();
    if let Some(values) = values
        && !values.is_empty()
    {
        let array = format!(
            "[{}]",
            values.iter().map(|v| v.get()).collect::<Vec<_>>().join(",")
        );
        for backfill in [false, true] {
            let nd = if backfill { &nd_back } else { &nd_plain };
            let arr = parse_events(
                EventsBody::Json(array.as_bytes()),
                &common::admission(backfill),
            );
            same_answer(nd, &arr, &array);
        }
    }
});

/// How many events a JSON body holds, when it is a JSON array or object.
fn json_items(data: &[u8]) -> Option<usize> {
    let whole: &RawValue = serde_json::from_slice(data).ok()?;
    let text = whole.get().trim_start();
    if text.starts_with('[') {
        serde_json::from_str::<Vec<&RawValue>>(text)
            .ok()
            .map(|v| v.len())
    } else if text.starts_with('{') {
        Some(1)
    } else {
        None
    }
}

/// The lines of an NDJSON body that hold something other than white space.
fn ndjson_lines(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect()
}

fn check(outcome: &Outcome, items: Option<usize>, backfill: bool) {
    match outcome {
        Ok((events, report)) => {
            let items = items.expect("an accepted body is an array, an object or NDJSON");
            assert!(items > 0, "an empty body was accepted");
            let mut seen = vec![false; items];
            for i in events
                .iter()
                .map(|(i, _)| *i)
                .chain(report.ignored.iter().map(|g| g.index))
            {
                assert!(i < items, "index {i} of {items} events");
                assert!(!seen[i], "index {i} counted twice");
                seen[i] = true;
            }
            assert!(
                seen.iter().all(|s| *s),
                "an event was neither counted nor ignored"
            );
            assert!(events.windows(2).all(|w| w[0].0 < w[1].0));
            for g in &report.ignored {
                assert!(!g.reason.is_empty());
            }
            for (_, e) in events {
                common::assert_valid_event(e, backfill);
            }
        }
        Err(EngineError::InvalidEvents { errors, .. }) => {
            assert!(!errors.is_empty());
            let items = items.expect("per-event errors come from an array or NDJSON");
            assert!(errors.windows(2).all(|w| w[0].index < w[1].index));
            for e in errors {
                assert!(e.index < items, "error index {} of {items}", e.index);
                assert!(!e.message.is_empty());
            }
        }
        Err(EngineError::BadRequest(message)) => assert!(!message.is_empty()),
        Err(other) => panic!("parsing answered {other:?}"),
    }
}

/// Backfill only admits more: what is counted without it is counted with it.
fn check_backfill(plain: &Outcome, back: &Outcome) {
    let Ok((plain_events, plain_report)) = plain else {
        return;
    };
    let Ok((back_events, back_report)) = back else {
        panic!("accepted without backfill, refused with it: {back:?}");
    };
    for (i, e) in plain_events {
        let found = back_events.iter().find(|(j, _)| j == i).map(|(_, e)| e);
        assert_eq!(found, Some(e), "event {i} differs with backfill");
    }
    // An event ignored without backfill and counted with it is a status of a message
    // older than the state window.
    for (i, e) in back_events {
        if !plain_events.iter().any(|(j, _)| j == i) {
            assert!(
                matches!(e.body, EventBody::MessageStatus { .. })
                    && e.at < common::NOW - common::STATE_WINDOW_SECS,
                "event {i} is counted only with backfill: {e:?}"
            );
            assert!(plain_report.ignored.iter().any(|g| g.index == *i));
        }
    }
    assert!(back_report.ignored.len() <= plain_report.ignored.len());
}

/// NDJSON lines and the JSON array of them: the same events, ignored ones and errors.
fn same_answer(nd: &Outcome, arr: &Outcome, array: &str) {
    match (nd, arr) {
        (Ok((e1, r1)), Ok((e2, r2))) => {
            assert_eq!(e1, e2, "events differ as NDJSON and as {array}");
            assert_eq!(
                r1.ignored, r2.ignored,
                "ignored differ as NDJSON and as {array}"
            );
        }
        (
            Err(EngineError::InvalidEvents { errors: a, .. }),
            Err(EngineError::InvalidEvents { errors: b, .. }),
        ) => {
            assert_eq!(a, b, "errors differ as NDJSON and as {array}");
        }
        // The array nests one level deeper than its lines: a line at the JSON nesting limit
        // is refused in it as a whole.
        (_, Err(EngineError::BadRequest(_))) => {}
        (nd, arr) => panic!("NDJSON answered {nd:?}, the array {array} answered {arr:?}"),
    }
}
