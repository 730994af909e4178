//! A receiver driven by an arbitrary sequence of messages, timer ticks and commands.
//! The checks live in the library: `mqft_fuzz::receiver`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mqft_fuzz::receiver::run(data);
});
