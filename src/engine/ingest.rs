//! Turning a validated batch of events into state changes and counter deltas.
//! This is pure: stored states in, new states and deltas out.

use std::collections::HashMap;

use jiff::Timestamp;

use super::event::{
    CampaignStatus, ConversationStatus, DeliveryStatus, Event, EventBody, FlowStatus,
};
use super::state::*;
use super::time::Calendar;
use crate::store::{ALL_ACCOUNTS, Changes, CounterDelta, EntityKey, EntityWrite};

/// What happened to a request's events, as the ingestion answer reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestReport {
    pub accepted: u64,
    pub duplicates: u64,
    pub ignored: Vec<Ignored>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ignored {
    pub index: usize,
    pub reason: String,
}

/// The keys whose stored state a batch needs.
pub fn keys_of(events: &[(usize, Event)]) -> Vec<EntityKey> {
    let mut keys: Vec<EntityKey> = Vec::new();
    for (_, e) in events {
        let account = &e.account_id;
        match &e.body {
            EventBody::Message {
                id,
                conversation_id,
                ..
            } => {
                keys.push(key(Kind::Message, account, id));
                if let Some(c) = conversation_id {
                    keys.push(key(Kind::Conversation, account, c));
                }
            }
            _ => keys.extend(entity_key(e)),
        }
    }
    // Sorted keys give every backend one lock order, so concurrent writers cannot deadlock.
    keys.sort();
    keys.dedup();
    keys
}

fn key(kind: Kind, account: &str, id: &str) -> EntityKey {
    EntityKey {
        kind: kind as u8,
        account: account.to_string(),
        id: id.to_string(),
    }
}

fn entity_key(e: &Event) -> Option<EntityKey> {
    let a = &e.account_id;
    Some(match &e.body {
        EventBody::Contact { id } => key(Kind::Contact, a, id),
        EventBody::Message { id, .. } => key(Kind::Message, a, id),
        EventBody::MessageStatus { message_id, .. } => key(Kind::Message, a, message_id),
        EventBody::Campaign { id, .. } => key(Kind::Campaign, a, id),
        EventBody::Conversation { id, .. } => key(Kind::Conversation, a, id),
        EventBody::Flow { id, .. } => key(Kind::FlowRun, a, id),
        EventBody::Keyword { id, .. } => key(Kind::Keyword, a, id.as_deref()?),
        EventBody::AiRequest { id, .. } => key(Kind::AiRequest, a, id.as_deref()?),
    })
}

fn kind_of(code: u8) -> Option<Kind> {
    Some(match code {
        1 => Kind::Message,
        2 => Kind::Conversation,
        3 => Kind::FlowRun,
        4 => Kind::Contact,
        5 => Kind::Campaign,
        6 => Kind::Keyword,
        7 => Kind::AiRequest,
        _ => return None,
    })
}

struct Slot {
    before: Option<Entity>,
    now: Option<Entity>,
}

/// Applies a batch to the stored states. `events` carry their index in the request;
/// `ignored` are the indexes validation already set aside.
pub struct Batch<'a> {
    pub calendar: &'a Calendar,
    pub state_window_secs: i64,
    /// Buckets older than these are past their tier's retention and are not written.
    pub tier_cutoffs: [i64; 3],
}

enum Effect {
    New,
    Duplicate,
}

