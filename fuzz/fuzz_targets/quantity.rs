//! Fuzzes the quantity parser (`64Mi`, `500m`, `1e3`): no panic, and what parses prints back
//! to something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tend_schema::Quantity;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = Quantity::parse(text) {
        let again = Quantity::parse(&q.to_string()).expect("a printed quantity parses");
        assert_eq!(again.value(), q.value(), "{text:?} -> {q}");
    }
});
