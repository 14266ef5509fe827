//! Field paths (`alerts[3].labels.alertname`), built on the stack and only
//! rendered when an error needs them, and the schema errors that name them.

use std::fmt;

use super::value::V;
use super::DecodeError;

/// A field path built on the stack; only rendered when an error needs it.
#[derive(Clone, Copy)]
pub(super) struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    seg: Seg<'p>,
}

#[derive(Clone, Copy)]
enum Seg<'p> {
    Root,
    Key(&'p str),
    Index(usize),
}

impl<'p> Path<'p> {
    pub(super) const ROOT: Path<'static> = Path { parent: None, seg: Seg::Root };

    pub(super) fn key<'q>(&'q self, key: &'q str) -> Path<'q> {
        Path { parent: Some(self), seg: Seg::Key(key) }
    }

    pub(super) fn index(&self, i: usize) -> Path<'_> {
        Path { parent: Some(self), seg: Seg::Index(i) }
    }

    fn is_root(&self) -> bool {
        matches!(self.seg, Seg::Root)
    }

    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parent_is_root = match self.parent {
            Some(p) => {
                p.write(f)?;
                p.is_root()
            }
            None => true,
        };
        match self.seg {
            Seg::Root => Ok(()),
            Seg::Key(k) if parent_is_root => f.write_str(k),
            Seg::Key(k) => write!(f, ".{k}"),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str("payload")
        } else {
            self.write(f)
        }
    }
}

pub(super) fn schema(path: &Path<'_>, message: impl Into<String>) -> DecodeError {
    DecodeError::Schema { path: path.to_string(), message: message.into() }
}

pub(super) fn missing(path: &Path<'_>) -> DecodeError {
    schema(path, "missing")
}

pub(super) fn wrong_type(path: &Path<'_>, expected: &str, got: &V<'_>) -> DecodeError {
    schema(path, format!("expected {expected}, got {}", got.type_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_and_paths() {
        let e = schema(&Path::ROOT.key("alerts").index(3).key("labels").key("alertname"), "missing");
        assert_eq!(e.to_string(), "alerts[3].labels.alertname: missing");
        assert_eq!(e.path(), Some("alerts[3].labels.alertname"));
        assert_eq!(e.kind(), "schema");
        assert_eq!(DecodeError::Unrecognized(String::new()).kind(), "unrecognized");
    }
}
