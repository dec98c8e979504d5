//! TUN devices, worker threads and kernel route/rule setup that drive the ulvs engine
