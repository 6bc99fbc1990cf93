//! Choosing which stored results to remove: expired ones, unused ones, and
//! the least recently used beyond a size limit.
//!
//! The choice is a pure function of a listing, so it is the same on every
//! backend and can be shown before anything is removed (`--dry-run`).

use std::time::{Duration, SystemTime};

use super::{Listing, RemovalCause, Slot, Store, StoreError};

/// What to collect.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcPolicy {
    /// Remove results not used for this long.
    pub older_than: Option<Duration>,
    /// Then remove the least recently used until the rest fit in this many
    /// bytes.
    pub max_size: Option<u64>,
}

/// Why a result is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its task's `ttl` has passed.
    Expired,
    /// Not used for longer than `older_than`.
    Unused,
    /// Among the least recently used beyond `max_size`.
    OverSize,
}

impl Reason {
    /// A word for tables: `expired`, `unused`, `over-size`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Expired => "expired",
            Reason::Unused => "unused",
            Reason::OverSize => "over-size",
        }
    }
}

/// What a collection removes and keeps.
#[derive(Debug, Clone, Default)]
pub struct GcPlan {
    /// Results to remove, with the reason, least recently used first.
    pub remove: Vec<(Listing, Reason)>,
    /// Results kept.
    pub keep: Vec<Listing>,
}

impl GcPlan {
    /// Bytes the removals free.
    pub fn freed(&self) -> u64 {
        self.remove.iter().map(|(l, _)| l.size).sum()
    }

    /// Bytes kept.
    pub fn kept(&self) -> u64 {
        self.keep.iter().map(|l| l.size).sum()
    }
}

/// Plans a collection of `listings` at `now`; `expired` says whether a
/// result has outlived its task's `ttl`.
///
/// ```
/// use routine_core::store::gc::{plan, GcPolicy, Reason};
/// use routine_core::store::Listing;
/// use std::time::{Duration, SystemTime};
///
/// let now = SystemTime::now();
/// let listing = |n: u8, used_days_ago: u64| Listing {
///     name: "fit".into(), version: "0.1.0".into(),
///     key: routine_core::Key::of("fit", "0.1.0", &n).unwrap(), size: 100,
///     created: now - Duration::from_secs(40 * 86_400),
///     accessed: now - Duration::from_secs(used_days_ago * 86_400),
/// };
/// let policy = GcPolicy { older_than: Some(Duration::from_secs(30 * 86_400)), max_size: Some(100) };
/// let plan = plan(vec![listing(1, 35), listing(2, 1), listing(3, 2)], &policy, now, |_| false);
/// let reasons: Vec<Reason> = plan.remove.iter().map(|(_, r)| *r).collect();
/// assert_eq!(reasons, [Reason::Unused, Reason::OverSize]);
/// assert_eq!(plan.keep.len(), 1); // the one used a day ago
/// ```
pub fn plan(
    mut listings: Vec<Listing>,
    policy: &GcPolicy,
    now: SystemTime,
    expired: impl Fn(&Listing) -> bool,
) -> GcPlan {
    // Least recently used first; ties broken by the listing's own order so
    // that a plan is reproducible. Uses within the recording's resolution
    // are not ordered among themselves: any of them may be the entry just
    // read, so all of them go last.
    // Not stale (`access_is_stale`) is at or after this.
    let cutoff = now.checked_sub(super::ACCESS_RESOLUTION);
    let recent = |l: &Listing| cutoff.is_none_or(|cutoff| l.accessed >= cutoff);
    listings.sort_by(|a, b| {
        (recent(a), a.accessed)
            .cmp(&(recent(b), b.accessed))
            .then_with(|| a.cmp(b))
    });
    let mut out = GcPlan::default();
    let unused = |listing: &Listing| {
        policy.older_than.is_some_and(|limit| {
            now.duration_since(listing.accessed)
                .is_ok_and(|idle| idle > limit)
        })
    };
    for listing in listings {
        if expired(&listing) {
            out.remove.push((listing, Reason::Expired));
        } else if unused(&listing) {
            out.remove.push((listing, Reason::Unused));
        } else {
            out.keep.push(listing);
        }
    }
    if let Some(limit) = policy.max_size {
        let mut kept = out.kept();
        let mut keep = std::mem::take(&mut out.keep).into_iter();
        for listing in keep.by_ref() {
            if kept <= limit {
                out.keep.push(listing);
                break;
            }
            kept -= listing.size;
            out.remove.push((listing, Reason::OverSize));
        }
        out.keep.extend(keep);
    }
    out
}

