//! The ulvs daemon: dataplane, gRPC control server, signals and shutdown

fn main() {}
