//! Secrets: tokens made from the operating system's randomness, kept as SHA-256 hashes wherever
//! they need not be read back, compared in constant time, and never printed.
//!
//! A [`Token`] is the secret itself; its `Debug` and `Display` show only its kind. A
//! [`TokenHash`] is what a server keeps to check a token it is shown. [`Keys`] is the set of
//! hashes an API accepts, by what each may do; it can change while the server runs (a worker
//! learns its manager's credential when it enrolls).

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The shortest token accepted from a user: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Too short, or with characters a header cannot carry.
    #[error(
        "a token must be at least {MIN_TOKEN_LEN} characters of letters, digits, `-`, `_` or `.`"
    )]
    Malformed,
}

/// A secret token: an admin, join, metrics, worker or call credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// A new random token, `cube-<kind>-` and 256 bits in hex.
    pub fn generate(kind: &str) -> Token {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source is available");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Token(format!("cube-{kind}-{hex}"))
    }

    /// A token given by a user (a flag, an environment variable, a file), checked for shape.
    pub fn parse(raw: &str) -> Result<Token, SecretError> {
        let raw = raw.trim();
        let fine = raw.len() >= MIN_TOKEN_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if fine {
            Ok(Token(raw.to_string()))
        } else {
            Err(SecretError::Malformed)
        }
    }

    /// The secret, to send it or to write it where its owner reads it. Nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its hash, what a server keeps.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }

    /// The `Authorization` header value carrying it.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted token>")
    }
}

/// The SHA-256 of a token: enough to check one, useless to present one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `presented` is the token of this hash, in time that does not depend on where
    /// they differ.
    pub fn matches(&self, presented: &str) -> bool {
        constant_time_eq::constant_time_eq_32(&self.0, &TokenHash::of(presented).0)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", String::from(*self))
    }
}

impl From<TokenHash> for String {
    fn from(h: TokenHash) -> String {
        h.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl TryFrom<String> for TokenHash {
    type Error = String;

    fn try_from(s: String) -> Result<TokenHash, String> {
        let s = s.trim();
        if s.len() != 64 || !s.is_ascii() {
            return Err(format!("a token hash is 64 hex digits, not `{s}`"));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("a token hash is 64 hex digits, not `{s}`"))?;
        }
        Ok(TokenHash(out))
    }
}

/// What a presented token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every route.
    Full,
    /// Every route of a worker: the credential its manager calls it with.
    Manager,
    /// Only enrolling a worker (`POST /nodes`).
    Join,
    /// Only reading metrics (`GET /metrics`).
    Metrics,
}

/// The token hashes an API accepts, by what each may do. Cloned handles share one set.
#[derive(Clone, Default)]
pub struct Keys(Arc<RwLock<Vec<(TokenHash, Access)>>>);

impl Keys {
    /// Accepts tokens of `hash` for `access`.
    pub fn allow(&self, hash: TokenHash, access: Access) {
        self.0.write().expect("keys lock").push((hash, access));
    }

    /// Replaces every key of `access` by `hash`.
    pub fn replace(&self, hash: TokenHash, access: Access) {
        let mut keys = self.0.write().expect("keys lock");
        keys.retain(|(_, a)| *a != access);
        keys.push((hash, access));
    }

    /// What `presented` may do, if it is one of the tokens. Every key is compared, so the time
    /// taken does not tell which matched.
    pub fn check(&self, presented: &str) -> Option<Access> {
        let presented = TokenHash::of(presented);
        let keys = self.0.read().expect("keys lock");
        let mut found = None;
        for (hash, access) in keys.iter() {
            if constant_time_eq::constant_time_eq_32(&hash.0, &presented.0) && found.is_none() {
                found = Some(*access);
            }
        }
        found
    }
}

/// Writes `contents` to `path` readable by its owner only (0600), replacing it atomically.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    // A fresh name, created here (not an existing file or a symlink someone left).
    let tmp = path.with_extension(format!("tmp-{}", Token::generate("f").expose()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The token in the file at `path`, or a new one of `kind` written there (0600); whether it was
/// made now.
pub fn read_or_create(path: &Path, kind: &str) -> std::io::Result<(Token, bool)> {
    match std::fs::read_to_string(path) {
        Ok(text) => Token::parse(&text).map(|t| (t, false)).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = Token::generate(kind);
            write_private(path, &format!("{}\n", token.expose()))?;
            Ok((token, true))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_its_hash_only() {
        let token = Token::generate("admin");
        assert!(token.expose().starts_with("cube-admin-"));
        assert!(token.hash().matches(token.expose()));
        assert!(!token.hash().matches(&Token::generate("admin").expose()[..]));
        assert!(!token.hash().matches(""));
    }

    #[test]
    fn a_token_never_prints_itself() {
        let token = Token::generate("join");
        assert!(!format!("{token:?} {token}").contains(token.expose()));
    }

    #[test]
    fn short_or_odd_tokens_are_refused() {
        assert_eq!(Token::parse("short"), Err(SecretError::Malformed));
        assert_eq!(
            Token::parse("a token with spaces in it"),
            Err(SecretError::Malformed)
        );
        assert!(Token::parse(" cube-test-token-0123456789\n").is_ok());
    }

    #[test]
    fn a_hash_survives_its_text_form() {
        let hash = Token::generate("x").hash();
        let text = String::from(hash);
        assert_eq!(TokenHash::try_from(text).unwrap(), hash);
        assert!(TokenHash::try_from("zz".to_string()).is_err());
    }

    #[test]
    fn keys_say_what_a_token_may_do() {
        let keys = Keys::default();
        let admin = Token::generate("admin");
        let join = Token::generate("join");
        keys.allow(admin.hash(), Access::Full);
        keys.allow(join.hash(), Access::Join);
        assert_eq!(keys.check(admin.expose()), Some(Access::Full));
        assert_eq!(keys.check(join.expose()), Some(Access::Join));
        assert_eq!(keys.check("cube-admin-wrong"), None);
        let other = Token::generate("join");
        keys.replace(other.hash(), Access::Join);
        assert_eq!(keys.check(join.expose()), None);
        assert_eq!(keys.check(other.expose()), Some(Access::Join));
    }

    #[test]
    fn private_files_are_0600_and_kept_across_starts() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.token");
        let (first, made) = read_or_create(&path, "admin").unwrap();
        assert!(made);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, made) = read_or_create(&path, "admin").unwrap();
        assert!(!made);
        assert_eq!(first, again);
    }
}
