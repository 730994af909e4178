//! Manifest::decode on arbitrary bytes.
//! The checks live in the library: `mqft_fuzz::decoders::manifest`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mqft_fuzz::decoders::manifest(data);
});
