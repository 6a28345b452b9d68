//! Accounts (SPEC section 1): registering a WhatsApp number with the settings of Meta's
//! webhook. The app secret is sealed with the server key (it must stay usable for HMAC);
//! the verify token is kept as a SHA-256 digest; neither is ever returned.

use std::sync::Arc;

use super::webhook::{ReplayReport, Webhook};
use super::{Clock, EngineConfig, EngineError, Org};
use crate::secrets::hash_token;
use crate::store::{AccountRecord, AccountStore, StoreError};

const MAX_ID_LEN: usize = 256;
const MAX_NAME_LEN: usize = 200;
const MAX_PHONE_LEN: usize = 64;
const MAX_SECRET_LEN: usize = 1024;

/// A registration as the API receives it.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    pub account_id: String,
    pub name: String,
    pub phone_number_id: Option<String>,
    pub verify_token: Option<String>,
    pub app_secret: Option<String>,
    /// Where verified webhook POSTs naming this account are forwarded.
    pub forward_url: Option<String>,
}

/// A change: `None` leaves a field as it is; `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct AccountPatch {
    pub name: Option<String>,
    pub phone_number_id: Option<Option<String>>,
    pub verify_token: Option<Option<String>>,
    pub app_secret: Option<Option<String>>,
    pub forward_url: Option<Option<String>>,
}

/// An account as the API shows it: no secret, only whether one is set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub account_id: String,
    pub name: Option<String>,
    pub phone_number_id: Option<String>,
    pub has_verify_token: bool,
    pub has_app_secret: bool,
    /// Where verified webhook POSTs naming it are forwarded (not a secret).
    pub forward_url: Option<String>,
    /// `false` for an account only seen in events.
    pub registered: bool,
    pub registered_at: Option<String>,
    pub updated_at: Option<String>,
}

fn show(secs: Option<i64>) -> Option<String> {
    secs.and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_string())
}

impl From<&AccountRecord> for AccountView {
    fn from(a: &AccountRecord) -> Self {
        AccountView {
            account_id: a.account_id.clone(),
            name: a.name.clone(),
            phone_number_id: a.phone_number_id.clone(),
            has_verify_token: a.verify_token_hash.is_some(),
            has_app_secret: a.app_secret.is_some(),
            forward_url: a.forward_url.clone(),
            registered: a.registered_at.is_some(),
            registered_at: show(a.registered_at),
            updated_at: show(a.updated_at),
        }
    }
}

/// The answer to a registration or change: the account, and what replaying kept
/// webhook payloads for its number did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AccountSaved {
    #[serde(flatten)]
    pub account: AccountView,
    pub replayed: ReplayReport,
}

fn check_text(name: &str, s: &str, max: usize) -> Result<(), EngineError> {
    // Characters, not bytes: the limit a JSON schema's maxLength can state.
    if s.trim().is_empty() || s.chars().count() > max || s.chars().any(char::is_control) {
        Err(EngineError::BadRequest(format!(
            "field `{name}` must be a non-empty string of at most {max} characters without control characters"
        )))
    } else {
        Ok(())
    }
}

fn check_phone(p: &str) -> Result<(), EngineError> {
    if p.is_empty() || p.len() > MAX_PHONE_LEN || !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Err(EngineError::BadRequest(format!(
            "field `phone_number_id` is `{p}`; allowed: the Phone number ID of Meta's app dashboard (digits, at most {MAX_PHONE_LEN})"
        )))
    } else {
        Ok(())
    }
}

/// A change that sets a number carries the app secret too (re-proving who owns the
/// number), and one that clears the secret clears the number too: rules of the body
/// alone, which the description states as a schema, whatever is stored.
fn check_patch_rule(patch: &AccountPatch) -> Result<(), EngineError> {
    if matches!(patch.phone_number_id, Some(Some(_))) && !matches!(patch.app_secret, Some(Some(_)))
    {
        return Err(EngineError::BadRequest(
            "field `app_secret` is required with `phone_number_id`: a change that sets the number carries the app secret its webhook payloads are verified with".into(),
        ));
    }
    if matches!(patch.app_secret, Some(None)) && !matches!(patch.phone_number_id, Some(None)) {
        return Err(EngineError::BadRequest(
            "field `app_secret` is null: clearing the app secret needs `phone_number_id`: null too, since a number's webhook payloads are verified with it".into(),
        ));
    }
    Ok(())
}

fn conflict(e: StoreError) -> EngineError {
    match e {
        StoreError::Conflict(m) => EngineError::Conflict(m),
        other => other.into(),
    }
}

/// Registers, lists, changes and deletes accounts; a registration or change replays the
/// kept webhook payloads of its number.
pub struct Accounts {
    pub(super) store: Arc<dyn AccountStore>,
    pub(super) webhook: Arc<Webhook>,
    pub(super) config: Arc<EngineConfig>,
    pub(super) clock: Arc<Clock>,
}

impl Accounts {
    fn seal(&self, secret: &str) -> Result<Vec<u8>, EngineError> {
        Ok(self.config.webhook.secret_key()?.seal(secret.as_bytes())?)
    }

