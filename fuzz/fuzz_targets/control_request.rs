//! Fuzz target: bytes decoded as control requests (protobuf) and validated must never panic;
//! a request that validates must give the same result when validated again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use ulvs_control::validate;
use ulvs_proto::v1 as pb;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = pb::ApplyRequest::decode(data) {
        let first = validate::changes(&req);
        let again = validate::changes(&req);
        assert_eq!(first.is_ok(), again.is_ok());
    }
    if let Ok(req) = pb::AddServiceRequest::decode(data) {
        let _ = validate::add_service(&req);
    }
    if let Ok(req) = pb::EditRealServerRequest::decode(data) {
        let _ = validate::edit_real_server(&req);
    }
    if let Ok(req) = pb::DeleteRealServerRequest::decode(data) {
        let _ = validate::delete_real_server(&req);
    }
});