impl Batch<'_> {
    pub fn apply(
        &self,
        stored: &HashMap<EntityKey, Vec<u8>>,
        events: Vec<(usize, Event)>,
        mut report: IngestReport,
    ) -> Result<Changes, String> {
        let mut slots: HashMap<EntityKey, Slot> = HashMap::new();
        let mut direct: Vec<(String, Contribution)> = Vec::new();
        let mut accounts: Vec<String> = Vec::new();
        for (_, event) in events {
            accounts.push(event.account_id.clone());
            match apply_event(&mut slots, stored, &mut direct, &event)? {
                Effect::New => report.accepted += 1,
                Effect::Duplicate => report.duplicates += 1,
            }
        }
        accounts.sort();
        accounts.dedup();

        let mut deltas: HashMap<(String, &'static str, String, i64), i64> = HashMap::new();
        let mut entities = Vec::new();
        let mut scratch = Vec::new();
        for (key, slot) in slots {
            if slot.before == slot.now {
                continue;
            }
            scratch.clear();
            if let Some(b) = &slot.before {
                b.contribute(&mut scratch);
                for c in scratch.iter_mut() {
                    c.value = -c.value;
                }
            }
            if let Some(n) = &slot.now {
                n.contribute(&mut scratch);
                entities.push(EntityWrite {
                    keep_until: n.window_anchor().map(|a| a + self.state_window_secs),
                    state: n.encode(),
                    key: key.clone(),
                });
            }
            for c in scratch.drain(..) {
                *deltas
                    .entry((key.account.clone(), c.series, c.dim, c.at))
                    .or_default() += c.value;
            }
        }
        for (account, c) in direct {
            *deltas.entry((account, c.series, c.dim, c.at)).or_default() += c.value;
        }

        // Every instant lands in its hour, day and month at once, so each tier is
        // complete on its own and late events reach every tier that still holds them.
        let mut tiered: HashMap<(String, u8, i64, &'static str, String), i64> = HashMap::new();
        for ((account, series, dim, at), value) in deltas {
            if value == 0 {
                continue;
            }
            let ts = Timestamp::from_second(at).map_err(|e| e.to_string())?;
            for (i, bucket) in self.calendar.buckets(ts).into_iter().enumerate() {
                if at < self.tier_cutoffs[i] {
                    continue;
                }
                let (tier, key) = (bucket.tier.code(), bucket.key);
                *tiered
                    .entry((ALL_ACCOUNTS.to_string(), tier, key, series, dim.clone()))
                    .or_default() += value;
                *tiered
                    .entry((account.clone(), tier, key, series, dim.clone()))
                    .or_default() += value;
            }
        }
        let counters = tiered
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .map(
                |((account, tier, bucket, series, dim), delta)| CounterDelta {
                    account,
                    tier,
                    bucket,
                    series,
                    dim,
                    delta,
                },
            )
            .collect();
        Ok(Changes {
            accounts,
            entities,
            counters,
            report: Box::new(report),
        })
    }
}

fn slot<'s>(
    slots: &'s mut HashMap<EntityKey, Slot>,
    stored: &HashMap<EntityKey, Vec<u8>>,
    key: EntityKey,
) -> Result<&'s mut Slot, String> {
    use std::collections::hash_map::Entry;
    match slots.entry(key) {
        Entry::Occupied(o) => Ok(o.into_mut()),
        Entry::Vacant(v) => {
            let kind = kind_of(v.key().kind).ok_or("unknown entity kind")?;
            let before = match stored.get(v.key()) {
                Some(bytes) => Some(Entity::decode(kind, bytes)?),
                None => None,
            };
            Ok(v.insert(Slot {
                now: before.clone(),
                before,
            }))
        }
    }
}

fn status_bit(s: DeliveryStatus) -> u8 {
    match s {
        DeliveryStatus::Sent => STATUS_SENT,
        DeliveryStatus::Delivered => STATUS_DELIVERED,
        DeliveryStatus::Read => STATUS_READ,
        DeliveryStatus::Failed => STATUS_FAILED,
    }
}

