//! `Gpu::transfer_stats`: every upload, write, download and explicit synchronisation is
//! counted with its bytes, on a GPU and on the emulator alike.

use std::sync::Mutex;

use scalarize_kernels::cuda::gpu::TransferStats;
use scalarize_kernels::cuda::{Gpu, upsample};

/// The tests of this file read the counters of one shared handle: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn transfers_are_counted_with_their_bytes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(gpu) = Gpu::for_tests("transfers_are_counted_with_their_bytes") else {
        return;
    };
    let before = gpu.transfer_stats();
    let mut b = gpu.upload(&[1.0f32, 2.0, 3.0]).unwrap();
    gpu.write(&[4.0f32, 5.0, 6.0], &mut b).unwrap();
    let z = gpu.zeros::<f64>(5).unwrap();
    assert_eq!(gpu.download(&b).unwrap(), vec![4.0, 5.0, 6.0]);
    assert_eq!(gpu.download(&z).unwrap(), vec![0.0; 5]);
    let mut c = gpu.alloc::<f32>(3).unwrap();
    gpu.copy(&b, 0, &mut c, 0, 3).unwrap();
    gpu.synchronize("test").unwrap();
    let d = gpu.transfer_stats().since(&before);
    assert_eq!(
        d,
        TransferStats {
            downloads: 2,
            download_bytes: 12 + 40,
            uploads: 2,
            upload_bytes: 24,
            syncs: 1,
        },
        "zeros, alloc and device copies are not transfers"
    );
}

/// A constant table is uploaded on its first request only; so upsampling, whose taps are such
/// tables, uploads nothing after its first call for a shape.
#[test]
fn constant_tables_are_uploaded_once_per_sizes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(gpu) = Gpu::for_tests("constant_tables_are_uploaded_once_per_sizes") else {
        return;
    };
    let before = gpu.transfer_stats();
    let a = gpu.constant("test ones", &[3], || vec![1.0f32; 3]).unwrap();
    let b = gpu
        .constant("test ones", &[3], || panic!("built twice"))
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    let c = gpu.constant("test ones", &[4], || vec![1.0f32; 4]).unwrap();
    let d = gpu.constant("test twos", &[3], || vec![2.0f32; 3]).unwrap();
    assert_eq!(gpu.download(&c).unwrap(), vec![1.0; 4]);
    assert_eq!(gpu.download(&d).unwrap(), vec![2.0; 3]);
    assert_eq!(gpu.transfer_stats().since(&before).uploads, 3);

    // Sizes no other test uses, so the first call here is the first for them.
    let (n, ch, h, w, oh, ow) = (1, 2, 3, 5, 7, 11);
    let x = gpu.upload(&vec![0.5f32; n * ch * h * w]).unwrap();
    let mut y = gpu.alloc::<f32>(n * ch * oh * ow).unwrap();
    let mut dx = gpu.alloc::<f32>(n * ch * h * w).unwrap();
    let first = gpu.transfer_stats();
    upsample::upsample_bilinear2d_forward(&gpu, n, ch, h, w, oh, ow, &x, &mut y).unwrap();
    assert_eq!(
        gpu.transfer_stats().since(&first).uploads,
        2,
        "taps and weights"
    );
    let again = gpu.transfer_stats();
    upsample::upsample_bilinear2d_forward(&gpu, n, ch, h, w, oh, ow, &x, &mut y).unwrap();
    upsample::upsample_bilinear2d_backward(&gpu, n, ch, h, w, oh, ow, &y, &mut dx).unwrap();
    upsample::upsample_nearest2d_forward(&gpu, n, ch, h, w, oh, ow, &x, &mut y).unwrap();
    upsample::upsample_nearest2d_forward(&gpu, n, ch, h, w, oh, ow, &x, &mut y).unwrap();
    upsample::upsample_nearest2d_backward(&gpu, n, ch, h, w, oh, ow, &y, &mut dx).unwrap();
    let d = gpu.transfer_stats().since(&again);
    assert_eq!(
        (d.uploads, d.downloads),
        (1, 0),
        "only the nearest table, once: {d:?}"
    );
}
