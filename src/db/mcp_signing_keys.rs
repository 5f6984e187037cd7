//! SQL for the `mcp_signing_keys` table: the Ed25519 keys that sign MCP user assertions.

use rusqlite::{Connection, params};

use super::DbError;

/// A stored signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Its key id (RFC 7638 thumbprint).
    pub kid: String,
    /// PKCS#8 DER of the private key.
    pub private_key: Vec<u8>,
    /// When it was created (Unix ms).
    pub created_at: i64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredKey({}, created_at {}, private key ***)", self.kid, self.created_at)
    }
}

/// Every live (not retired) key, newest first.
///
/// # Errors
/// On a database failure.
pub fn list_live_keys(conn: &Connection) -> Result<Vec<StoredKey>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT kid, private_key, created_at FROM mcp_signing_keys WHERE retired_at IS NULL \
         ORDER BY created_at DESC, kid",
    )?;
    let rows = stmt
        .query_map([], |r| Ok(StoredKey { kid: r.get(0)?, private_key: r.get(1)?, created_at: r.get(2)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stores `key` unless a live key exists already (two starting nodes race: the first wins).
/// Returns whether it was stored.
///
/// # Errors
/// On a database failure.
pub fn insert_first_key(conn: &Connection, key: &StoredKey) -> Result<bool, DbError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO mcp_signing_keys (kid, private_key, created_at) \
             SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM mcp_signing_keys WHERE retired_at IS NULL)",
        )?
        .execute(params![key.kid, key.private_key, key.created_at])?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_key_is_stored_and_live_keys_list_newest_first() {
        let conn = crate::db::bare_schema();
        let a = StoredKey { kid: "a".into(), private_key: vec![1], created_at: 1 };
        assert!(insert_first_key(&conn, &a).unwrap());
        let b = StoredKey { kid: "b".into(), private_key: vec![2], created_at: 2 };
        assert!(!insert_first_key(&conn, &b).unwrap());
        assert_eq!(list_live_keys(&conn).unwrap(), vec![a]);
        assert!(!format!("{:?}", list_live_keys(&conn).unwrap()).contains("[1]"));
    }
}
