//! The checksums S3 clients send and ask for (`x-amz-checksum-*`): CRC32, CRC32C,
//! CRC64NVME, SHA-1 and SHA-256, their composite form for multipart uploads
//! (`<base64>-<parts>`) and, for the CRCs, the full-object form combined from the parts'.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::Digest;

/// A checksum algorithm S3 clients may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

/// Every supported algorithm, in the order responses list them.
pub const ALGORITHMS: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Crc32c,
    ChecksumAlgorithm::Crc64Nvme,
    ChecksumAlgorithm::Sha1,
    ChecksumAlgorithm::Sha256,
];

impl ChecksumAlgorithm {
    /// The name as S3 spells it in `x-amz-checksum-algorithm` (`CRC32`, `CRC64NVME`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    /// The header that carries a value: `x-amz-checksum-crc32`, ...
    pub fn header(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The XML element in CompleteMultipartUpload, ListParts, ...: `ChecksumCRC32`, ...
    pub fn xml_element(self) -> &'static str {
        match self {
            Self::Crc32 => "ChecksumCRC32",
            Self::Crc32c => "ChecksumCRC32C",
            Self::Crc64Nvme => "ChecksumCRC64NVME",
            Self::Sha1 => "ChecksumSHA1",
            Self::Sha256 => "ChecksumSHA256",
        }
    }

    /// Parses a name in any case (`crc32`, `CRC32`).
    pub fn from_name(name: &str) -> Option<Self> {
        ALGORITHMS
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Parses a header name (`x-amz-checksum-crc32`, any case).
    pub fn from_header(name: &str) -> Option<Self> {
        ALGORITHMS
            .into_iter()
            .find(|a| a.header().eq_ignore_ascii_case(name.trim()))
    }

    /// Length in bytes of a raw digest.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64Nvme => 8,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    /// Whether a multipart upload may use the FULL_OBJECT checksum type.
    pub fn is_crc(self) -> bool {
        matches!(self, Self::Crc32 | Self::Crc32c | Self::Crc64Nvme)
    }

    pub fn hasher(self) -> ChecksumHasher {
        match self {
            Self::Crc32 => ChecksumHasher::Crc32(crc32fast::Hasher::new()),
            Self::Crc32c => ChecksumHasher::Crc32c(!0),
            Self::Crc64Nvme => ChecksumHasher::Crc64Nvme(!0),
            Self::Sha1 => ChecksumHasher::Sha1(sha1::Sha1::new()),
            Self::Sha256 => ChecksumHasher::Sha256(sha2::Sha256::new()),
        }
    }

    /// The raw digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }

    /// Decodes a base64 header value into a raw digest of the right length.
    pub fn decode(self, value: &str) -> Option<Vec<u8>> {
        let raw = B64.decode(value.trim()).ok()?;
        (raw.len() == self.digest_len()).then_some(raw)
    }
}

/// Whether a multipart object's checksum covers the whole object or the parts' checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    FullObject,
    Composite,
}

impl ChecksumType {
    pub fn name(self) -> &'static str {
        match self {
            Self::FullObject => "FULL_OBJECT",
            Self::Composite => "COMPOSITE",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_uppercase().as_str() {
            "FULL_OBJECT" => Some(Self::FullObject),
            "COMPOSITE" => Some(Self::Composite),
            _ => None,
        }
    }
}

/// Base64 as S3 spells checksum values.
pub fn to_base64(raw: &[u8]) -> String {
    B64.encode(raw)
}

