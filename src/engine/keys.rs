//! Credentials: scoped API keys and read-only share links. A credential is checked on
//! every request, so checked ones are cached; an entry is trusted for under a second,
//! which bounds how long a revocation made on another instance can go unnoticed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rand::RngCore;

use super::time::Calendar;
use super::{EngineError, Org, Tenants, hash_key};
use crate::store::credentials::{CredentialKind, CredentialRecord};

/// How long a checked credential is trusted without asking the store again.
const CACHE_TTL: Duration = Duration::from_millis(900);
/// `last_used_at` is written at most this often per credential.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
const MAX_NAME_LEN: usize = 200;
const MAX_ACCOUNTS: usize = 1000;

/// What a credential may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Only posting events.
    Ingest,
    /// The figures and the accounts' public settings.
    Read,
    /// Everything within its organization.
    Admin,
}

impl Scope {
    pub const ALLOWED: &'static str = "ingest, read, admin";

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "ingest" => Some(Scope::Ingest),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Whether a credential of this scope may do what `needed` names.
    pub fn covers(self, needed: Scope) -> bool {
        self == Scope::Admin || self == needed
    }
}

/// A checked credential: who is calling, and what it may do.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The organization, limited to the credential's accounts (`Org::account_limit`).
    pub org: Org,
    pub id: String,
    pub kind: CredentialKind,
    pub scope: Scope,
}

/// The outcome of presenting a secret.
#[derive(Debug, Clone)]
pub enum Authentication {
    Valid(Credential),
    /// No credential has this secret (never had, or revoked).
    Unknown,
    /// The credential exists and its `expires_at` has passed.
    Expired,
}

/// A key or share link to create, as the API received it.
#[derive(Debug, Clone, Default)]
pub struct NewCredential {
    pub name: String,
    /// Keys only; a share link is always `read`.
    pub scope: Option<String>,
    pub accounts: Option<Vec<String>>,
    /// RFC 3339 instant.
    pub expires_at: Option<String>,
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub accounts: Option<Vec<String>>,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

/// A key just made: the only time its secret is shown.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    pub key: String,
}

/// A share link as listed: never its token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ShareLinkView {
    pub id: String,
    pub name: String,
    pub accounts: Option<Vec<String>>,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

/// A share link just made: the only time its token and address are shown.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedShareLink {
    #[serde(flatten)]
    pub view: ShareLinkView,
    pub token: String,
    /// The page's path on this server, `/share/<token>`.
    pub url: String,
}

fn show(secs: i64) -> String {
    Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A new organization key's secret.
pub(crate) fn new_key_secret() -> String {
    format!("ws_{}", random_hex(24))
}

pub(crate) fn new_credential_id(kind: CredentialKind) -> String {
    match kind {
        CredentialKind::Key => format!("key_{}", random_hex(8)),
        CredentialKind::ShareLink => format!("share_{}", random_hex(8)),
    }
}

impl From<&CredentialRecord> for KeyView {
    fn from(r: &CredentialRecord) -> Self {
        KeyView {
            id: r.id.clone(),
            name: r.name.clone(),
            scope: Scope::parse(&r.scope).unwrap_or(Scope::Read),
            accounts: r.accounts.clone(),
            expires_at: r.expires_at.map(show),
            created_at: show(r.created_at),
            last_used_at: r.last_used_at.map(show),
        }
    }
}

impl From<&CredentialRecord> for ShareLinkView {
    fn from(r: &CredentialRecord) -> Self {
        ShareLinkView {
            id: r.id.clone(),
            name: r.name.clone(),
            accounts: r.accounts.clone(),
            expires_at: r.expires_at.map(show),
            created_at: show(r.created_at),
            last_used_at: r.last_used_at.map(show),
        }
    }
}

struct Cached {
    record: CredentialRecord,
    org: Org,
    checked: Instant,
}

/// Checked credentials by the digest of their secret, and when each was last recorded
/// as used.
#[derive(Default)]
pub struct CredentialCache {
    entries: RwLock<HashMap<String, Cached>>,
    touched: RwLock<HashMap<String, Instant>>,
}

impl CredentialCache {
    fn fresh(&self, hash: &str) -> Option<(CredentialRecord, Org)> {
        let entries = self.entries.read().ok()?;
        let c = entries.get(hash)?;
        (c.checked.elapsed() < CACHE_TTL).then(|| (c.record.clone(), c.org.clone()))
    }

    fn put(&self, hash: String, record: CredentialRecord, org: Org) {
        if let Ok(mut entries) = self.entries.write() {
            entries.insert(
                hash,
                Cached {
                    record,
                    org,
                    checked: Instant::now(),
                },
            );
        }
    }

    fn forget(&self, hash: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(hash);
        }
    }

    fn forget_id(&self, id: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|_, c| c.record.id != id);
        }
        if let Ok(mut touched) = self.touched.write() {
            touched.remove(id);
        }
    }

    /// Whether `last_used_at` is due to be written for this credential (and notes that it is).
    fn due_for_touch(&self, id: &str) -> bool {
        if let Ok(t) = self.touched.read()
            && t.get(id).is_some_and(|at| at.elapsed() < TOUCH_EVERY)
        {
            return false;
        }
        match self.touched.write() {
            Ok(mut t) => {
                let due = t.get(id).is_none_or(|at| at.elapsed() >= TOUCH_EVERY);
                if due {
                    t.insert(id.to_string(), Instant::now());
                }
                due
            }
            Err(_) => false,
        }
    }
}

