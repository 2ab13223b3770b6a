//! Fuzzes the label selector parser (`app=web,tier!=db,env in (a,b),!x`): no panic, and a parsed
//! selector can be matched against labels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use tend_schema::selector::Selector;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sel) = Selector::parse(text) {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let _ = sel.matches(&labels);
    }
});
