//! WireRanges::to_set on arbitrary range lists and chunk counts.
//! The checks live in the library: `mqft_fuzz::decoders::ranges`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mqft_fuzz::decoders::ranges(data);
});
