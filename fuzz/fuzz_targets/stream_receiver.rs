//! A receiver of a stream driven by honest and lying chunks and ends of round.
//! The checks live in the library: `mqft_fuzz::stream_receiver`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mqft_fuzz::stream_receiver::run(data);
});
