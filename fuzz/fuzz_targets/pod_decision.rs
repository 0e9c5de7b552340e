//! The admission decision on arbitrary Pod JSON, under several policies, with the invariants
//! of `envlink_fuzz::check_pod` (the patch applies, a second run changes nothing, /validate
//! agrees with /mutate).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(object) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for state in envlink_fuzz::states() {
        envlink_fuzz::check_pod(&object, state);
    }
});
