//! A sender driven by an arbitrary sequence of acks, timer ticks and commands.
//! The checks live in the library: `mqft_fuzz::sender`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mqft_fuzz::sender::run(data);
});
