//! Which rows of a batch go to which head.

use std::ops::Range;

use crate::error::{NnError, Result};

/// One contiguous sub-batch (a domain's samples) and the head it goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Number of consecutive rows.
    pub len: usize,
    /// Head index (several segments may share one head).
    pub head: usize,
}

/// How a batch is routed to the heads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Multi-task: every head sees the whole batch.
    AllHeads,
    /// Multi-domain: the batch is the concatenation of these sub-batches, in order, each
    /// going to its own (or a shared) head. Lengths must add up to the batch size.
    Segments(Vec<Segment>),
}

impl Routing {
    /// `(head, rows)` pairs for a batch of `n` rows with `num_heads` heads; adjacent segments
    /// with the same head are merged so each head runs once per contiguous run of rows.
    pub fn plan(&self, n: usize, num_heads: usize) -> Result<Vec<(usize, Range<usize>)>> {
        match self {
            Routing::AllHeads => Ok((0..num_heads).map(|h| (h, 0..n)).collect()),
            Routing::Segments(segs) => {
                let mut out: Vec<(usize, Range<usize>)> = Vec::new();
                let mut start = 0;
                for (i, s) in segs.iter().enumerate() {
                    if s.head >= num_heads {
                        return Err(NnError::invalid(
                            "routing",
                            format!(
                                "segment {i} goes to head {} but the model has {num_heads} heads",
                                s.head
                            ),
                        ));
                    }
                    if s.len == 0 {
                        continue;
                    }
                    let end = start + s.len;
                    match out.last_mut() {
                        Some((h, r)) if *h == s.head && r.end == start => r.end = end,
                        _ => out.push((s.head, start..end)),
                    }
                    start = end;
                }
                if start != n {
                    return Err(NnError::invalid(
                        "routing",
                        format!("segment lengths add up to {start}, the batch has {n} rows"),
                    ));
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        assert_eq!(
            Routing::AllHeads.plan(5, 2).unwrap(),
            vec![(0, 0..5), (1, 0..5)]
        );
        let r = Routing::Segments(vec![
            Segment { len: 2, head: 1 },
            Segment { len: 3, head: 1 },
            Segment { len: 0, head: 0 },
            Segment { len: 1, head: 0 },
            Segment { len: 2, head: 1 },
        ]);
        assert_eq!(r.plan(8, 2).unwrap(), vec![(1, 0..5), (0, 5..6), (1, 6..8)]);
        let e = r.plan(9, 2).unwrap_err().to_string();
        assert!(e.contains("add up to 8") && e.contains("9 rows"), "{e}");
        let e = r.plan(8, 1).unwrap_err().to_string();
        assert!(e.contains("head 1") && e.contains("1 heads"), "{e}");
    }
}
