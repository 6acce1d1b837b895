//! Bucket CORS configuration as S3 has it: the `CORSConfiguration` document of
//! PutBucketCors (validated as S3 validates it), and the rule that allows a request from
//! a browser origin, preflight or actual.

use serde::{Deserialize, Serialize};

use crate::error::S3Error;
use crate::xml::{Element, XmlWriter};

/// Most rules in a configuration (S3: 100).
pub(crate) const MAX_RULES: usize = 100;
/// The methods a rule may allow.
pub(crate) const METHODS: [&str; 5] = ["GET", "PUT", "HEAD", "POST", "DELETE"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CorsRule {
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CorsConfig {
    pub rules: Vec<CorsRule>,
}

fn malformed(detail: &str) -> S3Error {
    S3Error::malformed_xml(format!(
        "The XML you provided was not well-formed or did not validate against our published schema: {detail}"
    ))
}

fn texts(el: &Element, name: &str) -> Vec<String> {
    el.children_named(name)
        .map(|c| c.text.trim().to_string())
        .collect()
}

impl CorsConfig {
    /// Reads and validates a `CORSConfiguration` document.
    pub fn from_xml(root: &Element) -> Result<Self, S3Error> {
        if root.name != "CORSConfiguration" {
            return Err(malformed("the root element is not CORSConfiguration"));
        }
        let mut rules = Vec::new();
        for r in root.children_named("CORSRule") {
            let rule = CorsRule {
                id: r.child_text("ID").map(|t| t.trim().to_string()),
                allowed_origins: texts(r, "AllowedOrigin"),
                allowed_methods: texts(r, "AllowedMethod"),
                allowed_headers: texts(r, "AllowedHeader"),
                expose_headers: texts(r, "ExposeHeader"),
                max_age_seconds: match r.child_text("MaxAgeSeconds") {
                    None => None,
                    Some(t) => Some(
                        t.trim()
                            .parse::<u64>()
                            .map_err(|_| malformed("MaxAgeSeconds is not a whole number"))?,
                    ),
                },
            };
            rule.validate()?;
            rules.push(rule);
        }
        if rules.is_empty() {
            return Err(malformed("a CORSConfiguration needs at least one CORSRule"));
        }
        if rules.len() > MAX_RULES {
            return Err(malformed("a CORSConfiguration has at most 100 CORSRules"));
        }
        Ok(Self { rules })
    }

    /// The `CORSConfiguration` document GetBucketCors answers.
    pub fn to_xml(&self) -> String {
        let mut x = XmlWriter::new("CORSConfiguration");
        for r in &self.rules {
            x.open("CORSRule");
            x.opt("ID", r.id.as_deref());
            for h in &r.allowed_headers {
                x.elem("AllowedHeader", h);
            }
            for m in &r.allowed_methods {
                x.elem("AllowedMethod", m);
            }
            for o in &r.allowed_origins {
                x.elem("AllowedOrigin", o);
            }
            for h in &r.expose_headers {
                x.elem("ExposeHeader", h);
            }
            x.opt("MaxAgeSeconds", r.max_age_seconds.map(|s| s.to_string()));
            x.close("CORSRule");
        }
        x.finish("CORSConfiguration")
    }

    /// The first rule that allows `method` from `origin` with `headers` (the
    /// Access-Control-Request-Headers of a preflight; none for an actual request).
    pub fn find(&self, origin: &str, method: &str, headers: &[String]) -> Option<&CorsRule> {
        self.rules
            .iter()
            .find(|r| r.allows(origin, method, headers))
    }
}

impl CorsRule {
    fn validate(&self) -> Result<(), S3Error> {
        if self.allowed_origins.is_empty() || self.allowed_methods.is_empty() {
            return Err(malformed(
                "a CORSRule needs at least one AllowedOrigin and one AllowedMethod",
            ));
        }
        if let Some(id) = &self.id
            && id.len() > 255
        {
            return Err(malformed("a CORSRule ID is at most 255 characters"));
        }
        for m in &self.allowed_methods {
            if !METHODS.contains(&m.as_str()) {
                return Err(S3Error::invalid_request(format!(
                    "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
                )));
            }
        }
        for o in &self.allowed_origins {
            if o.matches('*').count() > 1 {
                return Err(S3Error::invalid_request(format!(
                    "AllowedOrigin \"{o}\" can not have more than one wildcard."
                )));
            }
        }
        for h in &self.allowed_headers {
            if h.matches('*').count() > 1 {
                return Err(S3Error::invalid_request(format!(
                    "AllowedHeader \"{h}\" can not have more than one wildcard."
                )));
            }
        }
        for h in &self.expose_headers {
            if h.contains('*') {
                return Err(S3Error::invalid_request(format!(
                    "ExposeHeader \"{h}\" contains wildcard. We currently do not support wildcard for ExposeHeader."
                )));
            }
        }
        Ok(())
    }

    fn allows(&self, origin: &str, method: &str, headers: &[String]) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| wildcard_match(o, origin))
            && self.allowed_methods.iter().any(|m| m == method)
            && headers.iter().all(|h| {
                self.allowed_headers
                    .iter()
                    .any(|a| wildcard_match(&a.to_ascii_lowercase(), &h.to_ascii_lowercase()))
            })
    }

    /// What Access-Control-Allow-Origin says: `*` for a rule that allows any origin,
    /// else the origin itself (and then credentials are allowed too).
    pub fn allow_origin<'a>(&self, origin: &'a str) -> &'a str {
        if self.allowed_origins.iter().any(|o| o == "*") {
            "*"
        } else {
            origin
        }
    }
}

