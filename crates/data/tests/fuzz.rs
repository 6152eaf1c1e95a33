//! Property tests on arbitrary bytes for the binary and text parsers: never panic, and never
//! allocate from what a header claims (an IDX header claiming 2^40 bytes errors immediately).

use std::path::Path;

use proptest::prelude::*;
use scalarize_data::readers::{cifar, digits, idx::parse_idx, stl10};
use scalarize_data::{DataError, Split};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn idx_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_idx(&bytes, Path::new("fuzz.idx"));
    }

    #[test]
    fn idx_with_valid_magic_never_panics(ndims in 0u8..6, dims in proptest::collection::vec(any::<u32>(), 6), tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut b = vec![0, 0, 8, ndims];
        for d in &dims[..ndims as usize] {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(&tail);
        let r = parse_idx(&b, Path::new("fuzz.idx"));
        if let Ok(a) = r {
            prop_assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
        }
    }

    #[test]
    fn digits_csv_never_panics(text in "[0-9,\\.\\-\\n ]{0,400}") {
        let _ = digits::parse(&text, Path::new("digits.csv"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn cifar_and_stl_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..8000)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
        std::fs::write(dir.path().join("test.bin"), &bytes).unwrap();
        std::fs::write(dir.path().join("test_X.bin"), &bytes).unwrap();
        std::fs::write(dir.path().join("test_y.bin"), &bytes[..bytes.len().min(3)]).unwrap();
        let _ = cifar::open_cifar10(dir.path(), Split::Test);
        let _ = cifar::open_cifar100(dir.path(), Split::Test);
        let _ = stl10::open(dir.path(), Split::Test);
    }
}

#[test]
fn lying_idx_header_is_refused_without_allocating() {
    // Claims 2^32 * 2^32 * 2^8 bytes: over MAX_PAYLOAD, refused before reading the payload.
    let mut b = vec![0, 0, 8, 3];
    for d in [u32::MAX, u32::MAX, 256] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    assert!(matches!(
        parse_idx(&b, Path::new("x")),
        Err(DataError::Format { .. })
    ));
    // Claims 1 GiB but holds 10 bytes: a truncation error naming the offset, after reading 10.
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&(1u32 << 30).to_be_bytes());
    b.extend_from_slice(&[7; 10]);
    match parse_idx(&b, Path::new("x")) {
        Err(DataError::Size { offset, .. }) => assert_eq!(offset, 18),
        other => panic!("{other:?}"),
    }
    // The same inside gzip.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, &b).unwrap();
    let z = e.finish().unwrap();
    assert!(matches!(
        parse_idx(&z, Path::new("x.gz")),
        Err(DataError::Size { offset: 18, .. })
    ));
    // Bad gzip after a valid magic is an error, not a panic.
    assert!(parse_idx(&[0x1f, 0x8b, 1, 2, 3], Path::new("x.gz")).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Resizing and augmenting any small shape, including empty ones, never panics.
    #[test]
    fn resize_and_augment_never_panic(h in 0usize..6, w in 0usize..6, c in 1usize..4, oh in 0usize..7, ow in 0usize..7, pad in 0usize..3, crop in proptest::option::of((0usize..9, 0usize..9))) {
        use scalarize_data::transforms::{Interp, resize_values};
        use scalarize_data::{Augment, Image, Sample};
        for interp in [Interp::Bilinear, Interp::Area, Interp::Nearest] {
            let out = resize_values(&vec![1.0; h * w * c], h, w, c, oh, ow, interp);
            prop_assert_eq!(out.len(), oh * ow * c);
        }
        let aug = Augment { pad, crop, flip: true, resize: Some((oh, ow, Interp::Area)), ..Default::default() };
        let s = Sample { image: Image::new(h, w, c, vec![3; h * w * c]), targets: vec![] };
        if let Ok(a) = aug.apply(s, 1, 2, 3, 4) {
            prop_assert_eq!(a.chw.len(), a.shape.iter().product::<usize>());
        }
    }
}
