#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| groupd_fuzz::marathon_json(data));
