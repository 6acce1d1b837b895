//! The little XML S3 needs: writing responses, and reading the few request documents
//! (CompleteMultipartUpload, Delete, CreateBucketConfiguration). The reader expands
//! only the predefined and numeric entities and rejects DTDs.

pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Escapes text for an element's content. Characters XML 1.0 cannot carry (most
/// control characters) are written as numeric references, as S3 does; clients that
/// care ask for `encoding-type=url`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {
                out.push_str(&format!("&#{};", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// A response document under construction.
pub struct XmlWriter {
    out: String,
}

impl XmlWriter {
    /// Starts `<?xml ...?><root xmlns="...s3 namespace...">`.
    pub fn new(root: &str) -> Self {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!("<{root} xmlns=\"{S3_NS}\">"));
        Self { out }
    }

    pub fn open(&mut self, tag: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    pub fn close(&mut self, tag: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    pub fn elem(&mut self, tag: &str, text: impl AsRef<str>) -> &mut Self {
        self.open(tag);
        self.out.push_str(&escape(text.as_ref()));
        self.close(tag)
    }

    /// The element only if there is a value.
    pub fn opt(&mut self, tag: &str, text: Option<impl AsRef<str>>) -> &mut Self {
        if let Some(t) = text {
            self.elem(tag, t);
        }
        self
    }

    pub fn finish(mut self, root: &str) -> String {
        self.close(root);
        self.out
    }
}

/// A parsed element: local name (namespace prefix dropped), children and direct text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

fn local_name(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

fn unescape_into(out: &mut String, text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let end = after.find(';').ok_or("unterminated entity")?;
        let name = &after[..end];
        let c = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ if name.starts_with("#x") || name.starts_with("#X") => {
                let v = u32::from_str_radix(&name[2..], 16).map_err(|_| "bad reference")?;
                char::from_u32(v).ok_or("bad reference")?
            }
            _ if name.starts_with('#') => {
                let v: u32 = name[1..].parse().map_err(|_| "bad reference")?;
                char::from_u32(v).ok_or("bad reference")?
            }
            _ => return Err(format!("unknown entity &{name};")),
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(())
}

/// Parses a document into its root element.
pub fn parse(input: &[u8]) -> Result<Element, String> {
    let s = std::str::from_utf8(input).map_err(|_| "not UTF-8")?;
    let s = s.strip_prefix('\u{feff}').unwrap_or(s);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < bytes.len() {
        if bytes[i] != b'<' {
            let end = s[i..].find('<').map_or(s.len(), |p| i + p);
            let text = &s[i..end];
            match stack.last_mut() {
                Some(top) => unescape_into(&mut top.text, text)?,
                None if text.trim().is_empty() => {}
                None => return Err("text outside the root element".into()),
            }
            i = end;
            continue;
        }
        let rest = &s[i..];
        if rest.starts_with("<?") {
            let end = rest
                .find("?>")
                .ok_or("unterminated processing instruction")?;
            i += end + 2;
        } else if rest.starts_with("<!--") {
            let end = rest.find("-->").ok_or("unterminated comment")?;
            i += end + 3;
        } else if rest.starts_with("<![CDATA[") {
            let end = rest.find("]]>").ok_or("unterminated CDATA")?;
            let top = stack.last_mut().ok_or("CDATA outside the root element")?;
            top.text.push_str(&rest[9..end]);
            i += end + 3;
        } else if rest.starts_with("<!") {
            return Err("DTDs are not accepted".into());
        } else if rest.starts_with("</") {
            let end = rest.find('>').ok_or("unterminated end tag")?;
            let name = local_name(rest[2..end].trim());
            let done = stack.pop().ok_or("unbalanced end tag")?;
            if done.name != name {
                return Err(format!("</{name}> closes <{}>", done.name));
            }
            match stack.last_mut() {
                Some(parent) => parent.children.push(done),
                None => {
                    if root.is_some() {
                        return Err("more than one root element".into());
                    }
                    root = Some(done);
                }
            }
            i += end + 1;
        } else {
            // A start tag; attribute values may contain '>' only when quoted.
            let mut j = 1;
            let mut quote: Option<u8> = None;
            while j < rest.len() {
                let b = rest.as_bytes()[j];
                match quote {
                    Some(q) if b == q => quote = None,
                    Some(_) => {}
                    None if b == b'"' || b == b'\'' => quote = Some(b),
                    None if b == b'>' => break,
                    None => {}
                }
                j += 1;
            }
            if j >= rest.len() {
                return Err("unterminated start tag".into());
            }
            let inner = &rest[1..j];
            let self_closing = inner.ends_with('/');
            let inner = inner.trim_end_matches('/');
            let qname = inner.split_whitespace().next().ok_or("empty tag")?;
            let el = Element {
                name: local_name(qname).to_string(),
                ..Element::default()
            };
            if self_closing {
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => {
                        if root.is_some() {
                            return Err("more than one root element".into());
                        }
                        root = Some(el);
                    }
                }
            } else {
                if stack.len() > 32 {
                    return Err("too deeply nested".into());
                }
                stack.push(el);
            }
            i += j + 1;
        }
    }
    if !stack.is_empty() {
        return Err("unclosed element".into());
    }
    root.ok_or_else(|| "no root element".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_complete_multipart_upload_document() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Part><ETag>&quot;abc&quot;</ETag><PartNumber>1</PartNumber></Part>
  <Part><ETag>"def"</ETag><PartNumber>2</PartNumber><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>
</CompleteMultipartUpload>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "CompleteMultipartUpload");
        let parts: Vec<_> = root.children_named("Part").collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].child_text("ETag"), Some("\"abc\""));
        assert_eq!(parts[1].child_text("ChecksumCRC32"), Some("AAAAAA=="));
    }

    #[test]
    fn keeps_key_whitespace_and_expands_references() {
        let root =
            parse(b"<Delete><Object><Key> a&amp;b &#x263A;&#10;</Key></Object><Quiet>true</Quiet></Delete>")
                .unwrap();
        let obj = root.child("Object").unwrap();
        assert_eq!(obj.child_text("Key"), Some(" a&b \u{263A}\n"));
        assert_eq!(root.child_text("Quiet"), Some("true"));
    }

    #[test]
    fn rejects_dtds_and_unbalanced_documents() {
        assert!(parse(b"<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>").is_err());
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"<a>").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"<a>&bogus;</a>").is_err());
    }

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(escape("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos;&#1;");
    }
}
