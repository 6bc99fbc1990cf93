//! Credentials never reach a log: URLs are printed with their password
//! replaced.

/// Query parameters that carry a credential (`redis+unix:///sock?pass=..`,
/// a presigned URL's signature, ...), compared without case.
const SECRET_PARAMETERS: [&str; 8] = [
    "pass",
    "password",
    "passwd",
    "token",
    "secret",
    "key",
    "signature",
    "x-amz-signature",
];

/// `url` with any password (the part after `user:` in `scheme://user:pass@host`)
/// and any credential in its query (`?pass=..`, `&token=..`) replaced by
/// `***`.
///
/// ```
/// use routine_core::redact::redact_url;
/// assert_eq!(redact_url("redis://:s3cret@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
/// assert_eq!(redact_url("redis://app:pw@host"), "redis://app:***@host");
/// assert_eq!(redact_url("redis+unix:///run/redis.sock?db=1&pass=s3cret"), "redis+unix:///run/redis.sock?db=1&pass=***");
/// assert_eq!(redact_url("s3://bucket/prefix"), "s3://bucket/prefix");
/// ```
pub fn redact_url(url: &str) -> String {
    redact_query(&redact_user_info(url))
}

/// Replaces the values of [`SECRET_PARAMETERS`] in the query.
fn redact_query(url: &str) -> String {
    let Some(query_start) = url.find('?') else {
        return url.to_owned();
    };
    let (base, rest) = url.split_at(query_start + 1);
    let (query, fragment) = match rest.find('#') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let parameters: Vec<String> = query
        .split('&')
        .map(|parameter| match parameter.split_once('=') {
            Some((name, _))
                if SECRET_PARAMETERS
                    .iter()
                    .any(|secret| secret.eq_ignore_ascii_case(name)) =>
            {
                format!("{name}=***")
            }
            _ => parameter.to_owned(),
        })
        .collect();
    format!("{base}{}{fragment}", parameters.join("&"))
}

fn redact_user_info(url: &str) -> String {
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

    #[test]
    fn hides_credentials_in_queries() {
        assert_eq!(
            redact_url("redis+unix:///tmp/r.sock?pass=s3cret"),
            "redis+unix:///tmp/r.sock?pass=***"
        );
        assert_eq!(
            redact_url("unix:///tmp/r.sock?db=2&PASSWORD=x&user=u#frag"),
            "unix:///tmp/r.sock?db=2&PASSWORD=***&user=u#frag"
        );
        assert_eq!(
            redact_url("redis://u:p@h/0?token=t"),
            "redis://u:***@h/0?token=***"
        );
        assert_eq!(redact_url("s3://b/p?region=x"), "s3://b/p?region=x");
    }
}
