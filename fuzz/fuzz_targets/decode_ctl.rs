//! Ctl::decode on arbitrary bytes.
//! The checks live in the library: `mqft_fuzz::decoders::ctl`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mqft_fuzz::decoders::ctl(data);
});
