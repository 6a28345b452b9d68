//! Turning a validated batch of events into state changes and counter deltas.
//! This is pure: stored states in, new states and deltas out.

use rustc_hash::FxHashMap;

use jiff::Timestamp;

use super::event::{
    CampaignStatus, ConversationStatus, DeliveryStatus, Event, EventBody, FlowStatus,
};
use super::state::*;
use super::time::{Calendar, Tier};
use crate::store::{ALL_ACCOUNTS, Changes, CounterDelta, EntityKey, EntityWrite, Pruned, States};

/// What happened to a request's events, as the ingestion answer reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct IngestReport {
    pub accepted: u64,
    pub duplicates: u64,
    pub ignored: Vec<Ignored>,
    /// Accounts whose figures this request changed (announced once it is durable).
    #[serde(skip)]
    pub changed_accounts: Vec<String>,
}

/// A well-formed event that changes no figure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Ignored {
    /// The event's position in the request, from 0.
    pub index: usize,
    /// Why: a status that is not counted, a status older than the state window, or an
    /// event for a message, conversation or flow run whose state compaction has pruned.
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
                reply_to,
                ..
            } => {
                keys.push(key(Kind::Message, account, id));
                if let Some(c) = conversation_id {
                    keys.push(key(Kind::Conversation, account, c));
                }
                if let Some(r) = reply_to {
                    keys.push(key(Kind::Message, account, r));
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
        kind,
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

struct Slot {
    before: Option<Entity>,
    now: Option<Entity>,
    /// No state, because compaction pruned it: the entity is older than the state window
    /// and was counted already. Such a slot never gains a state again.
    pruned: bool,
}

/// What the store loaded for a batch, and what an ignored event's reason says of the window.
struct Loaded<'a> {
    states: &'a States,
    pruned: &'a Pruned,
    window_days: i64,
}

impl Loaded<'_> {
    /// Why an event for an entity whose state was pruned changes no figure.
    fn pruned_reason(&self, what: &str, id: &str, events: &str) -> String {
        format!(
            "{what} {id} is older than the state window ({} days) and its state was pruned; {events} change no figure",
            self.window_days
        )
    }
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
    /// Reported in `ignored` with this reason; changes no figure.
    Ignored(String),
}

/// A count recorded when an event is first seen, not derived from a state (keyword hits,
/// AI calls).
struct Direct {
    account: String,
    series: Series,
    dim: String,
    at: i64,
    value: i64,
}

/// Accounts and dimensions of one batch as small numbers, so that summing allocates nothing.
#[derive(Default)]
struct Names {
    ids: FxHashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }
}

impl Batch<'_> {
    /// `stored` are the states found for the batch's keys and `pruned` the keys among the
    /// others whose state compaction pruned.
    pub fn apply(
        &self,
        stored: &States,
        pruned: &Pruned,
        events: &[(usize, Event)],
        mut report: IngestReport,
    ) -> Result<(Changes, IngestReport), String> {
        let loaded = Loaded {
            states: stored,
            pruned,
            window_days: self.state_window_secs / 86_400,
        };
        let mut slots: FxHashMap<EntityKey, Slot> = FxHashMap::default();
        let mut direct: Vec<Direct> = Vec::new();
        let mut accounts: Vec<String> = Vec::new();
        let mut ignored = false;
        for (index, event) in events {
            accounts.push(event.account_id.clone());
            match apply_event(&mut slots, &loaded, &mut direct, event)? {
                Effect::New => report.accepted += 1,
                Effect::Duplicate => report.duplicates += 1,
                Effect::Ignored(reason) => {
                    ignored = true;
                    report.ignored.push(Ignored {
                        index: *index,
                        reason,
                    });
                }
            }
        }
        if ignored {
            report.ignored.sort_by_key(|i| i.index);
        }
        accounts.sort();
        accounts.dedup();

        // Deltas are summed per local hour first, with accounts and dimensions as small
        // numbers: events of the same hour collapse before any tier is computed.
        let mut names = Names::default();
        let mut hourly: FxHashMap<(u32, Series, u32, i64), i64> = FxHashMap::default();
        let mut entities = Vec::new();
        for (key, slot) in &slots {
            if slot.before == slot.now {
                continue;
            }
            let mut scratch = Vec::new();
            if let Some(b) = &slot.before {
                b.contribute(&mut scratch, &key.id);
                for c in scratch.iter_mut() {
                    c.value = -c.value;
                }
            }
            if let Some(n) = &slot.now {
                n.contribute(&mut scratch, &key.id);
                entities.push(EntityWrite {
                    keep_until: n.window_anchor().map(|a| a + self.state_window_secs),
                    state: n.encode(),
                    key: key.clone(),
                });
            }
            let account = names.id(&key.account);
            for c in scratch {
                let hour = self.calendar.hour_start(c.at);
                *hourly
                    .entry((account, c.series, names.id(&c.dim), hour))
                    .or_default() += c.value;
            }
        }
        for d in &direct {
            let hour = self.calendar.hour_start(d.at);
            *hourly
                .entry((names.id(&d.account), d.series, names.id(&d.dim), hour))
                .or_default() += d.value;
        }

        // Every hour lands in its hour, day and month at once, so each tier is complete
        // on its own and late events reach every tier that still holds them. Tier bounds
        // fall on bucket starts, so comparing the hour's start decides for all of it.
        let all = names.id(ALL_ACCOUNTS);
        let mut buckets_of: FxHashMap<i64, [super::time::Bucket; 3]> = FxHashMap::default();
        let mut tiered: FxHashMap<(u32, Tier, i64, Series, u32), i64> = FxHashMap::default();
        for ((account, series, dim, hour), value) in hourly {
            if value == 0 {
                continue;
            }
            let buckets = match buckets_of.get(&hour) {
                Some(b) => *b,
                None => {
                    let b = self
                        .calendar
                        .buckets(Timestamp::from_second(hour).map_err(|e| e.to_string())?);
                    buckets_of.insert(hour, b);
                    b
                }
            };
            for (i, bucket) in buckets.into_iter().enumerate() {
                if hour < self.tier_cutoffs[i] {
                    continue;
                }
                let (tier, key) = (bucket.tier, bucket.key);
                *tiered.entry((all, tier, key, series, dim)).or_default() += value;
                *tiered.entry((account, tier, key, series, dim)).or_default() += value;
            }
        }
        let mut changed: Vec<u32> = tiered
            .iter()
            .filter(|((account, ..), v)| **v != 0 && *account != all)
            .map(|((account, ..), _)| *account)
            .collect();
        changed.sort_unstable();
        changed.dedup();
        let mut changed: Vec<String> = changed
            .into_iter()
            .map(|a| names.name(a).to_string())
            .collect();
        changed.sort();
        report.changed_accounts = changed;
        let counters = tiered
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .map(
                |((account, tier, bucket, series, dim), delta)| CounterDelta {
                    account: names.name(account).to_string(),
                    tier,
                    bucket,
                    series,
                    dim: names.name(dim).to_string(),
                    delta,
                },
            )
            .collect();
        Ok((
            Changes {
                accounts,
                entities,
                counters,
            },
            report,
        ))
    }
}

