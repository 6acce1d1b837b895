//! Browser form uploads (`POST /bucket`, multipart/form-data): reading the form as it
//! streams in (fields in a bounded buffer, the file passed on piece by piece), and the
//! POST policy, checked as S3 checks it.

use axum::body::{Body, BodyDataStream};
use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use http::StatusCode;
use time::OffsetDateTime;

use crate::chunked::ByteSource;
use crate::error::S3Error;

/// Most bytes of form before the file: fields, their part headers, any preamble
/// (S3: 20 KB).
pub(crate) const MAX_FIELDS: usize = 20 * 1024;

fn too_much_before_file() -> S3Error {
    S3Error::new(
        StatusCode::BAD_REQUEST,
        "MaxPostPreDataLengthExceeded",
        "Your POST request fields preceding the upload file were too large.",
    )
    .with("MaxPostPreDataLength", MAX_FIELDS.to_string())
}

fn malformed_post(detail: &str) -> S3Error {
    S3Error::new(
        StatusCode::BAD_REQUEST,
        "MalformedPOSTRequest",
        format!("The body of your POST request is not well-formed multipart/form-data: {detail}"),
    )
}

/// The boundary of a `multipart/form-data` Content-Type, if it is one.
pub(crate) fn form_boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

/// One form field before the file: its name as sent and its value.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub name: String,
    pub value: String,
}

/// The fields of a form and the start of its file part.
pub(crate) struct Form {
    pub fields: Vec<Field>,
    /// The file part's `filename`, for `${filename}` in the key.
    pub filename: String,
    pub file: FileReader,
}

impl Form {
    /// A field's value by name, case-insensitively (as S3 reads form field names).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value.as_str())
    }
}

/// The form body: parts separated by `\r\n--boundary`.
struct Reader {
    stream: BodyDataStream,
    buf: BytesMut,
    delimiter: Vec<u8>,
    eof: bool,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Reader {
    async fn fill(&mut self) -> Result<bool, S3Error> {
        if self.eof {
            return Ok(false);
        }
        match self.stream.next().await {
            Some(Ok(b)) => {
                self.buf.extend_from_slice(&b);
                Ok(true)
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "form body failed");
                Err(S3Error::incomplete_body(
                    "The request body ended before the form was complete.",
                ))
            }
            None => {
                self.eof = true;
                Ok(false)
            }
        }
    }

    /// Reads until `needle`, at most `limit` bytes before it; what came before (the
    /// needle consumed).
    async fn until(&mut self, needle: &[u8], limit: usize) -> Result<BytesMut, S3Error> {
        loop {
            if let Some(pos) = find(&self.buf, needle) {
                if pos > limit {
                    return Err(too_much_before_file());
                }
                let out = self.buf.split_to(pos);
                self.buf.advance(needle.len());
                return Ok(out);
            }
            if self.buf.len() > limit + needle.len() {
                return Err(too_much_before_file());
            }
            if !self.fill().await? {
                return Err(malformed_post("the form ends in the middle of a part"));
            }
        }
    }

    async fn exactly(&mut self, n: usize) -> Result<Bytes, S3Error> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(malformed_post("the form ends in the middle of a part"));
            }
        }
        Ok(self.buf.split_to(n).freeze())
    }
}

/// A part's name and file name, from its headers.
fn disposition(headers: &str) -> Result<(String, Option<String>), S3Error> {
    for line in headers.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        let mut field = None;
        let mut filename = None;
        for param in value.split(';').skip(1) {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
                .to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "name" => field = Some(v),
                "filename" => filename = Some(v),
                _ => {}
            }
        }
        return field
            .map(|f| (f, filename))
            .ok_or_else(|| malformed_post("a part's Content-Disposition has no name"));
    }
    Err(malformed_post("a part has no Content-Disposition"))
}

