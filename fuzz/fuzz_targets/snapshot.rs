//! Template snapshots: importing arbitrary bytes never panics, and what imports re-exports.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netflow_wire::template::TemplateCache;

fuzz_target!(|data: &[u8]| {
    let mut c = TemplateCache::default();
    if c.import(data).is_ok() {
        let mut again = TemplateCache::default();
        assert_eq!(again.import(&c.export()), Ok(c.len()));
    }
});
