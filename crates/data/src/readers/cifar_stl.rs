//! The CIFAR-10 + STL-10 two-domain setup: the nine classes both share.
//!
//! STL-10 has no "frog", CIFAR-10 no "monkey"; both are dropped. CIFAR's "automobile" and
//! STL's "car" are the same class. Shared labels, in CIFAR-10 order without frog:
//! 0 airplane, 1 automobile/car, 2 bird, 3 cat, 4 deer, 5 dog, 6 horse, 7 ship, 8 truck.
//! Use with [`crate::sample::InMemory::remap_classes`].

/// Number of shared classes.
pub const SHARED_CLASSES: usize = 9;

/// Shared class names.
pub const SHARED_NAMES: [&str; 9] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-10 label -> shared label (frog, 6, dropped).
pub const CIFAR10_TO_SHARED: [Option<u32>; 10] = [
    Some(0),
    Some(1),
    Some(2),
    Some(3),
    Some(4),
    Some(5),
    None,
    Some(6),
    Some(7),
    Some(8),
];

/// STL-10 label (file label minus one) -> shared label (monkey, 7, dropped).
pub const STL10_TO_SHARED: [Option<u32>; 10] = [
    Some(0),
    Some(2),
    Some(1),
    Some(3),
    Some(4),
    Some(5),
    Some(6),
    None,
    Some(7),
    Some(8),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readers::cifar::CIFAR10_CLASSES;
    use crate::readers::stl10::STL10_CLASSES;

    #[test]
    fn mappings_agree_on_names() {
        for (map, names) in [
            (CIFAR10_TO_SHARED, CIFAR10_CLASSES),
            (STL10_TO_SHARED, STL10_CLASSES),
        ] {
            for (i, m) in map.iter().enumerate() {
                match m {
                    Some(s) => {
                        let shared = SHARED_NAMES[*s as usize];
                        assert!(shared == names[i] || (shared, names[i]) == ("automobile", "car"));
                    }
                    None => assert!(names[i] == "frog" || names[i] == "monkey"),
                }
            }
        }
    }
}
