//! Checker `elle` (not implemented yet).
