//! The key-store port of crypto-shredding: one data key per subject, stored wrapped
//! (encrypted by a master key the store never sees), destroyed to forget the subject.

use std::future::Future;

use flext_domain::Error;

/// Keeps the wrapped data keys of subjects, and which other keys depend on a subject
/// (destroyed with it: the keys of snapshots of streams that hold its data).
///
/// A key name is 1-1,024 bytes. The stores keep keys in `flext_data_keys` and links in
/// `flext_data_key_links`; a forgotten key's row is deleted (SQLite zeroes the deleted
/// cells: `secure_delete`; PostgreSQL keeps dead rows' bytes until `VACUUM`, wrapped by
/// the master key).
pub trait KeyStore: Send + Sync {
    /// The wrapped key named `name`, if it exists (never created, or forgotten: none).
    fn data_key(&self, name: &str) -> impl Future<Output = Result<Option<Vec<u8>>, Error>> + Send;

    /// Stores `wrapped` as the key named `name` unless one exists, and returns the one
    /// that is stored (so racing creators agree on one key).
    fn create_data_key(
        &self,
        name: &str,
        wrapped: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, Error>> + Send;

    /// Records that the key `dependent` is destroyed with the key `subject`.
    fn link_data_key(
        &self,
        subject: &str,
        dependent: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Destroys the key named `subject` and every key linked to it; returns how many keys
    /// it destroyed.
    fn forget_data_key(&self, subject: &str) -> impl Future<Output = Result<u64, Error>> + Send;
}

impl<K: KeyStore> KeyStore for std::sync::Arc<K> {
    fn data_key(&self, name: &str) -> impl Future<Output = Result<Option<Vec<u8>>, Error>> + Send {
        (**self).data_key(name)
    }
    fn create_data_key(
        &self,
        name: &str,
        wrapped: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, Error>> + Send {
        (**self).create_data_key(name, wrapped)
    }
    fn link_data_key(
        &self,
        subject: &str,
        dependent: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).link_data_key(subject, dependent)
    }
    fn forget_data_key(&self, subject: &str) -> impl Future<Output = Result<u64, Error>> + Send {
        (**self).forget_data_key(subject)
    }
}

/// `INVALID_ARGUMENT`/`INVALID_KEY_NAME` unless `name` is 1-1,024 bytes. For adapters.
pub fn check_key_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 1024 {
        return Err(Error::invalid_argument(
            "INVALID_KEY_NAME",
            format!(
                "a data key's name must be 1-1024 bytes, not {} bytes",
                name.len()
            ),
        )
        .with_detail("field", "subject"));
    }
    Ok(())
}
