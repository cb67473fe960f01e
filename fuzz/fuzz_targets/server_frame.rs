#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_protocol::fuzz::server_frame(data));
