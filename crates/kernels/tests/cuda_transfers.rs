//! `Gpu::transfer_stats`: every upload, write, download and explicit synchronisation is
//! counted with its bytes, on a GPU and on the emulator alike.

use scalarize_kernels::cuda::Gpu;
use scalarize_kernels::cuda::gpu::TransferStats;

#[test]
fn transfers_are_counted_with_their_bytes() {
    let Some(gpu) = Gpu::for_tests("transfers_are_counted_with_their_bytes") else {
        return;
    };
    // Other tests of this binary may share the handle: compare deltas of this thread's work
    // only (this file has one test, so nothing else runs on the handle meanwhile).
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
