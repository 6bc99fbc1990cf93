//! `units` wrong in the attribute, or on a function that is not one of a
//! unit: each error at the offending token.

use routine::Unit;

#[routine::task(name = "zero", version = "1.0.0", units = 0)]
async fn zero(unit: Unit<u8, u8>) {
    let _ = unit;
}

#[routine::task(name = "empty", version = "1.0.0", units = 8..=2)]
async fn empty(unit: Unit<u8, u8>) {
    let _ = unit;
}

#[routine::task(name = "half-open", version = "1.0.0", units = 2..8)]
async fn half_open(unit: Unit<u8, u8>) {
    let _ = unit;
}

#[routine::task(name = "not-a-count", version = "1.0.0", units = "four")]
async fn not_a_count(unit: Unit<u8, u8>) {
    let _ = unit;
}

#[routine::task(name = "sync", version = "1.0.0", units = 2)]
fn sync(unit: Unit<u8, u8>) {
    let _ = unit;
}

#[routine::task(name = "plain", version = "1.0.0", units = 2)]
async fn plain(numbers: Vec<u64>) -> u64 {
    numbers.iter().sum()
}

#[routine::task(name = "two", version = "1.0.0", units = 2)]
async fn two(unit: Unit<u8, u8>, extra: u8) {
    let _ = (unit, extra);
}

#[routine::task(name = "returns", version = "1.0.0", units = 2)]
async fn returns(unit: Unit<u8, u8>) -> u8 {
    unit.rank() as u8
}

#[routine::task(name = "no-units", version = "1.0.0")]
async fn no_units(unit: Unit<u8, u8>) {
    let _ = unit;
}

fn main() {}
