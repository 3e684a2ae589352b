//! A list that keeps its first few items inline and moves to the heap only past them, for the
//! parser's working lists (root members, directives, metric definitions, dimension keys): the
//! usual line fits inline and costs no allocation.
//!
//! In: items pushed one by one. Out: the items as a slice, in push order. Safe code only: the
//! inline slots hold `T::default()` until used.

use std::ops::Deref;

/// Up to `N` items inline, then all of them on the heap.
#[derive(Debug)]
pub(crate) struct Small<T, const N: usize> {
    inline: [T; N],
    /// Items used in `inline`; unused once the list has moved to `heap`.
    len: usize,
    /// Every item, once there were more than `N`; empty until then.
    heap: Vec<T>,
}

impl<T: Default, const N: usize> Default for Small<T, N> {
    fn default() -> Self {
        Small {
            inline: std::array::from_fn(|_| T::default()),
            len: 0,
            heap: Vec::new(),
        }
    }
}

impl<T: Default, const N: usize> Small<T, N> {
    #[inline]
    pub(crate) fn push(&mut self, item: T) {
        if self.heap.is_empty() && self.len < N {
            // `len < N`, checked above.
            self.inline[self.len] = item;
            self.len += 1;
        } else {
            self.push_on_heap(item);
        }
    }

    /// Push `T::default()` and give it back to be filled in place, so a large item is never
    /// moved.
    #[inline]
    pub(crate) fn push_default(&mut self) -> &mut T {
        if self.heap.is_empty() && self.len < N {
            let i = self.len;
            self.len += 1;
            // `i < N`, checked above.
            let slot = &mut self.inline[i];
            *slot = T::default();
            return slot;
        }
        self.push_on_heap(T::default())
    }

    /// Past the inline slots: move the inline items to the heap (once, in order), then push.
    #[cold]
    #[inline(never)]
    fn push_on_heap(&mut self, item: T) -> &mut T {
        if self.heap.is_empty() {
            self.heap.reserve(N.max(1) * 2);
            let used = self.inline.iter_mut().take(self.len);
            self.heap.extend(used.map(std::mem::take));
        }
        self.heap.push(item);
        // Pushed just above, so there is a last item.
        self.heap.last_mut().unwrap()
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[T] {
        if self.heap.is_empty() {
            // `len` never exceeds N (see `push`).
            self.inline.get(..self.len).unwrap_or(&[])
        } else {
            &self.heap
        }
    }
}

impl<T: Default, const N: usize> Deref for Small<T, N> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Default + PartialEq, const N: usize> PartialEq for Small<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_inline_and_past_the_inline_slots() {
        for n in 0..12 {
            let mut s: Small<String, 4> = Small::default();
            let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            for w in &want {
                s.push(w.clone());
            }
            assert_eq!(s.as_slice(), want.as_slice(), "{n} items");
            assert_eq!(s.len(), n);
            assert_eq!(s.is_empty(), n == 0);
        }
    }

    #[test]
    fn equality_is_by_items() {
        let mut a: Small<u32, 2> = Small::default();
        let mut b: Small<u32, 2> = Small::default();
        for i in 0..5 {
            a.push(i);
            b.push(i);
        }
        assert_eq!(a, b);
        b.push(9);
        assert_ne!(a, b);
    }

    #[test]
    fn zero_inline_slots_use_the_heap_at_once() {
        let mut s: Small<u8, 0> = Small::default();
        s.push(1);
        s.push(2);
        assert_eq!(s.as_slice(), [1, 2]);
    }
}
