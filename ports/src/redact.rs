//! Database URLs with their secrets taken out, for every message, `Debug` and log line.

/// `url` with the password of its user info and the value of any password-like query
/// parameter (`password`, `passwd`, `pass`, `sslpassword`, `secret`, `token`) replaced by
/// `***`; the rest (scheme, user, host, database) kept, so the message still says which
/// database was meant.
///
/// ```
/// use flext::ports::redact_url;
/// assert_eq!(
///     redact_url("postgres://app:hunter2@db:5432/bank?password=x&sslmode=require"),
///     "postgres://app:***@db:5432/bank?password=***&sslmode=require"
/// );
/// assert_eq!(redact_url("sqlite://events.db"), "sqlite://events.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    match head.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    match userinfo.split_once(':') {
                        Some((user, _)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(head),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if is_secret_param(key) => {
                    out.push_str(key);
                    out.push_str("=***");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pass",
        "sslpassword",
        "secret",
        "token",
    ]
    .contains(&key.as_str())
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive() {
        for url in [
            "postgres://u:hunter2@h/db",
            "postgresql://u:hunter2@h:5432/db?sslmode=disable",
            "postgres://u@h/db?password=hunter2",
            "postgres://u:hunter2@h",
            "mysql://root:hunter2@db/x",
            "postgres://u:p@ss:hunter2@h/db",
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains("hunter2"), "{url} -> {shown}");
        }
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("events.db"), "events.db");
    }
}