/// A running checksum.
#[derive(Clone)]
pub enum ChecksumHasher {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64Nvme(u64),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl ChecksumHasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32(h) => h.update(data),
            Self::Crc32c(state) => *state = crc32c_update(*state, data),
            Self::Crc64Nvme(state) => *state = crc64nvme_update(*state, data),
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    /// The raw digest, big-endian for the CRCs (as S3 encodes them).
    pub fn finish(self) -> Vec<u8> {
        match self {
            Self::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            Self::Crc32c(state) => (!state).to_be_bytes().to_vec(),
            Self::Crc64Nvme(state) => (!state).to_be_bytes().to_vec(),
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// The composite checksum of a multipart object: the algorithm applied to the
/// concatenated raw part checksums, in base64, with `-<number of parts>`.
pub fn composite(algorithm: ChecksumAlgorithm, part_digests: &[Vec<u8>]) -> String {
    let mut h = algorithm.hasher();
    for d in part_digests {
        h.update(d);
    }
    format!("{}-{}", to_base64(&h.finish()), part_digests.len())
}

/// The full-object CRC of a multipart object from its parts' CRCs and sizes, without
/// reading the data again. `None` for the non-CRC algorithms, or malformed digests.
pub fn combine_full_object(
    algorithm: ChecksumAlgorithm,
    parts: &[(Vec<u8>, u64)],
) -> Option<Vec<u8>> {
    let (poly, width) = match algorithm {
        ChecksumAlgorithm::Crc32 => (0xEDB8_8320_u64, 32),
        ChecksumAlgorithm::Crc32c => (u64::from(CRC32C_POLY), 32),
        ChecksumAlgorithm::Crc64Nvme => (CRC64NVME_POLY, 64),
        _ => return None,
    };
    let mut acc: Option<u64> = None;
    for (digest, len) in parts {
        let value = match width {
            32 => u64::from(u32::from_be_bytes(digest.as_slice().try_into().ok()?)),
            _ => u64::from_be_bytes(digest.as_slice().try_into().ok()?),
        };
        acc = Some(match acc {
            None => value,
            Some(a) => crc_combine(a, value, *len, poly, width),
        });
    }
    // An object of no parts is not a multipart object; the empty CRC is 0 anyway.
    let crc = acc.unwrap_or(0);
    Some(match width {
        32 => (crc as u32).to_be_bytes().to_vec(),
        _ => crc.to_be_bytes().to_vec(),
    })
}

const CRC32C_POLY: u32 = 0x82F6_3B78;
const CRC64NVME_POLY: u64 = 0x9A6C_9329_AC4B_C9B5;

const fn crc32_tables(poly: u32) -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut j = 1;
        while j < 8 {
            t[j][i] = (t[j - 1][i] >> 8) ^ t[0][(t[j - 1][i] & 0xFF) as usize];
            j += 1;
        }
        i += 1;
    }
    t
}

const fn crc64_tables(poly: u64) -> [[u64; 256]; 8] {
    let mut t = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut j = 1;
        while j < 8 {
            t[j][i] = (t[j - 1][i] >> 8) ^ t[0][(t[j - 1][i] & 0xFF) as usize];
            j += 1;
        }
        i += 1;
    }
    t
}

static CRC32C_TABLES: [[u32; 256]; 8] = crc32_tables(CRC32C_POLY);
static CRC64NVME_TABLES: [[u64; 256]; 8] = crc64_tables(CRC64NVME_POLY);

