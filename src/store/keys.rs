//! Credentials as stored: API keys and share links of an organization. Only digests of
//! their secrets are kept. What a scope allows is the engine's business; here a scope is
//! a word.

use async_trait::async_trait;

use super::{OrgRecord, StoreResult};

/// What a credential is: a key a program sends, or a link a person opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Key,
    ShareLink,
}

impl CredentialKind {
    /// The word stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Key => "key",
            CredentialKind::ShareLink => "share",
        }
    }

    pub fn from_stored(s: &str) -> Option<Self> {
        match s {
            "key" => Some(CredentialKind::Key),
            "share" => Some(CredentialKind::ShareLink),
            _ => None,
        }
    }
}

/// One credential of one organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    pub id: String,
    pub org: String,
    pub kind: CredentialKind,
    pub name: String,
    pub scope: String,
    /// The accounts it is limited to; `None` for all of the organization's.
    pub accounts: Option<Vec<String>>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// Stored lists of account ids: one text column, ids joined by a newline (an id never
/// holds one).
pub(crate) fn join_accounts(accounts: &Option<Vec<String>>) -> Option<String> {
    accounts.as_ref().map(|a| a.join("\n"))
}

pub(crate) fn split_accounts(stored: Option<String>) -> Option<Vec<String>> {
    stored.map(|s| {
        s.split('\n')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    })
}

#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new credential under the digest of its secret.
    async fn create_credential(
        &self,
        record: &CredentialRecord,
        secret_hash: &str,
    ) -> StoreResult<()>;
    /// The credential with this digest, with its organization.
    async fn credential_by_hash(
        &self,
        secret_hash: &str,
    ) -> StoreResult<Option<(OrgRecord, CredentialRecord)>>;
    /// The organization's credentials of one kind, oldest first.
    async fn credentials(
        &self,
        org: &str,
        kind: CredentialKind,
    ) -> StoreResult<Vec<CredentialRecord>>;
    /// Deletes one credential (`false`: the organization has no such one of that kind).
    async fn delete_credential(
        &self,
        org: &str,
        kind: CredentialKind,
        id: &str,
    ) -> StoreResult<bool>;
    /// Records when a credential was last used.
    async fn touch_credential(&self, id: &str, at: i64) -> StoreResult<()>;
}