    /// Fills in the secret-derived fields and checks that the webhook settings hang together.
    fn complete(
        &self,
        rec: &mut AccountRecord,
        verify_token: Option<Option<&str>>,
        app_secret: Option<Option<&str>>,
    ) -> Result<(), EngineError> {
        if let Some(p) = &rec.phone_number_id {
            check_phone(p)?;
        }
        match verify_token {
            Some(Some(t)) => {
                check_text("verify_token", t, MAX_SECRET_LEN)?;
                rec.verify_token_hash = Some(hash_token(t));
            }
            Some(None) => rec.verify_token_hash = None,
            None => {}
        }
        match app_secret {
            Some(Some(s)) => {
                check_text("app_secret", s, MAX_SECRET_LEN)?;
                rec.app_secret = Some(self.seal(s)?);
            }
            Some(None) => rec.app_secret = None,
            None => {}
        }
        if rec.phone_number_id.is_some() && rec.app_secret.is_none() {
            return Err(EngineError::BadRequest(
                "field `app_secret` is required with `phone_number_id`: webhook payloads are verified with it".into(),
            ));
        }
        Ok(())
    }

    async fn check_forward_url(&self, url: Option<&str>) -> Result<(), EngineError> {
        match url {
            Some(u) => self.webhook.forwarding.check_url(u).await,
            None => Ok(()),
        }
    }

    /// Registers an account (or fills in one so far only seen in events), then replays
    /// the kept webhook payloads of its number.
    pub async fn register(&self, org: &Org, new: NewAccount) -> Result<AccountSaved, EngineError> {
        check_text("account_id", &new.account_id, MAX_ID_LEN)?;
        check_text("name", &new.name, MAX_NAME_LEN)?;
        self.check_forward_url(new.forward_url.as_deref()).await?;
        let now = self.clock.now();
        let mut rec = AccountRecord {
            org: org.id.clone(),
            account_id: new.account_id,
            name: Some(new.name.trim().to_string()),
            phone_number_id: new.phone_number_id,
            forward_url: new.forward_url,
            registered_at: Some(now),
            updated_at: Some(now),
            ..Default::default()
        };
        self.complete(
            &mut rec,
            Some(new.verify_token.as_deref()),
            Some(new.app_secret.as_deref()),
        )?;
        self.store.register_account(&rec).await.map_err(conflict)?;
        tracing::info!(org = %org.id, account = %rec.account_id, phone_number_id = ?rec.phone_number_id, "account registered");
        let replayed = self.webhook.replay_unrouted(&rec).await?;
        Ok(AccountSaved {
            account: AccountView::from(&rec),
            replayed,
        })
    }

    pub async fn list(&self, org: &Org) -> Result<Vec<AccountView>, EngineError> {
        Ok(self
            .store
            .accounts(&org.id)
            .await?
            .iter()
            .filter(|a| org.may_use(&a.account_id))
            .map(AccountView::from)
            .collect())
    }

    async fn account_record(&self, org: &Org, id: &str) -> Result<AccountRecord, EngineError> {
        let visible = if org.may_use(id) {
            self.store.account(&org.id, id).await?
        } else {
            None
        };
        visible.ok_or_else(|| EngineError::UnknownAccount(format!("account `{id}` not found")))
    }

    pub async fn get(&self, org: &Org, id: &str) -> Result<AccountView, EngineError> {
        Ok(AccountView::from(&self.account_record(org, id).await?))
    }

    /// Changes an account; one only seen in events becomes registered (named after its
    /// id unless a name is given). Kept payloads of its number are replayed again.
    pub async fn patch(
        &self,
        org: &Org,
        id: &str,
        patch: AccountPatch,
    ) -> Result<AccountSaved, EngineError> {
        check_patch_rule(&patch)?;
        let mut rec = self.account_record(org, id).await?;
        if let Some(name) = &patch.name {
            check_text("name", name, MAX_NAME_LEN)?;
            rec.name = Some(name.trim().to_string());
        }
        if let Some(phone) = patch.phone_number_id {
            rec.phone_number_id = phone;
        }
        if let Some(url) = patch.forward_url {
            self.check_forward_url(url.as_deref()).await?;
            rec.forward_url = url;
        }
        self.complete(
            &mut rec,
            patch.verify_token.as_ref().map(Option::as_deref),
            patch.app_secret.as_ref().map(Option::as_deref),
        )?;
        let now = self.clock.now();
        rec.updated_at = Some(now);
        if rec.registered_at.is_none() {
            rec.registered_at = Some(now);
            if rec.name.is_none() {
                rec.name = Some(rec.account_id.clone());
            }
            self.store.register_account(&rec).await.map_err(conflict)?;
        } else if !self.store.update_account(&rec).await.map_err(conflict)? {
            return Err(EngineError::UnknownAccount(format!(
                "account `{id}` not found"
            )));
        }
        tracing::info!(org = %org.id, account = %rec.account_id, "account changed");
        let replayed = self.webhook.replay_unrouted(&rec).await?;
        Ok(AccountSaved {
            account: AccountView::from(&rec),
            replayed,
        })
    }

    /// Deletes an account with its figures; events naming it later register it anew.
    pub async fn delete(&self, org: &Org, id: &str) -> Result<(), EngineError> {
        if self.store.delete_account(&org.id, id).await? {
            tracing::info!(org = %org.id, account = %id, "account deleted");
            Ok(())
        } else {
            Err(EngineError::UnknownAccount(format!(
                "account `{id}` not found"
            )))
        }
    }
}
