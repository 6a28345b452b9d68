//! Secrets at rest: the server's secret key, and what is sealed with it.
//!
//! An account's Meta app secret must stay usable (it signs webhook payloads), so it is
//! encrypted with ChaCha20-Poly1305 under a key derived from the server secret
//! (`--secret-key` / `WHATSTAT_SECRET_KEY`, or else a key file of random bytes created
//! beside the SQLite database, mode 0600). Verify tokens only need comparing, so they are
//! stored as SHA-256 digests.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 12;
/// Domain separation: the same passphrase used elsewhere yields another key.
const KEY_CONTEXT: &[u8] = b"whatstat secret-key v1\0";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key is empty")]
    EmptyKey,
    #[error("cannot read or create the key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "a stored secret cannot be decrypted (was the server's --secret-key or key file changed?)"
    )]
    Undecryptable,
    #[error("a secret cannot be encrypted")]
    Unencryptable,
}

/// The 32-byte key secrets are sealed with. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Derives the key from a passphrase of any length (SHA-256 with a context prefix).
    pub fn from_passphrase(passphrase: &str) -> Result<Self, SecretError> {
        let passphrase = passphrase.trim();
        if passphrase.is_empty() {
            return Err(SecretError::EmptyKey);
        }
        let mut h = Sha256::new();
        h.update(KEY_CONTEXT);
        h.update(passphrase.as_bytes());
        Ok(SecretKey(h.finalize().into()))
    }

    /// Reads the key file, creating it (32 random bytes, hex, mode 0600) if it is missing.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let shown = path.display().to_string();
        let io = |source| SecretError::KeyFile {
            path: shown.clone(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => return Self::from_passphrase(&text),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            Err(_) => {}
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let text = hex::encode(bytes);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut f) => {
                f.write_all(text.as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                tracing::info!(path = %shown, "created the secret key file (keep it with the database; without it stored app secrets cannot be read)");
                Self::from_passphrase(&text)
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(io)?;
                Self::from_passphrase(&text)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A random key for this process only (tests, or an engine started without one):
    /// what it seals cannot be read after a restart.
    pub fn ephemeral() -> &'static SecretKey {
        static KEY: OnceLock<SecretKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            SecretKey(bytes)
        })
    }

    /// Encrypts: the result is a random nonce followed by the ciphertext and its tag.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SecretError> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|_| SecretError::Unencryptable)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts what `seal` made; fails if it was made with another key or altered.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretError::Undecryptable);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        ChaCha20Poly1305::new(Key::from_slice(&self.0))
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| SecretError::Undecryptable)
    }
}

/// Where the key file lives for a database URL: beside a SQLite file, else in
/// `./whatstat-data/`.
pub fn key_file_for(database_url: &str) -> PathBuf {
    let dir = database_url
        .strip_prefix("sqlite://")
        .and_then(|p| Path::new(p).parent())
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("whatstat-data"), Path::to_path_buf);
    dir.join("secret.key")
}

/// The stored form of a verify token: its SHA-256 digest, hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let k = SecretKey::from_passphrase("correct horse").expect("key");
        let sealed = k.seal(b"app-secret").expect("seal");
        assert_ne!(&sealed[NONCE_LEN..], b"app-secret");
        assert_eq!(k.open(&sealed).expect("open"), b"app-secret");
        let other = SecretKey::from_passphrase("battery staple").expect("key");
        assert!(other.open(&sealed).is_err());
        assert!(k.open(&sealed[..5]).is_err());
        assert!(SecretKey::from_passphrase("  ").is_err());
        assert_eq!(format!("{k:?}"), "SecretKey(..)");
    }

    #[test]
    fn the_key_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sub").join("secret.key");
        let a = SecretKey::load_or_create(&path).expect("create");
        let b = SecretKey::load_or_create(&path).expect("load");
        assert_eq!(a.0, b.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            key_file_for("sqlite://./data/w.db"),
            PathBuf::from("./data/secret.key")
        );
        assert_eq!(
            key_file_for("postgres://x"),
            PathBuf::from("whatstat-data/secret.key")
        );
    }
}