fn apply_event(
    slots: &mut HashMap<EntityKey, Slot>,
    stored: &HashMap<EntityKey, Vec<u8>>,
    direct: &mut Vec<(String, Contribution)>,
    e: &Event,
) -> Result<Effect, String> {
    let at = e.at;
    let account = &e.account_id;
    let effect = match &e.body {
        EventBody::Contact { id } => {
            let s = slot(slots, stored, key(Kind::Contact, account, id))?;
            match &mut s.now {
                Some(Entity::Contact(c)) => {
                    c.at = c.at.min(at);
                    Effect::Duplicate
                }
                _ => {
                    s.now = Some(Entity::Contact(ContactState { at }));
                    Effect::New
                }
            }
        }
        EventBody::Message {
            id,
            direction,
            message_type,
            conversation_id,
        } => {
            let s = slot(slots, stored, key(Kind::Message, account, id))?;
            let inbound = *direction == super::event::Direction::Inbound;
            let effect = match &mut s.now {
                // First message event wins; a retry of it changes nothing.
                Some(Entity::Message(m)) if !m.is_placeholder() => Effect::Duplicate,
                Some(Entity::Message(m)) => {
                    m.inbound = Some(inbound);
                    m.message_type = message_type.clone();
                    m.at = at;
                    m.conversation_id = conversation_id.clone();
                    Effect::New
                }
                _ => {
                    s.now = Some(Entity::Message(MessageState {
                        inbound: Some(inbound),
                        message_type: message_type.clone(),
                        at,
                        statuses: 0,
                        error_code: None,
                        pricing_category: None,
                        conversation_id: conversation_id.clone(),
                    }));
                    Effect::New
                }
            };
            if let (Effect::New, Some(conv)) = (&effect, conversation_id) {
                let s = slot(slots, stored, key(Kind::Conversation, account, conv))?;
                match &mut s.now {
                    Some(Entity::Conversation(c)) => {
                        c.messages += 1;
                        c.first_seen = c.first_seen.min(at);
                    }
                    _ => {
                        let mut c = ConversationState::new(at);
                        c.messages = 1;
                        s.now = Some(Entity::Conversation(c));
                    }
                }
            }
            effect
        }
        EventBody::MessageStatus {
            message_id,
            status,
            error_code,
            pricing_category,
        } => {
            let s = slot(slots, stored, key(Kind::Message, account, message_id))?;
            let bit = status_bit(*status);
            if !matches!(s.now, Some(Entity::Message(_))) {
                // A status before its message: an outbound message of unknown type, sent
                // no later than its earliest status, until the message itself arrives.
                s.now = Some(Entity::Message(MessageState {
                    inbound: None,
                    message_type: String::new(),
                    at,
                    statuses: 0,
                    error_code: None,
                    pricing_category: None,
                    conversation_id: None,
                }));
            }
            let Some(Entity::Message(m)) = &mut s.now else {
                return Err("message state lost".into());
            };
            if m.is_placeholder() {
                m.at = m.at.min(at);
            }
            if m.pricing_category.is_none() {
                m.pricing_category = pricing_category.clone();
            }
            if m.statuses & bit != 0 {
                Effect::Duplicate
            } else {
                m.statuses |= bit;
                if bit == STATUS_FAILED {
                    m.error_code = error_code.clone();
                }
                Effect::New
            }
        }
        EventBody::Campaign { id, status } => {
            let s = slot(slots, stored, key(Kind::Campaign, account, id))?;
            if !matches!(s.now, Some(Entity::Campaign(_))) {
                s.now = Some(Entity::Campaign(CampaignState {
                    reported: [None; 6],
                }));
            }
            let Some(Entity::Campaign(c)) = &mut s.now else {
                return Err("campaign state lost".into());
            };
            let reported = &mut c.reported[*status as usize];
            let effect = if reported.is_some() {
                Effect::Duplicate
            } else {
                Effect::New
            };
            *reported = Some(reported.map_or(at, |t| t.min(at)));
            effect
        }
        EventBody::Conversation { id, status } => {
            let s = slot(slots, stored, key(Kind::Conversation, account, id))?;
            if !matches!(s.now, Some(Entity::Conversation(_))) {
                s.now = Some(Entity::Conversation(ConversationState::new(at)));
            }
            let Some(Entity::Conversation(c)) = &mut s.now else {
                return Err("conversation state lost".into());
            };
            c.first_seen = c.first_seen.min(at);
            let bit = 1u8 << (*status as u8);
            match ConversationOutcome::from_status(*status) {
                None => c.started = Some(c.started.map_or(at, |s| s.min(at))),
                Some(o) => {
                    if c.outcome.is_none_or(|cur| (at, o) < cur) {
                        c.outcome = Some((at, o));
                    }
                }
            }
            if c.seen & bit != 0 {
                Effect::Duplicate
            } else {
                c.seen |= bit;
                Effect::New
            }
        }
        EventBody::Flow {
            id,
            flow_name,
            status,
        } => {
            let s = slot(slots, stored, key(Kind::FlowRun, account, id))?;
            if !matches!(s.now, Some(Entity::FlowRun(_))) {
                s.now = Some(Entity::FlowRun(FlowRunState {
                    flow_name: flow_name.clone(),
                    started: None,
                    completed: false,
                    seen: 0,
                    first_seen: at,
                }));
            }
            let Some(Entity::FlowRun(f)) = &mut s.now else {
                return Err("flow state lost".into());
            };
            f.first_seen = f.first_seen.min(at);
            let bit = match status {
                FlowStatus::Started => {
                    f.started = Some(f.started.map_or(at, |s| s.min(at)));
                    // The start names the flow; a completion only names it until then.
                    f.flow_name = flow_name.clone();
                    1
                }
                FlowStatus::Completed => {
                    f.completed = true;
                    2
                }
            };
            if f.seen & bit != 0 {
                Effect::Duplicate
            } else {
                f.seen |= bit;
                Effect::New
            }
        }
        EventBody::Keyword { keyword, id } => {
            if first_sighting(slots, stored, e, id.is_some(), Kind::Keyword)? {
                direct.push((
                    account.clone(),
                    Contribution {
                        series: series::KEYWORD,
                        dim: keyword.clone(),
                        at,
                        value: 1,
                    },
                ));
                Effect::New
            } else {
                Effect::Duplicate
            }
        }
        EventBody::AiRequest {
            id,
            tokens,
            model,
            cost_micros,
        } => {
            if first_sighting(slots, stored, e, id.is_some(), Kind::AiRequest)? {
                let tokens = i64::try_from(*tokens).map_err(|e| e.to_string())?;
                let mut add = |series, dim: &str, value| {
                    direct.push((
                        account.clone(),
                        Contribution {
                            series,
                            dim: dim.to_string(),
                            at,
                            value,
                        },
                    ));
                };
                add(series::AI_REQUESTS, "", 1);
                add(series::AI_TOKENS, "", tokens);
                match cost_micros {
                    Some(c) => add(series::AI_COST_MICROS, "", *c),
                    None => add(series::AI_UNPRICED_TOKENS, model, tokens),
                }
                Effect::New
            } else {
                Effect::Duplicate
            }
        }
    };
    Ok(effect)
}

/// For events counted directly: true unless an event with the same id was seen before.
fn first_sighting(
    slots: &mut HashMap<EntityKey, Slot>,
    stored: &HashMap<EntityKey, Vec<u8>>,
    e: &Event,
    has_id: bool,
    kind: Kind,
) -> Result<bool, String> {
    if !has_id {
        return Ok(true);
    }
    let Some(k) = entity_key(e) else {
        return Ok(true);
    };
    let s = slot(slots, stored, k)?;
    if s.now.is_some() {
        return Ok(false);
    }
    let marker = SeenState { at: e.at };
    s.now = Some(match kind {
        Kind::Keyword => Entity::Keyword(marker),
        _ => Entity::AiRequest(marker),
    });
    Ok(true)
}

// Keep the status enums' discriminants small: they index dedup bit sets.
const _: () =
    assert!((CampaignStatus::Failed as u8) < 8 && (ConversationStatus::Abandoned as u8) < 8);
