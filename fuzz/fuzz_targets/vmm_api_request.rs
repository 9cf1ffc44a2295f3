//! Fuzzes the control socket's request side: `vmm_api::parse_request` on
//! one line, and the bounded `LineReader` on a whole stream (what a client
//! of `keel-vmm --api-socket` controls).
//!
//! Besides "no panic": every line the reader yields is within the limit;
//! a request that parses encodes back to a line that parses to the same
//! request; every rejection encodes to one JSON line with an error.

#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use vmm_api::{parse_request, LineRead, LineReader, Response, MAX_REQUEST_LINE};

fuzz_target!(|data: &[u8]| {
    // The stream, with a small limit so long lines are common.
    let max = 64;
    let mut reader = LineReader::new(BufReader::with_capacity(7, data), max);
    while let Ok(Some(line)) = reader.read_line() {
        if let LineRead::Line(l) = line {
            assert!(l.len() <= max);
        }
    }
    // The whole input as one request line.
    if data.len() > MAX_REQUEST_LINE + 16 {
        return;
    }
    match parse_request(data) {
        Ok(env) => {
            let line = env.encode();
            let again = parse_request(line.trim_end().as_bytes()).expect("re-parse");
            assert_eq!(again, env);
        }
        Err(rejection) => {
            let line = rejection.response().encode();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            let back: Response = serde_json::from_str(&line).expect("valid JSON");
            assert!(back.error.is_some() && back.ok.is_none());
        }
    }
});
