//! The `scalarize` binary.
fn main() {
    println!("scalarize {}", env!("CARGO_PKG_VERSION"));
}
