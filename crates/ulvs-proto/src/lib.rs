//! Generated prost/tonic code for the ulvs.v1 control API
