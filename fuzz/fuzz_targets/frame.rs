//! Frames and the postcard messages inside them, as a node reads them from any peer: a
//! request, a response, a forwarded request, a graph submission, a query or graph event stream,
//! a bucket body. Nothing may
//! panic, and what decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_proto::{Request, decode_request, decode_response, encode_request, split_parts};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_request(data) {
        assert_eq!(decode_request(&encode_request(&request)).ok(), Some(request.clone()));
        if let Request::Forwarded { request: inner, .. } = &request {
            let _ = Request::unforward(inner);
        }
    }
    let _ = decode_response(data);
    // A graph submission's body.
    if let Ok(submission) = tern_proto::decode_submission(data) {
        let again = tern_proto::encode_submission(&submission);
        assert_eq!(tern_proto::decode_submission(&again).ok(), Some(submission));
    }
    let _ = split_parts(data);
    // The bodies of a query's and a graph's answers.
    let mut events = tern_proto::EventDecoder::default();
    events.push(data);
    while let Ok(Some(_)) = events.next_event::<tern_proto::QueryEvent>() {}
    let mut events = tern_proto::EventDecoder::default();
    events.push(data);
    while let Ok(Some(_)) = events.next_event::<tern_proto::GraphEvent>() {}
});
