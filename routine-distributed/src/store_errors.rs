//! What an object store's error means to a user: the problem, in a few
//! words, and how to fix it. The server's own answer (often XML) is logged
//! at info level, where `-v` shows it; messages never carry it.
//!
//! ```text
//! NoSuchBucket                          → the bucket `b` does not exist
//! 169.254.169.254, "credential"         → no credentials were found for it
//! InvalidAccessKeyId, AccessDenied, 403 → access was denied
//! connection refused, DNS               → the server cannot be reached
//! ```

use std::error::Error as _;

/// Credentials routine's S3 backend reads from the environment (besides an
/// instance role, which only a cloud machine has).
const AWS_CREDENTIALS: [&str; 5] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_SKIP_SIGNATURE",
];

/// Where an S3-compatible server is, if the environment names one.
pub(crate) fn aws_endpoint() -> Option<String> {
    ["AWS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// Whether the environment gives S3 credentials.
pub(crate) fn aws_credentials_set() -> bool {
    AWS_CREDENTIALS
        .into_iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// How to give S3 credentials.
pub(crate) const CREDENTIALS_HINT: &str =
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for an S3-compatible server such as \
     MinIO, also AWS_ENDPOINT=http://host:port and AWS_ALLOW_HTTP=true); see docs/distributed.md";

/// The problem `error` says, and how to fix it, for the store whose bucket
/// (or container) is `bucket`.
///
/// ```ignore
/// let (problem, hint) = explain(&error, "results");
/// ```
pub(crate) fn explain(error: &object_store::Error, bucket: &str) -> (String, Option<String>) {
    let text = chain(error);
    match error {
        // A missing bucket is a missing object to some servers.
        object_store::Error::NotFound { .. } if !text.contains("NoSuchBucket") => {
            ("it does not exist".into(), None)
        }
        _ => explain_text(&text, bucket),
    }
}

/// [`explain`], from the error's text with its causes.
fn explain_text(text: &str, bucket: &str) -> (String, Option<String>) {
    let has = |needle: &str| text.contains(needle);
    let lower = text.to_ascii_lowercase();
    if has("NoSuchBucket") || has("ContainerNotFound") {
        return (
            format!("the bucket `{bucket}` does not exist"),
            Some(format!(
                "create it (`aws s3 mb s3://{bucket}`), or name an existing one in ROUTINE_STORE, \
                 --store or `store` in routine.toml"
            )),
        );
    }
    if has("169.254.169.254") || lower.contains("credential") {
        return (
            "no credentials were found for it".into(),
            Some(CREDENTIALS_HINT.into()),
        );
    }
    if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("AccessDenied")
        || has("403 Forbidden")
    {
        return (
            "access was denied".into(),
            Some(
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that they may use the bucket"
                    .into(),
            ),
        );
    }
    if lower.contains("connection refused")
        || lower.contains("error trying to connect")
        || lower.contains("dns error")
        || lower.contains("failed to lookup address")
    {
        let endpoint = aws_endpoint().map_or_else(|| "unset".to_owned(), |e| format!("`{e}`"));
        return (
            "its server cannot be reached".into(),
            Some(format!(
                "check that the server runs and that AWS_ENDPOINT ({endpoint}) names it"
            )),
        );
    }
    // Anything else: the first words, without the server's markup.
    let first = text.split(['<', '\n']).next().unwrap_or(text).trim();
    let first: String = first.chars().take(160).collect();
    (
        format!("the store answered with an error ({first})"),
        Some("run with -v to see the server's whole answer".into()),
    )
}

/// An error's text followed by its causes'.
fn chain(error: &object_store::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_users_meet_is_said_with_how_to_fix_it() {
        let missing = "Generic S3 error: Error performing PUT http://127.0.0.1:9000/no-such-bucket/x \
            in 2ms - Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\
            <Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        let (problem, hint) = explain_text(missing, "no-such-bucket");
        assert_eq!(problem, "the bucket `no-such-bucket` does not exist");
        assert!(hint.unwrap().contains("aws s3 mb s3://no-such-bucket"));

        // The README's snippet without AWS_* variables, off a cloud machine.
        let no_credentials = "Generic S3 error: Error performing PUT \
            http://169.254.169.254/latest/api/token in 1.2s - Server returned non-2xx status code: 403 Forbidden";
        let (problem, hint) = explain_text(no_credentials, "b");
        assert_eq!(problem, "no credentials were found for it");
        assert!(hint.unwrap().contains("AWS_ACCESS_KEY_ID"));

        let denied = "Generic S3 error: ... <Code>InvalidAccessKeyId</Code> ...";
        assert_eq!(explain_text(denied, "b").0, "access was denied");

        let refused = "Generic S3 error: error sending request: client error (Connect): \
            tcp connect error: Connection refused (os error 111)";
        assert_eq!(explain_text(refused, "b").0, "its server cannot be reached");

        let other = "Generic S3 error: something odd <Error><Code>Odd</Code></Error>";
        let (problem, _) = explain_text(other, "b");
        assert!(!problem.contains('<'), "{problem}");
    }
}
