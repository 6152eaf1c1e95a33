//! Heads specs: the list of task heads on top of a backbone, e.g. `10,10` or `c345,a40,d3`.
//!
//! Grammar: comma-separated items, each `<kind><n>` optionally followed by `*<count>` to
//! repeat it:
//!
//! | item      | head                                                                   |
//! |-----------|------------------------------------------------------------------------|
//! | `10`, `c10` | linear classifier, softmax over 10 classes (cross-entropy)           |
//! | `a40`     | multi-label binary head: 40 independent sigmoid attributes (BCE)        |
//! | `d3`      | light dense decoder with 3 output channels at the input resolution      |
//! | `10*4`    | four 10-class classifiers (`10,10,10,10`)                               |
//!
//! Head `t` (0-based, in list order) owns the parameters `heads.{t}.*`.

use std::fmt;
use std::str::FromStr;

use crate::error::{NnError, Result};

/// One task head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadSpec {
    /// Linear classifier over `classes` classes (softmax cross-entropy).
    Classifier {
        /// Number of classes.
        classes: usize,
    },
    /// Multi-label binary head: `attributes` independent logits (sigmoid BCE).
    Binary {
        /// Number of binary attributes.
        attributes: usize,
    },
    /// Light dense decoder predicting `channels` maps at the input resolution.
    Dense {
        /// Output channels per pixel.
        channels: usize,
    },
}

impl HeadSpec {
    /// Number of output values per sample (classifier/binary) or per pixel (dense).
    pub fn outputs(&self) -> usize {
        match *self {
            HeadSpec::Classifier { classes } => classes,
            HeadSpec::Binary { attributes } => attributes,
            HeadSpec::Dense { channels } => channels,
        }
    }
}

impl fmt::Display for HeadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HeadSpec::Classifier { classes } => write!(f, "{classes}"),
            HeadSpec::Binary { attributes } => write!(f, "a{attributes}"),
            HeadSpec::Dense { channels } => write!(f, "d{channels}"),
        }
    }
}

/// An ordered list of heads; `Display` gives the canonical string (repeats expanded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadsSpec(pub Vec<HeadSpec>);

/// Upper bound on repeats and on outputs per head, so typos (`10*1000000`) fail early.
const MAX_REPEAT: usize = 4096;
const MAX_OUTPUTS: usize = 1 << 20;

impl HeadsSpec {
    /// Parses a heads list; the error names the bad item and what is allowed.
    pub fn parse(spec: &str) -> Result<Self> {
        let err = |msg: String| NnError::HeadsSpec {
            spec: spec.to_string(),
            msg,
        };
        const ALLOWED: &str = "allowed items: <classes> or c<classes> (classifier), \
                               a<attributes> (binary), d<channels> (dense), each optionally *<count>";
        let mut heads = Vec::new();
        if spec.trim().is_empty() {
            return Err(err(format!("no heads given; {ALLOWED}")));
        }
        for (i, raw) in spec.split(',').enumerate() {
            let item = raw.trim();
            if item.is_empty() {
                return Err(err(format!("item {i} is empty; {ALLOWED}")));
            }
            let (body, count) = match item.split_once('*') {
                Some((b, c)) => match c.trim().parse::<usize>() {
                    Ok(n) if (1..=MAX_REPEAT).contains(&n) => (b.trim(), n),
                    _ => {
                        return Err(err(format!(
                            "item {i} `{item}`: repeat count must be an integer in 1..={MAX_REPEAT}"
                        )));
                    }
                },
                None => (item, 1),
            };
            let (kind, digits) = match body.chars().next() {
                Some(c) if c.is_ascii_digit() => ('c', body),
                Some(c) => (c.to_ascii_lowercase(), &body[c.len_utf8()..]),
                None => return Err(err(format!("item {i} `{item}` has no head; {ALLOWED}"))),
            };
            let n = match digits.parse::<usize>() {
                Ok(n) if (1..=MAX_OUTPUTS).contains(&n) => n,
                _ => {
                    return Err(err(format!(
                        "item {i} `{item}`: expected a positive size after the kind, got `{digits}`; {ALLOWED}"
                    )));
                }
            };
            let head = match kind {
                'c' => HeadSpec::Classifier { classes: n },
                'a' => HeadSpec::Binary { attributes: n },
                'd' => HeadSpec::Dense { channels: n },
                other => {
                    return Err(err(format!(
                        "item {i} `{item}`: unknown head kind `{other}`; {ALLOWED}"
                    )));
                }
            };
            if head == (HeadSpec::Classifier { classes: 1 }) {
                return Err(err(format!(
                    "item {i} `{item}`: a classifier needs at least 2 classes (use a1 for one binary attribute)"
                )));
            }
            heads.extend(std::iter::repeat_n(head, count));
        }
        Ok(HeadsSpec(heads))
    }

    /// Number of heads.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no heads (never the case for a parsed spec).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when any head is a dense decoder (the backbone must then keep its feature map).
    pub fn has_dense(&self) -> bool {
        self.0.iter().any(|h| matches!(h, HeadSpec::Dense { .. }))
    }
}

impl FromStr for HeadsSpec {
    type Err = NnError;
    fn from_str(s: &str) -> Result<Self> {
        HeadsSpec::parse(s)
    }
}

impl fmt::Display for HeadsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, h) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{h}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_typed_and_repeated_heads() {
        let h = HeadsSpec::parse("10,10").unwrap();
        assert_eq!(h.0, vec![HeadSpec::Classifier { classes: 10 }; 2]);
        let h = HeadsSpec::parse(" c345 , a40,D3 ").unwrap();
        assert_eq!(
            h.0,
            vec![
                HeadSpec::Classifier { classes: 345 },
                HeadSpec::Binary { attributes: 40 },
                HeadSpec::Dense { channels: 3 }
            ]
        );
        assert!(h.has_dense());
        let h = HeadsSpec::parse("10*3,a1").unwrap();
        assert_eq!(h.len(), 4);
        assert_eq!(h.to_string(), "10,10,10,a1");
        assert_eq!(HeadsSpec::parse(&h.to_string()).unwrap(), h);
    }

    #[test]
    fn bad_heads_name_the_item() {
        for (s, needle) in [
            ("", "no heads"),
            ("10,,10", "item 1 is empty"),
            ("10,x5", "unknown head kind `x`"),
            ("10,a", "item 1 `a`"),
            ("10*0", "repeat count"),
            ("c1", "at least 2 classes"),
            ("d-3", "positive size"),
        ] {
            let e = HeadsSpec::parse(s).unwrap_err().to_string();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }
}
