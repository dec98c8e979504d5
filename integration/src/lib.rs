//! Network-namespace rigs and end-to-end tests for ulvs (needs root)