/// Slice-by-8 CRC32C over the inverted running state.
fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    let t = &CRC32C_TABLES;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xFF) as usize]
            ^ t[2][((hi >> 8) & 0xFF) as usize]
            ^ t[1][((hi >> 16) & 0xFF) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// Slice-by-8 CRC64/NVME over the inverted running state.
fn crc64nvme_update(mut crc: u64, data: &[u8]) -> u64 {
    let t = &CRC64NVME_TABLES;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = crc ^ u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        crc = t[7][(v & 0xFF) as usize]
            ^ t[6][((v >> 8) & 0xFF) as usize]
            ^ t[5][((v >> 16) & 0xFF) as usize]
            ^ t[4][((v >> 24) & 0xFF) as usize]
            ^ t[3][((v >> 32) & 0xFF) as usize]
            ^ t[2][((v >> 40) & 0xFF) as usize]
            ^ t[1][((v >> 48) & 0xFF) as usize]
            ^ t[0][(v >> 56) as usize];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ u64::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

fn gf2_times(mat: &[u64], mut vec: u64) -> u64 {
    let mut sum = 0;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 != 0 {
            sum ^= mat[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

fn gf2_square(square: &mut [u64], mat: &[u64]) {
    for n in 0..mat.len() {
        square[n] = gf2_times(mat, mat[n]);
    }
}

/// zlib's `crc32_combine`, for any reflected CRC whose initial value equals its final
/// xor (CRC32, CRC32C and CRC64/NVME all use all-ones for both): the CRC of `A || B`
/// from `crc(A)`, `crc(B)` and `len(B)`.
fn crc_combine(crc1: u64, crc2: u64, mut len2: u64, poly: u64, width: usize) -> u64 {
    if len2 == 0 {
        return crc1;
    }
    let mut even = vec![0u64; width];
    let mut odd = vec![0u64; width];
    // The operator for one zero bit.
    odd[0] = poly;
    let mut row = 1u64;
    for slot in odd.iter_mut().skip(1) {
        *slot = row;
        row <<= 1;
    }
    gf2_square(&mut even, &odd); // two zero bits
    gf2_square(&mut odd, &even); // four zero bits
    let mut crc1 = crc1;
    loop {
        gf2_square(&mut even, &odd);
        if len2 & 1 != 0 {
            crc1 = gf2_times(&even, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
        gf2_square(&mut odd, &even);
        if len2 & 1 != 0 {
            crc1 = gf2_times(&odd, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
    }
    crc1 ^ crc2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(v: &[u8]) -> u32 {
        u32::from_be_bytes(v.try_into().unwrap())
    }

    #[test]
    fn check_values_of_the_crcs() {
        // The "check" values of the CRC catalogue: the CRC of "123456789".
        let data = b"123456789";
        assert_eq!(be32(&ChecksumAlgorithm::Crc32.digest(data)), 0xCBF4_3926);
        assert_eq!(be32(&ChecksumAlgorithm::Crc32c.digest(data)), 0xE306_9283);
        assert_eq!(
            u64::from_be_bytes(
                ChecksumAlgorithm::Crc64Nvme
                    .digest(data)
                    .try_into()
                    .unwrap()
            ),
            0xAE8B_1486_0A79_9888
        );
    }

    #[test]
    fn base64_values_match_what_botocore_sends() {
        // botocore: base64(crc32("hello world").to_bytes(4, "big")) == "DUoRhQ=="
        assert_eq!(
            to_base64(&ChecksumAlgorithm::Crc32.digest(b"hello world")),
            "DUoRhQ=="
        );
        assert_eq!(
            to_base64(&ChecksumAlgorithm::Sha256.digest(b"")),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn slice_by_8_matches_bytewise_on_every_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for alg in [ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Crc64Nvme] {
            let whole = alg.digest(&data);
            for split in [0, 1, 7, 8, 9, 500, 999] {
                let mut h = alg.hasher();
                h.update(&data[..split]);
                h.update(&data[split..]);
                assert_eq!(h.finish(), whole, "{alg:?} split at {split}");
            }
        }
    }

    #[test]
    fn combined_crcs_equal_the_crc_of_the_concatenation() {
        let a: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..777u32).map(|i| (i % 13) as u8).collect();
        let c: Vec<u8> = b"tail".to_vec();
        for alg in [
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Crc64Nvme,
        ] {
            let mut whole = a.clone();
            whole.extend_from_slice(&b);
            whole.extend_from_slice(&c);
            let parts = vec![
                (alg.digest(&a), a.len() as u64),
                (alg.digest(&b), b.len() as u64),
                (alg.digest(&c), c.len() as u64),
            ];
            assert_eq!(
                combine_full_object(alg, &parts).unwrap(),
                alg.digest(&whole),
                "{alg:?}"
            );
        }
        assert!(combine_full_object(ChecksumAlgorithm::Sha256, &[]).is_none());
    }

    #[test]
    fn composite_is_the_checksum_of_the_part_checksums() {
        let p1 = ChecksumAlgorithm::Crc32.digest(b"part one");
        let p2 = ChecksumAlgorithm::Crc32.digest(b"part two");
        let mut both = p1.clone();
        both.extend_from_slice(&p2);
        let expected = format!("{}-2", to_base64(&ChecksumAlgorithm::Crc32.digest(&both)));
        assert_eq!(composite(ChecksumAlgorithm::Crc32, &[p1, p2]), expected);
    }

    #[test]
    fn names_and_headers_parse_in_any_case() {
        assert_eq!(
            ChecksumAlgorithm::from_name("crc64nvme"),
            Some(ChecksumAlgorithm::Crc64Nvme)
        );
        assert_eq!(
            ChecksumAlgorithm::from_header("X-Amz-Checksum-Sha1"),
            Some(ChecksumAlgorithm::Sha1)
        );
        assert_eq!(ChecksumAlgorithm::from_name("md5"), None);
        assert!(ChecksumAlgorithm::Crc32.decode("DUoRhQ==").is_some());
        assert!(ChecksumAlgorithm::Crc32.decode("DUoRhQDD").is_none());
    }
}
