//! The newest version seen of each mutable file (directories included), so that a reader notices when the grid
//! offers an older one: servers that missed updates, or withhold the newest shares, can otherwise roll a file
//! back unseen, and a change written over the old version would silently drop what the newer one held. Bounded:
//! the least recently seen files are forgotten first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Highest sequence numbers seen, by storage index, for at most `capacity` files.
#[derive(Debug)]
pub struct SeqnumFloors {
    capacity: usize,
    inner: Mutex<Floors>,
}

#[derive(Debug, Default)]
struct Floors {
    tick: u64,
    /// Storage index → (highest seqnum seen, last seen at tick).
    seen: HashMap<[u8; 16], (u64, u64)>,
    /// Tick → storage index: the oldest first, for eviction.
    by_age: BTreeMap<u64, [u8; 16]>,
}

impl SeqnumFloors {
    pub fn new(capacity: usize) -> SeqnumFloors {
        SeqnumFloors {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// The highest sequence number seen of `storage_index`, if any is remembered.
    pub fn get(&self, storage_index: &[u8; 16]) -> Option<u64> {
        self.lock()
            .seen
            .get(storage_index)
            .map(|(seqnum, _)| *seqnum)
    }

    /// Remembers that `storage_index` has reached `seqnum` (a lower one than known changes nothing but its age).
    pub fn record(&self, storage_index: [u8; 16], seqnum: u64) {
        let mut floors = self.lock();
        floors.tick += 1;
        let tick = floors.tick;
        let highest = match floors.seen.get(&storage_index) {
            Some(&(known, at)) => {
                floors.by_age.remove(&at);
                known.max(seqnum)
            }
            None => seqnum,
        };
        floors.seen.insert(storage_index, (highest, tick));
        floors.by_age.insert(tick, storage_index);
        while floors.seen.len() > self.capacity {
            let Some((_, oldest)) = floors.by_age.pop_first() else {
                break;
            };
            floors.seen.remove(&oldest);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Floors> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_highest_seqnum_and_forgets_the_least_recently_seen() {
        let floors = SeqnumFloors::new(2);
        floors.record([1; 16], 5);
        floors.record([1; 16], 3);
        assert_eq!(floors.get(&[1; 16]), Some(5));
        floors.record([2; 16], 1);
        floors.record([1; 16], 6); // [1] is now the most recent
        floors.record([3; 16], 9); // evicts [2]
        assert_eq!(floors.get(&[2; 16]), None);
        assert_eq!(
            (floors.get(&[1; 16]), floors.get(&[3; 16])),
            (Some(6), Some(9))
        );
        assert_eq!(floors.len(), 2);
    }
}
