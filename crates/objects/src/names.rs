//! Bucket names and object keys: S3's rules, and the URL encodings S3 uses for them.

/// Longest key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a bucket name is refused.
pub fn bucket_name_error(name: &str) -> Option<&'static str> {
    let b = name.as_bytes();
    if !(3..=63).contains(&b.len()) {
        return Some("bucket names are 3 to 63 characters long");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
    {
        return Some("bucket names use only lowercase letters, digits, dots and hyphens");
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Some("bucket names begin and end with a letter or a digit");
    }
    if name.contains("..") {
        return Some("bucket names have no two adjacent dots");
    }
    if name.contains(".-") || name.contains("-.") {
        return Some("bucket names have no dot next to a hyphen");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some("bucket names are not formatted as IP addresses");
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Some("bucket names do not start with a reserved prefix");
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Some("bucket names do not end with a reserved suffix");
        }
    }
    None
}

/// Whether `name` is a valid S3 (general purpose) bucket name.
pub fn is_valid_bucket_name(name: &str) -> bool {
    bucket_name_error(name).is_none()
}

/// RFC 3986 unreserved characters, which SigV4 and S3 never escape.
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes every byte but the unreserved ones (and `/` unless `encode_slash`),
/// with uppercase hex: the encoding of SigV4 canonical requests.
pub fn uri_encode(input: &[u8], encode_slash: bool) -> String {
    let mut out = String::with_capacity(input.len() * 3);
    for &b in input {
        if is_unreserved(b) || (b == b'/' && !encode_slash) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; anything else (a `+` too) stays as it is, and a malformed
/// escape is kept literally.
pub fn percent_decode(input: &str) -> Vec<u8> {
    let b = input.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The `encoding-type=url` form of a key in listings: every byte but the unreserved
/// ones and `/` escaped, so both `unquote` and `unquote_plus` give the key back.
pub fn listing_encode(key: &str) -> String {
    uri_encode(key.as_bytes(), false)
}

/// A key as S3 writes it in event notifications: form encoding (a space becomes `+`),
/// with `/` kept. `*`, `-`, `.` and `_` are kept too, as Java's `URLEncoder` does.
pub fn notification_encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        match b {
            b' ' => out.push('+'),
            b'/' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
            b if b.is_ascii_alphanumeric() => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes the form encoding of [`notification_encode`] (`+` is a space).
pub fn notification_decode(encoded: &str) -> Option<String> {
    String::from_utf8(percent_decode(&encoded.replace('+', " "))).ok()
}

/// The smallest byte string greater than every string that starts with `prefix`,
/// or `None` when there is none (an empty prefix, or one of only `0xFF` bytes).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "my-bucket", "my.bucket.1", "a1b", &"a".repeat(63)] {
            assert!(is_valid_bucket_name(ok), "{ok} should be valid");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "MyBucket",
            "my_bucket",
            "-abc",
            "abc-",
            ".abc",
            "a..b",
            "a.-b",
            "a-.b",
            "192.168.5.4",
            "xn--abc",
            "sthree-abc",
            "amzn-s3-demo-x",
            "abc-s3alias",
            "abc--ol-s3",
            "abc.mrap",
            "abc--x-s3",
            "abc--table-s3",
            "has space",
        ] {
            assert!(!is_valid_bucket_name(bad), "{bad} should be invalid");
        }
        // An address-like name with a non-numeric label is fine.
        assert!(is_valid_bucket_name("192.168.5.a"));
    }

    #[test]
    fn uri_encoding_is_sigv4s() {
        assert_eq!(uri_encode(b"a b/c~d", false), "a%20b/c~d");
        assert_eq!(uri_encode(b"a b/c~d", true), "a%20b%2Fc~d");
        assert_eq!(uri_encode("é+$".as_bytes(), true), "%C3%A9%2B%24");
        assert_eq!(
            uri_encode(
                b"-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                true
            ),
            "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        );
    }

    #[test]
    fn percent_decoding_keeps_plus_and_bad_escapes() {
        assert_eq!(percent_decode("a%20b+c%2f"), b"a b+c/");
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%zz%4"), b"%zz%4");
        assert_eq!(percent_decode("%E1%88%B4"), "\u{1234}".as_bytes());
    }

    #[test]
    fn notification_keys_are_form_encoded() {
        assert_eq!(notification_encode("red flower.jpg"), "red+flower.jpg");
        assert_eq!(
            notification_encode("year=2024/a+b é.txt"),
            "year%3D2024/a%2Bb+%C3%A9.txt"
        );
        assert_eq!(
            notification_decode("year%3D2024/a%2Bb+%C3%A9.txt").unwrap(),
            "year=2024/a+b é.txt"
        );
    }

    #[test]
    fn prefix_successors() {
        assert_eq!(prefix_successor(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_successor(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b""), None);
        assert_eq!(prefix_successor(b"\xff"), None);
    }
}
