//! Placeholder replaced by the real bench in the same change.
fn main() {}
