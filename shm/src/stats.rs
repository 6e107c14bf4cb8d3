//! The stats segment (being written).
