//! The pool's free blocks in eviction order: blocks are taken from the front;
//! a freed block that still holds a cached prefix joins the back (evicted last),
//! one that holds nothing worth keeping joins the front. A doubly linked list
//! over block ids, so a cached block can leave from the middle when a new
//! sequence reuses it.

use super::BlockId;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(super) struct FreeQueue {
    prev: Vec<u32>,
    next: Vec<u32>,
    queued: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl FreeQueue {
    /// Every block of a pool of `total` free, low ids taken first.
    pub fn full(total: usize) -> Self {
        let mut q = Self {
            prev: vec![NONE; total],
            next: vec![NONE; total],
            queued: vec![false; total],
            head: NONE,
            tail: NONE,
            len: 0,
        };
        for b in 0..total as BlockId {
            q.push_back(b);
        }
        q
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn contains(&self, b: BlockId) -> bool {
        self.queued.get(b as usize).copied().unwrap_or(false)
    }

    pub fn push_back(&mut self, b: BlockId) {
        debug_assert!(!self.contains(b));
        let i = b as usize;
        self.prev[i] = self.tail;
        self.next[i] = NONE;
        match self.tail {
            NONE => self.head = b,
            t => self.next[t as usize] = b,
        }
        self.tail = b;
        self.queued[i] = true;
        self.len += 1;
    }

    pub fn push_front(&mut self, b: BlockId) {
        debug_assert!(!self.contains(b));
        let i = b as usize;
        self.next[i] = self.head;
        self.prev[i] = NONE;
        match self.head {
            NONE => self.tail = b,
            h => self.prev[h as usize] = b,
        }
        self.head = b;
        self.queued[i] = true;
        self.len += 1;
    }

    pub fn pop_front(&mut self) -> Option<BlockId> {
        let b = self.head;
        if b == NONE {
            return None;
        }
        self.remove(b);
        Some(b)
    }

    /// Takes `b` out of the queue, wherever it is; false if it was not queued.
    pub fn remove(&mut self, b: BlockId) -> bool {
        if !self.contains(b) {
            return false;
        }
        let i = b as usize;
        let (p, n) = (self.prev[i], self.next[i]);
        match p {
            NONE => self.head = n,
            p => self.next[p as usize] = n,
        }
        match n {
            NONE => self.tail = p,
            n => self.prev[n as usize] = p,
        }
        self.queued[i] = false;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut FreeQueue) -> Vec<BlockId> {
        std::iter::from_fn(|| q.pop_front()).collect()
    }

    #[test]
    fn blocks_leave_in_queue_order_and_from_the_middle() {
        let mut q = FreeQueue::full(5);
        assert_eq!(q.len(), 5);
        assert!(q.remove(2));
        assert!(!q.remove(2));
        assert_eq!(q.pop_front(), Some(0));
        q.push_back(0);
        q.push_front(2);
        assert!(q.contains(2) && q.contains(0));
        assert_eq!(drain(&mut q), vec![2, 1, 3, 4, 0]);
        assert_eq!(q.len(), 0);
        q.push_front(3);
        assert!(q.remove(3));
        assert_eq!(q.pop_front(), None);
    }
}
