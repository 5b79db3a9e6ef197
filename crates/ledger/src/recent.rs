//! The bounded window of recent event ids that lets most replays be answered from memory.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::{EventId, Status};

/// Ids committed recently with their body hash and first status. Every id above `floor` that
/// is not in the window is known to be new; an id at or below `floor` that is not in the window
/// may be in storage and must be looked up there.
#[derive(Debug)]
pub(crate) struct RecentIds {
    map: FxHashMap<EventId, (u64, Status)>,
    order: VecDeque<EventId>,
    capacity: usize,
    floor: EventId,
}

impl RecentIds {
    pub(crate) fn new(capacity: usize, floor: EventId) -> RecentIds {
        assert!(capacity > 0);
        RecentIds {
            map: FxHashMap::default(),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
            floor,
        }
    }

    pub(crate) fn get(&self, id: EventId) -> Option<(u64, Status)> {
        self.map.get(&id).copied()
    }

    /// Whether only storage can tell if `id` was seen.
    pub(crate) fn must_look_up(&self, id: EventId) -> bool {
        id <= self.floor && !self.map.contains_key(&id)
    }

    pub(crate) fn push(&mut self, id: EventId, hash: u64, status: Status) {
        let previous = self.map.insert(id, (hash, status));
        assert!(previous.is_none(), "an id enters the window once");
        self.order.push_back(id);
    }

    /// Undoes the last `count` pushes (a batch that did not commit).
    pub(crate) fn pop_back(&mut self, count: usize) {
        for _ in 0..count {
            let id = self.order.pop_back().expect("popped ids were pushed");
            self.map.remove(&id);
        }
    }

    /// Shrinks the window back to its capacity, oldest first, raising the floor.
    pub(crate) fn evict(&mut self) {
        while self.order.len() > self.capacity {
            let id = self.order.pop_front().expect("len > capacity > 0");
            self.map.remove(&id);
            self.floor = self.floor.max(id);
        }
        assert_eq!(self.map.len(), self.order.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}
