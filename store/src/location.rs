//! Where a store or dataset lives, parsed once from what the user typed: a local path, a
//! `file://` URL (the same local path) or `s3://BUCKET/PREFIX` (an S3-compatible object store,
//! configured by the standard AWS environment variables). Every command hands its STORE or
//! STORE/NAME argument to [`Location::parse`] through [`crate::backend::open`]; nothing else
//! looks at the scheme.

use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// `key` is the prefix inside the bucket, without leading or trailing `/` (empty: the
    /// bucket's root).
    S3 {
        bucket: String,
        key: String,
    },
}

impl Location {
    /// Parses a path or URL; a string without `SCHEME://` is a local path.
    pub fn parse(path: &Path) -> Result<Location> {
        let Some(text) = path.to_str() else {
            return Ok(Location::Local(path.to_path_buf()));
        };
        let Some((scheme, rest)) = split_scheme(text) else {
            return Ok(Location::Local(path.to_path_buf()));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => file_path(text).map(Location::Local),
            "s3" | "s3a" => s3(path, rest),
            _ => Err(StoreError::invalid(
                path,
                format!(
                    "unsupported URL scheme {scheme}:// (a store is a local path, file://PATH or s3://BUCKET/PREFIX)"
                ),
            )),
        }
    }

    /// The location inside this one named `name` (a dataset of a store).
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(dir) => Location::Local(dir.join(name)),
            Location::S3 { bucket, key } => Location::S3 {
                bucket: bucket.clone(),
                key: join_key(key, name),
            },
        }
    }

    /// The local directory, `None` on object storage.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Location::Local(dir) => Some(dir),
            Location::S3 { .. } => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(dir) => write!(f, "{}", dir.display()),
            Location::S3 { bucket, key } if key.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// Whether `path` is a URL of object storage (not a local path or `file://`).
pub fn is_remote(path: &Path) -> bool {
    matches!(Location::parse(path), Ok(Location::S3 { .. }))
}

/// `path` made absolute when it is local (a run records where its dataset is), unchanged when
/// it is a URL of object storage; `file://` URLs become their path.
pub fn absolute(path: &Path) -> PathBuf {
    match Location::parse(path) {
        Ok(Location::Local(dir)) => std::path::absolute(&dir).unwrap_or(dir),
        _ => path.to_path_buf(),
    }
}

/// `key/name`, or `name` at a bucket's root.
pub(crate) fn join_key(key: &str, name: &str) -> String {
    match (key.is_empty(), name.is_empty()) {
        (_, true) => key.to_string(),
        (true, false) => name.to_string(),
        (false, false) => format!("{key}/{name}"),
    }
}

fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let plain = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    plain.then_some((scheme, rest))
}

fn file_path(text: &str) -> Result<PathBuf> {
    let bad = |why: &str| StoreError::invalid(text, format!("not a usable file:// URL: {why}"));
    let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    url.to_file_path()
        .map_err(|()| bad("it must be file:///ABSOLUTE/PATH (or file://localhost/...)"))
}

fn s3(path: &Path, rest: &str) -> Result<Location> {
    let bad = |why: String| StoreError::invalid(path, why);
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if let Some(why) = bucket_problem(bucket) {
        return Err(bad(format!("bucket name {bucket:?} {why}")));
    }
    let key = key.trim_end_matches('/');
    if key.starts_with('/') || key.split('/').any(|p| p == "." || p == "..") {
        return Err(bad(format!(
            "prefix {key:?} has empty, `.` or `..` components"
        )));
    }
    if !key.is_empty() && key.split('/').any(str::is_empty) {
        return Err(bad(format!("prefix {key:?} has an empty component (`//`)")));
    }
    Ok(Location::S3 {
        bucket: bucket.to_string(),
        key: key.to_string(),
    })
}

/// Why `name` is not an S3 bucket name (3 to 63 lowercase letters, digits, `.` and `-`,
/// starting and ending with a letter or digit), if it is not.
fn bucket_problem(name: &str) -> Option<&'static str> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() {
        Some("is empty (s3://BUCKET/PREFIX)")
    } else if !(3..=63).contains(&name.len()) {
        Some("must be 3 to 63 characters long")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        || !edge(name.chars().next())
        || !edge(name.chars().last())
    {
        Some(
            "may hold only lowercase letters, digits, `.` and `-`, and must start and end with a letter or digit",
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Location> {
        Location::parse(Path::new(s))
    }

    #[test]
    fn paths_file_urls_and_s3_urls_parse_to_their_location() {
        assert_eq!(
            parse("runs/store").unwrap(),
            Location::Local("runs/store".into())
        );
        assert_eq!(
            parse("file:///tmp/a%20b/store").unwrap(),
            Location::Local("/tmp/a b/store".into())
        );
        assert_eq!(
            parse("s3://my-bucket/some/prefix/").unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                key: "some/prefix".into()
            }
        );
        assert_eq!(
            parse("s3://my-bucket").unwrap().join("d").to_string(),
            "s3://my-bucket/d"
        );
        assert_eq!(
            parse("s3://my-bucket/p").unwrap().join("d").to_string(),
            "s3://my-bucket/p/d"
        );
    }

    #[test]
    fn bad_urls_are_refused_naming_what_is_wrong() {
        for (url, says) in [
            ("gs://b/p", "unsupported URL scheme gs://"),
            ("s3:///p", "is empty"),
            ("s3://MyBucket/p", "lowercase"),
            ("s3://ab/p", "3 to 63"),
            ("s3://bucket/a//b", "empty component"),
            ("s3://bucket/a/../b", "`..`"),
            ("file://host/x", "file:///ABSOLUTE/PATH"),
        ] {
            let err = parse(url).unwrap_err().to_string();
            assert!(err.starts_with(url) && err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn absolute_leaves_object_store_urls_alone() {
        assert_eq!(absolute(Path::new("s3://bkt/x")), Path::new("s3://bkt/x"));
        assert!(absolute(Path::new("x")).is_absolute());
        assert_eq!(absolute(Path::new("file:///x/y")), Path::new("/x/y"));
    }
}