/// `pattern` with at most one `*` standing for any run of characters (S3 allows no more).
pub(crate) fn wildcard_match(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len()
                && value.starts_with(head)
                && value.ends_with(tail)
        }
    }
}

/// The header names of an `Access-Control-Request-Headers` value.
pub(crate) fn request_headers(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse;

    fn config(doc: &str) -> Result<CorsConfig, S3Error> {
        CorsConfig::from_xml(&parse(doc.as_bytes()).unwrap())
    }

    // ceph/s3-tests test_cors_origin_response: prefix, suffix and infix wildcards.
    #[test]
    fn origins_match_with_one_wildcard() {
        assert!(wildcard_match("*suffix", "foo.suffix"));
        assert!(!wildcard_match("*suffix", "foo.suffix.get"));
        assert!(wildcard_match("start*end", "startend"));
        assert!(wildcard_match("start*end", "start12end"));
        assert!(!wildcard_match("start*end", "0start12end"));
        assert!(wildcard_match("prefix*", "prefix"));
        assert!(!wildcard_match("prefix*", "bla.prefix"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match(
            "http://www.example.com",
            "http://www.example.com"
        ));
        assert!(!wildcard_match("ab*ba", "aba"));
    }

    #[test]
    fn rules_are_validated_as_s3_does() {
        let ok = config(
            "<CORSConfiguration><CORSRule><ID>r1</ID><AllowedOrigin>https://*.example.com</AllowedOrigin>\
             <AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod><AllowedHeader>x-amz-*</AllowedHeader>\
             <ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>3000</MaxAgeSeconds></CORSRule></CORSConfiguration>",
        )
        .unwrap();
        assert_eq!(ok.rules[0].allowed_methods, ["GET", "PUT"]);
        assert_eq!(ok.rules[0].max_age_seconds, Some(3000));
        let again = config(&ok.to_xml()).unwrap();
        assert_eq!(again, ok);
        let err = |doc: &str| config(doc).unwrap_err();
        assert_eq!(
            err("<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod></CORSRule></CORSConfiguration>").message,
            "Found unsupported HTTP method in CORS config. Unsupported method is PATCH"
        );
        assert_eq!(
            err("<CORSConfiguration><CORSRule><AllowedOrigin>*.*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>").code,
            "InvalidRequest"
        );
        assert_eq!(
            err("<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>").code,
            "MalformedXML"
        );
        assert_eq!(
            err("<CORSConfiguration></CORSConfiguration>").code,
            "MalformedXML"
        );
        assert_eq!(
            err("<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><ExposeHeader>*</ExposeHeader></CORSRule></CORSConfiguration>").code,
            "InvalidRequest"
        );
    }

    // ceph/s3-tests test_cors_header_option: a requested header no rule allows fails the
    // preflight.
    #[test]
    fn the_first_rule_allowing_origin_method_and_headers_wins() {
        let c = config(
            "<CORSConfiguration>\
             <CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><ExposeHeader>x-amz-meta-header1</ExposeHeader></CORSRule>\
             <CORSRule><ID>put</ID><AllowedOrigin>*.put</AllowedOrigin><AllowedMethod>PUT</AllowedMethod><AllowedHeader>*</AllowedHeader></CORSRule>\
             </CORSConfiguration>",
        )
        .unwrap();
        let r = c.find("example.origin", "GET", &[]).unwrap();
        assert_eq!(r.allow_origin("example.origin"), "*");
        assert!(
            c.find("example.origin", "GET", &["x-amz-meta-header2".into()])
                .is_none()
        );
        let r = c.find(
            "foo.put",
            "PUT",
            &request_headers(Some("Content-Type, X-Amz-Date")),
        );
        assert_eq!(r.and_then(|r| r.id.as_deref()), Some("put"));
        assert_eq!(r.unwrap().allow_origin("foo.put"), "foo.put");
        assert!(c.find("foo.put", "DELETE", &[]).is_none());
    }
}
