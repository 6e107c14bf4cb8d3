//! Typed zero-copy views over packet bytes, smoltcp style.
