//! ipvsadm-compatible command-line client for ulvsd

fn main() {}
