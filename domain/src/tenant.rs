//! Tenant ids: who a store's data belongs to, checked once where they enter.

use std::fmt;
use std::sync::Arc;

use crate::{Error, ErrorCode, FieldViolation};

/// A tenant's id: 1 to 63 bytes of lower-case ASCII letters, digits, `-` and `_`,
/// beginning with a letter or a digit. The rules make every tenant id a safe PostgreSQL
/// schema name part, file name and NATS subject token, with no two ids that differ only in
/// case. Cloning is cheap (a shared string).
///
/// ```
/// use flext::TenantId;
///
/// assert_eq!(TenantId::new("acme-eu")?.as_str(), "acme-eu");
/// let refused = TenantId::new("Acme; DROP TABLE").unwrap_err();
/// assert_eq!(refused.reason(), "INVALID_TENANT_ID");
/// # Ok::<(), flext::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// The longest tenant id, in bytes (PostgreSQL's identifiers hold 63).
    pub const MAX_LEN: usize = 63;

    /// A checked tenant id. A violation is an `InvalidArgument` error (reason
    /// `INVALID_TENANT_ID`) saying which rule the id broke.
    pub fn new(id: impl AsRef<str>) -> Result<TenantId, Error> {
        let id = id.as_ref();
        let allowed =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        let problem = if id.is_empty() {
            Some("must not be empty".to_owned())
        } else if id.len() > TenantId::MAX_LEN {
            Some(format!(
                "is {} bytes long; the limit is {} bytes",
                id.len(),
                TenantId::MAX_LEN
            ))
        } else if !id.as_bytes()[0].is_ascii_lowercase() && !id.as_bytes()[0].is_ascii_digit() {
            Some("must begin with a lower-case letter or a digit".to_owned())
        } else {
            id.char_indices()
                .find(|(_, c)| !c.is_ascii() || !allowed(*c as u8))
                .map(|(i, c)| {
                    format!("contains {c:?} at byte {i}; only a-z, 0-9, '-' and '_' are allowed")
                })
        };
        match problem {
            None => Ok(TenantId(Arc::from(id))),
            Some(why) => {
                let shown: String = id.chars().take(64).collect();
                Err(Error::invalid_argument(
                    "INVALID_TENANT_ID",
                    format!("tenant id {shown:?} {why}"),
                )
                .with_field_violation(FieldViolation::new(
                    "tenant",
                    ErrorCode::InvalidArgument,
                    "INVALID_TENANT_ID",
                    why,
                )))
            }
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({:?})", &*self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for TenantId {
    type Error = Error;
    fn try_from(id: &str) -> Result<TenantId, Error> {
        TenantId::new(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_keep_to_their_rules() {
        for ok in ["acme", "acme-eu", "a_1", "7", &"a".repeat(63)] {
            assert_eq!(TenantId::new(ok).expect(ok).as_str(), ok);
        }
        for (bad, why) in [
            ("", "must not be empty"),
            (&"a".repeat(64) as &str, "64 bytes long"),
            ("-acme", "must begin"),
            ("_acme", "must begin"),
            ("Acme", "must begin"),
            ("acMe", "contains 'M'"),
            ("acme eu", "contains ' '"),
            ("acme;drop", "contains ';'"),
            ("acme.eu", "contains '.'"),
            ("ac\u{0}me", "contains '\\0'"),
            ("acmé", "contains 'é'"),
        ] {
            let e = TenantId::new(bad).expect_err(bad);
            assert_eq!(e.reason(), "INVALID_TENANT_ID");
            assert!(e.message().contains(why), "{bad:?}: {}", e.message());
        }
    }
}
