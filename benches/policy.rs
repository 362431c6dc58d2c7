//! Placeholder; the policy benchmark is being written.
fn main() {}
