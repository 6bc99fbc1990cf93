//! Credentials never reach a log: URLs are printed with their password
//! replaced.

/// `url` with any password (the part after `user:` in `scheme://user:pass@host`)
/// replaced by `***`.
///
/// ```
/// use routine_core::redact::redact_url;
/// assert_eq!(redact_url("redis://:s3cret@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
/// assert_eq!(redact_url("redis://app:pw@host"), "redis://app:***@host");
/// assert_eq!(redact_url("s3://bucket/prefix"), "s3://bucket/prefix");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let user_info = &authority[..at];
    let redacted = match user_info.find(':') {
        Some(colon) => format!("{}:***", &user_info[..colon]),
        // A lone user name may be a token (`redis://token@host`): hide it too.
        None if !user_info.is_empty() => "***".to_owned(),
        None => String::new(),
    };
    format!(
        "{}{}{}",
        &url[..authority_start],
        redacted,
        &url[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn hides_passwords_and_tokens_only() {
        assert_eq!(
            redact_url("rediss://u:p@h:1/2?x=y"),
            "rediss://u:***@h:1/2?x=y"
        );
        assert_eq!(redact_url("redis://token@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redact_url("redis://h/path@notcreds"),
            "redis://h/path@notcreds"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("redis://:p@ss@h"), "redis://:***@h");
    }
}
