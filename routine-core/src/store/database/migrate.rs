//! Moving a local store between layouts: its small results from files
//! into the database, or back into files (and the database away).

use std::path::Path;

use super::{DatabaseStore, DATABASE, SMALL_MAX};
use crate::store::{put_whole, Layout, Slot, Store, StoreError};

/// What a migration moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Results moved.
    pub results: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Moves the store at `root` to `layout`: its small results from files
/// into the database, or from the database back into files (and then the
/// database away). Safe to interrupt and run again: a result is copied
/// before its old copy is removed, and while both exist the database's is
/// read. No other process may use the store meanwhile.
///
/// ```
/// use routine_core::store::{migrate, Layout};
///
/// let dir = tempfile::tempdir().unwrap();
/// let moved = migrate(dir.path(), Layout::Database).unwrap();
/// assert_eq!(moved.results, 0);
/// assert!(dir.path().join(".database").is_dir());
/// migrate(dir.path(), Layout::Files).unwrap();
/// assert!(!dir.path().join(".database").exists());
/// ```
pub fn migrate(root: &Path, layout: Layout) -> Result<Migrated, StoreError> {
    let store = DatabaseStore::open(root)?;
    let mut moved = Migrated::default();
    match layout {
        Layout::Database => {
            for listing in store.files.list(None, None)? {
                if listing.size as usize > SMALL_MAX {
                    continue;
                }
                let slot = Slot {
                    name: &listing.name,
                    version: &listing.version,
                    key: &listing.key,
                };
                let Some(found) = store.files.get(&slot)? else {
                    continue;
                };
                let bytes = found.into_bytes().map_err(StoreError::io("read", root))?;
                store.put_small(&slot, &bytes)?;
                moved.results += 1;
                moved.bytes += bytes.len() as u64;
            }
        }
        Layout::Files => {
            for listing in store.list_database(None, None)? {
                let slot = Slot {
                    name: &listing.name,
                    version: &listing.version,
                    key: &listing.key,
                };
                let Some(found) = store.get(&slot)? else {
                    continue;
                };
                let bytes = found.into_bytes().map_err(StoreError::io("read", root))?;
                put_whole(&store.files, &slot, &bytes)?;
                store.remove_small(&slot)?;
                moved.results += 1;
                moved.bytes += bytes.len() as u64;
            }
            drop(store);
            let folder = root.join(DATABASE);
            std::fs::remove_dir_all(&folder).map_err(StoreError::io("remove", &folder))?;
        }
    }
    Ok(moved)
}
