//! Credentials as stored (the `TenantStore` concern): API keys and share links of an organization. Only digests of
//! their secrets are kept. What a scope allows is the engine's business; here a scope is
//! a word.

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
