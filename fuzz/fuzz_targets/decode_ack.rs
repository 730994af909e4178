//! Ack::decode on arbitrary bytes and chunk counts.
//! The checks live in the library: `mqft_fuzz::decoders::ack`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mqft_fuzz::decoders::ack(data);
});