/// Reads the fields of a form up to its `file` part (S3 ignores the fields after it).
pub(crate) async fn read_form(body: Body, boundary: &str) -> Result<Form, S3Error> {
    // The body starts with `--boundary` (after an optional preamble); seen with a CRLF in
    // front, every delimiter looks the same.
    let mut r = Reader {
        stream: body.into_data_stream(),
        buf: BytesMut::from(&b"\r\n"[..]),
        delimiter: format!("\r\n--{boundary}").into_bytes(),
        eof: false,
    };
    let delimiter = r.delimiter.clone();
    let mut budget = MAX_FIELDS;
    let preamble = r.until(&delimiter, budget).await?;
    budget -= preamble.len();
    let mut fields = Vec::new();
    loop {
        let after = r.exactly(2).await?;
        if &after[..] == b"--" {
            return Err(S3Error::invalid_argument(
                "POST requires exactly one file upload per request.",
            )
            .with("ArgumentName", "file")
            .with("ArgumentValue", "0"));
        }
        if &after[..] != b"\r\n" {
            return Err(malformed_post("a boundary is not followed by a line end"));
        }
        let headers = r.until(b"\r\n\r\n", budget).await?;
        budget = budget.saturating_sub(headers.len() + 4);
        let headers = String::from_utf8(headers.to_vec())
            .map_err(|_| malformed_post("part headers are not UTF-8"))?;
        let (name, filename) = disposition(&headers)?;
        if name.eq_ignore_ascii_case("file") {
            return Ok(Form {
                fields,
                filename: filename.unwrap_or_default(),
                file: FileReader {
                    reader: r,
                    done: false,
                },
            });
        }
        let value = r.until(&delimiter, budget).await?;
        budget -= value.len();
        let value = String::from_utf8(value.to_vec())
            .map_err(|_| malformed_post("a field value is not UTF-8"))?;
        fields.push(Field { name, value });
    }
}

/// The content of the file part, streamed: everything up to the next delimiter, whatever
/// follows it being ignored.
pub(crate) struct FileReader {
    reader: Reader,
    done: bool,
}

impl ByteSource for FileReader {
    async fn next_bytes(&mut self) -> Result<Option<Bytes>, S3Error> {
        if self.done {
            return Ok(None);
        }
        let r = &mut self.reader;
        let keep = r.delimiter.len() - 1;
        loop {
            if let Some(pos) = find(&r.buf, &r.delimiter) {
                self.done = true;
                let data = r.buf.split_to(pos).freeze();
                r.buf.clear();
                return Ok((!data.is_empty()).then_some(data));
            }
            // Pass on all but what could be the start of a delimiter.
            if r.buf.len() > keep {
                let n = r.buf.len() - keep;
                return Ok(Some(r.buf.split_to(n).freeze()));
            }
            if !r.fill().await? {
                return Err(S3Error::incomplete_body(
                    "The request body ended before the file was complete.",
                ));
            }
        }
    }
}

// ------------------------------------------------------------------------------------
// The policy

fn invalid_policy(detail: &str) -> S3Error {
    S3Error::new(
        StatusCode::BAD_REQUEST,
        "InvalidPolicyDocument",
        format!("Invalid Policy: {detail}"),
    )
}

fn policy_refusal(detail: String) -> S3Error {
    S3Error::access_denied(format!("Invalid according to Policy: {detail}"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    /// (field, lowercase without `$`), value.
    Eq(String, String),
    StartsWith(String, String),
    LengthRange(u64, u64),
}

impl Condition {
    fn describe(&self) -> String {
        match self {
            Self::Eq(f, v) => serde_json::json!(["eq", format!("${f}"), v]).to_string(),
            Self::StartsWith(f, v) => {
                serde_json::json!(["starts-with", format!("${f}"), v]).to_string()
            }
            Self::LengthRange(a, b) => {
                serde_json::json!(["content-length-range", a, b]).to_string()
            }
        }
    }
}

/// A decoded, well-formed POST policy.
#[derive(Debug)]
pub(crate) struct Policy {
    pub expiration: OffsetDateTime,
    conditions: Vec<Condition>,
}

fn field_name(v: &serde_json::Value) -> Result<String, S3Error> {
    let s = v
        .as_str()
        .ok_or_else(|| invalid_policy("a condition names its field with a string"))?;
    let s = s
        .strip_prefix('$')
        .ok_or_else(|| invalid_policy("a condition's field must start with $"))?;
    Ok(s.to_ascii_lowercase())
}

fn length_bound(v: &serde_json::Value) -> Result<u64, S3Error> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid_policy("content-length-range takes two non-negative integers"))
}

