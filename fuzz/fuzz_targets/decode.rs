//! Fuzzes the YAML/JSON document decoder and validation (`tend apply -f` and the API's bodies).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(docs) = tend_schema::decode::decode_all(text) {
        for d in docs {
            if let Ok(obj) = d.result {
                // A decoded object validates again, and survives a JSON round trip.
                let kind = obj.validate().expect("decoded objects are valid");
                let v = serde_json::to_value(&obj).expect("serializes");
                let back: tend_schema::AnyObject = serde_json::from_value(v).expect("round trip");
                assert_eq!(back.validate().ok(), Some(kind));
            }
        }
    }
});
