//! Chunk::decode on arbitrary bytes, topic indexes and manifests.
//! The checks live in the library: `mqft_fuzz::decoders::chunk`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mqft_fuzz::decoders::chunk(data);
});
