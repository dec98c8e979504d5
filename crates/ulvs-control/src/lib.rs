//! The ulvs gRPC control service: validates requests and applies them to the engine
