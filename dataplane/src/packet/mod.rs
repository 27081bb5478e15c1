//! Packet views and rewrites over byte slices.