/// Removes what `plan` chose, noting each removal and its reason in the
/// store (for `why`); returns the bytes freed. An entry already gone
/// (removed by another process) is not an error.
pub fn apply(store: &dyn Store, plan: &GcPlan) -> Result<u64, StoreError> {
    // In slot order, so that each batch touches one stretch of a database
    // (a B-tree page is rewritten once, not once per batch).
    let mut order: Vec<&(Listing, Reason)> = plan.remove.iter().collect();
    order.sort_unstable_by(|(a, _), (b, _)| {
        (&a.name, &a.version, a.key).cmp(&(&b.name, &b.version, b.key))
    });
    let mut freed = 0;
    for batch in order.chunks(REMOVE_BATCH) {
        let slots: Vec<Slot<'_>> = batch.iter().map(|(listing, _)| slot_of(listing)).collect();
        let removed = store.remove_many(&slots)?;
        let mut noted: Vec<(Reason, Vec<Slot<'_>>)> = Vec::new();
        for ((listing, reason), removed) in batch.iter().zip(removed) {
            if !removed {
                continue;
            }
            freed += listing.size;
            match noted.iter_mut().find(|(r, _)| r == reason) {
                Some((_, slots)) => slots.push(slot_of(listing)),
                None => noted.push((*reason, vec![slot_of(listing)])),
            }
        }
        for (reason, slots) in noted {
            let cause = RemovalCause::Collected {
                reason: reason.as_str().to_owned(),
            };
            // The results are gone either way; only `why` loses the note.
            if let Err(e) = store.note_removals(&slots, &cause) {
                tracing::warn!(error = %e, "cannot note the removals of `cache gc` in the store");
            }
        }
    }
    Ok(freed)
}

fn slot_of(listing: &Listing) -> Slot<'_> {
    Slot {
        name: &listing.name,
        version: &listing.version,
        key: &listing.key,
    }
}

/// Entries [`apply`] hands the store at once: a database removes each
/// batch in one commit, and other processes wait at most that long.
const REMOVE_BATCH: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    fn listing(n: u32, size: u64, used_secs_ago: u64, now: SystemTime) -> Listing {
        Listing {
            name: "t".into(),
            version: "1.0.0".into(),
            key: Key::of("t", "1.0.0", &n).unwrap(),
            size,
            created: now - Duration::from_secs(used_secs_ago + 10),
            accessed: now - Duration::from_secs(used_secs_ago),
        }
    }

    #[test]
    fn size_limit_evicts_least_recently_used_first() {
        let now = SystemTime::now();
        let all = vec![
            listing(1, 10, 300, now),
            listing(2, 10, 100, now),
            listing(3, 10, 200, now),
            listing(4, 10, 0, now),
        ];
        let policy = GcPolicy {
            older_than: None,
            max_size: Some(20),
        };
        let plan = plan(all, &policy, now, |_| false);
        let removed: Vec<Key> = plan.remove.iter().map(|(l, _)| l.key).collect();
        let key = |n: u32| Key::of("t", "1.0.0", &n).unwrap();
        assert_eq!(removed, [key(1), key(3)]);
        assert_eq!((plan.freed(), plan.kept()), (20, 20));
    }

    #[test]
    fn entries_used_within_the_resolution_go_last() {
        let now = SystemTime::now();
        // 2 was read a moment ago, but its use was last recorded 50 s ago;
        // 1 was recorded 10 s ago. Either may be the one just used.
        let all = vec![
            listing(1, 10, 10, now),
            listing(2, 10, 50, now),
            listing(3, 10, 3_600, now),
        ];
        let policy = GcPolicy {
            older_than: None,
            max_size: Some(20),
        };
        let plan = plan(all, &policy, now, |_| false);
        let removed: Vec<Key> = plan.remove.iter().map(|(l, _)| l.key).collect();
        assert_eq!(removed, [Key::of("t", "1.0.0", &3u32).unwrap()]);
    }

    #[test]
    fn nothing_is_removed_without_a_reason() {
        let now = SystemTime::now();
        let all = vec![listing(1, 10, 300, now), listing(2, 10, 100, now)];
        let plan = plan(all, &GcPolicy::default(), now, |_| false);
        assert!(plan.remove.is_empty());
        assert_eq!(plan.keep.len(), 2);
    }

    #[test]
    fn expiry_comes_first_and_counts_toward_the_limit() {
        let now = SystemTime::now();
        let all = vec![listing(1, 10, 0, now), listing(2, 10, 100, now)];
        let expired_key = Key::of("t", "1.0.0", &1u32).unwrap();
        let policy = GcPolicy {
            older_than: Some(Duration::from_secs(1000)),
            max_size: Some(10),
        };
        let plan = plan(all, &policy, now, |l| l.key == expired_key);
        assert_eq!(plan.remove.len(), 1);
        assert_eq!(plan.remove[0].1, Reason::Expired);
        assert_eq!(plan.keep.len(), 1);
    }
}
