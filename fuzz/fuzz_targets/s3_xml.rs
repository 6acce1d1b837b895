//! The S3 request-document reader (`xml.rs`, behind `wisp_objects::fuzzing`): any bytes
//! parse or fail without a panic; a parsed tree written back out parses to the same tree;
//! and text escaped by the writer reads back as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wisp_objects::fuzzing::{XmlElement, XmlWriter, parse_xml, xml_escape};

/// The tree as the writer would write it (names as parsed, text escaped).
fn write(el: &XmlElement, out: &mut String) {
    out.push('<');
    out.push_str(&el.name);
    out.push('>');
    out.push_str(&xml_escape(&el.text));
    for c in &el.children {
        write(c, out);
    }
    out.push_str("</");
    out.push_str(&el.name);
    out.push('>');
}

fn usable_name(el: &XmlElement) -> bool {
    !el.name.is_empty()
        && el
            .name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && el.children.iter().all(usable_name)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(root) = parse_xml(data)
        && usable_name(&root)
    {
        // Text moves ahead of the children when written back, so compare trees, not bytes.
        let mut doc = String::new();
        write(&root, &mut doc);
        let again = parse_xml(doc.as_bytes()).expect("a written tree parses");
        assert_eq!(again, root, "{doc}");
    }
    // Text the writer escapes reads back unchanged, as a Delete document's key must.
    if let Ok(text) = std::str::from_utf8(data) {
        let mut w = XmlWriter::new("Delete");
        w.open("Object").elem("Key", text).close("Object");
        let doc = w.finish("Delete");
        let root = parse_xml(doc.as_bytes()).expect("a written document parses");
        assert_eq!(root.name, "Delete");
        let key = root.child("Object").and_then(|o| o.child_text("Key"));
        assert_eq!(key, Some(text), "{doc}");
    }
});