fn slot<'s>(
    slots: &'s mut FxHashMap<EntityKey, Slot>,
    loaded: &Loaded<'_>,
    key: EntityKey,
) -> Result<&'s mut Slot, String> {
    use std::collections::hash_map::Entry;
    match slots.entry(key) {
        Entry::Occupied(o) => Ok(o.into_mut()),
        Entry::Vacant(v) => {
            let kind = v.key().kind;
            let before = match loaded.states.get(v.key()) {
                Some(bytes) => Some(Entity::decode(kind, bytes)?),
                None => None,
            };
            let pruned = before.is_none() && loaded.pruned.contains(v.key());
            let mut now = before.clone();
            // Whatever is written back counts its failure under its error code and a
            // campaign its status, also when stored before those were counted.
            match &mut now {
                Some(Entity::Message(m)) => m.failure_reasons = true,
                Some(Entity::Campaign(c)) => c.status_counted = true,
                _ => {}
            }
            Ok(v.insert(Slot {
                now,
                before,
                pruned,
            }))
        }
    }
}

/// An outbound message's campaign, template and recipient country.
fn take_outbound(m: &mut MessageState, inbound: bool, outbound: &super::event::Outbound) {
    if inbound {
        return;
    }
    m.campaign_id = outbound.campaign_id.clone();
    m.template = outbound.template.clone();
    m.country = outbound.country.clone();
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
    slots: &mut FxHashMap<EntityKey, Slot>,
    loaded: &Loaded<'_>,
    direct: &mut Vec<Direct>,
    e: &Event,
) -> Result<Effect, String> {
    let at = e.at;
    let account = &e.account_id;
    let effect = match &e.body {
        EventBody::Contact { id } => {
            let s = slot(slots, loaded, key(Kind::Contact, account, id))?;
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
            outbound,
            reply_to,
        } => {
            let s = slot(slots, loaded, key(Kind::Message, account, id))?;
            let inbound = *direction == super::event::Direction::Inbound;
            let effect = match &mut s.now {
                // First message event wins; a retry of it changes nothing.
                Some(Entity::Message(m)) if !m.is_placeholder() => Effect::Duplicate,
                Some(Entity::Message(m)) => {
                    m.inbound = Some(inbound);
                    m.message_type = message_type.clone();
                    m.at = at;
                    m.conversation_id = conversation_id.clone();
                    take_outbound(m, inbound, outbound);
                    Effect::New
                }
                // Counted before its state was pruned: this is a repeat of it.
                _ if s.pruned => Effect::Duplicate,
                _ => {
                    let mut m = MessageState::placeholder(at);
                    m.inbound = Some(inbound);
                    m.message_type = message_type.clone();
                    m.conversation_id = conversation_id.clone();
                    take_outbound(&mut m, inbound, outbound);
                    s.now = Some(Entity::Message(m));
                    Effect::New
                }
            };
            if let (Effect::New, Some(conv)) = (&effect, conversation_id) {
                let s = slot(slots, loaded, key(Kind::Conversation, account, conv))?;
                match &mut s.now {
                    Some(Entity::Conversation(c)) => {
                        c.messages += 1;
                        c.first_seen = c.first_seen.min(at);
                    }
                    // Its figures were final when its state was pruned.
                    _ if s.pruned => {}
                    _ => {
                        let mut c = ConversationState::new(at);
                        c.messages = 1;
                        s.now = Some(Entity::Conversation(c));
                    }
                }
            }
            // A reply marks the message it answers, which may not have arrived yet.
            if let (Effect::New, true, Some(answered)) = (&effect, inbound, reply_to)
                && answered != id
            {
                let s = slot(slots, loaded, key(Kind::Message, account, answered))?;
                match &mut s.now {
                    Some(Entity::Message(m)) => m.replied = true,
                    // Its figures were final when its state was pruned.
                    _ if s.pruned => {}
                    _ => {
                        let mut m = MessageState::placeholder(at);
                        m.replied = true;
                        s.now = Some(Entity::Message(m));
                    }
                }
            }
            effect
        }
        EventBody::MessageStatus {
            message_id,
            status,
            error_code,
            pricing,
            country,
        } => {
            let s = slot(slots, loaded, key(Kind::Message, account, message_id))?;
            if s.pruned {
                let reason = loaded.pruned_reason("message", message_id, "statuses for it");
                return Ok(Effect::Ignored(reason));
            }
            let bit = status_bit(*status);
            if !matches!(s.now, Some(Entity::Message(_))) {
                // A status before its message: an outbound message of unknown type, sent
                // no later than its earliest status, until the message itself arrives.
                s.now = Some(Entity::Message(MessageState::placeholder(at)));
            }
            let Some(Entity::Message(m)) = &mut s.now else {
                return Err("message state lost".into());
            };
            if m.is_placeholder() {
                // Until a status is known, the time is a reply's, which says nothing.
                m.at = if m.statuses == 0 { at } else { m.at.min(at) };
            }
            if let Some(p) = pricing {
                let priced = PricedAs {
                    step: bit,
                    category: p.category.clone(),
                    kind: p.kind,
                };
                if m.pricing.as_ref().is_none_or(|cur| priced < *cur) {
                    m.pricing = Some(priced);
                }
            }
            // Statuses may disagree on the recipient: the least country wins.
            if let Some(c) = country
                && m.status_country.as_ref().is_none_or(|cur| c < cur)
            {
                m.status_country = Some(c.clone());
            }
            // Failures that disagree on their code: the least code wins, whatever the order.
            if bit == STATUS_FAILED {
                m.error_code = match (m.error_code.take(), error_code) {
                    (Some(a), Some(b)) => Some(a.min(b.clone())),
                    (a, b) => a.or_else(|| b.clone()),
                };
            }
            if m.statuses & bit != 0 {
                Effect::Duplicate
            } else {
                m.statuses |= bit;
                Effect::New
            }
        }
        EventBody::Campaign { id, status } => {
            let s = slot(slots, loaded, key(Kind::Campaign, account, id))?;
            if !matches!(s.now, Some(Entity::Campaign(_))) {
                s.now = Some(Entity::Campaign(CampaignState {
                    reported: [None; CampaignStatus::ALL.len()],
                    status_counted: true,
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
            let s = slot(slots, loaded, key(Kind::Conversation, account, id))?;
            if s.pruned {
                let reason = loaded.pruned_reason("conversation", id, "its events");
                return Ok(Effect::Ignored(reason));
            }
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
            let s = slot(slots, loaded, key(Kind::FlowRun, account, id))?;
            if s.pruned {
                let reason = loaded.pruned_reason("flow run", id, "its events");
                return Ok(Effect::Ignored(reason));
            }
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
            if first_sighting(slots, loaded, e, id.is_some(), Kind::Keyword)? {
                direct.push(Direct {
                    account: account.clone(),
                    series: series::KEYWORD,
                    dim: keyword.clone(),
                    at,
                    value: 1,
                });
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
            if first_sighting(slots, loaded, e, id.is_some(), Kind::AiRequest)? {
                let tokens = i64::try_from(*tokens).map_err(|e| e.to_string())?;
                let mut add = |series, dim: &str, value| {
                    direct.push(Direct {
                        account: account.clone(),
                        series,
                        dim: dim.to_string(),
                        at,
                        value,
                    });
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

/// For events counted directly: true unless an event with the same id was seen before
/// (and is still known, or was pruned).
fn first_sighting(
    slots: &mut FxHashMap<EntityKey, Slot>,
    loaded: &Loaded<'_>,
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
    let s = slot(slots, loaded, k)?;
    // A pruned marker was counted when first seen.
    if s.now.is_some() || s.pruned {
        return Ok(false);
    }
    let marker = SeenState { at: e.at };
    s.now = Some(match kind {
        Kind::Keyword => Entity::Keyword(marker),
        _ => Entity::AiRequest(marker),
    });
    Ok(true)
}

// Conversation statuses index a dedup bit set of one byte.
const _: () = assert!((ConversationStatus::Abandoned as u8) < 8);
