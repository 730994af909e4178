//! Prefix::new, Prefix::parse, TransferId and ReceiverId on arbitrary strings.
//! The checks live in the library: `mqft_fuzz::decoders::topic`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mqft_fuzz::decoders::topic(data);
});
