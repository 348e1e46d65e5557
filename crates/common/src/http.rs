//! The blocking HTTP client builder every covidct client starts from.

use std::time::Duration;

use reqwest::Url;
use reqwest::blocking::{Client, ClientBuilder};

/// A blocking HTTP client builder as covidct's clients use it: no redirects followed, `timeout`
/// for connecting and for whole requests, and no proxy for a server on this machine (a proxy
/// from the environment could not reach it).
pub fn http_client(url: &Url, timeout: Duration, user_agent: &str) -> ClientBuilder {
    let builder = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(user_agent);
    if is_loopback(url) {
        builder.no_proxy()
    } else {
        builder
    }
}

/// Whether the URL points at this machine (`localhost`, 127.0.0.0/8 or `::1`).
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback;
    use reqwest::Url;

    #[test]
    fn loopback_hosts_are_recognized() {
        for (url, expected) in [
            ("http://127.0.0.1:8080/api", true),
            ("http://localhost/api", true),
            ("http://[::1]:9/api", true),
            ("https://www.kaggle.com/api/v1", false),
            ("http://10.0.0.1/api", false),
        ] {
            assert_eq!(
                is_loopback(&Url::parse(url).expect("url")),
                expected,
                "{url}"
            );
        }
    }
}
