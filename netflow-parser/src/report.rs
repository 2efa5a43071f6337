//! What one decode call reports (errors, sets waiting, sets given up), in lists of bounded
//! length: a hostile datagram of thousands of tiny sets costs a count, not a list that grows
//! with it.

/// Entries each list keeps per call; the rest are only counted.
pub(crate) const MAX_REPORTED: usize = 64;

/// The first [`MAX_REPORTED`] outcomes of a call, and how many there were.
#[derive(Debug)]
pub(crate) struct Capped<T> {
    items: Vec<T>,
    total: usize,
}

impl<T> Default for Capped<T> {
    fn default() -> Self {
        Capped {
            items: Vec::new(),
            total: 0,
        }
    }
}

impl<T> Capped<T> {
    pub fn push(&mut self, x: T) {
        self.total += 1;
        if self.items.len() < MAX_REPORTED {
            self.items.push(x);
        }
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.total = 0;
    }

    pub fn as_slice(&self) -> &[T] {
        &self.items
    }

    /// All outcomes of the call, listed or not.
    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_and_counts_all() {
        let mut c = Capped::default();
        for i in 0..MAX_REPORTED + 10 {
            c.push(i);
        }
        assert_eq!(
            (c.as_slice().len(), c.total()),
            (MAX_REPORTED, MAX_REPORTED + 10)
        );
        assert_eq!(c.as_slice()[0], 0);
        c.clear();
        assert_eq!((c.as_slice().len(), c.total()), (0, 0));
    }
}