impl Policy {
    /// Decodes the `policy` field (base64 JSON) as S3 requires it: `expiration` (ISO
    /// 8601) and `conditions` (names case-sensitive), every condition well-formed.
    pub fn decode(policy_b64: &str) -> Result<Self, S3Error> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(policy_b64.trim())
            .map_err(|_| invalid_policy("Policy is not valid base64."))?;
        let doc: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|_| invalid_policy("Policy is not a JSON document."))?;
        let expiration = doc
            .get("expiration")
            .ok_or_else(|| invalid_policy("Policy missing expiration."))?
            .as_str()
            .and_then(|s| {
                OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            })
            .ok_or_else(|| invalid_policy("Invalid 'expiration' value."))?;
        let list = doc
            .get("conditions")
            .ok_or_else(|| invalid_policy("Policy missing conditions."))?
            .as_array()
            .ok_or_else(|| invalid_policy("conditions must be a list."))?;
        let mut conditions = Vec::new();
        for c in list {
            match c {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        let v = v.as_str().ok_or_else(|| {
                            invalid_policy("a condition's value must be a string")
                        })?;
                        conditions.push(Condition::Eq(k.to_ascii_lowercase(), v.to_string()));
                    }
                }
                serde_json::Value::Array(items) => {
                    let op = items
                        .first()
                        .and_then(|o| o.as_str())
                        .ok_or_else(|| invalid_policy("a condition has no operation"))?
                        .to_ascii_lowercase();
                    if items.len() != 3 {
                        return Err(invalid_policy(&format!(
                            "the {op} condition takes two arguments"
                        )));
                    }
                    match op.as_str() {
                        "eq" | "starts-with" => {
                            let field = field_name(&items[1])?;
                            let value = items[2]
                                .as_str()
                                .ok_or_else(|| {
                                    invalid_policy("a condition's value must be a string")
                                })?
                                .to_string();
                            conditions.push(if op == "eq" {
                                Condition::Eq(field, value)
                            } else {
                                Condition::StartsWith(field, value)
                            });
                        }
                        "content-length-range" => {
                            let (min, max) = (length_bound(&items[1])?, length_bound(&items[2])?);
                            conditions.push(Condition::LengthRange(min, max));
                        }
                        _ => {
                            return Err(invalid_policy(&format!(
                                "Invalid condition operation: {op}"
                            )));
                        }
                    }
                }
                _ => return Err(invalid_policy("a condition is neither a map nor a list")),
            }
        }
        Ok(Self {
            expiration,
            conditions,
        })
    }

    /// Checks the form against the policy before the file is read: not expired, every
    /// condition met by its field (`bucket` being the one posted to), and no field
    /// without a condition. The size range, if any, is returned for the file.
    pub fn check(
        &self,
        form: &Form,
        bucket: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(u64, u64)>, S3Error> {
        if now > self.expiration {
            return Err(policy_refusal("Policy expired.".into()));
        }
        let value = |field: &str| -> Option<&str> {
            if field == "bucket" {
                Some(bucket)
            } else {
                form.get(field)
            }
        };
        let mut range = None;
        for c in &self.conditions {
            let ok = match c {
                Condition::Eq(f, v) => value(f).is_some_and(|x| x == v),
                Condition::StartsWith(f, p) => value(f).is_some_and(|x| {
                    if f == "content-type" {
                        x.split(',').all(|t| t.trim().starts_with(p.as_str()))
                    } else {
                        x.starts_with(p.as_str())
                    }
                }),
                Condition::LengthRange(min, max) => {
                    range = Some((*min, *max));
                    true
                }
            };
            if !ok {
                return Err(policy_refusal(format!(
                    "Policy Condition failed: {}",
                    c.describe()
                )));
            }
        }
        let covered = |name: &str| {
            self.conditions.iter().any(|c| match c {
                Condition::Eq(f, _) | Condition::StartsWith(f, _) => f == name,
                Condition::LengthRange(..) => false,
            })
        };
        let mut names: Vec<String> = form
            .fields
            .iter()
            .map(|f| f.name.to_ascii_lowercase())
            .filter(|n| {
                !matches!(
                    n.as_str(),
                    "policy" | "x-amz-signature" | "signature" | "awsaccesskeyid" | "file"
                ) && !n.starts_with("x-ignore-")
            })
            .collect();
        names.push("bucket".into());
        if let Some(extra) = names.iter().find(|n| !covered(n)) {
            return Err(policy_refusal(format!("Extra input fields: {extra}")));
        }
        Ok(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    async fn form(body: &str) -> Result<Form, S3Error> {
        read_form(Body::from(body.replace('\n', "\r\n")), "XyZ").await
    }

    async fn file_of(mut f: Form) -> Result<Vec<u8>, S3Error> {
        let mut out = Vec::new();
        while let Some(b) = f.file.next_bytes().await? {
            out.extend_from_slice(&b);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn reads_fields_then_streams_the_file_and_ignores_what_follows() {
        let f = form(
            "preamble\n--XyZ\nContent-Disposition: form-data; name=\"kEy\"\n\nup/${filename}\n\
             --XyZ\nContent-Disposition: form-data; name=\"x-amz-meta-note\"\n\nline one\nline two\n\
             --XyZ\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\nContent-Type: text/plain\n\n\
             body with \n--Xy almost a boundary\n--XyZ\nContent-Disposition: form-data; name=\"late\"\n\nignored\n--XyZ--\n",
        )
        .await
        .unwrap();
        assert_eq!(f.get("key"), Some("up/${filename}"));
        assert_eq!(f.get("X-Amz-Meta-Note"), Some("line one\r\nline two"));
        assert_eq!(f.filename, "a.txt");
        assert_eq!(
            file_of(f).await.unwrap(),
            b"body with \r\n--Xy almost a boundary"
        );
    }

    #[tokio::test]
    async fn delimiters_split_across_reads_are_found() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n\
             \r\n--XyY-no\r\r\n--X\r\n--XyZ--\r\n";
        for size in 1..9 {
            let pieces: Vec<Result<Bytes, std::io::Error>> = body
                .as_bytes()
                .chunks(size)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let f = read_form(Body::from_stream(futures::stream::iter(pieces)), "XyZ")
                .await
                .unwrap();
            assert_eq!(f.get("key"), Some("k"));
            assert_eq!(
                file_of(f).await.unwrap(),
                b"\r\n--XyY-no\r\r\n--X",
                "{size}"
            );
        }
    }

    #[tokio::test]
    async fn malformed_or_oversized_forms_are_refused() {
        let err = form("--XyZ\nContent-Disposition: form-data; name=\"key\"\n\nk\n--XyZ--\n")
            .await
            .err()
            .unwrap();
        assert_eq!(err.code, "InvalidArgument");
        let big = format!(
            "--XyZ\nContent-Disposition: form-data; name=\"x\"\n\n{}\n--XyZ\n",
            "a".repeat(MAX_FIELDS + 1)
        );
        assert_eq!(
            form(&big).await.err().unwrap().code,
            "MaxPostPreDataLengthExceeded"
        );
        let cut = "--XyZ\nContent-Disposition: form-data; name=\"file\"\n\nno end";
        let f = form(cut).await.unwrap();
        assert_eq!(file_of(f).await.unwrap_err().code, "IncompleteBody");
        assert_eq!(
            form("--XyZ\nX: y\n\nv\n--XyZ--\n")
                .await
                .err()
                .unwrap()
                .code,
            "MalformedPOSTRequest"
        );
        assert_eq!(
            form_boundary("multipart/form-data; boundary=\"a b\""),
            Some("a b".into())
        );
        assert_eq!(form_boundary("text/plain; boundary=x"), None);
    }

    async fn checked(policy: &str, fields: &[(&str, &str)]) -> Result<Option<(u64, u64)>, S3Error> {
        let mut body = String::new();
        for (n, v) in fields {
            body.push_str(&format!(
                "--XyZ\nContent-Disposition: form-data; name=\"{n}\"\n\n{v}\n"
            ));
        }
        body.push_str("--XyZ\nContent-Disposition: form-data; name=\"file\"\n\nx\n--XyZ--\n");
        let f = form(&body).await?;
        let now = time::macros::datetime!(2030-01-01 00:00 UTC);
        Policy::decode(&b64(policy))?.check(&f, "bkt", now)
    }

    const FUTURE: &str = "2030-06-01T00:00:00.000Z";

    // ceph/s3-tests test_post_object_* policy cases, with S3's answers.
    #[tokio::test]
    async fn policies_are_checked_as_s3_checks_them() {
        let ok = format!(
            r#"{{"expiration": "{FUTURE}", "conditions": [{{"bUcKeT": "bkt"}}, ["StArTs-WiTh", "$KeY", "foo"],
               {{"acl": "private"}}, ["starts-with", "$Content-Type", "text/"], ["content-length-range", 0, 1024]]}}"#
        );
        let fields = [
            ("kEy", "foo.txt"),
            ("acl", "private"),
            ("Content-Type", "text/plain"),
            ("policy", "ignored"),
            ("x-ignore-me", "1"),
        ];
        assert_eq!(checked(&ok, &fields).await.unwrap(), Some((0, 1024)));
        // A field no condition covers (test_post_object_user_specified_header's inverse).
        let mut extra = fields.to_vec();
        extra.push(("x-amz-meta-foo", "bar"));
        let err = checked(&ok, &extra).await.unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (403, "AccessDenied"));
        assert_eq!(
            err.message,
            "Invalid according to Policy: Extra input fields: x-amz-meta-foo"
        );
        // A condition not met (wrong key prefix; missing field: _missing_policy_specified_field).
        let err = checked(
            &ok,
            &[
                ("key", "bar.txt"),
                ("acl", "private"),
                ("Content-Type", "text/plain"),
            ],
        )
        .await
        .unwrap_err();
        assert_eq!(err.status.as_u16(), 403);
        assert!(
            err.message.contains(r#"["starts-with","$key","foo"]"#),
            "{}",
            err.message
        );
        let err = checked(&ok, &[("key", "foo"), ("acl", "private")])
            .await
            .unwrap_err();
        assert_eq!(err.status.as_u16(), 403);
        // No bucket condition (test_post_object_missing_policy_condition).
        let no_bucket =
            format!(r#"{{"expiration": "{FUTURE}", "conditions": [["starts-with", "$key", ""]]}}"#);
        let err = checked(&no_bucket, &[("key", "k")]).await.unwrap_err();
        assert_eq!(
            err.message,
            "Invalid according to Policy: Extra input fields: bucket"
        );
        // Expired (test_post_object_expired_policy).
        let old = r#"{"expiration": "2020-01-01T00:00:00Z", "conditions": [{"bucket": "bkt"}]}"#;
        let err = checked(old, &[]).await.unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.message.as_str()),
            (403, "Invalid according to Policy: Policy expired.")
        );
        // Malformed policies are 400 (test_post_object_invalid_date_format,
        // _expires_is_case_sensitive, _condition_is_case_sensitive, _missing_conditions_list,
        // _missing_content_length_argument, _invalid_content_length_argument).
        for bad in [
            r#"{"expiration": "2030-01-01 00:00:00", "conditions": []}"#.to_string(),
            format!(r#"{{"EXPIRATION": "{FUTURE}", "conditions": []}}"#),
            format!(r#"{{"expiration": "{FUTURE}", "CONDITIONS": []}}"#),
            format!(r#"{{"expiration": "{FUTURE}"}}"#),
            format!(r#"{{"expiration": "{FUTURE}", "conditions": [["content-length-range", 0]]}}"#),
            format!(
                r#"{{"expiration": "{FUTURE}", "conditions": [["content-length-range", -1, 0]]}}"#
            ),
            format!(r#"{{"expiration": "{FUTURE}", "conditions": [["matches", "$key", "x"]]}}"#),
            "not json".to_string(),
        ] {
            let err = checked(&bad, &[]).await.unwrap_err();
            assert_eq!(
                (err.status.as_u16(), err.code),
                (400, "InvalidPolicyDocument"),
                "{bad}"
            );
        }
    }
}
