#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tiffin_fuzz::checks::socket_request(data));
