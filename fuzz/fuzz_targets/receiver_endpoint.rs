//! A receiver's endpoint driven by arbitrary (topic, payload) sequences and the
//! runtime's answers. The checks live in the library: `mqft_fuzz::receiver_endpoint`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mqft_fuzz::receiver_endpoint::run(data);
});
