//! docs/OPTIONS.md lists exactly the options the allocator reads: every
//! `HAKMEM_*` name in the allocator crates' sources is documented there, and
//! every option in the document's table appears in the sources.

use std::collections::BTreeSet;
use std::path::Path;

fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("HAKMEM_") {
        let start = i + at;
        let mut end = start + "HAKMEM_".len();
        while end < bytes.len() && (bytes[end].is_ascii_uppercase() || bytes[end] == b'_') {
            end += 1;
        }
        let name = text[start..end].trim_end_matches('_');
        if name.len() > "HAKMEM".len() {
            out.insert(name.to_string());
        }
        i = end;
    }
    out
}

fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_option_is_documented_and_every_documented_option_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut code = String::new();
    for krate in [
        "superslab",
        "tiny-box",
        "fastcache",
        "hakmem",
        "hakmem-preload",
    ] {
        sources(&root.join("crates").join(krate).join("src"), &mut code);
    }
    let doc = std::fs::read_to_string(root.join("docs/OPTIONS.md")).unwrap();
    let table: String = doc
        .lines()
        .filter(|l| l.starts_with("| `HAKMEM_"))
        .collect::<Vec<_>>()
        .join("\n");
    let in_code = names_in(&code);
    let in_table: BTreeSet<String> = table
        .lines()
        .filter_map(|l| names_in(l.split('|').nth(1).unwrap()).into_iter().next())
        .collect();
    let undocumented: Vec<_> = in_code.difference(&in_table).collect();
    let missing: Vec<_> = in_table.difference(&in_code).collect();
    assert!(
        undocumented.is_empty(),
        "options read in the code but not in docs/OPTIONS.md: {undocumented:?}"
    );
    assert!(
        missing.is_empty(),
        "options in docs/OPTIONS.md that the code never reads: {missing:?}"
    );
    assert!(in_table.len() >= 7);
}