impl Tenants {
    /// Checks a presented secret. In the steady state this reads only the cache; the
    /// store is asked again once an entry is older than `CACHE_TTL`.
    pub async fn authenticate(&self, secret: &str) -> Result<Authentication, EngineError> {
        let hash = hash_key(secret);
        let (record, org) = match self.credentials.fresh(&hash) {
            Some(found) => found,
            None => {
                let Some((org_rec, record)) = self.store.credential_by_hash(&hash).await? else {
                    self.credentials.forget(&hash);
                    return Ok(Authentication::Unknown);
                };
                let tz = TimeZone::get(&org_rec.timezone).map_err(|e| {
                    EngineError::Internal(format!("stored time zone {}: {e}", org_rec.timezone))
                })?;
                let org = Org {
                    id: org_rec.id,
                    name: org_rec.name,
                    timezone: org_rec.timezone,
                    calendar: Calendar::new(tz),
                    account_limit: record
                        .accounts
                        .clone()
                        .map(|a| Arc::from(a.into_boxed_slice())),
                };
                self.credentials.put(hash, record.clone(), org.clone());
                (record, org)
            }
        };
        let now = self.clock.now();
        if record.expires_at.is_some_and(|t| t <= now) {
            return Ok(Authentication::Expired);
        }
        let scope = match record.kind {
            CredentialKind::ShareLink => Scope::Read,
            CredentialKind::Key => Scope::parse(&record.scope).ok_or_else(|| {
                EngineError::Internal(format!(
                    "credential {} has an unknown scope `{}`",
                    record.id, record.scope
                ))
            })?,
        };
        if self.credentials.due_for_touch(&record.id) {
            // Off the request's path: when a key was last used is a hint, not a figure.
            let store = self.store.clone();
            let id = record.id.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_credential(&id, now).await {
                    tracing::warn!(credential = %id, error = %e, "could not record last use");
                }
            });
        }
        Ok(Authentication::Valid(Credential {
            org,
            id: record.id,
            kind: record.kind,
            scope,
        }))
    }

    /// Checks what a new key or share link asks for; returns its record (without secret).
    async fn new_record(
        &self,
        org: &Org,
        kind: CredentialKind,
        new: NewCredential,
    ) -> Result<CredentialRecord, EngineError> {
        let name = new.name.trim();
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(EngineError::BadRequest(format!(
                "field `name` must be a non-empty string of at most {MAX_NAME_LEN} bytes"
            )));
        }
        let scope = match kind {
            CredentialKind::ShareLink => Scope::Read,
            CredentialKind::Key => {
                let given = new.scope.as_deref().ok_or_else(|| {
                    EngineError::BadRequest(format!(
                        "field `scope` is required; allowed: {}",
                        Scope::ALLOWED
                    ))
                })?;
                Scope::parse(given).ok_or_else(|| {
                    EngineError::BadRequest(format!(
                        "field `scope` is `{given}`; allowed: {}",
                        Scope::ALLOWED
                    ))
                })?
            }
        };
        let accounts = match new.accounts {
            None => None,
            Some(_) if scope == Scope::Admin => {
                return Err(EngineError::BadRequest(
                    "field `accounts` limits read and ingest keys; an admin key manages the whole organization, so it takes no `accounts`".into(),
                ));
            }
            Some(list) => {
                let unique: BTreeSet<String> = list.into_iter().collect();
                if unique.is_empty() || unique.len() > MAX_ACCOUNTS {
                    return Err(EngineError::BadRequest(format!(
                        "field `accounts` must list 1 to {MAX_ACCOUNTS} account ids (leave it out for all accounts)"
                    )));
                }
                for a in &unique {
                    if !self.rollups.account_exists(&org.id, a).await? {
                        return Err(EngineError::BadRequest(format!(
                            "field `accounts` names `{a}`, which is not an account of this organization"
                        )));
                    }
                }
                Some(unique.into_iter().collect())
            }
        };
        let now = self.clock.now();
        let expires_at = match new.expires_at {
            None => None,
            Some(s) => {
                let t: Timestamp = s.parse().map_err(|_| {
                    EngineError::BadRequest(format!(
                        "field `expires_at` is `{s}`; allowed: an RFC 3339 instant such as 2027-01-01T00:00:00Z"
                    ))
                })?;
                if t.as_second() <= now {
                    return Err(EngineError::BadRequest(format!(
                        "field `expires_at` is `{s}`, which is not in the future"
                    )));
                }
                Some(t.as_second())
            }
        };
        Ok(CredentialRecord {
            id: new_credential_id(kind),
            org: org.id.clone(),
            kind,
            name: name.to_string(),
            scope: scope.as_str().to_string(),
            accounts,
            created_at: now,
            expires_at,
            last_used_at: None,
        })
    }

    pub async fn create_key(
        &self,
        org: &Org,
        new: NewCredential,
    ) -> Result<CreatedKey, EngineError> {
        let record = self.new_record(org, CredentialKind::Key, new).await?;
        let key = new_key_secret();
        self.store
            .create_credential(&record, &hash_key(&key))
            .await?;
        tracing::info!(org = %org.id, key = %record.id, scope = %record.scope, "API key created");
        Ok(CreatedKey {
            view: KeyView::from(&record),
            key,
        })
    }

    pub async fn create_share_link(
        &self,
        org: &Org,
        new: NewCredential,
    ) -> Result<CreatedShareLink, EngineError> {
        let record = self.new_record(org, CredentialKind::ShareLink, new).await?;
        let token = format!("wss_{}", random_hex(20));
        self.store
            .create_credential(&record, &hash_key(&token))
            .await?;
        tracing::info!(org = %org.id, share_link = %record.id, "share link created");
        Ok(CreatedShareLink {
            view: ShareLinkView::from(&record),
            url: format!("/share/{token}"),
            token,
        })
    }

    pub async fn list_keys(&self, org: &Org) -> Result<Vec<KeyView>, EngineError> {
        Ok(self
            .store
            .credentials(&org.id, CredentialKind::Key)
            .await?
            .iter()
            .map(KeyView::from)
            .collect())
    }

    pub async fn list_share_links(&self, org: &Org) -> Result<Vec<ShareLinkView>, EngineError> {
        Ok(self
            .store
            .credentials(&org.id, CredentialKind::ShareLink)
            .await?
            .iter()
            .map(ShareLinkView::from)
            .collect())
    }

    /// Revokes a key or deletes a share link, at once on this instance (and within
    /// `CACHE_TTL` on every other one sharing the store).
    pub async fn revoke(
        &self,
        org: &Org,
        kind: CredentialKind,
        id: &str,
    ) -> Result<(), EngineError> {
        if !self.store.delete_credential(&org.id, kind, id).await? {
            let what = match kind {
                CredentialKind::Key => "API key",
                CredentialKind::ShareLink => "share link",
            };
            return Err(EngineError::NotFound(format!("{what} `{id}` not found")));
        }
        self.credentials.forget_id(id);
        tracing::info!(org = %org.id, credential = %id, "credential revoked");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_covers_every_scope_and_the_others_only_themselves() {
        for needed in [Scope::Ingest, Scope::Read, Scope::Admin] {
            assert!(Scope::Admin.covers(needed));
        }
        assert!(Scope::Read.covers(Scope::Read));
        assert!(!Scope::Read.covers(Scope::Ingest));
        assert!(!Scope::Read.covers(Scope::Admin));
        assert!(Scope::Ingest.covers(Scope::Ingest));
        assert!(!Scope::Ingest.covers(Scope::Read));
        for s in ["ingest", "read", "admin"] {
            assert_eq!(Scope::parse(s).map(Scope::as_str), Some(s));
        }
        assert_eq!(Scope::parse("write"), None);
    }

    #[test]
    fn ids_and_secrets_have_their_prefixes_and_differ() {
        assert!(new_credential_id(CredentialKind::Key).starts_with("key_"));
        assert!(new_credential_id(CredentialKind::ShareLink).starts_with("share_"));
        let (a, b) = (new_key_secret(), new_key_secret());
        assert!(a.starts_with("ws_") && a.len() == 51);
        assert_ne!(a, b);
    }
}
