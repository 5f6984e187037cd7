//! Prefixed, sortable identifiers (`org_…`, `key_…`, `ses_…`, `run_…`, `wrk_…`) as typed newtypes.
//!
//! The body is a UUIDv7 written in lowercase Crockford base32 (26 characters), so ids sort by
//! creation time as plain strings and say what they name at a glance.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// What kind of row an [`Id`] names, and the prefix its string form carries.
pub trait IdKind {
    /// The prefix, without the underscore.
    const PREFIX: &'static str;
}

macro_rules! id_kinds {
    ($($kind:ident => $prefix:literal, $alias:ident;)*) => {$(
        #[doc = concat!("Marker for `", $prefix, "_…` ids.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $kind {}
        impl IdKind for $kind {
            const PREFIX: &'static str = $prefix;
        }
        #[doc = concat!("An id of the form `", $prefix, "_…`.")]
        pub type $alias = Id<$kind>;
    )*};
}

id_kinds! {
    OrgKind => "org", OrgId;
    KeyKind => "key", KeyId;
    AdminTokenKind => "adm", AdminTokenId;
    WorkerTokenKind => "wtk", WorkerTokenId;
    SessionKind => "ses", SessionId;
    RunKind => "run", RunId;
    WorkerKind => "wrk", WorkerId;
}

/// A prefixed, sortable id of kind `K`.
pub struct Id<K> {
    text: String,
    kind: PhantomData<K>,
}

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const BODY_LEN: usize = 26;

impl<K: IdKind> Id<K> {
    /// A new id, later in sort order than every id this process made before it.
    #[must_use]
    pub fn new() -> Self {
        Self { text: encode(K::PREFIX, uuid::Uuid::now_v7().as_u128()), kind: PhantomData }
    }

    /// The smallest id made at Unix time `ms`, as text: every id made at or after `ms` sorts at
    /// or above it, every id made before it sorts below (a bound for filtering ids by time).
    #[must_use]
    pub fn floor_at(ms: i64) -> String {
        let ms = u128::try_from(ms.clamp(0, (1 << 48) - 1)).unwrap_or(0);
        encode(K::PREFIX, ms << 80)
    }

    /// The id as text, prefix included.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<K: IdKind> Default for Id<K> {
    fn default() -> Self {
        Self::new()
    }
}

/// `prefix_` and the 128-bit `value` in 26 Crockford base32 digits.
fn encode(prefix: &str, value: u128) -> String {
    let mut text = String::with_capacity(prefix.len() + 1 + BODY_LEN);
    text.push_str(prefix);
    text.push('_');
    for i in (0..BODY_LEN).rev() {
        // 26 digits of 5 bits cover 130 bits; the top digit holds the 3 highest bits.
        let digit = ((value >> (i * 5)) & 0x1f) as usize;
        text.push(char::from(CROCKFORD[digit]));
    }
    text
}

/// Why a string is not an id of the expected kind.
#[derive(Debug, thiserror::Error)]
#[error("`{text}` is not a valid `{prefix}_…` id")]
pub struct ParseIdError {
    text: String,
    prefix: &'static str,
}

impl<K: IdKind> FromStr for Id<K> {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.strip_prefix(K::PREFIX).and_then(|rest| rest.strip_prefix('_')).is_some_and(|body| {
            !body.is_empty()
                && body.len() <= 64
                && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if valid {
            Ok(Self { text: s.to_owned(), kind: PhantomData })
        } else {
            Err(ParseIdError { text: s.chars().take(80).collect(), prefix: K::PREFIX })
        }
    }
}

impl<K> Clone for Id<K> {
    fn clone(&self) -> Self {
        Self { text: self.text.clone(), kind: PhantomData }
    }
}
impl<K> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl<K> Eq for Id<K> {}
impl<K> std::hash::Hash for Id<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}
impl<K> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}
impl<K> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl<K> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl<K> ToSql for Id<K> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.text.as_str()))
    }
}
impl<K: IdKind> FromSql for Id<K> {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        text.parse().map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}
impl<K> serde::Serialize for Id<K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}
impl<'de, K: IdKind> serde::Deserialize<'de> for Id<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_sort_by_creation() {
        let ids: Vec<RunId> = (0..1000).map(|_| RunId::new()).collect();
        assert!(ids.iter().all(|id| id.as_str().starts_with("run_") && id.as_str().len() == 30));
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn a_time_floor_sorts_between_the_ids_made_before_and_after_it() {
        let before = SessionId::new();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let floor = SessionId::floor_at(i64::try_from(now.as_millis()).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(3));
        let after = SessionId::new();
        assert!(
            before.as_str() < floor.as_str() && floor.as_str() <= after.as_str(),
            "{before} {floor} {after}"
        );
        assert!(floor.parse::<SessionId>().is_ok());
    }

    #[test]
    fn parsing_checks_the_prefix() {
        let id = SessionId::new();
        assert_eq!(id.as_str().parse::<SessionId>().unwrap(), id);
        assert!(id.as_str().parse::<RunId>().is_err());
        assert!("run_".parse::<RunId>().is_err());
        assert!("run_a b".parse::<RunId>().is_err());
    }
}
