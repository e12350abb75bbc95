//! Page cursors that only this deployment can make: the position a page ended at, with
//! an HMAC-SHA256 tag under the catalog's cursor key (shared by every node, so a cursor
//! works on any of them and after restarts). A cursor tenantd did not issue, or one
//! changed in transit, is `400` ("cursor is not one this server issued"), never a query
//! from a position the client chose.
use crate::{Page, PageRequest, Result, StoreError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

/// Why a cursor is refused.
const NOT_ISSUED: &str = "cursor is not one this server issued";

/// The length of a cursor's tag.
const TAG: usize = 32;

/// Seals and opens page cursors.
pub struct Cursors {
    key: hmac::Key,
}

impl std::fmt::Debug for Cursors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cursors([redacted])")
    }
}

impl Cursors {
    /// Cursors under `secret` (the catalog's `cursor_key`).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Cursors under a key of this process only (a catalog that was never migrated).
    pub fn random() -> Self {
        Self::new(&rand::random::<[u8; 32]>())
    }

    /// The cursor for `position`.
    pub fn seal(&self, position: &str) -> String {
        let mut bytes = position.as_bytes().to_vec();
        bytes.extend_from_slice(hmac::sign(&self.key, position.as_bytes()).as_ref());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The position a cursor carries, if this deployment issued it.
    pub fn open(&self, cursor: &str) -> Result<String> {
        let bad = || StoreError::Invalid(NOT_ISSUED.into());
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
        let split = bytes.len().checked_sub(TAG).ok_or_else(bad)?;
        let (position, tag) = bytes.split_at(split);
        hmac::verify(&self.key, position, tag).map_err(|_| bad())?;
        String::from_utf8(position.to_vec()).map_err(|_| bad())
    }

    /// The position `page` continues after, if it names a cursor.
    pub fn after(&self, page: &PageRequest) -> Result<Option<String>> {
        page.after.as_deref().map(|c| self.open(c)).transpose()
    }

    /// The id `page` continues after, for lists ordered by a numeric id, if it names a
    /// cursor.
    pub fn after_id(&self, page: &PageRequest) -> Result<Option<i64>> {
        self.after(page)?
            .map(|p| p.parse().map_err(|_| StoreError::Invalid(NOT_ISSUED.into())))
            .transpose()
    }

    /// Cuts `limit + 1` fetched items down to a page, with a cursor after the last.
    pub fn page<T>(&self, mut items: Vec<T>, limit: u32, position: impl Fn(&T) -> String) -> Page<T> {
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|t| self.seal(&position(t)))
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_issued_cursors_open() {
        let c = Cursors::new(b"k1");
        let s = c.seal("usr_123");
        assert_eq!(c.open(&s).unwrap(), "usr_123");
        assert!(Cursors::new(b"k2").open(&s).is_err(), "another deployment's");
        // The old format (bare base64 of the position) and every one-character change.
        assert!(c.open(&URL_SAFE_NO_PAD.encode("usr_123")).is_err());
        let mut bytes = URL_SAFE_NO_PAD.decode(&s).unwrap();
        bytes[0] ^= 1;
        assert!(c.open(&URL_SAFE_NO_PAD.encode(&bytes)).is_err(), "a changed position");
        for bad in ["", "!!", "AAAA"] {
            assert!(c.open(bad).is_err(), "{bad}");
        }
        let p = c.page(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(
            (p.items, c.open(&p.next_cursor.unwrap()).unwrap()),
            (vec![1, 2], "2".to_string())
        );
        assert!(c.page(vec![1], 2, |n| n.to_string()).next_cursor.is_none());
    }
}
