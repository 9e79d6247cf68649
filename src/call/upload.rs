//! Where a finished recording is uploaded: `upload = "s3://bucket/prefix/"` on `record` and
//! `conference`. Only the target lives here; the upload itself is a service's
//! ([`crate::services::uploads`]).

use std::fmt;

/// An S3-compatible bucket and key prefix, and whether the local file stays after a successful
/// upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTarget {
    /// The bucket.
    pub bucket: String,
    /// The key prefix: empty, or ending in `/`.
    pub prefix: String,
    /// Keep the local file once it is uploaded (a failed upload always keeps it).
    pub keep_local: bool,
}

impl UploadTarget {
    /// Parses `s3://bucket/prefix/`: a bucket name as S3 allows it (3 to 63 of `a-z 0-9 . -`),
    /// then an optional prefix of `A-Z a-z 0-9 ! - _ . * ' ( ) /`, to which a `/` is added
    /// when it lacks one.
    pub fn parse(url: &str, keep_local: bool) -> Result<UploadTarget, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| format!("`upload` {url:?} must be s3://bucket/prefix/"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if !bucket_ok {
            return Err(format!("`upload` {url:?}: the bucket {bucket:?} must be 3 to 63 characters of a-z, 0-9, '.' and '-'"));
        }
        let prefix_ok = prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"!-_.*'()/".contains(&b))
            && !prefix.starts_with('/')
            && !prefix.contains("//")
            && !prefix.split('/').any(|part| part == "." || part == "..");
        if !prefix_ok {
            return Err(format!(
                "`upload` {url:?}: the prefix {prefix:?} may hold A-Z, a-z, 0-9 and !-_.*'() between single slashes, with no . or .. part"
            ));
        }
        let mut prefix = prefix.to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(UploadTarget { bucket: bucket.to_owned(), prefix, keep_local })
    }

    /// The object key of a file named `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The object's URL: `s3://bucket/key`.
    pub fn url(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(name))
    }
}

impl fmt::Display for UploadTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_parsed_and_checked() {
        let t = UploadTarget::parse("s3://calls-2026/recordings/eu", true).unwrap();
        assert_eq!((t.bucket.as_str(), t.prefix.as_str()), ("calls-2026", "recordings/eu/"));
        assert_eq!(t.url("abc.wav"), "s3://calls-2026/recordings/eu/abc.wav");
        assert_eq!(UploadTarget::parse("s3://bucket", false).unwrap().key("x.wav"), "x.wav");
        assert_eq!(UploadTarget::parse("s3://bucket/", false).unwrap().prefix, "");
        for bad in [
            "http://bucket/",
            "s3://",
            "s3://ab/",
            "s3://Bucket/",
            "s3://b_b_b/",
            "s3://bucket//x",
            "s3://bucket/a/../b",
            "s3://bucket/a b",
        ] {
            assert!(UploadTarget::parse(bad, true).is_err(), "{bad}");
        }
    }
}
