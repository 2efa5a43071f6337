//! Values and the batches that are posted to `accounts/{id}/values/`.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::path::ValuePath;

/// A finite number, sent as a JSON number.
///
/// Integers stay exact (a byte count above 2^53 is not rounded through `f64`). NaN and the
/// infinities cannot be represented: the backend stores them, but every later read of the
/// path then fails with 500.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number(Repr);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Repr {
    U(u64),
    I(i64),
    F(f64),
}

impl Number {
    /// Accepts `v` only if it is finite.
    pub fn from_f64(v: f64) -> Result<Number, Error> {
        if v.is_finite() {
            Ok(Number(Repr::F(v)))
        } else {
            Err(Error::NonFiniteValue(v))
        }
    }

    /// The value as `f64` (exact for integers up to 2^53).
    #[allow(clippy::cast_precision_loss)] // documented: only a view for comparisons and logs
    pub fn as_f64(self) -> f64 {
        match self.0 {
            Repr::U(u) => u as f64,
            Repr::I(i) => i as f64,
            Repr::F(f) => f,
        }
    }
}

impl serde::Serialize for Number {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Repr::U(u) => s.serialize_u64(u),
            Repr::I(i) => s.serialize_i64(i),
            Repr::F(f) => s.serialize_f64(f),
        }
    }
}

macro_rules! number_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Number {
            fn from(n: $t) -> Number {
                Number(Repr::$v(n.into()))
            }
        }
    )*};
}
number_from!(u8 => U, u16 => U, u32 => U, u64 => U, i8 => I, i16 => I, i32 => I, i64 => I);

impl TryFrom<f64> for Number {
    type Error = Error;
    fn try_from(v: f64) -> Result<Number, Error> {
        Number::from_f64(v)
    }
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Repr::U(u) => write!(f, "{u}"),
            Repr::I(i) => write!(f, "{i}"),
            Repr::F(x) => write!(f, "{x}"),
        }
    }
}

/// Values for one account, keyed by path, ready to post.
///
/// Invariants that the backend needs and that this type guarantees: every path is valid
/// (it is a [`ValuePath`]), no path appears twice (the backend answers 500 to a repeated
/// path and stores nothing), and every value is finite ([`Number`]). Paths are kept sorted,
/// so a batch is posted in a deterministic order.
///
/// [`Client::post_values`](crate::Client::post_values) splits a large batch into requests
/// of at most [`ClientConfig::max_values_per_request`](crate::ClientConfig) items.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueBatch {
    items: BTreeMap<ValuePath, Number>,
}

impl ValueBatch {
    /// An empty batch.
    pub fn new() -> ValueBatch {
        ValueBatch::default()
    }

    /// Sets the value of `path`, returning the value it replaces (a second value for the
    /// same path wins; the backend can take only one).
    pub fn insert(&mut self, path: ValuePath, value: impl Into<Number>) -> Option<Number> {
        self.items.insert(path, value.into())
    }

    /// Checks `path` and `value`, then inserts them. Nothing is inserted on error.
    pub fn try_insert(&mut self, path: &str, value: f64) -> Result<Option<Number>, Error> {
        let path = ValuePath::new(path)?;
        let value = Number::from_f64(value)?;
        Ok(self.items.insert(path, value))
    }

    /// The value stored for `path`.
    pub fn get(&self, path: &ValuePath) -> Option<Number> {
        self.items.get(path).copied()
    }

    /// Number of distinct paths.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items in path order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&ValuePath, Number)> {
        self.items.iter().map(|(p, v)| (p, *v))
    }
}

impl<P: Into<ValuePath>, N: Into<Number>> Extend<(P, N)> for ValueBatch {
    fn extend<I: IntoIterator<Item = (P, N)>>(&mut self, iter: I) {
        for (p, n) in iter {
            self.items.insert(p.into(), n.into());
        }
    }
}

impl<P: Into<ValuePath>, N: Into<Number>> FromIterator<(P, N)> for ValueBatch {
    fn from_iter<I: IntoIterator<Item = (P, N)>>(iter: I) -> ValueBatch {
        let mut b = ValueBatch::new();
        b.extend(iter);
        b
    }
}

/// One item of a values POST body: `{"p": "...", "v": ...}`.
#[derive(serde::Serialize)]
pub(crate) struct WireValue<'a> {
    pub(crate) p: &'a ValuePath,
    pub(crate) v: Number,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> ValuePath {
        ValuePath::new(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn test_batch_deduplicates_by_path() {
        let mut b = ValueBatch::new();
        assert_eq!(b.insert(path("a.b"), 1u64), None);
        assert_eq!(b.insert(path("a.b"), 2u64), Some(Number::from(1u64)));
        assert_eq!(b.len(), 1);
        assert_eq!(b.get(&path("a.b")), Some(Number::from(2u64)));
    }

    #[test]
    fn test_non_finite_values_are_refused() {
        let mut b = ValueBatch::new();
        assert!(matches!(
            b.try_insert("a.b", f64::NAN),
            Err(Error::NonFiniteValue(_))
        ));
        assert!(b.try_insert("a.b", f64::INFINITY).is_err());
        assert!(b.try_insert("a/b", 1.0).is_err());
        assert!(b.is_empty());
        assert!(b.try_insert("a.b", 1.5).is_ok());
    }

    #[test]
    fn test_numbers_serialize_exactly() {
        let v = serde_json::to_string(&[
            Number::from(u64::MAX),
            Number::from(-5i64),
            Number::from_f64(0.5).unwrap_or_else(|e| panic!("{e}")),
        ]);
        assert_eq!(v.ok().as_deref(), Some("[18446744073709551615,-5,0.5]"));
    }
}
