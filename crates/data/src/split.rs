//! Train/test split selection and the stratified split used for the shipped data.

/// Which part of a data set to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training split.
    Train,
    /// Validation split (CelebA partition 1); readers without one return an error.
    Valid,
    /// Test split.
    Test,
}

impl Split {
    /// Lower-case name ("train", "valid", "test").
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

/// Number of test samples in a class of `n`: `floor(0.2 n + 0.5)` (mirrors datasets/prepare.py).
pub fn stratified_test_count(n: usize) -> usize {
    (n * 2 + 5) / 10
}

/// Indices of `split` under the stratified rule: in each class (in file order) the last
/// [`stratified_test_count`] samples are test, the rest train. Order of `labels` is kept.
pub fn stratified_indices(labels: &[u8], num_classes: usize, split: Split) -> Vec<usize> {
    let mut total = vec![0usize; num_classes];
    for &l in labels {
        total[l as usize] += 1;
    }
    let mut seen = vec![0usize; num_classes];
    let mut out = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        let c = l as usize;
        let is_test = seen[c] >= total[c] - stratified_test_count(total[c]);
        seen[c] += 1;
        if is_test == (split == Split::Test) {
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_count_matches_python_rule() {
        // floor(n*0.2+0.5): 863 -> 173, 1001 -> 200, 174 -> 35, 183 -> 37.
        assert_eq!(stratified_test_count(863), 173);
        assert_eq!(stratified_test_count(1001), 200);
        assert_eq!(stratified_test_count(174), 35);
        assert_eq!(stratified_test_count(183), 37);
    }

    #[test]
    fn stratified_split_takes_the_tail_of_each_class() {
        let labels = [0u8, 1, 0, 0, 1, 0, 0, 1, 1, 1];
        // class 0: 5 samples -> 1 test (index 6); class 1: 5 -> 1 test (index 9).
        assert_eq!(stratified_indices(&labels, 2, Split::Test), vec![6, 9]);
        assert_eq!(stratified_indices(&labels, 2, Split::Train).len(), 8);
    }
}
